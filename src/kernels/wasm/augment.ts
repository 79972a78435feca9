// Twin of src/kernels/augment.ts (augment_warp): each output pixel of [B, 3, crop, crop] samples its image
// bilinearly at the affine map's source point (taps outside the image 0), adds makeBatch's near-Gaussian
// Threefry noise, and is normalised per channel; the same f32 operations in the same order as the WGSL,
// and the same u32 Threefry bits; source coordinates in 16.16 fixed point (i32 arithmetic, so the same
// taps and weights as the WGSL's). Threads share the output pixels. Bindings src, params (12 words an
// image: offset, width, height, k0, k1, stream, then the affine map in 16.16 fixed point), out; uniforms n,
// crop, noise_std, mean0..2, scale0..2.
import { argF, argI, argP, at, SCRATCH, shareBegin, shareEnd } from "./common";
import * as L from "./layout";

const WORDS = 12;
/** 2^-16: a 16-bit fraction to [0, 1), a sum of four 16-bit uniforms to [0, 4]. */
const INV65536: f32 = 1.52587890625e-5;
const SQRT3: f32 = 1.7320508;

/** Injected key word s % 3 of (k0, k1, k0 ^ k1 ^ 0x1bd11bda). */
@inline function injected(s: i32, k0: i32, k1: i32): i32 {
  const j = s % 3;
  return j == 0 ? k0 : j == 1 ? k1 : k0 ^ k1 ^ 0x1bd11bda;
}

const ROTATIONS: StaticArray<u8> = [13, 15, 26, 6, 17, 29, 16, 24];

/**
 * makeBatch's noise sums of four neighbouring output pixels: Threefry-2x32-20 of the counters (q + lane,
 * stream) under key (k0, k1), one block a lane, then the four 16-bit halves of the block's two words summed.
 */
function noiseSums(k0: i32, k1: i32, q: i32, stream: i32): v128 {
  let x0 = i32x4.add(i32x4.splat(q + k0), i32x4(0, 1, 2, 3)), x1 = i32x4.splat(stream + k1);
  for (let r = 0; r < 20; r++) {
    const rot = <i32>load<u8>(changetype<usize>(ROTATIONS) + <usize>(r & 7));
    x0 = i32x4.add(x0, x1);
    x1 = v128.xor(v128.or(i32x4.shl(x1, rot), i32x4.shr_u(x1, 32 - rot)), x0);
    if ((r & 3) == 3) {
      const s = (r >> 2) + 1;
      x0 = i32x4.add(x0, i32x4.splat(injected(s, k0, k1)));
      x1 = i32x4.add(x1, i32x4.splat(injected(s + 1, k0, k1) + s));
    }
  }
  const low = i32x4.splat(0xffff);
  return i32x4.add(
    i32x4.add(i32x4.shr_u(x0, 16), v128.and(x0, low)),
    i32x4.add(i32x4.shr_u(x1, 16), v128.and(x1, low)),
  );
}

/** The image's value at (x, y), 0 outside it. */
@inline function tap(img: usize, w: i32, h: i32, x: i32, y: i32): f32 {
  return x < 0 || y < 0 || x >= w || y >= h ? 0 : load<f32>(at(img, y * w + x));
}

export function augment_warp(tid: i32, nth: i32, args: usize): void {
  const src = argP(args, L.augment_warp.src), params = argP(args, L.augment_warp.params);
  const out = argP(args, L.augment_warp.out);
  const n = argI(args, L.augment_warp.n), c = argI(args, L.augment_warp.crop);
  const noiseStd = argF(args, L.augment_warp.noise_std);
  const mean0 = argF(args, L.augment_warp.mean0), mean1 = argF(args, L.augment_warp.mean1);
  const mean2 = argF(args, L.augment_warp.mean2), scale0 = argF(args, L.augment_warp.scale0);
  const scale1 = argF(args, L.augment_warp.scale1), scale2 = argF(args, L.augment_warp.scale2);
  const sums = argP(args, L.augment_warp.SCRATCH_BASE) + <usize>tid * SCRATCH;
  const plane = c * c;
  const begin = shareBegin(tid, nth, n, 4), end = shareEnd(tid, nth, n, 4);
  // image by image, four output pixels (counters q .. q + 3 within the image) at a time
  for (let b = begin / plane; b * plane < end; b++) {
    const p = at(params, b * WORDS);
    const img = at(src, load<i32>(p)), w = load<i32>(p, 4), h = load<i32>(p, 8);
    const k0 = load<i32>(p, 12), k1 = load<i32>(p, 16), stream = load<i32>(p, 20);
    const a00 = load<i32>(p, 24), a01 = load<i32>(p, 28), a02 = load<i32>(p, 32);
    const a10 = load<i32>(p, 36), a11 = load<i32>(p, 40), a12 = load<i32>(p, 44);
    const first = max(begin, b * plane) - b * plane, last = min(end, (b + 1) * plane) - b * plane;
    const o = b * 3 * plane;
    for (let q = first; q < last; q += 4) {
      if (noiseStd != 0) v128.store(sums, noiseSums(k0, k1, q, stream));
      const lanes = min(4, last - q);
      let x = q % c, y = q / c;
      for (let lane = 0; lane < lanes; lane++) {
        const e = q + lane;
        if (lane > 0 && ++x == c) {
          x = 0;
          y++;
        }
        const sx = a00 * x + a01 * y + a02, sy = a10 * x + a11 * y + a12;
        const ix = sx >> 16, iy = sy >> 16;
        const tx = <f32>(sx & 0xffff) * INV65536, ty = <f32>(sy & 0xffff) * INV65536;
        let v00: f32, v10: f32, v01: f32, v11: f32;
        if (<u32>ix < <u32>(w - 1) && <u32>iy < <u32>(h - 1)) {
          // all four taps inside (the common case): no bounds tests
          const t = at(img, iy * w + ix), t1 = at(t, w);
          v00 = load<f32>(t);
          v10 = load<f32>(t, 4);
          v01 = load<f32>(t1);
          v11 = load<f32>(t1, 4);
        } else {
          v00 = tap(img, w, h, ix, iy);
          v10 = tap(img, w, h, ix + 1, iy);
          v01 = tap(img, w, h, ix, iy + 1);
          v11 = tap(img, w, h, ix + 1, iy + 1);
        }
        const top = v00 + tx * (v10 - v00);
        const bottom = v01 + tx * (v11 - v01);
        let g = top + ty * (bottom - top);
        if (noiseStd != 0) g = g + noiseStd * (<f32>load<i32>(at(sums, lane)) * INV65536 - 2) * SQRT3;
        store<f32>(at(out, o + e), (g - mean0) * scale0);
        store<f32>(at(out, o + plane + e), (g - mean1) * scale1);
        store<f32>(at(out, o + 2 * plane + e), (g - mean2) * scale2);
      }
    }
  }
}
