// Winograd's minimal filtering for 3x3 convolutions at stride 1 (Lavin and Gray, "Fast Algorithms for
// Convolutional Neural Networks"): F(m x m, 3 x 3) with m = 2 or 4 and tiles of a = m + 2. The filters become
// U = G g G^T, the input's overlapping a x a tiles V = B^T d B, the a^2 products M[xi] = U[xi] V[xi] run on
// the GEMM (src/kernels/winograd.ts), and each m x m output tile is A^T M A, with the convolution's epilogue
// (scale, bias, residual, ReLU) applied as it is written.
import { argI, argP, at, SCRATCH, transpose4 } from "./common";
import * as L from "./layout";

// The transforms as 1-D maps applied to columns, then rows: B^T (a x a), G (a x 3) and A^T (m x a) written
// out (Lavin and Gray's matrices for the points 0, -1, 1 and 0, +-1, +-2) without their zero terms, in four
// SIMD lanes: four filters or four adjacent tiles at once (a group at an edge leaves its last lanes unused).
// Each reads its vectors `ss` bytes apart from `s` and writes its results `ds` bytes apart from `d`.

/** d = B^T s (a values in, a out). */
@inline function inputMap(m: i32, s: usize, ss: usize, d: usize, ds: usize): void {
  const d0 = v128.load(s), d1 = v128.load(s + ss), d2 = v128.load(s + 2 * ss), d3 = v128.load(s + 3 * ss);
  if (m == 2) {
    v128.store(d, f32x4.sub(d0, d2));
    v128.store(d + ds, f32x4.add(d1, d2));
    v128.store(d + 2 * ds, f32x4.sub(d2, d1));
    v128.store(d + 3 * ds, f32x4.sub(d1, d3));
  } else {
    const d4 = v128.load(s + 4 * ss), d5 = v128.load(s + 5 * ss), two = f32x4.splat(2), four = f32x4.splat(4);
    const five = f32x4.splat(5);
    v128.store(d, f32x4.add(f32x4.sub(f32x4.mul(four, d0), f32x4.mul(five, d2)), d4));
    v128.store(d + ds, f32x4.sub(f32x4.add(d4, d3), f32x4.mul(four, f32x4.add(d1, d2))));
    v128.store(d + 2 * ds, f32x4.add(f32x4.sub(d4, d3), f32x4.mul(four, f32x4.sub(d1, d2))));
    v128.store(d + 3 * ds, f32x4.add(f32x4.sub(d4, d2), f32x4.mul(two, f32x4.sub(d3, d1))));
    v128.store(d + 4 * ds, f32x4.sub(f32x4.sub(d4, d2), f32x4.mul(two, f32x4.sub(d3, d1))));
    v128.store(d + 5 * ds, f32x4.add(f32x4.sub(f32x4.mul(four, d1), f32x4.mul(five, d3)), d5));
  }
}

/** d = A^T s (a values in, m out). */
@inline function outputMap(m: i32, s: usize, ss: usize, d: usize, ds: usize): void {
  const m0 = v128.load(s), m1 = v128.load(s + ss), m2 = v128.load(s + 2 * ss), m3 = v128.load(s + 3 * ss);
  if (m == 2) {
    v128.store(d, f32x4.add(f32x4.add(m0, m1), m2));
    v128.store(d + ds, f32x4.sub(f32x4.sub(m1, m2), m3));
  } else {
    const m4 = v128.load(s + 4 * ss), m5 = v128.load(s + 5 * ss);
    const p12 = f32x4.add(m1, m2), n12 = f32x4.sub(m1, m2), p34 = f32x4.add(m3, m4), n34 = f32x4.sub(m3, m4);
    v128.store(d, f32x4.add(f32x4.add(m0, p12), p34));
    v128.store(d + ds, f32x4.add(n12, f32x4.mul(f32x4.splat(2), n34)));
    v128.store(d + 2 * ds, f32x4.add(p12, f32x4.mul(f32x4.splat(4), p34)));
    v128.store(d + 3 * ds, f32x4.add(f32x4.add(n12, f32x4.mul(f32x4.splat(8), n34)), m5));
  }
}

/** d = G s (3 values in, a out). */
@inline function weightMap(m: i32, s: usize, ss: usize, d: usize, ds: usize): void {
  const g0 = v128.load(s), g1 = v128.load(s + ss), g2 = v128.load(s + 2 * ss);
  const sum = f32x4.add(f32x4.add(g0, g1), g2), alt = f32x4.add(f32x4.sub(g0, g1), g2);
  if (m == 2) {
    const half = f32x4.splat(0.5);
    v128.store(d, g0);
    v128.store(d + ds, f32x4.mul(sum, half));
    v128.store(d + 2 * ds, f32x4.mul(alt, half));
    v128.store(d + 3 * ds, g2);
  } else {
    const sixth = f32x4.splat(-1.0 / 6), c24 = f32x4.splat(1.0 / 24), c12 = f32x4.splat(1.0 / 12), c6 = f32x4.splat(1.0 / 6);
    const t0 = f32x4.mul(g0, c24), t1 = f32x4.mul(g1, c12), t2 = f32x4.mul(g2, c6);
    v128.store(d, f32x4.mul(g0, f32x4.splat(0.25)));
    v128.store(d + ds, f32x4.mul(sum, sixth));
    v128.store(d + 2 * ds, f32x4.mul(alt, sixth));
    v128.store(d + 3 * ds, f32x4.add(f32x4.add(t0, t1), t2));
    v128.store(d + 4 * ds, f32x4.add(f32x4.sub(t0, t1), t2));
    v128.store(d + 5 * ds, g2);
  }
}

/**
 * U[xi, r, c] = (G g G^T)[xi] for the filter g = w[r, c] (3 x 3), or with `flip` g = w[c, r] turned by 180
 * degrees: the filters of the input gradient, a convolution of dy with the transposed, flipped weights.
 * Four filters of a row r go at once, one a lane.
 */
export function winograd_weight(tid: i32, nth: i32, args: usize): void {
  const rows = argI(args, L.winograd_weight.rows), cols = argI(args, L.winograd_weight.cols);
  const m = argI(args, L.winograd_weight.m), flip = argI(args, L.winograd_weight.flip) != 0, a = m + 2;
  const w = argP(args, L.winograd_weight.w), u = argP(args, L.winograd_weight.u);
  const scratch = argP(args, L.winograd_weight.SCRATCH_BASE) + <usize>tid * SCRATCH;
  const f4 = scratch, gf4 = f4 + 9 * 16, out4 = gf4 + 18 * 16;
  for (let r = tid; r < rows; r += nth) {
    for (let c = 0; c < cols; c += 4) {
      const lanes = min(4, cols - c);
      for (let j = 0; j < 4; j++) {
        const src = at(w, (flip ? (c + j) * rows + r : r * cols + c + j) * 9);
        for (let i = 0; i < 9; i++) {
          store<f32>(f4 + <usize>(i * 4 + j) * 4, j < lanes ? load<f32>(at(src, flip ? 8 - i : i)) : 0);
        }
      }
      for (let j = 0; j < 3; j++) weightMap(m, f4 + <usize>j * 16, 48, gf4 + <usize>j * 16, 48); // G g: a x 3
      for (let i = 0; i < a; i++) weightMap(m, gf4 + <usize>i * 48, 16, out4 + <usize>(i * a) * 16, 16); // (G g) G^T
      for (let xi = 0; xi < a * a; xi++) storeLanes(at(u, (xi * rows + r) * cols + c), out4 + <usize>xi * 16, lanes);
    }
  }
}

/** The first `lanes` values of the vector at `from` to `to` (all four as one store). */
@inline function storeLanes(to: usize, from: usize, lanes: i32): void {
  if (lanes == 4) v128.store(to, v128.load(from));
  else for (let j = 0; j < lanes; j++) store<f32>(to + <usize>j * 4, load<f32>(from + <usize>j * 4));
}

/**
 * V[xi, ch, p] = (B^T d B)[xi] for each channel ch and tile p = (image, ty, tx), d the a x a patch of x at
 * (ty m - ph, tx m - pw), zeros outside the image.
 */
export function winograd_input(tid: i32, nth: i32, args: usize): void {
  const n = argI(args, L.winograd_input.n), ch = argI(args, L.winograd_input.c);
  const h = argI(args, L.winograd_input.h), w = argI(args, L.winograd_input.w);
  const ph = argI(args, L.winograd_input.ph), pw = argI(args, L.winograd_input.pw);
  const th = argI(args, L.winograd_input.th), tw = argI(args, L.winograd_input.tw);
  const m = argI(args, L.winograd_input.m), a = m + 2;
  const x = argP(args, L.winograd_input.x), v = argP(args, L.winograd_input.v);
  const scratch = argP(args, L.winograd_input.SCRATCH_BASE) + <usize>tid * SCRATCH;
  // Four tiles side by side at once, one a lane: their band of the a rows, 4m + 2 columns (read as `span`),
  // then the lanes' columns by shuffles (tile j's column col is the band's column j m + col).
  const span = m == 2 ? 12 : 20;
  const band = scratch, d4 = band + 6 * 80, t4 = d4 + 36 * 16, out4 = t4 + 36 * 16;
  const tiles = th * tw, p = n * tiles, plane = ch * p;
  for (let unit = tid; unit < n * ch; unit += nth) {
    const img = unit / ch, c = unit % ch;
    const src = at(x, (img * ch + c) * h * w);
    for (let ty = 0; ty < th; ty++) {
      for (let tx = 0; tx < tw; tx += 4) {
        const y0 = ty * m - ph, x0 = tx * m - pw;
        for (let i = 0; i < a; i++) {
          const y = y0 + i, row = band + <usize>i * 80;
          if (y >= 0 && y < h && x0 >= 0 && x0 + span <= w) {
            const from = at(src, y * w + x0);
            for (let q = 0; q < span * 4; q += 16) v128.store(row + <usize>q, v128.load(from + <usize>q));
          } else {
            for (let j = 0; j < span; j++) {
              const xx = x0 + j;
              store<f32>(at(row, j), y >= 0 && y < h && xx >= 0 && xx < w ? load<f32>(at(src, y * w + xx)) : 0);
            }
          }
          const columns = d4 + <usize>(i * a) * 16; // the a columns of patch row i, each in four lanes
          if (m == 2) {
            const r0 = v128.load(row), r1 = v128.load(row, 16), r2 = v128.load(row, 8), r3 = v128.load(row, 24);
            v128.store(columns, v128.shuffle<f32>(r0, r1, 0, 2, 4, 6));
            v128.store(columns, v128.shuffle<f32>(r0, r1, 1, 3, 5, 7), 16);
            v128.store(columns, v128.shuffle<f32>(r2, r3, 0, 2, 4, 6), 32);
            v128.store(columns, v128.shuffle<f32>(r2, r3, 1, 3, 5, 7), 48);
          } else {
            transpose4(columns, 16, v128.load(row), v128.load(row, 16), v128.load(row, 32), v128.load(row, 48));
            transpose4(out4, 16, v128.load(row, 16), v128.load(row, 32), v128.load(row, 48), v128.load(row, 64));
            v128.store(columns, v128.load(out4), 64);
            v128.store(columns, v128.load(out4, 16), 80);
          }
        }
        const stride = <usize>a * 16;
        for (let j = 0; j < a; j++) inputMap(m, d4 + <usize>j * 16, stride, t4 + <usize>j * 16, stride);
        for (let i = 0; i < a; i++) inputMap(m, t4 + <usize>i * stride, 16, out4 + <usize>i * stride, 16);
        const col = c * p + img * tiles + ty * tw + tx, used = min(4, tw - tx);
        for (let xi = 0; xi < a * a; xi++) storeLanes(at(v, xi * plane + col), out4 + <usize>xi * 16, used);
      }
    }
  }
}

/**
 * y[image, o, ty m + i, tx m + j] = epilogue((A^T M A)[i, j]) from M[xi, o, p], inside the output only; the
 * epilogue as the GEMM's: relu(v * scale[o] + bias[o] + residual), each part where its flag is set.
 */
export function winograd_output(tid: i32, nth: i32, args: usize): void {
  const n = argI(args, L.winograd_output.n), oc = argI(args, L.winograd_output.oc);
  const oh = argI(args, L.winograd_output.oh), ow = argI(args, L.winograd_output.ow);
  const th = argI(args, L.winograd_output.th), tw = argI(args, L.winograd_output.tw);
  const m = argI(args, L.winograd_output.m), a = m + 2;
  const hasScale = argI(args, L.winograd_output.has_scale) != 0, hasBias = argI(args, L.winograd_output.has_bias) != 0;
  const hasResidual = argI(args, L.winograd_output.has_residual) != 0, relu = argI(args, L.winograd_output.relu) != 0;
  const mm = argP(args, L.winograd_output.mm), y = argP(args, L.winograd_output.y);
  const scale = argP(args, L.winograd_output.scale), bias = argP(args, L.winograd_output.bias);
  const residual = argP(args, L.winograd_output.residual);
  const scratch = argP(args, L.winograd_output.SCRATCH_BASE) + <usize>tid * SCRATCH;
  const src4 = scratch, t4 = src4 + 36 * 16, out4 = t4 + 36 * 16, rows4 = out4 + 16 * 16;
  const tiles = th * tw, p = n * tiles, plane = oc * p;
  for (let unit = tid; unit < n * oc; unit += nth) {
    const img = unit / oc, o = unit % oc;
    const s = hasScale ? load<f32>(at(scale, o)) : <f32>1, b = hasBias ? load<f32>(at(bias, o)) : <f32>0;
    const base = (img * oc + o) * oh * ow;
    const sv = f32x4.splat(s), bv = f32x4.splat(b), zero = f32x4.splat(0);
    for (let ty = 0; ty < th; ty++) {
      for (let tx = 0; tx < tw; tx += 4) {
        // Four tiles side by side at once, one a lane (at the row's end, as many as are left).
        const col = o * p + img * tiles + ty * tw + tx, used = min(4, tw - tx);
        for (let xi = 0; xi < a * a; xi++) {
          const from = at(mm, xi * plane + col), to = src4 + <usize>xi * 16;
          if (used == 4) v128.store(to, v128.load(from));
          else for (let q = 0; q < 4; q++) store<f32>(to + <usize>q * 4, q < used ? load<f32>(at(from, q)) : 0);
        }
        const stride = <usize>a * 16;
        for (let j = 0; j < a; j++) outputMap(m, src4 + <usize>j * 16, stride, t4 + <usize>j * 16, stride);
        for (let i = 0; i < m; i++) outputMap(m, t4 + <usize>i * stride, 16, out4 + <usize>(i * m) * 16, 16);
        if (used == 4 && (tx + 4) * m <= ow && (ty + 1) * m <= oh) {
          // All inside the output: each output row's lanes interleaved back into 4m adjacent values.
          for (let i = 0; i < m; i++) {
            const lanes = out4 + <usize>(i * m) * 16;
            if (m == 2) {
              const v0 = v128.load(lanes), v1 = v128.load(lanes, 16);
              v128.store(rows4, v128.shuffle<f32>(v0, v1, 0, 4, 1, 5));
              v128.store(rows4, v128.shuffle<f32>(v0, v1, 2, 6, 3, 7), 16);
            } else {
              transpose4(rows4, 16, v128.load(lanes), v128.load(lanes, 16), v128.load(lanes, 32), v128.load(lanes, 48));
            }
            const k = base + (ty * m + i) * ow + tx * m;
            for (let q = 0; q < m; q++) {
              let v = f32x4.add(f32x4.mul(v128.load(rows4 + <usize>q * 16), sv), bv);
              if (hasResidual) v = f32x4.add(v, v128.load(at(residual, k + q * 4)));
              if (relu) v = f32x4.max(v, zero);
              v128.store(at(y, k + q * 4), v);
            }
          }
          continue;
        }
        // At the output's edges, value by value: lane q is tile tx + q.
        for (let i = 0; i < m && ty * m + i < oh; i++) {
          for (let q = 0; q < used; q++) {
            for (let j = 0; j < m && (tx + q) * m + j < ow; j++) {
              const k = base + (ty * m + i) * ow + (tx + q) * m + j;
              let v = load<f32>(out4 + <usize>((i * m + j) * 4 + q) * 4) * s + b;
              if (hasResidual) v += load<f32>(at(residual, k));
              if (relu) v = max(v, 0);
              store<f32>(at(y, k), v);
            }
          }
        }
      }
    }
  }
}
