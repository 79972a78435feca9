// The one GEMM of the WebAssembly backend, for matmul and the three convolution passes: C = A B (+ C, + bias),
// blocked as BLIS does. A thread takes (batch item, column block, row group) units; for K in chunks of 256 it
// packs B eight columns at a time, then for each block of up to 64 rows A four rows at a time (or reads them
// from packed_a, which a first dispatch filled once for the call), and a 4 x 8 register tile (eight f32x4
// accumulators, the A value broadcast by load32_splat) runs over the packed panels. How A and B are read
// (a strided matrix, or a convolution's implicit im2col) is the packers' business only, so the
// convolution needs no im2col buffer: its windows are unrolled into the packed panel directly.
import { argI, argP, at, SCRATCH, transpose4 } from "./common";
import * as L from "./layout";

const MB: i32 = 64;
const KB: i32 = 256;
const NB_MAX: i32 = 256;
// Scratch a thread uses: packed A (MB x KB), packed B (KB x NB_MAX), an edge tile, 4 x 8 column slots.
const PACK_A: usize = 0;
const PACK_B: usize = PACK_A + <usize>(MB * KB) * 4;
const EDGE: usize = PACK_B + <usize>(KB * NB_MAX) * 4;
const COLS: usize = EDGE + 32 * 4; // up to COLS + 32 * 4

// How A and B are read (uniforms amode, bmode).
const STRIDED = 0;
/** A of the input gradient: A[ci, (co, r)] = W[co, ci, r] (r the window position). */
const A_WEIGHT_T = 1;
/** A of the weight gradient: A[co, (img, p)] = dY[img, co, p] (p the output pixel). */
const A_DY_IMAGES = 2;
/** B of the forward pass: B[(ci, r), (oh, ow)] = X[ci, oh * sh - ph + kh * dh, ow * sw - pw + kw * dw]. */
const B_IM2COL = 1;
/** B of the input gradient: B[(co, r), (ih, iw)] = dY[co, oh, ow] where the window at (oh, ow) covers (ih, iw) by r. */
const B_DYCOL = 2;
/** B of the weight gradient: B[(img, p), (ci, r)] = X[img, ci, ...] of output pixel p's window. */
const B_IM2COL_T = 3;

// Argument slots, by the names gemm.ts declares (layout.ts).
const A_ = L.gemm.a, B_ = L.gemm.b, C_ = L.gemm.c, BIAS_ = L.gemm.bias;
const M_ = L.gemm.M, N_ = L.gemm.N, K_ = L.gemm.K, RSA = L.gemm.rsA, CSA = L.gemm.csA, RSB = L.gemm.rsB;
const CSB = L.gemm.csB, LDC = L.gemm.ldc, ACC = L.gemm.accumulate, Z1 = L.gemm.z1, Z2 = L.gemm.z2;
const A1 = L.gemm.a1, A2 = L.gemm.a2, B1 = L.gemm.b1, B2 = L.gemm.b2, C1 = L.gemm.c1, C2 = L.gemm.c2;
const AMODE = L.gemm.amode, BMODE = L.gemm.bmode, HAS_BIAS = L.gemm.has_bias, HAS_SCALE = L.gemm.has_scale;
const HAS_RESIDUAL = L.gemm.has_residual, RELU = L.gemm.relu, SCALE_ = L.gemm.scale, RESIDUAL_ = L.gemm.residual;
const GC = L.gemm.g_c, GH = L.gemm.g_h, GW = L.gemm.g_w, GOC = L.gemm.g_oc, GOH = L.gemm.g_oh, GOW = L.gemm.g_ow;
const GKH = L.gemm.g_kh, GKW = L.gemm.g_kw, GSH = L.gemm.g_sh, GSW = L.gemm.g_sw, GPH = L.gemm.g_ph;
const GPW = L.gemm.g_pw, GDH = L.gemm.g_dh, GDW = L.gemm.g_dw, GGROUPS = L.gemm.g_groups;
const SCRATCH_ = L.gemm.SCRATCH_BASE, PACKED_A = L.gemm.packed_a, A_PACKING = L.gemm.a_packing;
// The narrowest column block, set by src/kernels/gemm.ts, which decides from it whether to pre-pack A.
const NB_MIN_ = L.gemm.nb_min;
// Values of a_packing (src/kernels/gemm.ts A_PACKING) other than 0, A packed per unit as it goes.
const PACK_ONLY = 1;
const PREPACKED = 2;

@inline function zero4(): v128 {
  return f32x4.splat(0);
}

/** Packs A[m0.., k0..] (rows x kc) into strips of 4 rows, k-major; rows past the edge are zero. */
function packA(pa: usize, args: usize, a: usize, m0: i32, rows: i32, k0: i32, kc: i32): void {
  const mode = argI(args, AMODE);
  for (let s = 0; s < rows; s += 4) {
    const strip = pa + <usize>(s * kc) * 4;
    if (mode == STRIDED && argI(args, CSA) == 1 && s + 4 <= rows) {
      packRows4(strip, at(a, (m0 + s) * argI(args, RSA) + k0), <usize>argI(args, RSA) * 4, kc);
      continue;
    }
    for (let r = 0; r < 4; r++) {
      const dst = strip + <usize>r * 4;
      const m = m0 + s + r;
      if (s + r >= rows) {
        for (let k = 0; k < kc; k++) store<f32>(dst + <usize>k * 16, 0);
      } else if (mode == STRIDED) {
        const csA = argI(args, CSA);
        let src = at(a, m * argI(args, RSA) + k0 * csA);
        const step = <usize>csA * 4;
        for (let k = 0; k < kc; k++) {
          store<f32>(dst + <usize>k * 16, load<f32>(src));
          src += step;
        }
      } else if (mode == A_WEIGHT_T) {
        const khw = argI(args, GKH) * argI(args, GKW), cgkhw = (argI(args, GC) / argI(args, GGROUPS)) * khw;
        let co = k0 / khw, rr = k0 % khw;
        for (let k = 0; k < kc; k++) {
          store<f32>(dst + <usize>k * 16, load<f32>(at(a, co * cgkhw + m * khw + rr)));
          if (++rr == khw) (rr = 0, co++);
        }
      } else {
        const p = argI(args, GOH) * argI(args, GOW), ocp = argI(args, GOC) * p;
        let img = k0 / p, px = k0 % p;
        for (let k = 0; k < kc; k++) {
          store<f32>(dst + <usize>k * 16, load<f32>(at(a, img * ocp + m * p + px)));
          if (++px == p) (px = 0, img++);
        }
      }
    }
  }
}

/** Four rows of a row-major A (rows `ld` bytes apart) into one strip: four columns at a time, transposed. */
@inline function packRows4(strip: usize, src: usize, ld: usize, kc: i32): void {
  let k = 0;
  for (; k + 4 <= kc; k += 4) {
    const p = src + <usize>k * 4;
    const r0 = v128.load(p), r1 = v128.load(p + ld), r2 = v128.load(p + 2 * ld), r3 = v128.load(p + 3 * ld);
    transpose4(strip + <usize>k * 16, 16, r0, r1, r2, r3);
  }
  for (; k < kc; k++) {
    for (let r = 0; r < 4; r++) store<f32>(strip + <usize>(k * 4 + r) * 4, load<f32>(src + <usize>r * ld + <usize>k * 4));
  }
}

/** Packs B[k0.., n0..] (kc x cols) into panels of 8 columns, k-major; columns past the edge are zero. */
function packB(pb: usize, cols_: usize, args: usize, b: usize, k0: i32, kc: i32, n0: i32, cols: i32): void {
  const mode = argI(args, BMODE);
  for (let p = 0; p < cols; p += 8) {
    const panel = pb + <usize>(p * kc) * 4;
    const width = min(8, cols - p);
    if (mode == STRIDED) packStrided(panel, args, b, k0, kc, n0 + p, width);
    else if (mode == B_IM2COL_T) packIm2colT(panel, cols_, args, b, k0, kc, n0 + p, width);
    else packWindows(panel, cols_, args, b, k0, kc, n0 + p, width, mode == B_DYCOL);
  }
}

@inline function packStrided(panel: usize, args: usize, b: usize, k0: i32, kc: i32, c0: i32, width: i32): void {
  const rsB = argI(args, RSB), csB = argI(args, CSB);
  if (csB == 1 && width == 8) {
    for (let k = 0; k < kc; k++) {
      const src = at(b, (k0 + k) * rsB + c0);
      v128.store(panel + <usize>k * 32, v128.load(src));
      v128.store(panel + <usize>k * 32, v128.load(src, 16), 16);
    }
    return;
  }
  if (rsB == 1) {
    // B transposed (a Linear layer's weight): each column runs along k, so read four k of eight columns and
    // store them as four rows of the panel, instead of eight loads a row far apart.
    const col = at(b, k0 + c0 * csB), ld = <usize>csB * 4;
    let k = 0;
    if (width == 8) {
      for (; k + 4 <= kc; k += 4) {
        const p = col + <usize>k * 4, dst = panel + <usize>k * 32;
        transpose4(dst, 32, v128.load(p), v128.load(p + ld), v128.load(p + 2 * ld), v128.load(p + 3 * ld));
        const q = p + 4 * ld;
        transpose4(dst + 16, 32, v128.load(q), v128.load(q + ld), v128.load(q + 2 * ld), v128.load(q + 3 * ld));
      }
    }
    for (; k < kc; k++) {
      for (let c = 0; c < 8; c++) store<f32>(panel + <usize>(k * 8 + c) * 4, c < width ? load<f32>(col + <usize>c * ld + <usize>k * 4) : 0);
    }
    return;
  }
  for (let k = 0; k < kc; k++) {
    const dst = panel + <usize>k * 32;
    for (let c = 0; c < 8; c++) {
      store<f32>(at(dst, c), c < width ? load<f32>(at(b, (k0 + k) * rsB + (c0 + c) * csB)) : 0);
    }
  }
}

/**
 * B of the forward pass (im2col of X) or of the input gradient (the windows of dY that cover each input
 * pixel): rows k = (channel, kh, kw), columns = pixels of one image. Per column, the window origin is
 * found once; per row, one offset. Eight columns in one row with unit stride and no edge are two vector loads.
 */
@inline function packWindows(
  panel: usize, cols_: usize, args: usize, src: usize, k0: i32, kc: i32, c0: i32, width: i32, dy: bool,
): void {
  const kh_ = argI(args, GKH), kw_ = argI(args, GKW), khw = kh_ * kw_;
  const sh = argI(args, GSH), sw = argI(args, GSW), dh = argI(args, GDH), dw = argI(args, GDW);
  // Source maps (sh x sw), destination grid (columns) and their sizes.
  const srcH = dy ? argI(args, GOH) : argI(args, GH), srcW = dy ? argI(args, GOW) : argI(args, GW);
  const dstW = dy ? argI(args, GW) : argI(args, GOW);
  const ph = argI(args, GPH), pw = argI(args, GPW);
  // Column origins: forward ih = oh * sh - ph + kh * dh; gradient th = ih + ph - kh * dh, oh = th / sh.
  for (let c = 0; c < 8; c++) {
    const col = c0 + min(c, width - 1);
    const y = col / dstW, x = col % dstW;
    store<i32>(at(cols_, c), dy ? y + ph : y * sh - ph);
    store<i32>(at(cols_, 8 + c), dy ? x + pw : x * sw - pw);
  }
  const y0 = load<i32>(cols_), x0 = load<i32>(at(cols_, 8));
  // A run of columns in one destination row reads every step-th value of one source row (the forward's step
  // is its stride; the input gradient's runs are for unit strides only): the panel's columns split into such
  // runs (cols_[16 + i] the first column of run i; the last ends at `width`).
  const byRuns = dy ? sw == 1 && sh == 1 : true, step = dy ? 1 : sw;
  let runs = 0;
  if (byRuns) {
    for (let c = 0; c < width; c++) if (c == 0 || load<i32>(at(cols_, c)) != load<i32>(at(cols_, c - 1))) store<i32>(at(cols_, 16 + runs++), c);
    store<i32>(at(cols_, 16 + runs), width);
  }
  const oneRow = width == 8 && runs == 1;
  // A strided input gradient's panel in one row of dX: its window row kh reads dY's row (y0 - kh dh) / sh,
  // which exists for one kh in sh; the others' panel rows are zeros, known before any column is looked at.
  const oneDxRow = dy && !byRuns && load<i32>(at(cols_, width - 1)) == y0;
  const plane = srcH * srcW;
  let ch = k0 / khw, r = k0 % khw;
  for (let k = 0; k < kc; k++) {
    const kh = r / kw_, kw = r % kw_;
    const dst = panel + <usize>k * 32;
    const base = at(src, ch * plane);
    if (oneRow && step <= 2) {
      const y = dy ? y0 - kh * dh : y0 + kh * dh, x = dy ? x0 - kw * dw : x0 + kw * dw;
      if (y >= 0 && y < srcH && x >= 0 && x + 8 * step <= srcW) {
        const row = at(base, y * srcW + x);
        if (step == 1) {
          v128.store(dst, v128.load(row));
          v128.store(dst, v128.load(row, 16), 16);
        } else {
          // every second value of 16: the even lanes of four vectors
          v128.store(dst, v128.shuffle<f32>(v128.load(row), v128.load(row, 16), 0, 2, 4, 6));
          v128.store(dst, v128.shuffle<f32>(v128.load(row, 32), v128.load(row, 48), 0, 2, 4, 6), 16);
        }
        if (++r == khw) (r = 0, ch++);
        continue;
      }
    }
    if (byRuns) {
      packRuns(dst, cols_, base, runs, dy ? -kh * dh : kh * dh, dy ? -kw * dw : kw * dw, step, srcH, srcW);
      if (++r == khw) (r = 0, ch++);
      continue;
    }
    if (oneDxRow) {
      const t = y0 - kh * dh;
      if (t < 0 || t % sh != 0 || t / sh >= srcH) {
        v128.store(dst, zero4());
        v128.store(dst, zero4(), 16);
        if (++r == khw) (r = 0, ch++);
        continue;
      }
    }
    for (let c = 0; c < 8; c++) {
      let v: f32 = 0;
      if (c < width) {
        let y = load<i32>(at(cols_, c)), x = load<i32>(at(cols_, 8 + c));
        if (dy) {
          y -= kh * dh;
          x -= kw * dw;
          if (y >= 0 && x >= 0 && y % sh == 0 && x % sw == 0) {
            y /= sh;
            x /= sw;
            if (y < srcH && x < srcW) v = load<f32>(at(base, y * srcW + x));
          }
        } else {
          y += kh * dh;
          x += kw * dw;
          if (y >= 0 && y < srcH && x >= 0 && x < srcW) v = load<f32>(at(base, y * srcW + x));
        }
      }
      store<f32>(at(dst, c), v);
    }
    if (++r == khw) (r = 0, ch++);
  }
}

/**
 * One packed row, run by run (see packWindows): a run of columns reads source row y + dy0 from x + dx0 on,
 * every `step`-th value, where (y, x) is its first column's origin; what falls outside the map is zero, and
 * so are the columns past the last run.
 */
@inline function packRuns(
  dst: usize, cols_: usize, base: usize, runs: i32, dy0: i32, dx0: i32, step: i32, srcH: i32, srcW: i32,
): void {
  for (let i = 0; i < runs; i++) {
    const c0 = load<i32>(at(cols_, 16 + i)), c1 = load<i32>(at(cols_, 17 + i));
    const y = load<i32>(at(cols_, c0)) + dy0, x = load<i32>(at(cols_, 8 + c0)) + dx0;
    // Columns c0 + j with 0 <= x + j step < srcW: j from ceil(-x / step), below ceil((srcW - x) / step).
    let lo = c1, hi = c1;
    if (y >= 0 && y < srcH && x < srcW) {
      (lo = min(c1, c0 + (x < 0 ? (step - 1 - x) / step : 0)), hi = min(c1, c0 + (srcW - x + step - 1) / step));
    }
    let c = c0;
    for (; c < lo; c++) store<f32>(at(dst, c), 0);
    const offset = y * srcW + x - c0 * step;
    for (; c < hi; c++) store<f32>(at(dst, c), load<f32>(at(base, offset + c * step)));
    for (; c < c1; c++) store<f32>(at(dst, c), 0);
  }
  for (let c = load<i32>(at(cols_, 16 + runs)); c < 8; c++) store<f32>(at(dst, c), 0);
}

/**
 * Whether every column's window tap (cols_: plane, dy, dx) of four adjacent pixels from (y0, x0) is inside;
 * where they all are, each column's first pixel offset goes to cols_[24 + c] for tapQuad.
 */
@inline function quadInside(cols_: usize, y0: i32, x0: i32, h: i32, w: i32): bool {
  for (let c = 0; c < 8; c++) {
    const y = y0 + load<i32>(at(cols_, 8 + c)), xx = x0 + load<i32>(at(cols_, 16 + c));
    if (y < 0 || y >= h || xx < 0 || xx + 4 > w) return false;
    store<i32>(at(cols_, 24 + c), load<i32>(at(cols_, c)) + y * w + xx);
  }
  return true;
}

/** Column c's four adjacent pixels, at the offset quadInside found. */
@inline function tapQuad(cols_: usize, base: usize, c: i32): v128 {
  return v128.load(at(base, load<i32>(at(cols_, 24 + c))));
}

/** B of the weight gradient: rows k = (image, output pixel), columns n = (ci, kh, kw) of the filter. */
@inline function packIm2colT(panel: usize, cols_: usize, args: usize, x: usize, k0: i32, kc: i32, c0: i32, width: i32): void {
  const kh_ = argI(args, GKH), kw_ = argI(args, GKW), khw = kh_ * kw_;
  const h = argI(args, GH), w = argI(args, GW), chw = argI(args, GC) * h * w;
  const oh_ = argI(args, GOH), ow_ = argI(args, GOW), p = oh_ * ow_;
  const sh = argI(args, GSH), sw = argI(args, GSW), ph = argI(args, GPH), pw = argI(args, GPW);
  const dh = argI(args, GDH), dw = argI(args, GDW);
  // Per column: the channel plane's offset and the window position's (dy, dx).
  for (let c = 0; c < 8; c++) {
    const n = c0 + min(c, width - 1);
    const ci = n / khw, r = n % khw;
    store<i32>(at(cols_, c), ci * h * w);
    store<i32>(at(cols_, 8 + c), (r / kw_) * dh);
    store<i32>(at(cols_, 16 + c), (r % kw_) * dw);
  }
  let img = k0 / p, px = k0 % p;
  let oh = px / ow_, ow = px % ow_;
  // At unit stride four rows k of one output row read four adjacent pixels in each column: where all eight
  // columns' are inside the map, eight vector loads and two 4 x 4 transposes make the four panel rows.
  const quads = width == 8 && sw == 1;
  for (let k = 0; k < kc; k++) {
    const dst = panel + <usize>k * 32;
    const y0 = oh * sh - ph, x0 = ow * sw - pw;
    const base = at(x, img * chw);
    if (quads && k + 4 <= kc && ow + 4 <= ow_ && quadInside(cols_, y0, x0, h, w)) {
      transpose4(dst, 32, tapQuad(cols_, base, 0), tapQuad(cols_, base, 1), tapQuad(cols_, base, 2), tapQuad(cols_, base, 3));
      transpose4(dst + 16, 32, tapQuad(cols_, base, 4), tapQuad(cols_, base, 5), tapQuad(cols_, base, 6), tapQuad(cols_, base, 7));
      k += 3;
      ow += 3;
    } else {
      for (let c = 0; c < 8; c++) {
        const y = y0 + load<i32>(at(cols_, 8 + c)), xx = x0 + load<i32>(at(cols_, 16 + c));
        let v: f32 = 0;
        if (c < width && y >= 0 && y < h && xx >= 0 && xx < w) v = load<f32>(at(base, load<i32>(at(cols_, c)) + y * w + xx));
        store<f32>(at(dst, c), v);
      }
    }
    if (++ow == ow_) {
      ow = 0;
      if (++oh == oh_) (oh = 0, img++);
    }
  }
}

/**
 * c + a b, lane by lane: a multiply then an add, rounded twice, in the exact build (the same bits in every
 * engine); in the fastMath build (compiled with relaxed SIMD) relaxed_madd, which an engine may fuse into one
 * fused multiply-add where the CPU has it (rounded once: faster, and no longer the same bits everywhere).
 */
@inline function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(c, f32x4.mul(a, b));
}

/** The 4 x 8 tile over kc packed rows; C rows ldc apart, accumulated into C when `accumulate`. */
@inline function micro(kc: i32, pa: usize, pb: usize, c: usize, ldc: usize, accumulate: bool): void {
  let c00 = zero4(), c01 = zero4(), c10 = zero4(), c11 = zero4();
  let c20 = zero4(), c21 = zero4(), c30 = zero4(), c31 = zero4();
  for (let k = 0; k < kc; k++) {
    const b0 = v128.load(pb), b1 = v128.load(pb, 16);
    const a0 = v128.load32_splat(pa), a1 = v128.load32_splat(pa, 4);
    const a2 = v128.load32_splat(pa, 8), a3 = v128.load32_splat(pa, 12);
    c00 = madd(a0, b0, c00);
    c01 = madd(a0, b1, c01);
    c10 = madd(a1, b0, c10);
    c11 = madd(a1, b1, c11);
    c20 = madd(a2, b0, c20);
    c21 = madd(a2, b1, c21);
    c30 = madd(a3, b0, c30);
    c31 = madd(a3, b1, c31);
    pa += 16;
    pb += 32;
  }
  const r1 = c + ldc * 4, r2 = r1 + ldc * 4, r3 = r2 + ldc * 4;
  if (accumulate) {
    c00 = f32x4.add(c00, v128.load(c));
    c01 = f32x4.add(c01, v128.load(c, 16));
    c10 = f32x4.add(c10, v128.load(r1));
    c11 = f32x4.add(c11, v128.load(r1, 16));
    c20 = f32x4.add(c20, v128.load(r2));
    c21 = f32x4.add(c21, v128.load(r2, 16));
    c30 = f32x4.add(c30, v128.load(r3));
    c31 = f32x4.add(c31, v128.load(r3, 16));
  }
  v128.store(c, c00);
  v128.store(c, c01, 16);
  v128.store(r1, c10);
  v128.store(r1, c11, 16);
  v128.store(r2, c20);
  v128.store(r2, c21, 16);
  v128.store(r3, c30);
  v128.store(r3, c31, 16);
}

/**
 * What follows the product, on a finished h x w block of C at `dst` (rows ldc apart, first row `row`) while
 * it is still in cache: C = relu(C * scale[row] + bias[row] + residual), each part where asked for; the
 * residual is read at dst's offset from C's base. Eight columns go as two vectors, an edge one by one.
 */
function epilogue(args: usize, z2: i32, M: i32, dst: usize, ldc: i32, row: i32, h: i32, w: i32): void {
  const hasScale = argI(args, HAS_SCALE) != 0, hasBias = argI(args, HAS_BIAS) != 0;
  const hasResidual = argI(args, HAS_RESIDUAL) != 0, relu = argI(args, RELU) != 0;
  const res = <isize>argP(args, RESIDUAL_) - <isize>argP(args, C_);
  const scale = at(argP(args, SCALE_), z2 * M + row), bias = at(argP(args, BIAS_), z2 * M + row);
  for (let r = 0; r < h; r++) {
    const s = hasScale ? load<f32>(at(scale, r)) : <f32>1, b = hasBias ? load<f32>(at(bias, r)) : <f32>0;
    const line = at(dst, r * ldc);
    let q = 0;
    if (w == 8) {
      const sv = f32x4.splat(s), bv = f32x4.splat(b), zero = zero4();
      for (; q < 8; q += 4) {
        const p = at(line, q);
        let v = f32x4.add(f32x4.mul(v128.load(p), sv), bv);
        if (hasResidual) v = f32x4.add(v, v128.load(<usize>(<isize>p + res)));
        if (relu) v = f32x4.max(v, zero);
        v128.store(p, v);
      }
    }
    for (; q < w; q++) {
      const p = at(line, q);
      let v = load<f32>(p) * s + b;
      if (hasResidual) v += load<f32>(<usize>(<isize>p + res));
      if (relu) v = max(v, 0);
      store<f32>(p, v);
    }
  }
}

/**
 * Where A's block (rows m0.., K chunk k0..) of product (z1, z2) lies in packed_a: per distinct A (products
 * share one where its z offset is 0), per K chunk, strips of four rows (M rounded up to 4), kc deep.
 */
@inline function prepackedBlock(args: usize, z1: i32, z2: i32, M: i32, K: i32, m0: i32, k0: i32, kc: i32): usize {
  const d2 = argI(args, A2) != 0 ? argI(args, Z2) : 1;
  const za = (argI(args, A1) != 0 ? z1 : 0) * d2 + (argI(args, A2) != 0 ? z2 : 0);
  const mPad = (M + 3) & ~3;
  return argP(args, PACKED_A) + (<usize>za * <usize>mPad * <usize>K + <usize>(mPad * k0 + m0 * kc)) * 4;
}

/** Packs every distinct A into packed_a (see prepackedBlock), in units of one row block of one K chunk. */
function packWholeA(tid: i32, nth: i32, args: usize): void {
  const M = argI(args, M_), K = argI(args, K_);
  const d1 = argI(args, A1) != 0 ? argI(args, Z1) : 1, d2 = argI(args, A2) != 0 ? argI(args, Z2) : 1;
  const kChunks = (K + KB - 1) / KB, mBlocks = (M + MB - 1) / MB;
  const units = d1 * d2 * kChunks * mBlocks;
  for (let u = tid; u < units; u += nth) {
    const za = u / (kChunks * mBlocks), rest = u % (kChunks * mBlocks);
    const z1 = za / d2, z2 = za % d2;
    const k0 = (rest / mBlocks) * KB, m0 = (rest % mBlocks) * MB;
    const az = at(argP(args, A_), z1 * argI(args, A1) + z2 * argI(args, A2));
    const kc = min(KB, K - k0);
    packA(prepackedBlock(args, z1, z2, M, K, m0, k0, kc), args, az, m0, min(MB, M - m0), k0, kc);
  }
}

/**
 * C[z] (+)= A[z] B[z] for z = (z1, z2) in Z1 x Z2, operand z offsets z1 * (A1, B1, C1) + z2 * (A2, B2, C2);
 * then the epilogue (scale, bias, residual, ReLU: see `epilogue`) on each block of C as its last K chunk ends;
 * scale and bias are per row, by group: [z2 * M + row] (a convolution's per-channel ones).
 */
export function gemm(tid: i32, nth: i32, args: usize): void {
  const packing = argI(args, A_PACKING);
  if (packing == PACK_ONLY) {
    packWholeA(tid, nth, args);
    return;
  }
  const M = argI(args, M_), N = argI(args, N_), K = argI(args, K_);
  const ldc = argI(args, LDC), accumulate = argI(args, ACC) != 0;
  const hasEpilogue = argI(args, HAS_BIAS) + argI(args, HAS_SCALE) + argI(args, HAS_RESIDUAL) + argI(args, RELU) != 0;
  const z1n = argI(args, Z1), z2n = argI(args, Z2), zn = z1n * z2n;
  const scratch = argP(args, SCRATCH_) + <usize>tid * SCRATCH;
  const packedA = scratch + PACK_A, pb = scratch + PACK_B, edge = scratch + EDGE, cols_ = scratch + COLS;
  // A unit is (z, column block, group of rows): B's panel is packed once per K chunk and serves every
  // row block of the group (the window packers are the costly ones). Columns split into blocks of equal
  // width (up to NB_MAX, a multiple of the tile's 8), twice as many while that leaves threads idle and keeps
  // them nb_min wide, then rows into groups. Equal blocks keep the threads' shares equal: 289 columns in
  // blocks of 256 and 33 would give one thread both wide blocks of two images.
  let nBlocks = (N + NB_MAX - 1) / NB_MAX;
  while (zn * nBlocks < 2 * nth && (N + 2 * nBlocks - 1) / (2 * nBlocks) >= argI(args, NB_MIN_)) nBlocks <<= 1;
  const nb = ((N + nBlocks - 1) / nBlocks + 7) & ~7;
  nBlocks = (N + nb - 1) / nb;
  // Row groups of equal height (a multiple of the tile's 4 rows, at least 16 of them).
  const mGroups = min(max(1, (M + 15) / 16), max(1, (2 * nth + zn * nBlocks - 1) / (zn * nBlocks)));
  const groupRows = ((M + mGroups - 1) / mGroups + 3) & ~3;
  const units = zn * nBlocks * mGroups;
  for (let u = tid; u < units; u += nth) {
    const z = u / (nBlocks * mGroups), rest = u % (nBlocks * mGroups);
    const z1 = z / z2n, z2 = z % z2n;
    const n0 = (rest / mGroups) * nb, cols = min(nb, N - n0);
    const mFirst = (rest % mGroups) * groupRows, mEnd = min(M, mFirst + groupRows);
    if (mFirst >= mEnd) continue; // rounding the groups up to 4 rows can leave the last ones empty
    const az = at(argP(args, A_), z1 * argI(args, A1) + z2 * argI(args, A2));
    const bz = at(argP(args, B_), z1 * argI(args, B1) + z2 * argI(args, B2));
    const cz = at(argP(args, C_), z1 * argI(args, C1) + z2 * argI(args, C2) + n0);
    if (K == 0) {
      if (!accumulate) for (let r = mFirst; r < mEnd; r++) memory.fill(at(cz, r * ldc), 0, <usize>cols * 4);
      if (hasEpilogue) epilogue(args, z2, M, at(cz, mFirst * ldc), ldc, mFirst, mEnd - mFirst, cols);
    }
    for (let k0 = 0; k0 < K; k0 += KB) {
      const kc = min(KB, K - k0);
      packB(pb, cols_, args, bz, k0, kc, n0, cols);
      const acc = accumulate || k0 > 0, last = hasEpilogue && k0 + KB >= K;
      for (let m0 = mFirst; m0 < mEnd; m0 += MB) {
        const rows = min(MB, mEnd - m0);
        let pa = packedA;
        if (packing == PREPACKED) pa = prepackedBlock(args, z1, z2, M, K, m0, k0, kc);
        else packA(pa, args, az, m0, rows, k0, kc);
        for (let p = 0; p < cols; p += 8) {
          for (let s = 0; s < rows; s += 4) {
            const pas = pa + <usize>(s * kc) * 4, pbp = pb + <usize>(p * kc) * 4;
            const dst = at(cz, (m0 + s) * ldc + p);
            if (s + 4 <= rows && p + 8 <= cols) {
              micro(kc, pas, pbp, dst, <usize>ldc, acc);
              if (last) epilogue(args, z2, M, dst, ldc, m0 + s, 4, 8);
            } else {
              // Edge tile: into scratch with rows 8 apart, then the part inside C.
              micro(kc, pas, pbp, edge, 8, false);
              const h = min(4, rows - s), w = min(8, cols - p);
              for (let r = 0; r < h; r++) {
                for (let q = 0; q < w; q++) {
                  const to = at(dst, r * ldc + q);
                  const v = load<f32>(at(edge, r * 8 + q));
                  store<f32>(to, acc ? load<f32>(to) + v : v);
                }
              }
              if (last) epilogue(args, z2, M, dst, ldc, m0 + s, h, w);
            }
          }
        }
      }
    }
  }
}
