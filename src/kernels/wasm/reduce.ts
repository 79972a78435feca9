// Twin of src/kernels/reduce.ts's two sum kernels (one thread per output, one workgroup per output): both
// compute out[j] = scale * sum over the reduced axes, so both map here. Bindings x, out; uniforms n_out,
// n_red, scale, then (size, stride) of the kept axes and of the reduced axes, innermost last.
import { argF, argI, argP, at, shareBegin, shareEnd } from "./common";
import * as L from "./layout";

const RANK = 6;
// The kept and the reduced axes' (size, stride) pairs: ks0, kt0, ks1, kt1, ... and rs0, rt0, ... (reduce.ts).
const KEPT = L.reduce_sum.ks0, REDUCED = L.reduce_sum.rs0;

/** Offset of index `i` of the axes listed (size, stride) from slot `first`, outermost `from` to innermost `to`. */
@inline function offsetOf(args: usize, first: i32, i: i32, to: i32): i32 {
  let rem = i, off = 0;
  for (let d = to; d >= 0; d--) {
    const size = argI(args, first + 2 * d), stride = argI(args, first + 2 * d + 1);
    off += (rem % size) * stride;
    rem /= size;
  }
  return off;
}

export function reduce_sum(tid: i32, nth: i32, args: usize): void {
  const x = argP(args, L.reduce_sum.x), out = argP(args, L.reduce_sum.out);
  const nOut = argI(args, L.reduce_sum.n_out), nRed = argI(args, L.reduce_sum.n_red), scale = argF(args, L.reduce_sum.scale);
  const inner = argI(args, REDUCED + 2 * (RANK - 1)), innerStride = argI(args, REDUCED + 2 * (RANK - 1) + 1);
  const rows = inner > 0 ? nRed / inner : 0;
  const b = shareBegin(tid, nth, nOut, 1), e = shareEnd(tid, nth, nOut, 1);
  for (let j = b; j < e; j++) {
    const base = offsetOf(args, KEPT, j, RANK - 1);
    let acc4 = f32x4.splat(0);
    let acc: f32 = 0;
    for (let r = 0; r < rows; r++) {
      const row = at(x, base + offsetOf(args, REDUCED, r, RANK - 2));
      let k = 0;
      if (innerStride == 1) {
        for (; k + 4 <= inner; k += 4) acc4 = f32x4.add(acc4, v128.load(at(row, k)));
      }
      for (; k < inner; k++) acc += load<f32>(at(row, k * innerStride));
    }
    const total = acc + (f32x4.extract_lane(acc4, 0) + f32x4.extract_lane(acc4, 1)) +
      (f32x4.extract_lane(acc4, 2) + f32x4.extract_lane(acc4, 3));
    store<f32>(at(out, j), total * scale);
  }
}
