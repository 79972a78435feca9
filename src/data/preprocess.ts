// Stage-1 preprocessing: decode each image once, resize its short side to `resize` (PIL bilinear, as
// torchvision's Resize) and keep it in memory; then assemble NCHW float batches with torchvision-style
// augmentation (random crop, horizontal flip, small near-Gaussian noise) in training and a centre crop
// otherwise, normalised with ImageNet's per-channel mean and std (the gray image replicated to 3 channels).
// Every random choice comes from a `Generator`, so a seed gives the same batch in Deno and Bun.
import { type GrayImage, resizeGray } from "../io/images.ts";
import { type Generator, threefry2x32 } from "../kernels/random.ts";
import { type ImageSource, loadImage, type Skipped } from "./datasets.ts";
import { cropLungField } from "./lung_field.ts";

/** ImageNet's per-channel (R, G, B) mean of [0, 1] pixels, as torchvision's pretrained models expect. */
export const IMAGENET_MEAN = [0.485, 0.456, 0.406] as const;
/** ImageNet's per-channel (R, G, B) standard deviation of [0, 1] pixels. */
export const IMAGENET_STD = [0.229, 0.224, 0.225] as const;
const SQRT3 = Math.sqrt(3);

/** Resizes so that the short side is `size` (the long side rounded as torchvision: int(size * long / short)). */
export function resizeShortSide(img: GrayImage, size: number): GrayImage {
  if (!Number.isInteger(size) || size < 1) {
    throw new Error(`resizeShortSide: size must be a positive integer, got ${size}`);
  }
  const { width: w, height: h } = img;
  const [nw, nh] = w <= h ? [size, Math.floor((size * h) / w)] : [Math.floor((size * w) / h), size];
  return resizeGray(img, nw, nh);
}

/** Decoded, resized images in memory, by file: each file is decoded once. */
export class ImageCache {
  /** The short side every cached image is resized to, in pixels. */
  readonly resize: number;
  /** Whether every image is histogram-equalised after resizing (see {@linkcode equalizeHistogram}). */
  readonly equalize: boolean;
  /** Whether every image is cropped to its lung fields before resizing (see `cropLungField`). */
  readonly lungCrop: boolean;
  private readonly images = new Map<string, Promise<GrayImage>>();
  /**
   * An empty cache whose images are, with `lungCrop`, cropped to their lung fields, then get short side
   * `resize` (default 256), then, with `equalize`, histogram equalisation.
   * @throws Error when `resize` is not a positive integer.
   */
  constructor(resize = 256, options: { equalize?: boolean; lungCrop?: boolean } = {}) {
    if (!Number.isInteger(resize) || resize < 1) {
      throw new Error(`ImageCache: resize must be a positive integer, got ${resize}`);
    }
    this.resize = resize;
    this.equalize = options.equalize ?? false;
    this.lungCrop = options.lungCrop ?? false;
  }

  /** Number of files cached or being decoded. */
  get size(): number {
    return this.images.size;
  }

  /**
   * The record's image, gray in [0, 1] with short side `resize`: decoded and resized on first use, then
   * shared. Rejects with the decoder's error (naming the file); a failed decode is not cached.
   */
  get(record: ImageSource): Promise<GrayImage> {
    let p = this.images.get(record.file);
    if (!p) {
      p = loadImage(record).then((img) => {
        const resized = resizeShortSide(this.lungCrop ? cropLungField(img) : img, this.resize);
        return this.equalize ? equalizeHistogram(resized) : resized;
      });
      this.images.set(record.file, p);
      p.catch(() => this.images.delete(record.file)); // a failed decode is retried next time
    }
    return p;
  }

  /** Every record's image, in order (sequentially: decoding is CPU-bound). */
  async getAll(
    records: readonly ImageSource[],
    onProgress?: (done: number, total: number) => void,
  ): Promise<GrayImage[]> {
    const out: GrayImage[] = [];
    for (const [i, r] of records.entries()) {
      out.push(await this.get(r));
      onProgress?.(i + 1, records.length);
    }
    return out;
  }

  /**
   * Every record's image, in order, leaving out the records whose file cannot be decoded: those are listed
   * in `skipped` with the decoder's message (which names the file), so one bad file never stops a run.
   */
  async getReadable<R extends ImageSource>(
    records: readonly R[],
    onProgress?: (done: number, total: number) => void,
  ): Promise<{ records: R[]; images: GrayImage[]; skipped: Skipped[] }> {
    const ok: R[] = [], images: GrayImage[] = [], skipped: Skipped[] = [];
    for (const [i, r] of records.entries()) {
      try {
        images.push(await this.get(r));
        ok.push(r);
      } catch (err) {
        skipped.push({ file: r.file, reason: (err as Error).message });
      }
      onProgress?.(i + 1, records.length);
    }
    return { records: ok, images, skipped };
  }

  /** Drops every cached image. */
  clear(): void {
    this.images.clear();
  }
}

/** Loads records' images with short side `resize` (through `cache` when given). */
export function loadImages(
  records: readonly ImageSource[],
  { resize = 256, cache }: { resize?: number; cache?: ImageCache } = {},
): Promise<GrayImage[]> {
  const c = cache ?? new ImageCache(resize);
  if (c.resize !== resize) {
    throw new Error(`loadImages: the cache resizes to ${c.resize}, asked for ${resize}`);
  }
  return c.getAll(records);
}

/** torchvision's CenterCrop offsets: (top, left) = round((size - crop) / 2). */
function centreOffsets(img: GrayImage, crop: number): [number, number] {
  return [Math.round((img.height - crop) / 2), Math.round((img.width - crop) / 2)];
}

/** The centre `crop` x `crop` of an image: what a learner sees in evaluation (makeBatch with train false). */
export function centreCrop(img: GrayImage, crop: number): GrayImage {
  if (img.width < crop || img.height < crop) {
    throw new Error(`centreCrop: image ${img.width}x${img.height} is smaller than ${crop}`);
  }
  const [top, left] = centreOffsets(img, crop);
  const data = new Float32Array(crop * crop);
  for (let y = 0; y < crop; y++) {
    const from = (top + y) * img.width + left;
    data.set(img.data.subarray(from, from + crop), y * crop);
  }
  return { width: crop, height: crop, data };
}

/** Options of {@linkcode makeBatch}. */
export interface BatchOptions {
  /** Side of the square crop (default 224; 64 for CPU runs). */
  crop?: number;
  /** Random crop + horizontal flip + noise when true; centre crop when false. */
  train: boolean;
  /** Needed when `train` is true. */
  generator?: Generator;
  /** Probability of a horizontal flip in training (default 0.5). */
  flipProbability?: number;
  /** Standard deviation of the Gaussian noise added to the gray values in [0, 1] in training (default 0.01; 0 for none). */
  noiseStd?: number;
  /** Per-channel mean subtracted, 3 values (default {@linkcode IMAGENET_MEAN}). */
  mean?: readonly number[];
  /** Per-channel standard deviation divided by, 3 values (default {@linkcode IMAGENET_STD}). */
  std?: readonly number[];
}

/**
 * Assembles images[indices] into a Float32Array [B, 3, crop, crop] (NCHW): channel c = (g - mean[c]) / std[c].
 * Training: for each image, in order, a crop offset (top then left, uniform), a flip draw and, when
 * noiseStd > 0, one Gaussian stream, all from `generator`. Evaluation: torchvision's CenterCrop offsets
 * (round((size - crop) / 2)).
 */
export function makeBatch(
  images: readonly GrayImage[],
  indices: ArrayLike<number>,
  options: BatchOptions,
): Float32Array {
  const crop = options.crop ?? 224;
  const mean = options.mean ?? IMAGENET_MEAN, std = options.std ?? IMAGENET_STD;
  const flipP = options.flipProbability ?? 0.5, noiseStd = options.noiseStd ?? 0.01;
  if (!Number.isInteger(crop) || crop < 1) {
    throw new Error(`makeBatch: crop must be a positive integer, got ${crop}`);
  }
  if (mean.length !== 3 || std.length !== 3) throw new Error("makeBatch: mean and std need 3 values");
  if (options.train && !options.generator) throw new Error("makeBatch: training batches need a generator");
  const b = indices.length, plane = crop * crop;
  const out = new Float32Array(b * 3 * plane);
  const row = new Float32Array(crop);
  const scale = std.map((s) => 1 / s);
  for (let n = 0; n < b; n++) {
    const idx = indices[n];
    const img = images[idx];
    if (!img) throw new Error(`makeBatch: no image at index ${idx} (${images.length} images)`);
    const { width: w, height: h, data } = img;
    if (w < crop || h < crop) {
      throw new Error(`makeBatch: image ${idx} is ${w}x${h}, smaller than the crop ${crop}`);
    }
    let top: number, left: number, flip = false, noise: [number, number, number] | null = null;
    if (options.train) {
      const gen = options.generator!;
      top = Math.floor(gen.uniform() * (h - crop + 1));
      left = Math.floor(gen.uniform() * (w - crop + 1));
      flip = gen.uniform() < flipP;
      const key = gen.nextStream(); // drawn even without noise, so noiseStd does not shift later draws
      if (noiseStd > 0) noise = key;
    } else {
      [top, left] = centreOffsets(img, crop);
    }
    const base = n * 3 * plane;
    for (let y = 0; y < crop; y++) {
      const src = (top + y) * w + left;
      for (let x = 0; x < crop; x++) row[x] = data[src + (flip ? crop - 1 - x : x)];
      if (noise) {
        for (let x = 0; x < crop; x++) {
          // Near-Gaussian (Irwin-Hall: four 16-bit uniforms, mean 0, variance 1) from one Threefry block
          // per output pixel: integer arithmetic only, so every runtime gives the same bits (no Math.log/cos).
          const [a, c] = threefry2x32(noise[0], noise[1], y * crop + x, noise[2]);
          const sum = (a >>> 16) + (a & 0xffff) + (c >>> 16) + (c & 0xffff);
          row[x] += noiseStd * (sum / 65536 - 2) * SQRT3;
        }
      }
      const o = base + y * crop;
      for (let ch = 0; ch < 3; ch++) {
        const m = mean[ch], s = scale[ch], oc = o + ch * plane;
        for (let x = 0; x < crop; x++) out[oc + x] = (row[x] - m) * s;
      }
    }
  }
  return out;
}

/**
 * Histogram equalisation of a gray image in [0, 1] (OpenCV's equalizeHist on 256 levels): each value's
 * level maps to the share of pixels at or below it, stretched so the darkest level present becomes 0 and
 * the brightest 1. It removes differences of exposure and contrast between sources (one of the
 * mitigations of source shortcuts in chest X-ray models); a constant image stays as it is.
 */
export function equalizeHistogram(image: GrayImage): GrayImage {
  const { data } = image, n = data.length;
  const level = (v: number) => Math.min(255, Math.max(0, Math.floor(v * 256)));
  const counts = new Float64Array(256);
  for (let i = 0; i < n; i++) counts[level(data[i])]++;
  const cdf = new Float64Array(256);
  let running = 0, lowest = -1;
  for (let l = 0; l < 256; l++) {
    running += counts[l];
    cdf[l] = running;
    if (lowest < 0 && counts[l] > 0) lowest = cdf[l];
  }
  if (n === 0 || lowest === n) return { ...image, data: Float32Array.from(data) };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (cdf[level(data[i])] - lowest) / (n - lowest);
  return { width: image.width, height: image.height, data: out };
}
