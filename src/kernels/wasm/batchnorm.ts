// Twins of src/kernels/batchnorm.ts. The per-channel reductions (statistics, gradient sums) run one
// channel per thread step: a channel is N contiguous H*W planes, summed in f32x4 lanes plane by plane and
// the plane totals added up, which keeps the sums about as accurate as the WGSL's workgroup tree. The
// elementwise kernels walk each thread's share of the NCHW tensor in runs that stay inside one plane, so
// the channel's constants are loaded once a run and the run goes in f32x4 lanes.
import { argF, argI, argP, at, shareBegin, shareEnd } from "./common";
import * as L from "./layout";

@inline function hsum(v: v128): f32 {
  return (f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1)) +
    (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

/** Sum of the n floats at p; two accumulators so that consecutive adds do not wait on each other. */
@inline function planeSum(p: usize, n: i32): f32 {
  let s0 = f32x4.splat(0), s1 = f32x4.splat(0);
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    s0 = f32x4.add(s0, v128.load(at(p, i)));
    s1 = f32x4.add(s1, v128.load(at(p, i + 4)));
  }
  for (; i + 4 <= n; i += 4) s0 = f32x4.add(s0, v128.load(at(p, i)));
  let s: f32 = 0;
  for (; i < n; i++) s += load<f32>(at(p, i));
  return hsum(f32x4.add(s0, s1)) + s;
}

/** Sum of (v - mean)^2 over the n floats at p. */
@inline function planeSquaredDeviation(p: usize, n: i32, mean: f32): f32 {
  const m = f32x4.splat(mean);
  let s0 = f32x4.splat(0), s1 = f32x4.splat(0);
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const d0 = f32x4.sub(v128.load(at(p, i)), m), d1 = f32x4.sub(v128.load(at(p, i + 4)), m);
    s0 = f32x4.add(s0, f32x4.mul(d0, d0));
    s1 = f32x4.add(s1, f32x4.mul(d1, d1));
  }
  for (; i + 4 <= n; i += 4) {
    const d = f32x4.sub(v128.load(at(p, i)), m);
    s0 = f32x4.add(s0, f32x4.mul(d, d));
  }
  let s: f32 = 0;
  for (; i < n; i++) {
    const d = load<f32>(at(p, i)) - mean;
    s += d * d;
  }
  return hsum(f32x4.add(s0, s1)) + s;
}

/**
 * batchnorm_stats_{plain,track}: bindings x, stats (, rm, rv with track); uniforms n, c, hw, eps, momentum,
 * unbias. stats[c] = mean, stats[C + c] = 1 / sqrt(biased variance + eps), in two passes as the WGSL.
 */
@inline function batchStats(
  track: bool, tid: i32, nth: i32, args: usize, x: usize, stats: usize, rmp: usize, rvp: usize, u: i32,
): void {
  const n = argI(args, u + L.batchnorm_stats.n), channels = argI(args, u + L.batchnorm_stats.c);
  const hw = argI(args, u + L.batchnorm_stats.hw), eps = argF(args, u + L.batchnorm_stats.eps);
  const momentum = argF(args, u + L.batchnorm_stats.momentum), unbias = argF(args, u + L.batchnorm_stats.unbias);
  const count = <f32>(n * hw);
  const cb = shareBegin(tid, nth, channels, 1), ce = shareEnd(tid, nth, channels, 1);
  for (let c = cb; c < ce; c++) {
    let sum: f32 = 0;
    for (let i = 0; i < n; i++) sum += planeSum(at(x, (i * channels + c) * hw), hw);
    const mean = sum / count;
    let squares: f32 = 0;
    for (let i = 0; i < n; i++) squares += planeSquaredDeviation(at(x, (i * channels + c) * hw), hw, mean);
    const variance = squares / count;
    store<f32>(at(stats, c), mean);
    store<f32>(at(stats, channels + c), 1 / Mathf.sqrt(variance + eps));
    if (track) {
      const rm = at(rmp, c), rv = at(rvp, c);
      store<f32>(rm, (1 - momentum) * load<f32>(rm) + momentum * mean);
      store<f32>(rv, (1 - momentum) * load<f32>(rv) + momentum * variance * unbias);
    }
  }
}
export function batchnorm_stats_plain(tid: i32, nth: i32, args: usize): void {
  batchStats(
    false, tid, nth, args, argP(args, L.batchnorm_stats_plain.x), argP(args, L.batchnorm_stats_plain.stats), 0, 0,
    L.batchnorm_stats_plain.UNIFORMS,
  );
}
export function batchnorm_stats_track(tid: i32, nth: i32, args: usize): void {
  batchStats(
    true, tid, nth, args, argP(args, L.batchnorm_stats_track.x), argP(args, L.batchnorm_stats_track.stats),
    argP(args, L.batchnorm_stats_track.rm), argP(args, L.batchnorm_stats_track.rv), L.batchnorm_stats_track.UNIFORMS,
  );
}

/** batchnorm_running_stats: bindings rm, rv, stats; uniforms c, eps. */
export function batchnorm_running_stats(tid: i32, nth: i32, args: usize): void {
  const rm = argP(args, L.batchnorm_running_stats.rm), rv = argP(args, L.batchnorm_running_stats.rv);
  const stats = argP(args, L.batchnorm_running_stats.stats);
  const channels = argI(args, L.batchnorm_running_stats.c), eps = argF(args, L.batchnorm_running_stats.eps);
  const cb = shareBegin(tid, nth, channels, 1), ce = shareEnd(tid, nth, channels, 1);
  for (let c = cb; c < ce; c++) {
    store<f32>(at(stats, c), load<f32>(at(rm, c)));
    store<f32>(at(stats, channels + c), 1 / Mathf.sqrt(load<f32>(at(rv, c)) + eps));
  }
}

/**
 * batchnorm_grad_sums: bindings g, x, stats, sg, sgx; uniforms n, c, hw. sg[c] = sum(g), sgx[c] =
 * sum(g * xhat); invstd is taken out of the sum (one multiply a channel instead of one an element).
 */
export function batchnorm_grad_sums(tid: i32, nth: i32, args: usize): void {
  const g = argP(args, L.batchnorm_grad_sums.g), x = argP(args, L.batchnorm_grad_sums.x);
  const stats = argP(args, L.batchnorm_grad_sums.stats), sg = argP(args, L.batchnorm_grad_sums.sg);
  const sgx = argP(args, L.batchnorm_grad_sums.sgx), n = argI(args, L.batchnorm_grad_sums.n);
  const channels = argI(args, L.batchnorm_grad_sums.c), hw = argI(args, L.batchnorm_grad_sums.hw);
  const cb = shareBegin(tid, nth, channels, 1), ce = shareEnd(tid, nth, channels, 1);
  for (let c = cb; c < ce; c++) {
    const mean = load<f32>(at(stats, c)), m = f32x4.splat(mean);
    let sumG: f32 = 0, sumGD: f32 = 0;
    for (let i = 0; i < n; i++) {
      const off = (i * channels + c) * hw;
      const gp = at(g, off), xp = at(x, off);
      let vg = f32x4.splat(0), vgd = f32x4.splat(0);
      let j = 0;
      for (; j + 4 <= hw; j += 4) {
        const gj = v128.load(at(gp, j));
        vg = f32x4.add(vg, gj);
        vgd = f32x4.add(vgd, f32x4.mul(gj, f32x4.sub(v128.load(at(xp, j)), m)));
      }
      let pg: f32 = 0, pgd: f32 = 0;
      for (; j < hw; j++) {
        const gj = load<f32>(at(gp, j));
        pg += gj;
        pgd += gj * (load<f32>(at(xp, j)) - mean);
      }
      sumG += hsum(vg) + pg;
      sumGD += hsum(vgd) + pgd;
    }
    store<f32>(at(sg, c), sumG);
    store<f32>(at(sgx, c), sumGD * load<f32>(at(stats, channels + c)));
  }
}

// The elementwise kernels, told apart by a compile-time kind so each export folds to its own loop.
const APPLY = 0, APPLY_AFFINE = 1, DX_RUNNING = 2, DX_RUNNING_AFFINE = 3, DX_BATCH = 4, DX_BATCH_AFFINE = 5;

/** y = (x - mean) * invstd (* w + b) over n values of channel c. */
@inline function applyRun(
  affine: bool, xp: usize, stats: usize, wp: usize, bp: usize, yp: usize, c: i32, channels: i32, off: i32, n: i32,
): void {
  const x = at(xp, off), y = at(yp, off);
  const mean = load<f32>(at(stats, c)), invstd = load<f32>(at(stats, channels + c));
  const w: f32 = affine ? load<f32>(at(wp, c)) : 1;
  const b: f32 = affine ? load<f32>(at(bp, c)) : 0;
  const vm = f32x4.splat(mean), vs = f32x4.splat(invstd), vw = f32x4.splat(w), vb = f32x4.splat(b);
  let j = 0;
  for (; j + 4 <= n; j += 4) {
    const xhat = f32x4.mul(f32x4.sub(v128.load(at(x, j)), vm), vs);
    v128.store(at(y, j), affine ? f32x4.add(f32x4.mul(xhat, vw), vb) : xhat);
  }
  for (; j < n; j++) {
    const xhat = (load<f32>(at(x, j)) - mean) * invstd;
    store<f32>(at(y, j), affine ? xhat * w + b : xhat);
  }
}

/**
 * dx over n values of channel c (sg, sgx with batch statistics, w with affine).
 * Batch: dx = scale (g - sg / M - xhat sgx / M); running: dx = scale g; scale = invstd (* w).
 */
@inline function dxRun(
  kind: i32, gp: usize, xp: usize, stats: usize, sg: usize, sgx: usize, wp: usize, dxp: usize,
  c: i32, channels: i32, off: i32, n: i32, count: f32,
): void {
  const batch = kind == DX_BATCH || kind == DX_BATCH_AFFINE;
  const affine = kind == DX_RUNNING_AFFINE || kind == DX_BATCH_AFFINE;
  const g = at(gp, off), x = at(xp, off);
  const dx = at(dxp, off);
  const invstd = load<f32>(at(stats, channels + c));
  const scale = affine ? invstd * load<f32>(at(wp, c)) : invstd;
  const vscale = f32x4.splat(scale);
  let j = 0;
  if (batch) {
    const mean = load<f32>(at(stats, c));
    const gMean = load<f32>(at(sg, c)) / count;
    const xhatWeight = load<f32>(at(sgx, c)) / count;
    const vm = f32x4.splat(mean), vs = f32x4.splat(invstd);
    const vgm = f32x4.splat(gMean), vxw = f32x4.splat(xhatWeight);
    for (; j + 4 <= n; j += 4) {
      const xhat = f32x4.mul(f32x4.sub(v128.load(at(x, j)), vm), vs);
      const centred = f32x4.sub(f32x4.sub(v128.load(at(g, j)), vgm), f32x4.mul(xhat, vxw));
      v128.store(at(dx, j), f32x4.mul(vscale, centred));
    }
    for (; j < n; j++) {
      const xhat = (load<f32>(at(x, j)) - mean) * invstd;
      store<f32>(at(dx, j), scale * (load<f32>(at(g, j)) - gMean - xhat * xhatWeight));
    }
  } else {
    for (; j + 4 <= n; j += 4) v128.store(at(dx, j), f32x4.mul(vscale, v128.load(at(g, j))));
    for (; j < n; j++) store<f32>(at(dx, j), scale * load<f32>(at(g, j)));
  }
}

/**
 * The elementwise kernels' walk, runs ending at plane boundaries: uniforms total, c, hw, count from slot u
 * (L.batchnorm_channels: their offsets); the bindings a kernel lacks are 0.
 */
@inline function channelRuns(
  kind: i32, tid: i32, nth: i32, args: usize, u: i32,
  x: usize, g: usize, stats: usize, sg: usize, sgx: usize, w: usize, b: usize, out: usize,
): void {
  const total = argI(args, u + L.batchnorm_channels.total), channels = argI(args, u + L.batchnorm_channels.c);
  const hw = argI(args, u + L.batchnorm_channels.hw), count = argF(args, u + L.batchnorm_channels.count);
  const bt = shareBegin(tid, nth, total, 4), e = shareEnd(tid, nth, total, 4);
  let i = bt;
  while (i < e) {
    const plane = i / hw;
    const end = min(e, (plane + 1) * hw);
    const c = plane % channels;
    if (kind == APPLY || kind == APPLY_AFFINE) {
      applyRun(kind == APPLY_AFFINE, x, stats, w, b, out, c, channels, i, end - i);
    } else dxRun(kind, g, x, stats, sg, sgx, w, out, c, channels, i, end - i, count);
    i = end;
  }
}
export function batchnorm_apply_plain(tid: i32, nth: i32, args: usize): void {
  channelRuns(
    APPLY, tid, nth, args, L.batchnorm_apply_plain.UNIFORMS, argP(args, L.batchnorm_apply_plain.x), 0,
    argP(args, L.batchnorm_apply_plain.stats), 0, 0, 0, 0, argP(args, L.batchnorm_apply_plain.y),
  );
}
export function batchnorm_apply_affine(tid: i32, nth: i32, args: usize): void {
  channelRuns(
    APPLY_AFFINE, tid, nth, args, L.batchnorm_apply_affine.UNIFORMS, argP(args, L.batchnorm_apply_affine.x), 0,
    argP(args, L.batchnorm_apply_affine.stats), 0, 0, argP(args, L.batchnorm_apply_affine.w),
    argP(args, L.batchnorm_apply_affine.b), argP(args, L.batchnorm_apply_affine.y),
  );
}
export function batchnorm_dx_running_plain(tid: i32, nth: i32, args: usize): void {
  channelRuns(
    DX_RUNNING, tid, nth, args, L.batchnorm_dx_running_plain.UNIFORMS, argP(args, L.batchnorm_dx_running_plain.x),
    argP(args, L.batchnorm_dx_running_plain.g), argP(args, L.batchnorm_dx_running_plain.stats), 0, 0, 0, 0,
    argP(args, L.batchnorm_dx_running_plain.dx),
  );
}
export function batchnorm_dx_running_affine(tid: i32, nth: i32, args: usize): void {
  channelRuns(
    DX_RUNNING_AFFINE, tid, nth, args, L.batchnorm_dx_running_affine.UNIFORMS,
    argP(args, L.batchnorm_dx_running_affine.x), argP(args, L.batchnorm_dx_running_affine.g),
    argP(args, L.batchnorm_dx_running_affine.stats), 0, 0, argP(args, L.batchnorm_dx_running_affine.w), 0,
    argP(args, L.batchnorm_dx_running_affine.dx),
  );
}
export function batchnorm_dx_batch_plain(tid: i32, nth: i32, args: usize): void {
  channelRuns(
    DX_BATCH, tid, nth, args, L.batchnorm_dx_batch_plain.UNIFORMS, argP(args, L.batchnorm_dx_batch_plain.x),
    argP(args, L.batchnorm_dx_batch_plain.g), argP(args, L.batchnorm_dx_batch_plain.stats),
    argP(args, L.batchnorm_dx_batch_plain.sg), argP(args, L.batchnorm_dx_batch_plain.sgx), 0, 0,
    argP(args, L.batchnorm_dx_batch_plain.dx),
  );
}
export function batchnorm_dx_batch_affine(tid: i32, nth: i32, args: usize): void {
  channelRuns(
    DX_BATCH_AFFINE, tid, nth, args, L.batchnorm_dx_batch_affine.UNIFORMS, argP(args, L.batchnorm_dx_batch_affine.x),
    argP(args, L.batchnorm_dx_batch_affine.g), argP(args, L.batchnorm_dx_batch_affine.stats),
    argP(args, L.batchnorm_dx_batch_affine.sg), argP(args, L.batchnorm_dx_batch_affine.sgx),
    argP(args, L.batchnorm_dx_batch_affine.w), 0, argP(args, L.batchnorm_dx_batch_affine.dx),
  );
}

/** increment_i32: t[0] += 1 (num_batches_tracked), by one thread. */
export function increment_i32(tid: i32, nth: i32, args: usize): void {
  if (tid != 0) return;
  const t = argP(args, L.increment_i32.t);
  store<i32>(t, load<i32>(t) + 1);
}
