// Twins of src/kernels/pool.ts. Forward kernels share output rows among the threads, each output summing
// or maximising its window in the WGSL's tap order, so the results are the same to the bit; max and avg
// take four neighbouring outputs at a time in f32x4 lanes where their windows lie inside the row. The WGSL
// backward kernels gather, one thread per input element, over the windows that hold it; here each thread
// owns a band of input rows and scatters every output's gradient into the part of its window inside the
// band: O(outputs * window) instead of O(inputs * window) tap tests. An input's contributions still arrive
// in the gather's order (descending output index for max and avg, ascending for adaptive), so the sums
// are bitwise the WGSL's too.
import { argI, argP, at, shareBegin, shareEnd } from "./common";
import * as L from "./layout";

// The pooling kernels' bindings differ, their uniforms do not: `u` below is a kernel's first uniform slot
// (L.<kernel>.UNIFORMS) and L.pool holds each uniform's offset from it.

const MAX = 0, AVG = 1, ADAPTIVE = 2;

/** The first tap a with start + a * step >= 0. */
@inline function firstTap(start: i32, step: i32): i32 {
  return start < 0 ? (step - 1 - start) / step : 0;
}

/** One past the last tap a < k with start + a * step < size (at most 0 when there is none). */
@inline function endTap(start: i32, step: i32, k: i32, size: i32): i32 {
  // Inside windows, the common case, skip the division.
  return start + (k - 1) * step < size ? k : (size - start + step - 1) / step;
}

/** PyTorch's avg-pool divisor of the window starting at (h0, w0), as the WGSL's avg_divisor. */
@inline function avgDivisor(args: usize, u: i32, h0: i32, w0: i32): f32 {
  const divisor = argI(args, u + L.pool.divisor);
  if (divisor != 0) return <f32>divisor;
  const h = argI(args, u + L.pool.h), w = argI(args, u + L.pool.w);
  const h1 = min(h0 + argI(args, u + L.pool.kh), h + argI(args, u + L.pool.ph));
  const w1 = min(w0 + argI(args, u + L.pool.kw), w + argI(args, u + L.pool.pw));
  if (argI(args, u + L.pool.include_pad) != 0) return <f32>((h1 - h0) * (w1 - w0));
  return <f32>((min(h1, h) - max(h0, 0)) * (min(w1, w) - max(w0, 0)));
}

/** Adaptive window start floor(i * nIn / nOut) and end ceil((i + 1) * nIn / nOut). */
@inline function adaptiveStart(i: i32, nIn: i32, nOut: i32): i32 {
  return (i * nIn) / nOut;
}

@inline function adaptiveEnd(i: i32, nIn: i32, nOut: i32): i32 {
  return ((i + 1) * nIn + nOut - 1) / nOut;
}

// ---------------------------------------------------------------------------------------------------------
// Forward: bindings x, y (, idx for max); one output row (plane, oh) at a time.

/** Four values `stride` apart from p, as lanes (the taps of four neighbouring outputs). */
@inline function gather4(p: usize, stride: i32): v128 {
  if (stride == 1) return v128.load(p);
  // Lanes 0, 2 of p[0..4) and 1, 3 of p[3..7): no read past the last value used.
  if (stride == 2) return v128.shuffle<f32>(v128.load(p), v128.load(at(p, 3)), 0, 2, 5, 7);
  let v = f32x4.splat(load<f32>(p));
  v = f32x4.replace_lane(v, 1, load<f32>(at(p, stride)));
  v = f32x4.replace_lane(v, 2, load<f32>(at(p, 2 * stride)));
  return f32x4.replace_lane(v, 3, load<f32>(at(p, 3 * stride)));
}

/**
 * Outputs whose windows lie inside the row's width go four at a time in lanes, with masks instead of the
 * scalar loop's data-dependent branch, which random inputs mispredict about half the time.
 */
@inline function maxRow(args: usize, u: i32, xp: usize, y: usize, idx: usize, oh: i32): void {
  const h = argI(args, u + L.pool.h), w = argI(args, u + L.pool.w), ow = argI(args, u + L.pool.ow);
  const kw = argI(args, u + L.pool.kw), sw = argI(args, u + L.pool.sw), pw = argI(args, u + L.pool.pw), dh = argI(args, u + L.pool.dh);
  const dw = argI(args, u + L.pool.dw);
  const h0 = oh * argI(args, u + L.pool.sh) - argI(args, u + L.pool.ph);
  const a0 = firstTap(h0, dh), a1 = endTap(h0, dh, argI(args, u + L.pool.kh), h);
  const lanes = i32x4(0, sw, 2 * sw, 3 * sw), none = i32x4.splat(-1);
  let j = 0;
  while (j < ow) {
    const w0 = j * sw - pw;
    if (j + 4 <= ow && w0 >= 0 && w0 + 3 * sw + (kw - 1) * dw < w) {
      let best = f32x4.splat(-Infinity), arg = none;
      for (let a = a0; a < a1; a++) {
        const row = (h0 + a * dh) * w + w0;
        for (let b = 0; b < kw; b++) {
          const k = row + b * dw;
          const v = gather4(at(xp, k), sw);
          const take = v128.or(v128.or(i32x4.eq(arg, none), f32x4.gt(v, best)), f32x4.ne(v, v));
          best = v128.bitselect(v, best, take);
          arg = v128.bitselect(i32x4.add(i32x4.splat(k), lanes), arg, take);
        }
      }
      v128.store(at(y, j), best);
      v128.store(at(idx, j), arg);
      j += 4;
      continue;
    }
    const b0 = firstTap(w0, dw), b1 = endTap(w0, dw, kw, w);
    let best = -Infinity as f32;
    let arg = -1;
    for (let a = a0; a < a1; a++) {
      const row = (h0 + a * dh) * w + w0;
      for (let b = b0; b < b1; b++) {
        const k = row + b * dw;
        const v = load<f32>(at(xp, k));
        // The first valid tap, then any larger value or a NaN (which max propagates, as PyTorch).
        if (arg < 0 || v > best || v != v) {
          best = v;
          arg = k;
        }
      }
    }
    store<f32>(at(y, j), best);
    store<i32>(at(idx, j), arg);
    j++;
  }
}

@inline function avgRow(args: usize, u: i32, xp: usize, y: usize, oh: i32): void {
  const h = argI(args, u + L.pool.h), w = argI(args, u + L.pool.w), ow = argI(args, u + L.pool.ow);
  const kw = argI(args, u + L.pool.kw), sw = argI(args, u + L.pool.sw), pw = argI(args, u + L.pool.pw);
  const h0 = oh * argI(args, u + L.pool.sh) - argI(args, u + L.pool.ph);
  const hs = max(h0, 0), he = min(h0 + argI(args, u + L.pool.kh), h);
  let j = 0;
  while (j < ow) {
    const w0 = j * sw - pw;
    // Four outputs whose windows lie inside the row's width: the same taps in lanes, and one divisor (the
    // clipped width is kw for each).
    if (j + 4 <= ow && w0 >= 0 && w0 + 3 * sw + kw <= w) {
      let acc = f32x4.splat(0);
      for (let ih = hs; ih < he; ih++) {
        for (let b = 0; b < kw; b++) acc = f32x4.add(acc, gather4(at(xp, ih * w + w0 + b), sw));
      }
      v128.store(at(y, j), f32x4.div(acc, f32x4.splat(avgDivisor(args, u, h0, w0))));
      j += 4;
      continue;
    }
    const ws = max(w0, 0), we = min(w0 + kw, w);
    let acc: f32 = 0;
    for (let ih = hs; ih < he; ih++) {
      for (let iw = ws; iw < we; iw++) acc += load<f32>(at(xp, ih * w + iw));
    }
    store<f32>(at(y, j), acc / avgDivisor(args, u, h0, w0));
    j++;
  }
}

@inline function adaptiveRow(args: usize, u: i32, xp: usize, y: usize, oh: i32): void {
  const h = argI(args, u + L.pool.h), w = argI(args, u + L.pool.w), ow = argI(args, u + L.pool.ow), nOh = argI(args, u + L.pool.oh);
  const hs = adaptiveStart(oh, h, nOh), he = adaptiveEnd(oh, h, nOh);
  for (let j = 0; j < ow; j++) {
    const ws = adaptiveStart(j, w, ow), we = adaptiveEnd(j, w, ow);
    let acc: f32 = 0;
    for (let ih = hs; ih < he; ih++) {
      for (let iw = ws; iw < we; iw++) acc += load<f32>(at(xp, ih * w + iw));
    }
    store<f32>(at(y, j), acc / <f32>((he - hs) * (we - ws)));
  }
}

@inline function forward(kind: i32, tid: i32, nth: i32, args: usize, x: usize, y: usize, idx: usize, u: i32): void {
  const h = argI(args, u + L.pool.h), w = argI(args, u + L.pool.w), oh = argI(args, u + L.pool.oh), ow = argI(args, u + L.pool.ow);
  const rows = argI(args, u + L.pool.total) / ow;
  const rb = shareBegin(tid, nth, rows, 1), re = shareEnd(tid, nth, rows, 1);
  for (let r = rb; r < re; r++) {
    const xp = at(x, (r / oh) * h * w), out = r * ow;
    if (kind == MAX) maxRow(args, u, xp, at(y, out), at(idx, out), r % oh);
    else if (kind == AVG) avgRow(args, u, xp, at(y, out), r % oh);
    else adaptiveRow(args, u, xp, at(y, out), r % oh);
  }
}
export function pool_max_fwd(tid: i32, nth: i32, args: usize): void {
  forward(MAX, tid, nth, args, argP(args, L.pool_max_fwd.x), argP(args, L.pool_max_fwd.y), argP(args, L.pool_max_fwd.idx), L.pool_max_fwd.UNIFORMS);
}
export function pool_avg_fwd(tid: i32, nth: i32, args: usize): void {
  forward(AVG, tid, nth, args, argP(args, L.pool_avg_fwd.x), argP(args, L.pool_avg_fwd.y), 0, L.pool_avg_fwd.UNIFORMS);
}
export function pool_adaptive_fwd(tid: i32, nth: i32, args: usize): void {
  forward(ADAPTIVE, tid, nth, args, argP(args, L.pool_adaptive_fwd.x), argP(args, L.pool_adaptive_fwd.y), 0, L.pool_adaptive_fwd.UNIFORMS);
}

// ---------------------------------------------------------------------------------------------------------
// Backward: bindings g (, idx for max), dx; each call fills input rows [r0, r1) of one plane of dx.

/** The first output row whose window (k taps `step` apart from oh * s - p) reaches input row r0. */
@inline function firstWindowRow(r0: i32, k: i32, s: i32, p: i32, step: i32): i32 {
  const t = r0 + p - (k - 1) * step;
  return t <= 0 ? 0 : (t + s - 1) / s;
}

/** One past the last output row whose window starts before input row r1. */
@inline function endWindowRow(r1: i32, s: i32, p: i32, oh: i32): i32 {
  return min(oh, (r1 - 1 + p) / s + 1);
}

/** Each output's gradient to its argmax, when that lies in the band; outputs in descending order. */
@inline function maxBand(args: usize, u: i32, gp: usize, ip: usize, dxp: usize, r0: i32, r1: i32): void {
  const w = argI(args, u + L.pool.w), ow = argI(args, u + L.pool.ow);
  const sh = argI(args, u + L.pool.sh), ph = argI(args, u + L.pool.ph);
  const lo = firstWindowRow(r0, argI(args, u + L.pool.kh), sh, ph, argI(args, u + L.pool.dh));
  const hi = endWindowRow(r1, sh, ph, argI(args, u + L.pool.oh));
  const k0 = r0 * w, k1 = r1 * w;
  for (let o = hi * ow - 1; o >= lo * ow; o--) {
    const k = load<i32>(at(ip, o));
    if (k >= k0 && k < k1) store<f32>(at(dxp, k), load<f32>(at(dxp, k)) + load<f32>(at(gp, o)));
  }
}

/**
 * Each output's gradient over its window's input rows in the band; outputs in descending order. The
 * avg-pool window has no dilation (avgPool2d passes 1), as in the forward kernel.
 */
@inline function avgBand(args: usize, u: i32, gp: usize, dxp: usize, r0: i32, r1: i32): void {
  const w = argI(args, u + L.pool.w), ow = argI(args, u + L.pool.ow), kh = argI(args, u + L.pool.kh), kw = argI(args, u + L.pool.kw);
  const sh = argI(args, u + L.pool.sh), sw = argI(args, u + L.pool.sw), ph = argI(args, u + L.pool.ph), pw = argI(args, u + L.pool.pw);
  const lo = firstWindowRow(r0, kh, sh, ph, 1), hi = endWindowRow(r1, sh, ph, argI(args, u + L.pool.oh));
  for (let oh = hi - 1; oh >= lo; oh--) {
    const h0 = oh * sh - ph;
    const hs = max(h0, r0), he = min(h0 + kh, r1);
    for (let j = ow - 1; j >= 0; j--) {
      const w0 = j * sw - pw;
      const ws = max(w0, 0), we = min(w0 + kw, w);
      const v = load<f32>(at(gp, oh * ow + j)) / avgDivisor(args, u, h0, w0);
      for (let ih = hs; ih < he; ih++) {
        const row = at(dxp, ih * w);
        for (let iw = ws; iw < we; iw++) store<f32>(at(row, iw), load<f32>(at(row, iw)) + v);
      }
    }
  }
}

/** As avgBand over the adaptive windows; outputs in ascending order (the WGSL's gather order). */
@inline function adaptiveBand(args: usize, u: i32, gp: usize, dxp: usize, r0: i32, r1: i32): void {
  const h = argI(args, u + L.pool.h), w = argI(args, u + L.pool.w), oh = argI(args, u + L.pool.oh), ow = argI(args, u + L.pool.ow);
  const lo = adaptiveStart(r0, oh, h), hi = min(adaptiveEnd(r1 - 1, oh, h), oh);
  for (let i = lo; i < hi; i++) {
    const rs = adaptiveStart(i, h, oh), re = adaptiveEnd(i, h, oh);
    const hs = max(rs, r0), he = min(re, r1);
    if (hs >= he) continue;
    for (let j = 0; j < ow; j++) {
      const ws = adaptiveStart(j, w, ow), we = adaptiveEnd(j, w, ow);
      const v = load<f32>(at(gp, i * ow + j)) / <f32>((re - rs) * (we - ws));
      for (let ih = hs; ih < he; ih++) {
        const row = at(dxp, ih * w);
        for (let iw = ws; iw < we; iw++) store<f32>(at(row, iw), load<f32>(at(row, iw)) + v);
      }
    }
  }
}

/** Shares the planes' input rows among the threads; a thread's band may span a plane boundary. */
@inline function backward(kind: i32, tid: i32, nth: i32, args: usize, g: usize, idx: usize, dx: usize, u: i32): void {
  const h = argI(args, u + L.pool.h), w = argI(args, u + L.pool.w), outPlane = argI(args, u + L.pool.oh) * argI(args, u + L.pool.ow);
  const rows = argI(args, u + L.pool.total) / w;
  const rb = shareBegin(tid, nth, rows, 1), re = shareEnd(tid, nth, rows, 1);
  let r = rb;
  while (r < re) {
    const plane = r / h, r0 = r % h, r1 = min(h, r0 + re - r);
    const dxp = at(dx, plane * h * w), gp = at(g, plane * outPlane);
    memory.fill(at(dxp, r0 * w), 0, <usize>((r1 - r0) * w) << 2);
    if (kind == MAX) maxBand(args, u, gp, at(idx, plane * outPlane), dxp, r0, r1);
    else if (kind == AVG) avgBand(args, u, gp, dxp, r0, r1);
    else adaptiveBand(args, u, gp, dxp, r0, r1);
    r += r1 - r0;
  }
}
export function pool_max_bwd(tid: i32, nth: i32, args: usize): void {
  backward(MAX, tid, nth, args, argP(args, L.pool_max_bwd.g), argP(args, L.pool_max_bwd.idx), argP(args, L.pool_max_bwd.dx), L.pool_max_bwd.UNIFORMS);
}
export function pool_avg_bwd(tid: i32, nth: i32, args: usize): void {
  backward(AVG, tid, nth, args, argP(args, L.pool_avg_bwd.g), 0, argP(args, L.pool_avg_bwd.dx), L.pool_avg_bwd.UNIFORMS);
}
export function pool_adaptive_bwd(tid: i32, nth: i32, args: usize): void {
  backward(ADAPTIVE, tid, nth, args, argP(args, L.pool_adaptive_bwd.g), 0, argP(args, L.pool_adaptive_bwd.dx), L.pool_adaptive_bwd.UNIFORMS);
}
