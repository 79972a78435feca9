// Image decoding for chest X-rays: PNG (upng-js) and JPEG (jpeg-js), detected by magic bytes, decoded to a
// grayscale Float32Array in [0, 1]. Colour is reduced to luma with the ITU-R BT.601 weights
// (0.299 R + 0.587 G + 0.114 B, as PIL's convert("L")); alpha is dropped, not composited (as PIL does).
// Every failure is an Error whose message starts with the file's name and says why. Images over
// `maxPixels` (default 50 megapixels) are refused from their header, before any pixel memory is allocated,
// and the PNG zlib stream may not inflate past the size its header implies (no decompression bombs).
import { deflateZlib, inflateZlib } from "../platform/runtime.ts";
import { jpeg, UPNG } from "../npm.ts";
import { readBytes, readBytesAsync } from "./tree.ts";

/** A single-channel image: the form every decoder returns and every resizer and crop takes. */
export interface GrayImage {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** row-major, `width * height` values in [0, 1] */
  data: Float32Array;
}

/** Limits applied while decoding. */
export interface DecodeOptions {
  /** refuse images with more pixels than this (default 50e6) */
  maxPixels?: number;
}

/** The formats this module decodes. */
export type ImageFormat = "png" | "jpeg";

/** Default {@linkcode DecodeOptions.maxPixels}: 50 megapixels, far above any chest X-ray. */
export const DEFAULT_MAX_PIXELS = 50_000_000;
const LUMA_R = 0.299, LUMA_G = 0.587, LUMA_B = 0.114;

/** The format from the first bytes, or null when it is neither PNG nor JPEG. */
export function detectFormat(bytes: Uint8Array): ImageFormat | null {
  if (bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47) {
    return "png";
  }
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return "jpeg";
  return null;
}

function otherFormat(b: Uint8Array): string | null {
  const ascii = String.fromCharCode(...b.subarray(0, 12));
  if (ascii.startsWith("GIF8")) return "GIF";
  if (ascii.startsWith("BM")) return "BMP";
  if (ascii.startsWith("RIFF") && ascii.slice(8, 12) === "WEBP") return "WebP";
  if (ascii.startsWith("II*\0") || ascii.startsWith("MM\0*")) return "TIFF";
  if (b[0] === 0x44 && b[1] === 0x49 && b[2] === 0x43 && b[3] === 0x4d) return "DICOM";
  if (b.length > 132 && String.fromCharCode(...b.subarray(128, 132)) === "DICM") return "DICOM";
  if (ascii.startsWith("%PDF")) return "PDF";
  return null;
}

class DecodeError extends Error {}

function checkSize(width: number, height: number, maxPixels: number): void {
  if (!(width > 0 && height > 0)) throw new DecodeError(`invalid image size ${width} x ${height}`);
  const pixels = width * height;
  if (pixels > maxPixels) {
    throw new DecodeError(
      `image is ${width} x ${height} = ${(pixels / 1e6).toFixed(1)} megapixels, over the limit of ${
        (maxPixels / 1e6).toFixed(1)
      } (refused before decoding; a decompression bomb or not a chest X-ray)`,
    );
  }
}

// ---------------------------------------------------------------- PNG

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (ISO 3309, as PNG and zip use it) over b[start, end). */
export function crc32(b: Uint8Array, start = 0, end: number = b.length): number {
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = CRC_TABLE[(c ^ b[i]) & 255] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const u32 = (b: Uint8Array, o: number) =>
  ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;

interface PngHeader {
  width: number;
  height: number;
  depth: number;
  ctype: number;
  interlace: number;
}

const PNG_DEPTHS: Record<number, number[]> = {
  0: [1, 2, 4, 8, 16],
  2: [8, 16],
  3: [1, 2, 4, 8],
  4: [8, 16],
  6: [8, 16],
};
const PNG_CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };

/** Walks the chunks: structure, critical-chunk CRCs, header sanity; throws DecodeError on a broken file. */
function scanPng(b: Uint8Array, maxPixels: number): PngHeader {
  const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  for (let i = 0; i < 8; i++) if (b[i] !== sig[i]) throw new DecodeError("broken PNG signature");
  let off = 8, header: PngHeader | null = null, sawIdat = false, sawPlte = false, sawEnd = false;
  while (off < b.length) {
    if (off + 12 > b.length) throw new DecodeError(`truncated PNG (chunk at byte ${off} cut off)`);
    const len = u32(b, off);
    const type = String.fromCharCode(b[off + 4], b[off + 5], b[off + 6], b[off + 7]);
    if (!/^[A-Za-z]{4}$/.test(type)) throw new DecodeError(`corrupt PNG (bad chunk type at byte ${off})`);
    const end = off + 12 + len;
    if (end > b.length) {
      throw new DecodeError(`truncated PNG (${type} chunk at byte ${off} runs past the end of the file)`);
    }
    const critical = type.charCodeAt(0) < 97;
    if (critical && crc32(b, off + 4, off + 8 + len) !== u32(b, off + 8 + len)) {
      throw new DecodeError(`corrupt PNG (CRC mismatch in the ${type} chunk at byte ${off})`);
    }
    if (header === null && type !== "IHDR") throw new DecodeError("corrupt PNG (first chunk is not IHDR)");
    if (type === "IHDR") {
      if (len !== 13) throw new DecodeError("corrupt PNG (IHDR length)");
      const d = off + 8;
      header = {
        width: u32(b, d),
        height: u32(b, d + 4),
        depth: b[d + 8],
        ctype: b[d + 9],
        interlace: b[d + 12],
      };
      if (!PNG_DEPTHS[header.ctype]?.includes(header.depth)) {
        throw new DecodeError(`corrupt PNG (bit depth ${header.depth} with colour type ${header.ctype})`);
      }
      if (b[d + 10] !== 0 || b[d + 11] !== 0 || header.interlace > 1) {
        throw new DecodeError("corrupt PNG (unknown method in IHDR)");
      }
      checkSize(header.width, header.height, maxPixels);
    } else if (type === "PLTE") sawPlte = true;
    else if (type === "IDAT") sawIdat = true;
    else if (type === "IEND") {
      sawEnd = true;
      break;
    }
    off = end;
  }
  if (!header) throw new DecodeError("truncated PNG (no IHDR chunk)");
  if (!sawIdat) throw new DecodeError("truncated PNG (no image data)");
  if (!sawEnd) throw new DecodeError("truncated PNG (no IEND chunk)");
  if (header.ctype === 3 && !sawPlte) throw new DecodeError("corrupt PNG (palette image without PLTE)");
  return header;
}

function pngRawSize(h: PngHeader): number {
  const bpp = h.depth * PNG_CHANNELS[h.ctype];
  const rowBytes = (w: number) => (w === 0 ? 0 : 1 + Math.ceil((w * bpp) / 8));
  if (h.interlace === 0) return h.height * rowBytes(h.width);
  // Adam7: 7 passes (start x, start y, step x, step y)
  const passes = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [
    0,
    1,
    1,
    2,
  ]];
  let total = 0;
  for (const [sx, sy, dx, dy] of passes) {
    const pw = Math.ceil((h.width - sx) / dx), ph = Math.ceil((h.height - sy) / dy);
    if (pw > 0 && ph > 0) total += ph * rowBytes(pw);
  }
  return total;
}

// upng-js inflates with pako and no size limit; route it through the runtime's zlib with the size the header implies.
// The limit is set only while `decodePng` decodes a file; other decodes (the project's own figures) inflate
// without one.
let inflateExpected: number | null = null;
// deno-lint-ignore no-explicit-any
(UPNG as any).decode._inflate = (data: Uint8Array): Uint8Array => {
  if (inflateExpected === null) return inflateZlib(data);
  let out: Uint8Array;
  try {
    out = inflateZlib(data, inflateExpected + 1024);
  } catch (err) {
    const m = (err as Error).message;
    throw new DecodeError(
      /larger than|maxOutputLength|buffer/i.test(m)
        ? `corrupt PNG (image data inflates past the ${inflateExpected} bytes its header implies)`
        : `corrupt or truncated PNG image data (zlib: ${m})`,
    );
  }
  if (out.length < inflateExpected) {
    throw new DecodeError(`truncated PNG image data (${out.length} of ${inflateExpected} bytes)`);
  }
  return out;
};

function decodePng(bytes: Uint8Array, maxPixels: number): GrayImage {
  const h = scanPng(bytes, maxPixels);
  inflateExpected = pngRawSize(h);
  const copy = bytes.slice().buffer;
  let img: UPNG.Image;
  try {
    img = UPNG.decode(copy);
  } catch (err) {
    if (err instanceof DecodeError) throw err;
    throw new DecodeError(`corrupt PNG (${(err as Error)?.message ?? String(err)})`);
  } finally {
    inflateExpected = null;
  }
  const { width, height, depth, ctype } = h;
  const raw = new Uint8Array(img.data as unknown as ArrayBuffer);
  const channels = PNG_CHANNELS[ctype];
  const bpl = Math.ceil((width * depth * channels) / 8);
  const out = new Float32Array(width * height);
  let palette: Float32Array | null = null;
  if (ctype === 3) {
    const p = (img.tabs as Record<string, number[]>)["PLTE"] ?? [];
    palette = new Float32Array(256);
    for (let i = 0; i < p.length / 3; i++) {
      palette[i] = (LUMA_R * p[3 * i] + LUMA_G * p[3 * i + 1] + LUMA_B * p[3 * i + 2]) / 255;
    }
  }
  for (let y = 0; y < height; y++) {
    const row = y * bpl, o = y * width;
    if (depth < 8) {
      const max = (1 << depth) - 1, perByte = 8 / depth;
      for (let x = 0; x < width; x++) {
        const byte = raw[row + Math.floor(x / perByte)];
        const v = (byte >> (8 - depth * (1 + (x % perByte)))) & max;
        out[o + x] = palette ? palette[v] : v / max;
      }
    } else if (depth === 8) {
      if (palette) { for (let x = 0; x < width; x++) out[o + x] = palette[raw[row + x]]; }
      else if (channels <= 2) { for (let x = 0; x < width; x++) out[o + x] = raw[row + x * channels] / 255; }
      else {
        for (let x = 0; x < width; x++) {
          const i = row + x * channels;
          out[o + x] = (LUMA_R * raw[i] + LUMA_G * raw[i + 1] + LUMA_B * raw[i + 2]) / 255;
        }
      }
    } else { // 16 bit, big-endian
      const s = (i: number) => (raw[i] << 8) | raw[i + 1];
      if (channels <= 2) { for (let x = 0; x < width; x++) out[o + x] = s(row + 2 * x * channels) / 65535; }
      else {
        for (let x = 0; x < width; x++) {
          const i = row + 2 * x * channels;
          out[o + x] = (LUMA_R * s(i) + LUMA_G * s(i + 2) + LUMA_B * s(i + 4)) / 65535;
        }
      }
    }
  }
  clamp01(out);
  return { width, height, data: out };
}

function clamp01(a: Float32Array): void {
  for (let i = 0; i < a.length; i++) if (a[i] > 1) a[i] = 1;
}

// ---------------------------------------------------------------- JPEG

/** Reads the frame header (size) and checks that the entropy-coded data ends with an EOI marker. */
function scanJpeg(b: Uint8Array, maxPixels: number): void {
  let off = 2, size: [number, number] | null = null;
  while (true) {
    while (off < b.length && b[off] !== 0xff) off++; // tolerate stray bytes between segments
    while (off < b.length && b[off] === 0xff) off++;
    if (off >= b.length) {
      throw new DecodeError(
        size ? "truncated JPEG (no scan data)" : "truncated or corrupt JPEG (no frame header)",
      );
    }
    const m = b[off++];
    if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7)) continue;
    if (m === 0xd9) throw new DecodeError("corrupt JPEG (end of image before any scan)");
    if (off + 2 > b.length) throw new DecodeError("truncated JPEG (segment header cut off)");
    const len = (b[off] << 8) | b[off + 1];
    if (len < 2 || off + len > b.length) {
      throw new DecodeError(
        `truncated JPEG (segment 0xFF${m.toString(16).toUpperCase()} runs past the end of the file)`,
      );
    }
    if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
      if (m !== 0xc0 && m !== 0xc1 && m !== 0xc2) {
        throw new DecodeError(
          `unsupported JPEG coding (SOF${m - 0xc0}: lossless, hierarchical or arithmetic)`,
        );
      }
      size = [(b[off + 5] << 8) | b[off + 6], (b[off + 3] << 8) | b[off + 4]];
      checkSize(size[0], size[1], maxPixels);
    }
    if (m === 0xda) {
      if (!size) throw new DecodeError("corrupt JPEG (scan before frame header)");
      off += len;
      break;
    }
    off += len;
  }
  for (let i = b.length - 2; i >= off; i--) if (b[i] === 0xff && b[i + 1] === 0xd9) return;
  throw new DecodeError("truncated JPEG (no end-of-image marker)");
}

function decodeJpeg(bytes: Uint8Array, maxPixels: number): GrayImage {
  scanJpeg(bytes, maxPixels);
  let img: { width: number; height: number; data: Uint8Array };
  try {
    img = jpeg.decode(bytes, {
      useTArray: true,
      formatAsRGBA: false,
      maxResolutionInMP: maxPixels / 1e6,
      maxMemoryUsageInMB: Math.max(512, Math.ceil((maxPixels * 16) / 1e6)),
    });
  } catch (err) {
    throw new DecodeError(`corrupt JPEG (${(err as Error)?.message ?? String(err)})`);
  }
  const { width, height, data } = img;
  if (data.length < width * height * 3) {
    throw new DecodeError("corrupt JPEG (decoder returned too little data)");
  }
  const out = new Float32Array(width * height);
  for (let i = 0, j = 0; i < out.length; i++, j += 3) {
    out[i] = (LUMA_R * data[j] + LUMA_G * data[j + 1] + LUMA_B * data[j + 2]) / 255;
  }
  clamp01(out);
  return { width, height, data: out };
}

// ---------------------------------------------------------------- public

/** Decodes PNG or JPEG bytes (format from the magic bytes) to gray in [0, 1]; `name` goes into errors. */
export function decodeImage(bytes: Uint8Array, name = "<bytes>", opts: DecodeOptions = {}): GrayImage {
  const maxPixels = opts.maxPixels ?? DEFAULT_MAX_PIXELS;
  try {
    if (bytes.length === 0) throw new DecodeError("empty file");
    const format = detectFormat(bytes);
    if (format === "png") return decodePng(bytes, maxPixels);
    if (format === "jpeg") return decodeJpeg(bytes, maxPixels);
    const other = otherFormat(bytes);
    const head = Array.from(bytes.subarray(0, 4), (v) => v.toString(16).padStart(2, "0")).join(" ");
    throw new DecodeError(
      other
        ? `unsupported image format ${other} (PNG and JPEG are read)`
        : `not a PNG or JPEG file (starts with ${head})`,
    );
  } catch (err) {
    const reason = err instanceof DecodeError
      ? err.message
      : `cannot decode (${(err as Error)?.message ?? String(err)})`;
    throw new Error(`${name}: ${reason}`);
  }
}

/**
 * Reads and decodes a file, on disk or in a zip archive (`data.zip!/images/x.png`, see `fl.io.readBytes`);
 * errors name the file.
 */
export async function readImage(path: string, opts: DecodeOptions = {}): Promise<GrayImage> {
  return decodeImage(await readBytesAsync(path), path, opts);
}

/** {@linkcode readImage}, synchronously; errors name the file. */
export function readImageSync(path: string, opts: DecodeOptions = {}): GrayImage {
  return decodeImage(readBytes(path), path, opts);
}

/**
 * Resizes with PIL's BILINEAR filter, which torchvision's `Resize` uses on PIL images: a triangle kernel
 * over pixel centres (x + 0.5), widened by the scale factor when shrinking (antialiased), applied
 * horizontally then vertically. Computed in float, so it matches PIL's mode "F" and differs from 8-bit
 * PIL output only by PIL's rounding.
 */
export function resizeGray(img: GrayImage, width: number, height: number): GrayImage {
  if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0)) {
    throw new Error(`resizeGray: bad target size ${width} x ${height}`);
  }
  if (width === img.width && height === img.height) return { width, height, data: img.data.slice() };
  const horiz = resample1d(img.data, img.width, img.height, width, true);
  const data = resample1d(horiz, width, img.height, height, false);
  return { width, height, data };
}

function weights(
  inSize: number,
  outSize: number,
): { start: Int32Array; count: Int32Array; w: Float32Array; k: number } {
  const scale = inSize / outSize;
  const fscale = Math.max(scale, 1);
  const support = fscale; // bilinear support 1, widened when shrinking
  const k = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize), count = new Int32Array(outSize), w = new Float32Array(outSize * k);
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    let xmin = Math.floor(center - support + 0.5), xmax = Math.floor(center + support + 0.5);
    if (xmin < 0) xmin = 0;
    if (xmax > inSize) xmax = inSize;
    const n = xmax - xmin;
    let total = 0;
    for (let j = 0; j < n; j++) {
      const t = Math.abs((j + xmin - center + 0.5) / fscale);
      const v = t < 1 ? 1 - t : 0;
      w[i * k + j] = v;
      total += v;
    }
    if (total > 0) { for (let j = 0; j < n; j++) w[i * k + j] /= total; }
    start[i] = xmin;
    count[i] = n;
  }
  return { start, count, w, k };
}

function resample1d(
  src: Float32Array,
  w: number,
  h: number,
  outSize: number,
  horizontal: boolean,
): Float32Array {
  const inSize = horizontal ? w : h;
  if (inSize === outSize) return src;
  const { start, count, w: wt, k } = weights(inSize, outSize);
  if (horizontal) {
    const out = new Float32Array(outSize * h);
    for (let y = 0; y < h; y++) {
      const row = y * w;
      for (let i = 0; i < outSize; i++) {
        let s = 0;
        for (let j = 0; j < count[i]; j++) s += src[row + start[i] + j] * wt[i * k + j];
        out[y * outSize + i] = s;
      }
    }
    return out;
  }
  const out = new Float32Array(w * outSize);
  for (let i = 0; i < outSize; i++) {
    for (let j = 0; j < count[i]; j++) {
      const f = wt[i * k + j], row = (start[i] + j) * w;
      for (let x = 0; x < w; x++) out[i * w + x] += src[row + x] * f;
    }
  }
  return out;
}

// ---------------------------------------------------------------- PNG writing

export interface RawPng {
  width: number;
  height: number;
  /** 1, 2, 4, 8 or 16 (as the colour type allows) */
  depth: number;
  /** 0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA */
  ctype: number;
  /** packed rows without filter bytes (16-bit samples big-endian), as in the PNG spec */
  data: Uint8Array;
  /** RGB triples for ctype 3 */
  palette?: Uint8Array;
}

/** Writes a PNG from raw packed rows (filter 0, zlib level 6). Used by `encodePngGray` and by tests. */
export function encodePngRaw(p: RawPng): Uint8Array {
  const bpl = Math.ceil((p.width * p.depth * PNG_CHANNELS[p.ctype]) / 8);
  if (p.data.length < bpl * p.height) {
    throw new Error(`encodePngRaw: ${p.data.length} bytes for ${p.height} rows of ${bpl}`);
  }
  const filtered = new Uint8Array((bpl + 1) * p.height);
  for (let y = 0; y < p.height; y++) filtered.set(p.data.subarray(y * bpl, (y + 1) * bpl), y * (bpl + 1) + 1);
  const ihdr = new Uint8Array(13);
  const dv = new DataView(ihdr.buffer);
  dv.setUint32(0, p.width);
  dv.setUint32(4, p.height);
  ihdr[8] = p.depth;
  ihdr[9] = p.ctype;
  const chunks: [string, Uint8Array][] = [["IHDR", ihdr]];
  if (p.ctype === 3) chunks.push(["PLTE", p.palette ?? new Uint8Array(0)]);
  chunks.push(["IDAT", deflateZlib(filtered)], ["IEND", new Uint8Array(0)]);
  const total = 8 + chunks.reduce((s, [, d]) => s + 12 + d.length, 0);
  const out = new Uint8Array(total);
  out.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const ov = new DataView(out.buffer);
  let off = 8;
  for (const [type, d] of chunks) {
    ov.setUint32(off, d.length);
    for (let i = 0; i < 4; i++) out[off + 4 + i] = type.charCodeAt(i);
    out.set(d, off + 8);
    ov.setUint32(off + 8 + d.length, crc32(out, off + 4, off + 8 + d.length));
    off += 12 + d.length;
  }
  return out;
}

/** Encodes a gray image (values clamped to [0, 1]) as an 8- or 16-bit grayscale PNG. */
export function encodePngGray(img: GrayImage, opts: { bits?: 8 | 16 } = {}): Uint8Array {
  const bits = opts.bits ?? 8;
  const n = img.width * img.height;
  const data = new Uint8Array(n * (bits / 8));
  for (let i = 0; i < n; i++) {
    const v = Math.min(1, Math.max(0, img.data[i] || 0));
    if (bits === 8) data[i] = Math.round(v * 255);
    else {
      const s = Math.round(v * 65535);
      data[2 * i] = s >> 8;
      data[2 * i + 1] = s & 255;
    }
  }
  return encodePngRaw({ width: img.width, height: img.height, depth: bits, ctype: 0, data });
}
