// A lung-field crop from the image's own intensity profiles (no model, no training): one of the mitigations
// of source shortcuts, since burnt-in markers, labels and framing sit outside the lungs. Deterministic
// arithmetic on the pixels, so every runtime crops alike.
//
// Columns: in the chest's middle rows, walking out from the brightest central column (the spine and
// mediastinum), the profile falls into a lung and climbs again at the chest wall: each lung's outer edge is
// where it is back half way from the lowest value passed to the highest still ahead. Rows: within those columns, the rows where
// more than a third of the pixels are darker than the band's Otsu threshold (lung is air) form the longest
// run. A box narrower than 40% of the image or shorter than 30% (a failed detection) falls back to the
// central 80% on that axis; the box then grows by 5% on each side, and towards a square.
import type { GrayImage } from "../io/images.ts";

/** A rectangle of an image in pixels: columns x .. x + width - 1, rows y .. y + height - 1. */
export interface PixelBox {
  /** First column. */
  x: number;
  /** First row. */
  y: number;
  /** Columns. */
  width: number;
  /** Rows. */
  height: number;
}

/** The mean of each window of `k` values centred on each position, over the values that exist. */
function movingMean(values: Float64Array, k: number): Float64Array {
  const out = new Float64Array(values.length), half = Math.floor(k / 2);
  for (let i = 0; i < values.length; i++) {
    const from = Math.max(0, i - half), to = Math.min(values.length, i - half + k);
    let sum = 0;
    for (let j = from; j < to; j++) sum += values[j];
    out[i] = sum / (to - from);
  }
  return out;
}

/** Index of the largest (or smallest) value of `values[from .. to)`; the first wins a tie. */
function argExtreme(values: Float64Array, from: number, to: number, largest: boolean): number {
  let best = from;
  for (let i = from + 1; i < to; i++) {
    if (largest ? values[i] > values[best] : values[i] < values[best]) best = i;
  }
  return best;
}

/**
 * Walking from the spine at `spine` towards `stop` (step +1 or -1): down into the lung, then the first
 * position where `profile` is back half way from the lowest value passed to the highest still ahead (the chest
 * wall, brighter than the lung and than the air beyond it); `stop` when it never is (the lung reaches the
 * image's edge).
 */
function chestWall(profile: Float64Array, spine: number, step: 1 | -1, stop: number): number {
  const ahead = new Float64Array(profile.length); // the highest value from each position to `stop`
  for (let i = stop, high = -Infinity; i !== spine - step; i -= step) {
    ahead[i] = high = Math.max(high, profile[i]);
  }
  let lowest = profile[spine];
  for (let i = spine; i !== stop; i += step) {
    lowest = Math.min(lowest, profile[i]);
    if (lowest < profile[spine] - 0.05 && profile[i] > lowest + 0.5 * (ahead[i] - lowest)) return i;
  }
  return stop;
}

/** Otsu's threshold of `values` in [0, 1] over 64 levels: the top of the level that best splits them (below it: dark). */
function otsuThreshold(values: Float32Array): number {
  const levels = 64, counts = new Float64Array(levels);
  for (const v of values) counts[Math.min(levels - 1, Math.max(0, Math.floor(v * levels)))]++;
  let total = 0, weighted = 0;
  for (let l = 0; l < levels; l++) {
    total += counts[l];
    weighted += l * counts[l];
  }
  let below = 0, belowWeighted = 0, best = 0, bestLevel = 0;
  for (let l = 0; l < levels; l++) {
    below += counts[l] / total;
    belowWeighted += (l * counts[l]) / total;
    const between = (weighted / total * below - belowWeighted) ** 2 / (below * (1 - below) + 1e-12);
    if (between > best) [best, bestLevel] = [between, l];
  }
  return (bestLevel + 1) / levels;
}

/**
 * The lung fields' bounding box of a frontal chest X-ray (gray in [0, 1]), found from its intensity profiles
 * as the module's description says; always inside the image, at least 40% x 30% of it before the margins.
 *
 * @throws Error on an image smaller than 16 x 16 pixels.
 */
export function lungFieldBox(image: GrayImage): PixelBox {
  const { width: w, height: h, data } = image;
  if (w < 16 || h < 16) throw new Error(`lungFieldBox: the image is ${w}x${h}; at least 16x16 is needed`);
  const columns = new Float64Array(w);
  const y0 = Math.floor(0.25 * h), y1 = Math.floor(0.75 * h);
  for (let y = y0; y < y1; y++) for (let x = 0; x < w; x++) columns[x] += data[y * w + x] / (y1 - y0);
  const profile = movingMean(columns, Math.max(1, Math.floor(w / 32)));
  const spine = argExtreme(profile, Math.floor(0.35 * w), Math.floor(0.65 * w), true);
  let left = chestWall(profile, spine, -1, 0), right = chestWall(profile, spine, 1, w - 1);
  if (right - left < 0.4 * w) [left, right] = [Math.floor(0.1 * w), Math.floor(0.9 * w)];

  const bandWidth = right - left + 1, band = new Float32Array(h * bandWidth);
  for (let y = 0; y < h; y++) band.set(data.subarray(y * w + left, y * w + right + 1), y * bandWidth);
  const threshold = otsuThreshold(band), darkShare = new Float64Array(h);
  for (let i = 0; i < band.length; i++) if (band[i] < threshold) darkShare[Math.floor(i / bandWidth)]++;
  for (let y = 0; y < h; y++) darkShare[y] /= bandWidth;
  const dark = movingMean(darkShare, Math.max(1, Math.floor(h / 24)));
  let top = 0, bottom = -1;
  for (let y = 0, start = -1; y <= h; y++) {
    if (y < h && dark[y] > 0.35) {
      if (start < 0) start = y;
    } else if (start >= 0) {
      if (y - 1 - start > bottom - top) [top, bottom] = [start, y - 1];
      start = -1;
    }
  }
  if (bottom - top < 0.3 * h) [top, bottom] = [Math.floor(0.1 * h), Math.floor(0.9 * h)];

  const mx = Math.floor(0.05 * (right - left)), my = Math.floor(0.05 * (bottom - top));
  left = Math.max(0, left - mx);
  right = Math.min(w - 1, right + mx);
  top = Math.max(0, top - my);
  bottom = Math.min(h - 1, bottom + my);
  // Towards a square, as far as the image allows: the learners' square centre crop then keeps both lungs.
  const grow = (from: number, to: number, by: number, size: number): [number, number] => {
    const start = Math.max(0, Math.min(from - Math.floor(by / 2), size - (to - from + 1 + by)));
    return [start, Math.min(size - 1, start + (to - from) + by)];
  };
  const bw = right - left + 1, bh = bottom - top + 1;
  if (bw > bh) [top, bottom] = grow(top, bottom, bw - bh, h);
  else [left, right] = grow(left, right, bh - bw, w);
  return { x: left, y: top, width: right - left + 1, height: bottom - top + 1 };
}

/** The part of `image` inside `box` (which must lie inside the image), as a new image. */
export function cropBox(image: GrayImage, box: PixelBox): GrayImage {
  const { x, y, width, height } = box;
  if (x < 0 || y < 0 || width < 1 || height < 1 || x + width > image.width || y + height > image.height) {
    throw new Error(
      `cropBox: ${width}x${height} at (${x}, ${y}) is not inside the ${image.width}x${image.height} image`,
    );
  }
  const data = new Float32Array(width * height);
  for (let r = 0; r < height; r++) {
    data.set(image.data.subarray((y + r) * image.width + x, (y + r) * image.width + x + width), r * width);
  }
  return { width, height, data };
}

/** `image` cropped to its lung fields ({@link lungFieldBox}). */
export function cropLungField(image: GrayImage): GrayImage {
  return cropBox(image, lungFieldBox(image));
}
