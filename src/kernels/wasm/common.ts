// AssemblyScript (compiled to kernels.wasm by src/backend/wasm/build.ts). Each kernel twin is
//   export function <name>(tid: i32, nth: i32, args: usize): void
// and is called on every compute thread at once (tid in [0, nth)), each doing its share. `args` points to
// 4-byte slots: the address of each binding, in the WGSL kernel's order, then its uniforms in declaration
// order (u32/i32/f32 bits), then the WGSL grid (x, y, z), then the base of the per-thread scratch (SCRATCH
// bytes a thread, at base + tid * SCRATCH). An address slot holds the byte address / 4 (every binding is
// 4-byte aligned): 32 bits then reach 16 GiB, the 64-bit build's memory, and the same engine code writes
// both builds' arguments.

export const SCRATCH: usize = 1 << 20;

@inline export function argI(args: usize, i: i32): i32 {
  return load<i32>(args + (<usize>i << 2));
}

@inline export function argF(args: usize, i: i32): f32 {
  return load<f32>(args + (<usize>i << 2));
}

@inline export function argP(args: usize, i: i32): usize {
  return <usize>load<u32>(args + (<usize>i << 2)) << 2;
}

/** Thread tid's part [begin, end) of n items, in multiples of `align` (the last part takes the rest). */
@inline export function shareBegin(tid: i32, nth: i32, n: i32, align: i32): i32 {
  const per = ((n + nth - 1) / nth + align - 1) / align * align;
  return min(n, tid * per);
}

@inline export function shareEnd(tid: i32, nth: i32, n: i32, align: i32): i32 {
  const per = ((n + nth - 1) / nth + align - 1) / align * align;
  return min(n, (tid + 1) * per);
}

/** The address of element i of f32/i32 array `base`. */
@inline export function at(base: usize, i: i32): usize {
  return base + (<usize>i << 2);
}

/** Rows r0..r3 of a 4 x 4 block of f32, stored as its columns, `stride` bytes apart from `dst`. */
@inline export function transpose4(dst: usize, stride: usize, r0: v128, r1: v128, r2: v128, r3: v128): void {
  const t0 = v128.shuffle<f32>(r0, r1, 0, 4, 1, 5), t1 = v128.shuffle<f32>(r2, r3, 0, 4, 1, 5);
  const t2 = v128.shuffle<f32>(r0, r1, 2, 6, 3, 7), t3 = v128.shuffle<f32>(r2, r3, 2, 6, 3, 7);
  v128.store(dst, v128.shuffle<f32>(t0, t1, 0, 1, 4, 5));
  v128.store(dst + stride, v128.shuffle<f32>(t0, t1, 2, 3, 6, 7));
  v128.store(dst + 2 * stride, v128.shuffle<f32>(t2, t3, 0, 1, 4, 5));
  v128.store(dst + 3 * stride, v128.shuffle<f32>(t2, t3, 2, 3, 6, 7));
}
