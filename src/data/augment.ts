// The paper's training augmentation ("random flips, crops and scaling") on the device: every image of a
// batch gets a seeded random affine warp (zoom, a small rotation, a crop position, a horizontal flip),
// composed and inverted with wgpu-matrix's mat3 in float64, and one kernel (src/kernels/augment.ts, with
// its WebAssembly twin) resamples all of them bilinearly into the normalised NCHW batch and adds
// makeBatch's near-Gaussian Threefry noise. Every draw comes from a `Generator` on the CPU with integer
// and IEEE arithmetic only (no Math.sin/cos), so a seed gives the same batch in Deno and Bun.
import type { GrayImage } from "../io/images.ts";
import { mat3 } from "../npm.ts";
import type { Tensor } from "../autograd/tensor.ts";
import { scope } from "../autograd/tensor.ts";
import { intTensor, tensor } from "../kernels/basic.ts";
import { affineWarpBatch, WARP_PARAM_WORDS } from "../kernels/augment.ts";
import type { Generator } from "../kernels/random.ts";
import { type BatchOptions, IMAGENET_MEAN, IMAGENET_STD } from "./preprocess.ts";

/**
 * Stage 1's training augmentations: `basic` (the default) is makeBatch's random crop, horizontal flip and
 * noise on the CPU; `paper` the device warp of {@link warpBatch} (flip, crop, scaling, small rotation,
 * translation) with the same noise; `none` a centre crop without noise.
 */
export type AugmentMode = "paper" | "basic" | "none";

/** Every {@link AugmentMode}, in the order the command line lists them. */
export const AUGMENT_MODES: readonly AugmentMode[] = ["paper", "basic", "none"];

/**
 * `value` as an {@link AugmentMode}.
 * @throws Error `<what> must be paper, basic or none, got <value>` for anything else.
 */
export function checkAugmentMode(value: unknown, what = "augment"): AugmentMode {
  if (AUGMENT_MODES.includes(value as AugmentMode)) return value as AugmentMode;
  throw new Error(`${what} must be paper, basic or none, got ${JSON.stringify(value)}`);
}

/** The ranges {@link drawAffine} draws from. */
export interface AffineRanges {
  /** Zoom [min, max]: output pixels per source pixel, uniform (default [0.9, 1.1]); positive. */
  scale?: readonly [number, number];
  /** Largest rotation either way in degrees, uniform in [-degrees, degrees] (default 10; at most 45). */
  degrees?: number;
  /** Probability of a horizontal flip (default 0.5). */
  flipProbability?: number;
}

/**
 * The `paper` mode's ranges: zoom 0.9-1.1, rotation within 10 degrees either way, flips half the time,
 * as torchvision's RandomAffine is commonly set for chest X-rays (a film is never upside down and is seldom
 * tilted much, so rotations stay small).
 */
export const PAPER_AFFINE_RANGES: Readonly<Required<AffineRanges>> = Object.freeze({
  scale: [0.9, 1.1] as const,
  degrees: 10,
  flipProbability: 0.5,
});

/** One image's warp: what {@link affineMatrix} turns into the output-to-source map. */
export interface AffineParams {
  /** Zoom: output pixels per source pixel (above 1 enlarges). */
  scale: number;
  /** Rotation in radians (image coordinates, y down). */
  angle: number;
  /** Horizontal flip of the output. */
  flip: boolean;
  /** Source point (pixel centres at integers) that lands on the crop's centre: the crop's position. */
  centerX: number;
  /** Source row of the crop's centre. */
  centerY: number;
}

/** cos and sin of |a| <= pi/4 by their Taylor series to the 16th/17th power: exact to double rounding, and
 * the same bits in every JavaScript engine (Math.cos and Math.sin may differ in the last bit between them). */
function cosSin(a: number): [number, number] {
  const a2 = a * a;
  let c = 1, s = 1;
  for (let k = 16; k >= 2; k -= 2) {
    c = 1 - (a2 / (k * (k - 1))) * c;
    s = 1 - (a2 / ((k + 1) * k)) * s;
  }
  return [c, a * s];
}

function checkRanges(ranges: AffineRanges): Required<AffineRanges> {
  const r = { ...PAPER_AFFINE_RANGES, ...ranges };
  const [lo, hi] = r.scale;
  if (!(lo > 0 && hi >= lo && Number.isFinite(hi))) {
    throw new Error(
      `drawAffine: scale must be [min, max] with 0 < min <= max, got ${JSON.stringify(r.scale)}`,
    );
  }
  if (!(r.degrees >= 0 && r.degrees <= 45)) {
    throw new Error(`drawAffine: degrees must be in [0, 45], got ${r.degrees}`);
  }
  if (!(r.flipProbability >= 0 && r.flipProbability <= 1)) {
    throw new Error(`drawAffine: flipProbability must be in [0, 1], got ${r.flipProbability}`);
  }
  return r;
}

/**
 * Draws one image's warp for a `crop` x `crop` output from a `width` x `height` source: five uniforms from
 * `gen`, in order: scale, angle, centre x, centre y, flip. The centre is uniform over the positions where
 * the (unrotated) zoomed window lies inside the image (the image's centre where it does not fit): the random
 * crop, folded into the warp's translation.
 */
export function drawAffine(
  gen: Generator,
  width: number,
  height: number,
  crop: number,
  ranges: AffineRanges = {},
): AffineParams {
  const r = checkRanges(ranges);
  const scale = r.scale[0] + gen.uniform() * (r.scale[1] - r.scale[0]);
  const angle = (2 * gen.uniform() - 1) * (r.degrees * Math.PI / 180);
  const half = crop / (2 * scale);
  const centre = (size: number, u: number) => {
    const lo = half - 0.5, hi = size - 0.5 - half;
    return hi >= lo ? lo + u * (hi - lo) : (size - 1) / 2;
  };
  const centerX = centre(width, gen.uniform());
  const centerY = centre(height, gen.uniform());
  const flip = gen.uniform() < r.flipProbability;
  return { scale, angle, flip, centerX, centerY };
}

/**
 * The warp's output-to-source map for a `crop` x `crop` output: a 3x3 matrix in wgpu-matrix's mat3 layout
 * (12 float64s, column-major, each column padded to 4), so that source (x, y) = m (x_out, y_out, 1) with
 * pixel centres at integers. Built as the inverse of source -> output = T(centre of the crop) F S(scale)
 * R(angle) T(-centre), F the flip; `scale` 1, `angle` 0 and no flip give a plain crop, exactly.
 *
 * @throws Error when `crop` is not a positive integer, `scale` is not positive or `angle` is outside
 * [-pi/4, pi/4].
 */
export function affineMatrix(p: AffineParams, crop: number): Float64Array {
  if (!Number.isInteger(crop) || crop < 1) {
    throw new Error(`affineMatrix: crop must be a positive integer, got ${crop}`);
  }
  if (!(p.scale > 0 && Number.isFinite(p.scale))) {
    throw new Error(`affineMatrix: scale must be positive, got ${p.scale}`);
  }
  if (!(Math.abs(p.angle) <= Math.PI / 4)) {
    throw new Error(`affineMatrix: angle must be within pi/4 either way, got ${p.angle}`);
  }
  if (!Number.isFinite(p.centerX) || !Number.isFinite(p.centerY)) {
    throw new Error(`affineMatrix: the centre must be finite, got ${p.centerX}, ${p.centerY}`);
  }
  // Every product in float64: wgpu-matrix computes in doubles and stores into the destination given.
  const f64 = () => new Float64Array(12);
  const h = (crop - 1) / 2;
  const [c, s] = cosSin(p.angle);
  let m = mat3.translation([h, h], f64());
  if (p.flip) m = mat3.multiply(m, mat3.scaling([-1, 1], f64()), f64());
  m = mat3.multiply(m, mat3.scaling([p.scale, p.scale], f64()), f64());
  m = mat3.multiply(m, mat3.set(c, s, 0, -s, c, 0, 0, 0, 1, f64()), f64());
  m = mat3.multiply(m, mat3.translation([-p.centerX, -p.centerY], f64()), f64());
  return mat3.inverse(m, f64());
}

/**
 * The map's six entries (a00, a01, a02, a10, a11, a12) in the kernel's 16.16 fixed point: round(a * 65536).
 * Source coordinates are then exact i32 arithmetic on every backend; the entries move by at most 2^-17,
 * a source point by at most (1 + 2 (crop - 1)) 2^-17 pixels (0.003 at a crop of 224).
 */
function fixedPoint(m: ArrayLike<number>, n: number, crop: number): number[] {
  const a = [m[0], m[4], m[8], m[1], m[5], m[9]];
  if (m.length !== 12 || !a.every(Number.isFinite)) {
    throw new Error(`warpBatch: matrix ${n} is not a finite mat3 (12 values, wgpu-matrix's layout)`);
  }
  const q = a.map((v) => Math.round(v * 65536));
  // every output pixel's source point within +-16384 pixels: the extremes are at the crop's corners
  const e = crop - 1, limit = 2 ** 30;
  for (const [x, y] of [[0, 0], [e, 0], [0, e], [e, e]]) {
    if (Math.abs(q[0] * x + q[1] * y + q[2]) >= limit || Math.abs(q[3] * x + q[4] * y + q[5]) >= limit) {
      throw new Error(`warpBatch: matrix ${n} maps the crop beyond 16384 pixels from the image's origin`);
    }
  }
  return q;
}

/**
 * Options of {@link warpBatch}; `crop` (default 224, at most each image's short side), `noiseStd` (default
 * 0.01), `mean` and `std` as makeBatch's.
 */
export interface WarpBatchOptions extends Pick<BatchOptions, "crop" | "noiseStd" | "mean" | "std"> {
  /**
   * Draws each image's warp ({@link drawAffine} with `ranges`) and then its noise stream, image after
   * image (with `matrices`, only the noise streams, unless `noiseKeys` are given). Needed unless `matrices`
   * are given and there is no noise or `noiseKeys` are given.
   */
  generator?: Generator;
  /** The ranges of the drawn warps (default {@link PAPER_AFFINE_RANGES}). */
  ranges?: AffineRanges;
  /** Explicit output-to-source maps, one per image (as {@link affineMatrix} returns): nothing is drawn. */
  matrices?: readonly ArrayLike<number>[];
  /** Explicit noise keys (k0, k1, stream), one per image, with `matrices`. */
  noiseKeys?: readonly (readonly [number, number, number])[];
}

/**
 * Assembles images[indices] into a device tensor [B, 3, crop, crop] (NCHW) with the `paper` augmentation:
 * each image warped by its affine map and resampled bilinearly (source points in 16.16 fixed point, so the
 * backends agree on every tap and weight; taps outside the image read 0, i.e. black, as torchvision's
 * RandomAffine fills), then makeBatch's noise (one Threefry block per output pixel
 * keyed by the image's stream: four 16-bit uniforms summed, scaled to variance 1 and by `noiseStd`),
 * replicated to 3 channels and normalised: (g - mean[c]) / std[c]. With a generator, each image draws
 * {@link drawAffine}'s five uniforms and then its noise stream (drawn even when `noiseStd` is 0, so the
 * noise setting does not shift later draws). The tensor belongs to the enclosing scope, if any.
 *
 * @throws Error on a missing image, an image whose data does not hold width x height values or whose short
 * side is below `crop`, a bad crop, mean or std, a missing generator, or matrices and keys that do not match
 * the batch.
 */
export function warpBatch(
  images: readonly GrayImage[],
  indices: ArrayLike<number>,
  options: WarpBatchOptions = {},
): Tensor {
  const crop = options.crop ?? 224, noiseStd = options.noiseStd ?? 0.01;
  const mean = options.mean ?? IMAGENET_MEAN, std = options.std ?? IMAGENET_STD;
  const b = indices.length, gen = options.generator;
  if (!Number.isInteger(crop) || crop < 1) {
    throw new Error(`warpBatch: crop must be a positive integer, got ${crop}`);
  }
  if (mean.length !== 3 || std.length !== 3) throw new Error("warpBatch: mean and std need 3 values");
  if (!(noiseStd >= 0 && Number.isFinite(noiseStd))) {
    throw new Error(`warpBatch: noiseStd must be a non-negative number, got ${noiseStd}`);
  }
  const { matrices, noiseKeys } = options;
  if (matrices && matrices.length !== b) {
    throw new Error(`warpBatch: ${matrices.length} matrices for ${b} images`);
  }
  if (noiseKeys && (!matrices || noiseKeys.length !== b)) {
    throw new Error(`warpBatch: noiseKeys need matrices, one key per image (${b})`);
  }
  if (!gen && (!matrices || (noiseStd > 0 && !noiseKeys))) {
    throw new Error(
      "warpBatch: a random warp needs a generator (or matrices, and noiseKeys when noiseStd > 0)",
    );
  }
  const ranges = gen && !matrices ? checkRanges(options.ranges ?? {}) : undefined;
  const words = new Int32Array(b * WARP_PARAM_WORDS);
  let total = 0;
  const used: GrayImage[] = [];
  for (let n = 0; n < b; n++) {
    const idx = indices[n], img = images[idx];
    if (!img) throw new Error(`warpBatch: no image at index ${idx} (${images.length} images)`);
    const { width: w, height: h } = img;
    if (!Number.isInteger(w) || !Number.isInteger(h) || w < 1 || h < 1 || img.data.length !== w * h) {
      throw new Error(`warpBatch: image ${idx} is said to be ${w}x${h} but holds ${img.data.length} values`);
    }
    if (w < crop || h < crop) {
      throw new Error(`warpBatch: image ${idx} is ${w}x${h}, smaller than the crop ${crop}`);
    }
    let m: ArrayLike<number>, key: readonly [number, number, number] = [0, 0, 0];
    if (matrices) {
      m = matrices[n];
      if (noiseKeys) key = noiseKeys[n];
      else if (gen) key = gen.nextStream();
    } else {
      m = affineMatrix(drawAffine(gen!, w, h, crop, ranges), crop);
      key = gen!.nextStream();
    }
    const a = fixedPoint(m, n, crop);
    const o = n * WARP_PARAM_WORDS;
    words.set([total, w, h, key[0] | 0, key[1] | 0, key[2] | 0, ...a], o);
    total += w * h;
    used.push(img);
  }
  const pixels = new Float32Array(Math.max(total, 1));
  let at = 0;
  for (const img of used) {
    pixels.set(img.data, at);
    at += img.data.length;
  }
  const scale = std.map((s) => 1 / s);
  return scope(() =>
    affineWarpBatch(
      tensor(pixels),
      intTensor(words, [b, WARP_PARAM_WORDS]),
      crop,
      noiseStd,
      mean,
      scale,
    )
  );
}
