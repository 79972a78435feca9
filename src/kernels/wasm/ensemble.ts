// Twins of src/kernels/ensemble.ts: the batched outer product of the learner probabilities f [B, K] and the
// weighted sum of the learners' probabilities (w [B, N], P [B, N, M]), each with its gradient. Threads
// take contiguous ranges of the WGSL kernel's output index; the work inside a row goes in f32x4 lanes.
import { argI, argP, at, shareBegin, shareEnd } from "./common";
import * as L from "./layout";

/** out[j] = s * f[j] for j in [0, len): the row i of a sample's outer product is f_i times its f. */
@inline function scaledRow(out: usize, f: usize, s: f32, len: i32): void {
  const vs = f32x4.splat(s);
  let j = 0;
  for (; j + 4 <= len; j += 4) v128.store(at(out, j), f32x4.mul(vs, v128.load(at(f, j))));
  for (; j < len; j++) store<f32>(at(out, j), s * load<f32>(at(f, j)));
}

/** outer_fwd: out[b, i*K + j] = f[b, i] * f[b, j]; bindings f, out; uniforms n (= B*K*K), K. */
export function outer_fwd(tid: i32, nth: i32, args: usize): void {
  const f = argP(args, L.outer_fwd.f), out = argP(args, L.outer_fwd.out), n = argI(args, L.outer_fwd.n), k = argI(args, L.outer_fwd.K);
  const begin = shareBegin(tid, nth, n, 4), end = shareEnd(tid, nth, n, 4);
  // Runs of one output row (b, i), clipped to this thread's range.
  let e = begin;
  while (e < end) {
    const row = e / k, j = e % k, len = min(end - e, k - j);
    const fb = at(f, (row / k) * k);
    scaledRow(at(out, e), at(fb, j), load<f32>(at(fb, row % k)), len);
    e += len;
  }
}

// outer_bwd: df[b, i] = sum_j (G[b, i, j] + G[b, j, i]) f[b, j]; bindings g, f, df; uniforms n (= B*K), K.
export function outer_bwd(tid: i32, nth: i32, args: usize): void {
  const g = argP(args, L.outer_bwd.g), f = argP(args, L.outer_bwd.f), df = argP(args, L.outer_bwd.df);
  const n = argI(args, L.outer_bwd.n), k = argI(args, L.outer_bwd.K);
  const begin = shareBegin(tid, nth, n, 1), end = shareEnd(tid, nth, n, 1);
  for (let e = begin; e < end; e++) {
    const b = e / k, i = e % k;
    const gb = at(g, b * k * k), fb = at(f, b * k);
    let acc: f32 = 0;
    for (let j = 0; j < k; j++) {
      acc += (load<f32>(at(gb, i * k + j)) + load<f32>(at(gb, j * k + i))) * load<f32>(at(fb, j));
    }
    store<f32>(at(df, e), acc);
  }
}

// weighted_sum_fwd: out[b, m] = sum_i w[b, i] P[b, i, m]; bindings w, p, out; uniforms n (= B*M), N, M.
export function weighted_sum_fwd(tid: i32, nth: i32, args: usize): void {
  const w = argP(args, L.weighted_sum_fwd.w), p = argP(args, L.weighted_sum_fwd.p), out = argP(args, L.weighted_sum_fwd.out);
  const n = argI(args, L.weighted_sum_fwd.n), nl = argI(args, L.weighted_sum_fwd.N), m = argI(args, L.weighted_sum_fwd.M);
  const begin = shareBegin(tid, nth, n, 4), end = shareEnd(tid, nth, n, 4);
  // Runs of one sample's row, four classes to a lane group; each lane sums over i in the WGSL's order.
  let e = begin;
  while (e < end) {
    const b = e / m, m0 = e % m, len = min(end - e, m - m0);
    const wb = at(w, b * nl), pb = at(p, b * nl * m + m0), ob = at(out, e);
    let c = 0;
    for (; c + 4 <= len; c += 4) {
      let acc = f32x4.splat(0);
      for (let i = 0; i < nl; i++) {
        acc = f32x4.add(acc, f32x4.mul(v128.load32_splat(at(wb, i)), v128.load(at(pb, i * m + c))));
      }
      v128.store(at(ob, c), acc);
    }
    for (; c < len; c++) {
      let acc: f32 = 0;
      for (let i = 0; i < nl; i++) acc += load<f32>(at(wb, i)) * load<f32>(at(pb, i * m + c));
      store<f32>(at(ob, c), acc);
    }
    e += len;
  }
}

// weighted_sum_bwd: dw[b, i] = sum_m G[b, m] P[b, i, m]; dP[b, i, m] = w[b, i] G[b, m]. Bindings g, w, p,
// dw, dp; uniforms n (= B*N), N, M. A thread takes whole (b, i) pairs, so its dP rows are its own.
export function weighted_sum_bwd(tid: i32, nth: i32, args: usize): void {
  const g = argP(args, L.weighted_sum_bwd.g), w = argP(args, L.weighted_sum_bwd.w), p = argP(args, L.weighted_sum_bwd.p);
  const dw = argP(args, L.weighted_sum_bwd.dw), dp = argP(args, L.weighted_sum_bwd.dp);
  const n = argI(args, L.weighted_sum_bwd.n), nl = argI(args, L.weighted_sum_bwd.N), m = argI(args, L.weighted_sum_bwd.M);
  const begin = shareBegin(tid, nth, n, 1), end = shareEnd(tid, nth, n, 1);
  for (let e = begin; e < end; e++) {
    const gb = at(g, (e / nl) * m), pe = at(p, e * m), de = at(dp, e * m);
    const wi = load<f32>(at(w, e));
    const vw = f32x4.splat(wi);
    let acc4 = f32x4.splat(0);
    let c = 0;
    for (; c + 4 <= m; c += 4) {
      const gm = v128.load(at(gb, c));
      acc4 = f32x4.add(acc4, f32x4.mul(gm, v128.load(at(pe, c))));
      v128.store(at(de, c), f32x4.mul(vw, gm));
    }
    let acc: f32 = 0;
    for (; c < m; c++) {
      const gm = load<f32>(at(gb, c));
      acc += gm * load<f32>(at(pe, c));
      store<f32>(at(de, c), wi * gm);
    }
    const total = acc + (f32x4.extract_lane(acc4, 0) + f32x4.extract_lane(acc4, 1)) +
      (f32x4.extract_lane(acc4, 2) + f32x4.extract_lane(acc4, 3));
    store<f32>(at(dw, e), total);
  }
}
