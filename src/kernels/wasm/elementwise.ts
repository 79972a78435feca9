// Twins of src/kernels/elementwise.ts (and reduce.ts's expand): the schedules of binary ops with NumPy
// broadcasting and of unary maps with their gradients. The arithmetic itself is generated into ./maps (from
// src/kernels/maps.ts, as the WGSL is) together with the exports, one per WGSL kernel. Broadcast indexing
// walks the output in runs of its innermost dim, so the per-element work is a load or two and the map, in
// f32x4 lanes where the inner strides allow and the map has a lane form.
import { argF, argI, argP, at, SCRATCH, shareBegin, shareEnd } from "./common";
import * as L from "./layout";
import {
  BINARY_SCALE,
  binaryMap,
  binaryMapHasLanes,
  binaryMapLanes,
  unaryGradMap,
  unaryGradMapHasLanes,
  unaryGradMapLanes,
  unaryMap,
  unaryMapHasLanes,
  unaryMapLanes,
} from "./maps";

const RANK = 6;

/** out[i] = op(a[i], b[i]) over n contiguous elements, b read with stride ib (0 or 1), a with ia. */
@inline function run(op: i32, a: usize, ia: i32, b: usize, ib: i32, out: usize, n: i32, s: f32): void {
  const vs = f32x4.splat(s);
  let j = 0;
  if (binaryMapHasLanes(op)) {
    if (ia == 1 && ib == 1) {
      for (; j + 4 <= n; j += 4) {
        v128.store(at(out, j), binaryMapLanes(op, v128.load(at(a, j)), v128.load(at(b, j)), vs));
      }
    } else if (ia == 1 && ib == 0) {
      const y = v128.load32_splat(b);
      for (; j + 4 <= n; j += 4) v128.store(at(out, j), binaryMapLanes(op, v128.load(at(a, j)), y, vs));
    } else if (ia == 0 && ib == 1) {
      const x = v128.load32_splat(a);
      for (; j + 4 <= n; j += 4) v128.store(at(out, j), binaryMapLanes(op, x, v128.load(at(b, j)), vs));
    }
  }
  for (; j < n; j++) store<f32>(at(out, j), binaryMap(op, load<f32>(at(a, j * ia)), load<f32>(at(b, j * ib)), s));
}

/**
 * The broadcast walk: shape at slots [shape, +6), a's strides at [aStr, +6), b's at [bStr, +6) (bStr < 0:
 * no b, op SCALE). Coordinates live in the thread's scratch.
 */
@inline function broadcast(
  tid: i32, nth: i32, args: usize, a: usize, b: usize, out: usize, n: i32,
  shape: i32, aStr: i32, bStr: i32, op: i32, s: f32, scratchSlot: i32,
): void {
  const begin = shareBegin(tid, nth, n, 4), end = shareEnd(tid, nth, n, 4);
  if (begin >= end) return;
  const c = argP(args, scratchSlot) + <usize>tid * SCRATCH;
  let rem = begin, oa = 0, ob = 0;
  for (let d = RANK - 1; d >= 0; d--) {
    const size = argI(args, shape + d);
    const cd = rem % size;
    rem /= size;
    store<i32>(at(c, d), cd);
    oa += cd * argI(args, aStr + d);
    if (bStr >= 0) ob += cd * argI(args, bStr + d);
  }
  const inner = argI(args, shape + RANK - 1);
  const ia = argI(args, aStr + RANK - 1), ib = bStr >= 0 ? argI(args, bStr + RANK - 1) : 0;
  let i = begin;
  while (i < end) {
    const c5 = load<i32>(at(c, RANK - 1));
    const len = min(end - i, inner - c5);
    run(op, at(a, oa), ia, bStr >= 0 ? at(b, ob) : a, ib, at(out, i), len, s);
    i += len;
    if (i >= end) break;
    // The row is done: back to its start, then carry into the outer dims.
    oa -= c5 * ia;
    ob -= c5 * ib;
    store<i32>(at(c, RANK - 1), 0);
    for (let d = RANK - 2; d >= 0; d--) {
      const cd = load<i32>(at(c, d)) + 1;
      const sa = argI(args, aStr + d), sb = bStr >= 0 ? argI(args, bStr + d) : 0;
      if (cd < argI(args, shape + d)) {
        store<i32>(at(c, d), cd);
        oa += sa;
        ob += sb;
        break;
      }
      store<i32>(at(c, d), 0);
      oa -= (cd - 1) * sa;
      ob -= (cd - 1) * sb;
    }
  }
}

// Binary: bindings a, b, out; uniforms n, s0..s5, at0..at5, bt0..bt5 (L.binary: every binary_* kernel's).
@inline export function binary(op: i32, tid: i32, nth: i32, args: usize): void {
  broadcast(
    tid, nth, args, argP(args, L.binary.a), argP(args, L.binary.b), argP(args, L.binary.out), argI(args, L.binary.n),
    L.binary.s0, L.binary.at0, L.binary.bt0, op, 0, L.binary.SCRATCH_BASE,
  );
}

/** expand (reduce.ts): out[i] = a[broadcast i] * scale; bindings a, out; uniforms n, s0..s5, at0..at5, scale. */
export function expand(tid: i32, nth: i32, args: usize): void {
  broadcast(
    tid, nth, args, argP(args, L.expand.a), 0, argP(args, L.expand.out), argI(args, L.expand.n), L.expand.s0,
    L.expand.at0, -1, BINARY_SCALE, argF(args, L.expand.scale), L.expand.SCRATCH_BASE,
  );
}

// Unary: bindings a, out; uniforms n, alpha (L.unary). Gradient: bindings gy, xs, ys, gx; same uniforms
// (L.unary_grad).
@inline export function unary(op: i32, tid: i32, nth: i32, args: usize): void {
  const a = argP(args, L.unary.a), out = argP(args, L.unary.out), n = argI(args, L.unary.n), alpha = argF(args, L.unary.alpha);
  const b = shareBegin(tid, nth, n, 4), e = shareEnd(tid, nth, n, 4);
  let i = b;
  if (unaryMapHasLanes(op)) {
    const va = f32x4.splat(alpha);
    for (; i + 4 <= e; i += 4) v128.store(at(out, i), unaryMapLanes(op, v128.load(at(a, i)), va));
  }
  for (; i < e; i++) store<f32>(at(out, i), unaryMap(op, load<f32>(at(a, i)), alpha));
}

@inline export function unaryGrad(op: i32, tid: i32, nth: i32, args: usize): void {
  const gy = argP(args, L.unary_grad.gy), xs = argP(args, L.unary_grad.xs), ys = argP(args, L.unary_grad.ys), gx = argP(args, L.unary_grad.gx);
  const n = argI(args, L.unary_grad.n), alpha = argF(args, L.unary_grad.alpha);
  const b = shareBegin(tid, nth, n, 4), e = shareEnd(tid, nth, n, 4);
  let i = b;
  if (unaryGradMapHasLanes(op)) {
    const va = f32x4.splat(alpha);
    for (; i + 4 <= e; i += 4) {
      const g = v128.load(at(gy, i)), x = v128.load(at(xs, i)), y = v128.load(at(ys, i));
      v128.store(at(gx, i), unaryGradMapLanes(op, g, x, y, va));
    }
  }
  for (; i < e; i++) {
    store<f32>(at(gx, i), unaryGradMap(op, load<f32>(at(gy, i)), load<f32>(at(xs, i)), load<f32>(at(ys, i)), alpha));
  }
}
