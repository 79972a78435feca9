// Twins of src/kernels/loss.ts: the per-sample focal loss (cross-entropy is gamma 0) and its gradient, one
// row of logits [B, M] at a time. Bindings logits, labels (i32), alpha, then loss forward or gout, dlogits
// backward; uniforms B, M, gamma.
import { argF, argI, argP, at, shareBegin, shareEnd } from "./common";
import * as L from "./layout";

/** 1 - exp(lp) for lp <= 0, by its series near 0 so that confident rows keep their small 1 - p. */
@inline function oneMinusExp(lp: f32): f32 {
  if (lp > -1e-3) return -lp * (1 + lp * (0.5 + lp / 6));
  return 1 - Mathf.exp(lp);
}

/** x^g for x >= 0, with x^0 = 1 (also at x = 0). */
@inline function powNonneg(x: f32, g: f32): f32 {
  if (g == 0) return 1;
  if (x <= 0) return 0;
  return Mathf.pow(x, g);
}

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
    store<f32>(at(loss, r), -load<f32>(at(alpha, y)) * powNonneg(oneMinusExp(lp), gamma) * lp);
  }
}

// dL/dz_j = -alpha_y [ (1-q)^g - g (1-q)^(g-1) q log q ] (delta_yj - p_j), q = p_y.
export function focal_bwd(tid: i32, nth: i32, args: usize): void {
  const logits = argP(args, L.focal_bwd.logits), labels = argP(args, L.focal_bwd.labels);
  const alpha = argP(args, L.focal_bwd.alpha), gout = argP(args, L.focal_bwd.gout), dlogits = argP(args, L.focal_bwd.dlogits);
  const rows = argI(args, L.focal_bwd.B), m = argI(args, L.focal_bwd.M), gamma = argF(args, L.focal_bwd.gamma);
  const b = shareBegin(tid, nth, rows, 1), e = shareEnd(tid, nth, rows, 1);
  for (let r = b; r < e; r++) {
    const row = at(logits, r * m), out = at(dlogits, r * m), y = load<i32>(at(labels, r));
    const mx = rowMax(row, m), lse = rowLogSumExp(row, m, mx);
    const lp = (load<f32>(at(row, y)) - mx) - lse;
    const q = Mathf.exp(lp);
    const omq = oneMinusExp(lp);
    let t1: f32 = 0;
    if (gamma != 0 && omq > 0) t1 = gamma * Mathf.pow(omq, gamma - 1) * q * lp;
    const coeff = -load<f32>(at(alpha, y)) * (powNonneg(omq, gamma) - t1) * load<f32>(at(gout, r));
    for (let j = 0; j < m; j++) {
      const p = Mathf.exp((load<f32>(at(row, j)) - mx) - lse);
      store<f32>(at(out, j), coeff * (<f32>(j == y ? 1 : 0) - p));
    }
  }
}
