// GEMM: C = A B (+ C when accumulating), A [M, K] and B [K, N] read through element strides, so transposed
// operands cost nothing extra. Blocked as BLIS does: a thread takes a (batch, 64-row, 256-column) block,
// packs A's rows four at a time and B's columns eight at a time for K in chunks of 256, and a 4 x 8
// register tile (eight f32x4 accumulators) runs over the packed panels.
import { argI, argP, SCRATCH } from "./common";

export const MB: i32 = 64;
export const NB: i32 = 256;
export const KB: i32 = 256;
// Packed A, packed B and an edge tile: (MB * KB + KB * NB + 32) * 4 bytes, within a thread's SCRATCH.

// @ts-ignore: decorator
@inline function packA(pa: usize, a: usize, rows: i32, kc: i32, rsA: i32, csA: i32): void {
  // Strips of 4 rows; within a strip k-major, 4 rows per k. Rows past the edge are zero.
  for (let s = 0; s < rows; s += 4) {
    const strip = pa + <usize>(s * kc) * 4;
    for (let r = 0; r < 4; r++) {
      const dst = strip + <usize>r * 4;
      if (s + r < rows) {
        let src = a + <usize>((s + r) * rsA) * 4;
        const step = <usize>csA * 4;
        for (let k = 0; k < kc; k++) {
          store<f32>(dst + <usize>k * 16, load<f32>(src));
          src += step;
        }
      } else {
        for (let k = 0; k < kc; k++) store<f32>(dst + <usize>k * 16, 0);
      }
    }
  }
}

// @ts-ignore: decorator
@inline function packB(pb: usize, b: usize, cols: i32, kc: i32, rsB: i32, csB: i32): void {
  // Panels of 8 columns; within a panel k-major, 8 columns per k. Columns past the edge are zero.
  for (let p = 0; p < cols; p += 8) {
    const panel = pb + <usize>(p * kc) * 4;
    const width = min(8, cols - p);
    if (csB == 1 && width == 8) {
      for (let k = 0; k < kc; k++) {
        const src = b + <usize>(k * rsB + p) * 4;
        v128.store(panel + <usize>k * 32, v128.load(src));
        v128.store(panel + <usize>k * 32 + 16, v128.load(src + 16));
      }
    } else {
      for (let k = 0; k < kc; k++) {
        const dst = panel + <usize>k * 32;
        for (let c = 0; c < 8; c++) {
          store<f32>(dst + <usize>c * 4, c < width ? load<f32>(b + <usize>(k * rsB + (p + c) * csB) * 4) : 0);
        }
      }
    }
  }
}

// @ts-ignore: decorator
@inline function micro(kc: i32, pa: usize, pb: usize, c: usize, ldc: usize, accumulate: bool): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0), c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  for (let k = 0; k < kc; k++) {
    const b0 = v128.load(pb), b1 = v128.load(pb, 16);
    const a0 = v128.load32_splat(pa), a1 = v128.load32_splat(pa, 4);
    const a2 = v128.load32_splat(pa, 8), a3 = v128.load32_splat(pa, 12);
    c00 = f32x4.add(c00, f32x4.mul(a0, b0)); c01 = f32x4.add(c01, f32x4.mul(a0, b1));
    c10 = f32x4.add(c10, f32x4.mul(a1, b0)); c11 = f32x4.add(c11, f32x4.mul(a1, b1));
    c20 = f32x4.add(c20, f32x4.mul(a2, b0)); c21 = f32x4.add(c21, f32x4.mul(a2, b1));
    c30 = f32x4.add(c30, f32x4.mul(a3, b0)); c31 = f32x4.add(c31, f32x4.mul(a3, b1));
    pa += 16;
    pb += 32;
  }
  const r1 = c + ldc * 4, r2 = r1 + ldc * 4, r3 = r2 + ldc * 4;
  if (accumulate) {
    c00 = f32x4.add(c00, v128.load(c)); c01 = f32x4.add(c01, v128.load(c, 16));
    c10 = f32x4.add(c10, v128.load(r1)); c11 = f32x4.add(c11, v128.load(r1, 16));
    c20 = f32x4.add(c20, v128.load(r2)); c21 = f32x4.add(c21, v128.load(r2, 16));
    c30 = f32x4.add(c30, v128.load(r3)); c31 = f32x4.add(c31, v128.load(r3, 16));
  }
  v128.store(c, c00); v128.store(c, c01, 16);
  v128.store(r1, c10); v128.store(r1, c11, 16);
  v128.store(r2, c20); v128.store(r2, c21, 16);
  v128.store(r3, c30); v128.store(r3, c31, 16);
}

/**
 * Bindings a, b, c; uniforms M, N, K, rsA, csA, rsB, csB, ldc, accumulate, batch, batchA, batchB, batchC
 * (strides in elements: A[i, k] at i * rsA + k * csA, batch z's operands at z * batch*).
 */
export function gemm(tid: i32, nth: i32, args: usize): void {
  const a = <usize>argI(args, 0), b = <usize>argI(args, 1), c = <usize>argI(args, 2);
  const M = argI(args, 3), N = argI(args, 4), K = argI(args, 5);
  const rsA = argI(args, 6), csA = argI(args, 7), rsB = argI(args, 8), csB = argI(args, 9);
  const ldc = argI(args, 10), accumulate = argI(args, 11) != 0;
  const batch = argI(args, 12), batchA = argI(args, 13), batchB = argI(args, 14), batchC = argI(args, 15);
  const scratch = argP(args, 19) + <usize>tid * SCRATCH;
  const pa = scratch, pb = pa + <usize>(MB * KB) * 4, edge = pb + <usize>(KB * NB) * 4;
  const mBlocks = (M + MB - 1) / MB, nBlocks = (N + NB - 1) / NB;
  const units = batch * mBlocks * nBlocks;
  for (let u = tid; u < units; u += nth) {
    const z = u / (mBlocks * nBlocks), rest = u % (mBlocks * nBlocks);
    const m0 = (rest / nBlocks) * MB, n0 = (rest % nBlocks) * NB;
    const rows = min(MB, M - m0), cols = min(NB, N - n0);
    const az = a + <usize>(z * batchA) * 4, bz = b + <usize>(z * batchB) * 4;
    const cz = c + <usize>(z * batchC + m0 * ldc + n0) * 4;
    if (K == 0 && !accumulate) {
      for (let r = 0; r < rows; r++) memory.fill(cz + <usize>(r * ldc) * 4, 0, <usize>cols * 4);
    }
    for (let k0 = 0; k0 < K; k0 += KB) {
      const kc = min(KB, K - k0);
      packA(pa, az + <usize>(m0 * rsA + k0 * csA) * 4, rows, kc, rsA, csA);
      packB(pb, bz + <usize>(k0 * rsB + n0 * csB) * 4, cols, kc, rsB, csB);
      const acc = accumulate || k0 > 0;
      for (let p = 0; p < cols; p += 8) {
        for (let s = 0; s < rows; s += 4) {
          const pas = pa + <usize>(s * kc) * 4, pbp = pb + <usize>(p * kc) * 4;
          const dst = cz + <usize>(s * ldc + p) * 4;
          if (s + 4 <= rows && p + 8 <= cols) {
            micro(kc, pas, pbp, dst, <usize>ldc, acc);
          } else {
            // Edge tile: compute into scratch with stride 8, copy the part inside C.
            micro(kc, pas, pbp, edge, 8, false);
            const h = min(4, rows - s), w = min(8, cols - p);
            for (let r = 0; r < h; r++) {
              for (let q = 0; q < w; q++) {
                const at = dst + <usize>(r * ldc + q) * 4;
                const v = load<f32>(edge + <usize>(r * 8 + q) * 4);
                store<f32>(at, acc ? load<f32>(at) + v : v);
              }
            }
          }
        }
      }
    }
  }
}
