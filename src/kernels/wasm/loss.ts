// Twins of src/kernels/loss.ts: the per-sample focal loss (cross-entropy is gamma 0) and its gradient, one
// row of logits [B, M] at a time; the per-row arithmetic is the declaration's (generated into ./functions).
// Bindings logits, labels (i32), alpha, then loss forward or gout, dlogits backward; uniforms B, M, gamma.
import { argF, argI, argP, at, shareBegin, shareEnd } from "./common";
import { focal_coeff, focal_loss } from "./functions";
import * as L from "./layout";

/** The row's max; log p_m is then (x_m - max) - logSumExp (see rowLogSumExp). */
@inline function rowMax(row: usize, m: i32): f32 {
  let mx = -f32.MAX_VALUE;
  for (let j = 0; j < m; j++) mx = max(mx, load<f32>(at(row, j)));
  return mx;
}

/**
 * log sum exp(x - max). Kept apart from max rather than folded into max + log s, which would round log s
 * to the ulp of max (a 9% error in log p at logits ~100).
 */
@inline function rowLogSumExp(row: usize, m: i32, mx: f32): f32 {
  let s: f32 = 0;
  for (let j = 0; j < m; j++) s += Mathf.exp(load<f32>(at(row, j)) - mx);
  return Mathf.log(s);
}

export function focal_fwd(tid: i32, nth: i32, args: usize): void {
  const logits = argP(args, L.focal_fwd.logits), labels = argP(args, L.focal_fwd.labels);
  const alpha = argP(args, L.focal_fwd.alpha), loss = argP(args, L.focal_fwd.loss);
  const rows = argI(args, L.focal_fwd.B), m = argI(args, L.focal_fwd.M), gamma = argF(args, L.focal_fwd.gamma);
  const b = shareBegin(tid, nth, rows, 1), e = shareEnd(tid, nth, rows, 1);
  for (let r = b; r < e; r++) {
    const row = at(logits, r * m), y = load<i32>(at(labels, r));
    const mx = rowMax(row, m), lse = rowLogSumExp(row, m, mx);
    const lp = (load<f32>(at(row, y)) - mx) - lse;
    store<f32>(at(loss, r), focal_loss(lp, load<f32>(at(alpha, y)), gamma));
  }
}

// dL/dz_j = coeff (delta_yj - p_j), coeff from the declaration's focal_coeff.
export function focal_bwd(tid: i32, nth: i32, args: usize): void {
  const logits = argP(args, L.focal_bwd.logits), labels = argP(args, L.focal_bwd.labels);
  const alpha = argP(args, L.focal_bwd.alpha), gout = argP(args, L.focal_bwd.gout), dlogits = argP(args, L.focal_bwd.dlogits);
  const rows = argI(args, L.focal_bwd.B), m = argI(args, L.focal_bwd.M), gamma = argF(args, L.focal_bwd.gamma);
  const b = shareBegin(tid, nth, rows, 1), e = shareEnd(tid, nth, rows, 1);
  for (let r = b; r < e; r++) {
    const row = at(logits, r * m), out = at(dlogits, r * m), y = load<i32>(at(labels, r));
    const mx = rowMax(row, m), lse = rowLogSumExp(row, m, mx);
    const lp = (load<f32>(at(row, y)) - mx) - lse;
    const coeff = focal_coeff(lp, load<f32>(at(alpha, y)), gamma, load<f32>(at(gout, r)));
    for (let j = 0; j < m; j++) {
      const p = Mathf.exp((load<f32>(at(row, j)) - mx) - lse);
      store<f32>(at(out, j), coeff * (<f32>(j == y ? 1 : 0) - p));
    }
  }
}
