// Training augmentation on the device: a per-image affine warp with bilinear resampling of gray source
// images into a normalised NCHW batch, plus the near-Gaussian Threefry noise of makeBatch. One thread per
// output pixel writes its three channels. No gradient: its inputs are data, never parameters.
import { defineKernel, main1d } from "../backend/kernel.ts";
import { getEngine } from "../backend/device.ts";
import { Tensor } from "../autograd/tensor.ts";
import { dispatch1d } from "./basic.ts";
import { THREEFRY_WGSL } from "./random.ts";
import { fmtShape } from "./shape.ts";

/**
 * 32-bit words per image in the warp's `params` binding: the image's first pixel in `src`, its width and
 * height, the noise key and stream (k0, k1, stream), then the output-to-source affine map in 16.16 fixed
 * point (a00, a01, a02, a10, a11, a12, each round(a * 65536): source x = a00 x + a01 y + a02, source
 * y = a10 x + a11 y + a12, for output pixel (x, y)).
 */
export const WARP_PARAM_WORDS = 12;

/** sqrt(3) in f32, written the same in the twin: scales the Irwin-Hall sum to variance 1. */
const SQRT3_F32 = "1.7320508";

// Source coordinates are integers in 16.16 fixed point (i32 products and sums, which wrap alike on both
// backends and are exact when the result is in range): the tap is the integer part, the weight the
// fraction, exact in f32. So both backends sample the same taps with the same weights, whatever a
// compiler fuses (lavapipe contracts f32 a * x + b into a fused multiply-add, the Wasm twin cannot).
// Bilinear taps outside the image read 0 (torchvision's grid_sample padding_mode "zeros", the fill of its
// RandomAffine).
const warpKernel = defineKernel({
  name: "augment_warp",
  storage: [
    { name: "src", access: "read" },
    { name: "params", access: "read", type: "i32" },
    { name: "out", access: "rw" },
  ],
  uniforms: [
    { name: "n", type: "u32" },
    { name: "crop", type: "u32" },
    ...["noise_std", "mean0", "mean1", "mean2", "scale0", "scale1", "scale2"].map((name) => ({
      name,
      type: "f32" as const,
    })),
  ],
  body: `${THREEFRY_WGSL}
fn tap(base: u32, w: i32, h: i32, x: i32, y: i32) -> f32 {
  if (x < 0 || y < 0 || x >= w || y >= h) { return 0.0; }
  return src[base + u32(y * w + x)];
}
${main1d("i", "u.n")}
  let c = u.crop;
  let x = i % c;
  let y = (i / c) % c;
  let b = i / (c * c);
  let p = b * ${WARP_PARAM_WORDS}u;
  let base = u32(params[p]);
  let w = params[p + 1u];
  let h = params[p + 2u];
  let ox = i32(x);
  let oy = i32(y);
  let sx = params[p + 6u] * ox + params[p + 7u] * oy + params[p + 8u];
  let sy = params[p + 9u] * ox + params[p + 10u] * oy + params[p + 11u];
  let ix = sx >> 16u;
  let iy = sy >> 16u;
  let tx = f32(sx & 0xffff) * 1.52587890625e-5;
  let ty = f32(sy & 0xffff) * 1.52587890625e-5;
  let v00 = tap(base, w, h, ix, iy);
  let v10 = tap(base, w, h, ix + 1, iy);
  let v01 = tap(base, w, h, ix, iy + 1);
  let v11 = tap(base, w, h, ix + 1, iy + 1);
  let top = v00 + tx * (v10 - v00);
  let bottom = v01 + tx * (v11 - v01);
  var g = top + ty * (bottom - top);
  if (u.noise_std != 0.0) {
    // makeBatch's noise: four 16-bit uniforms of one Threefry block per output pixel (Irwin-Hall).
    let bits = threefry(u32(params[p + 3u]), u32(params[p + 4u]), y * c + x, u32(params[p + 5u]));
    let sum = (bits.x >> 16u) + (bits.x & 0xffffu) + (bits.y >> 16u) + (bits.y & 0xffffu);
    g = g + u.noise_std * (f32(sum) * 1.52587890625e-5 - 2.0) * ${SQRT3_F32};
  }
  let plane = c * c;
  let o = b * 3u * plane + y * c + x;
  out[o] = (g - u.mean0) * u.scale0;
  out[o + plane] = (g - u.mean1) * u.scale1;
  out[o + 2u * plane] = (g - u.mean2) * u.scale2;
}`,
});

/**
 * The warped, noised and normalised batch [B, 3, crop, crop] from gray source images packed one after the
 * other in `src` (float32) and `params` (int32 [B, WARP_PARAM_WORDS], see {@link WARP_PARAM_WORDS}):
 * out[b, c] = (bilinear(src_b, A_b (x, y)) + noise - mean[c]) * scale[c], taps outside the image 0, no
 * noise when `noiseStd` is 0. Offsets and sizes in `params` are not checked on the device (the batch
 * builder in src/data/augment.ts checks them). No gradient.
 */
export function affineWarpBatch(
  src: Tensor,
  params: Tensor,
  crop: number,
  noiseStd: number,
  mean: readonly number[],
  scale: readonly number[],
): Tensor {
  if (src.dtype !== "float32") throw new Error(`affineWarpBatch: src must be float32, got ${src.dtype}`);
  if (params.dtype !== "int32" || params.rank !== 2 || params.shape[1] !== WARP_PARAM_WORDS) {
    throw new Error(
      `affineWarpBatch: params must be int32 [B, ${WARP_PARAM_WORDS}], got ${params.dtype} ${
        fmtShape(params.shape)
      }`,
    );
  }
  if (!Number.isInteger(crop) || crop < 1) {
    throw new Error(`affineWarpBatch: crop must be a positive integer, got ${crop}`);
  }
  if (mean.length !== 3 || scale.length !== 3) {
    throw new Error("affineWarpBatch: mean and scale need 3 values");
  }
  const limit = getEngine().maxStorageBinding;
  if (src.size * 4 > limit) {
    throw new Error(
      `affineWarpBatch: the batch's source images take ${
        src.size * 4
      } bytes, more than one storage binding ` +
        `(${limit} bytes): use a smaller batch or smaller images`,
    );
  }
  const b = params.shape[0];
  const out = Tensor.empty([b, 3, crop, crop]);
  const n = b * crop * crop;
  if (n > 0) dispatch1d(warpKernel, [src, params, out], [n, crop, noiseStd, ...mean, ...scale], n);
  return out;
}
