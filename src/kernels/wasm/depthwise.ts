// Depthwise convolution (one filter per channel: groups = channels = output channels) on the WebAssembly
// backend, directly: the GEMM sees it as one 1 x (kh kw) row per channel, a product too thin to fill its
// 4 x 8 register tile (1-2 GFLOP/s on COVID-Net's and AI-Covid's depthwise layers). Here a thread takes
// whole planes: it copies one into scratch with its zero padding (and, for a stride s, split into s column
// phases so that s neighbouring outputs read neighbouring floats), then sweeps four outputs of a row at a
// time, one f32x4 multiply and add per tap, taps in (kh, kw) order from zero as the GEMM sums them, and
// applies the convolution's epilogue as it stores. The padded plane's rows (hp) and columns per phase (wq) come
// from src/kernels/depthwise.ts, which also checks that they fit in a thread's scratch.
import { argI, argP, at, SCRATCH } from "./common";
import * as L from "./layout";

/**
 * y[img, ch] = epilogue(x[img, ch] convolved with w[ch]) for every plane (img, ch); with `flip` the filter
 * is turned by 180 degrees (the input gradient of a stride-1 depthwise convolution, padded kh - 1 - ph). The
 * epilogue as the GEMM's: relu(v * scale[ch] + bias[ch] + residual), each part where its flag is set.
 */
export function depthwise_conv(tid: i32, nth: i32, args: usize): void {
  const n = argI(args, L.depthwise_conv.n), ch = argI(args, L.depthwise_conv.c), h = argI(args, L.depthwise_conv.h), w = argI(args, L.depthwise_conv.w);
  const oh = argI(args, L.depthwise_conv.oh), ow = argI(args, L.depthwise_conv.ow), kh = argI(args, L.depthwise_conv.kh), kw = argI(args, L.depthwise_conv.kw);
  const sh = argI(args, L.depthwise_conv.sh), sw = argI(args, L.depthwise_conv.sw), ph = argI(args, L.depthwise_conv.ph), pw = argI(args, L.depthwise_conv.pw);
  const dh = argI(args, L.depthwise_conv.dh), dw = argI(args, L.depthwise_conv.dw), flip = argI(args, L.depthwise_conv.flip) != 0;
  const hp = argI(args, L.depthwise_conv.hp), wq = argI(args, L.depthwise_conv.wq);
  const hasScale = argI(args, L.depthwise_conv.has_scale) != 0, hasBias = argI(args, L.depthwise_conv.has_bias) != 0;
  const hasResidual = argI(args, L.depthwise_conv.has_residual) != 0, relu = argI(args, L.depthwise_conv.relu) != 0;
  const x = argP(args, L.depthwise_conv.x), wt = argP(args, L.depthwise_conv.weight), y = argP(args, L.depthwise_conv.y);
  const scale = argP(args, L.depthwise_conv.scale), bias = argP(args, L.depthwise_conv.bias), residual = argP(args, L.depthwise_conv.residual);
  const scratch = argP(args, L.depthwise_conv.SCRATCH_BASE) + <usize>tid * SCRATCH;
  const taps = kh * kw;
  const rowBytes = <usize>(sw * wq) * 4, phaseBytes = <usize>wq * 4;
  // Per tap: its weight, and its read's byte offset from the window's top-left (row ky dh; column kx dw,
  // which for a stride s is phase (kx dw) % s, index (kx dw) / s): worked out once, not per output.
  const filter = scratch, offsets = filter + <usize>taps * 4, plane = offsets + <usize>taps * 4;
  for (let ky = 0; ky < kh; ky++) {
    for (let kx = 0; kx < kw; kx++) {
      const col = kx * dw;
      const offset = <usize>(ky * dh) * rowBytes + <usize>(col % sw) * phaseBytes + (<usize>(col / sw) << 2);
      store<u32>(at(offsets, ky * kw + kx), <u32>offset);
    }
  }
  const zero = f32x4.splat(0);
  for (let unit = tid; unit < n * ch; unit += nth) {
    const c = unit % ch, src = at(x, unit * h * w), dst = at(y, unit * oh * ow);
    for (let t = 0; t < taps; t++) store<f32>(at(filter, t), load<f32>(at(wt, c * taps + (flip ? taps - 1 - t : t))));
    // The padded plane: row r, column q of phase f holds x[r - ph, q sw + f - pw], zero outside the image.
    for (let r = 0; r < hp; r++) {
      const iy = r - ph, row = plane + <usize>r * rowBytes;
      if (iy < 0 || iy >= h) {
        memory.fill(row, 0, rowBytes);
        continue;
      }
      const line = at(src, iy * w);
      if (sw == 1) {
        memory.fill(row, 0, rowBytes);
        const first = max(0, pw), last = min(wq, w + pw);
        if (last > first) memory.copy(at(row, first), at(line, first - pw), <usize>(last - first) * 4);
        continue;
      }
      for (let f = 0; f < sw; f++) {
        const phase = row + <usize>f * phaseBytes;
        for (let q = 0; q < wq; q++) {
          const ix = q * sw + f - pw;
          store<f32>(at(phase, q), ix >= 0 && ix < w ? load<f32>(at(line, ix)) : 0);
        }
      }
    }
    const s = f32x4.splat(hasScale ? load<f32>(at(scale, c)) : <f32>1);
    const b = f32x4.splat(hasBias ? load<f32>(at(bias, c)) : <f32>0);
    const res = hasResidual ? at(residual, unit * oh * ow) : 0;
    for (let oy = 0; oy < oh; oy++) {
      const top = plane + <usize>(oy * sh) * rowBytes;
      for (let ox = 0; ox < ow; ox += 4) {
        let acc = zero;
        const window = top + (<usize>ox << 2);
        for (let t = 0; t < taps; t++) {
          const p = window + <usize>load<u32>(at(offsets, t));
          acc = f32x4.add(acc, f32x4.mul(v128.load(p), v128.load32_splat(at(filter, t))));
        }
        let v = f32x4.add(f32x4.mul(acc, s), b);
        const o = oy * ow + ox;
        if (ox + 4 <= ow) {
          if (hasResidual) v = f32x4.add(v, v128.load(at(res, o)));
          if (relu) v = f32x4.max(v, zero);
          v128.store(at(dst, o), v);
        } else {
          // The row's last, partial group: lane by lane (a vector store would write past the row).
          const out = plane + <usize>hp * rowBytes;
          v128.store(out, v);
          for (let i = 0; i < ow - ox; i++) {
            let e = load<f32>(at(out, i));
            if (hasResidual) e += load<f32>(at(res, o + i));
            if (relu) e = max(e, 0);
            store<f32>(at(dst, o + i), e);
          }
        }
      }
    }
  }
}
