// Twins of src/kernels/softmax.ts: softmax and log-softmax along one dim, forward and backward. Bindings
// (x, y) forward, (g, y, dx) backward; uniforms rows, n, inner. A row is the n elements base + t * inner of
// one (outer, inner) pair; each thread takes whole rows. Rows along the last dim (inner 1) are contiguous
// and go in f32x4 lanes where no exp is needed.
import { argI, argP, at, shareBegin, shareEnd } from "./common";
import * as L from "./layout";

const SOFTMAX = 0, LOG_SOFTMAX = 1;

/** The largest of row x[0], x[stride], ... (n of them). */
@inline function rowMax(x: usize, n: i32, stride: i32): f32 {
  let t = 0;
  let mx4 = f32x4.splat(-f32.MAX_VALUE);
  if (stride == 1) {
    for (; t + 4 <= n; t += 4) mx4 = f32x4.max(mx4, v128.load(at(x, t)));
  }
  let mx = max(max(f32x4.extract_lane(mx4, 0), f32x4.extract_lane(mx4, 1)),
    max(f32x4.extract_lane(mx4, 2), f32x4.extract_lane(mx4, 3)));
  for (; t < n; t++) mx = max(mx, load<f32>(at(x, t * stride)));
  return mx;
}

@inline function forward(v: i32, tid: i32, nth: i32, args: usize): void {
  const x = argP(args, L.softmax_rows_fwd.x), y = argP(args, L.softmax_rows_fwd.y);
  const rows = argI(args, L.softmax_rows_fwd.rows), n = argI(args, L.softmax_rows_fwd.n), inner = argI(args, L.softmax_rows_fwd.inner);
  const b = shareBegin(tid, nth, rows, 1), e = shareEnd(tid, nth, rows, 1);
  for (let row = b; row < e; row++) {
    const base = (row / inner) * n * inner + row % inner;
    const xr = at(x, base), yr = at(y, base);
    const mx = rowMax(xr, n, inner);
    let s: f32 = 0;
    if (v == SOFTMAX) {
      // y holds exp(x - max) until the sum is known, so each exp is taken once.
      for (let t = 0; t < n; t++) {
        const ex = Mathf.exp(load<f32>(at(xr, t * inner)) - mx);
        store<f32>(at(yr, t * inner), ex);
        s += ex;
      }
      const inv: f32 = 1 / s;
      let t = 0;
      if (inner == 1) {
        const vinv = f32x4.splat(inv);
        for (; t + 4 <= n; t += 4) v128.store(at(yr, t), f32x4.mul(v128.load(at(yr, t)), vinv));
      }
      for (; t < n; t++) store<f32>(at(yr, t * inner), load<f32>(at(yr, t * inner)) * inv);
    } else {
      for (let t = 0; t < n; t++) s += Mathf.exp(load<f32>(at(xr, t * inner)) - mx);
      // (x - max) - log(s), as the WGSL: x - (max + log(s)) would round log(s) to the ulp of max.
      const ls = Mathf.log(s);
      let t = 0;
      if (inner == 1) {
        const vmx = f32x4.splat(mx), vls = f32x4.splat(ls);
        for (; t + 4 <= n; t += 4) {
          v128.store(at(yr, t), f32x4.sub(f32x4.sub(v128.load(at(xr, t)), vmx), vls));
        }
      }
      for (; t < n; t++) store<f32>(at(yr, t * inner), (load<f32>(at(xr, t * inner)) - mx) - ls);
    }
  }
}
export function softmax_fwd(tid: i32, nth: i32, args: usize): void { forward(SOFTMAX, tid, nth, args); }
export function log_softmax_fwd(tid: i32, nth: i32, args: usize): void {
  forward(LOG_SOFTMAX, tid, nth, args);
}

// softmax: dx = y (g - sum(g y)); log_softmax: dx = g - exp(y) sum(g).
@inline function backward(v: i32, tid: i32, nth: i32, args: usize): void {
  const g = argP(args, L.softmax_rows_bwd.g), y = argP(args, L.softmax_rows_bwd.y), dx = argP(args, L.softmax_rows_bwd.dx);
  const rows = argI(args, L.softmax_rows_bwd.rows), n = argI(args, L.softmax_rows_bwd.n), inner = argI(args, L.softmax_rows_bwd.inner);
  const b = shareBegin(tid, nth, rows, 1), e = shareEnd(tid, nth, rows, 1);
  for (let row = b; row < e; row++) {
    const base = (row / inner) * n * inner + row % inner;
    const gr = at(g, base), yr = at(y, base), dr = at(dx, base);
    let s: f32 = 0;
    for (let t = 0; t < n; t++) {
      const o = t * inner;
      s += v == SOFTMAX ? load<f32>(at(gr, o)) * load<f32>(at(yr, o)) : load<f32>(at(gr, o));
    }
    if (v == SOFTMAX) {
      let t = 0;
      if (inner == 1) {
        const vs = f32x4.splat(s);
        for (; t + 4 <= n; t += 4) {
          v128.store(at(dr, t), f32x4.mul(v128.load(at(yr, t)), f32x4.sub(v128.load(at(gr, t)), vs)));
        }
      }
      for (; t < n; t++) {
        const o = t * inner;
        store<f32>(at(dr, o), load<f32>(at(yr, o)) * (load<f32>(at(gr, o)) - s));
      }
    } else {
      for (let t = 0; t < n; t++) {
        const o = t * inner;
        store<f32>(at(dr, o), load<f32>(at(gr, o)) - Mathf.exp(load<f32>(at(yr, o))) * s);
      }
    }
  }
}
export function softmax_bwd(tid: i32, nth: i32, args: usize): void { backward(SOFTMAX, tid, nth, args); }
export function log_softmax_bwd(tid: i32, nth: i32, args: usize): void {
  backward(LOG_SOFTMAX, tid, nth, args);
}
