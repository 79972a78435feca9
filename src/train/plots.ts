// The FLANNEL paper's figures drawn straight into PNG files: F1 bars with error bars over folds (Fig. 2),
// ROC and precision-recall curves (Fig. 3), confusion matrices (Fig. 4) and class-activation-map overlays on
// the X-ray (Fig. 6). Everything is rasterised here on an RGBA canvas with a built-in 5x8 bitmap font drawn
// at 2x, so a figure needs no font file, browser or native library; upng-js encodes the PNG.
import { UPNG } from "../npm.ts";
import { writeFileAtomic } from "../io/files.ts";
import { type GrayImage, resizeGray } from "../io/images.ts";

/** [r, g, b] or [r, g, b, a], each 0..255; alpha defaults to 255. */
export type Color = readonly [number, number, number] | readonly [number, number, number, number];

/** Row-major RGBA, 4 bytes a pixel; a Canvas is one. */
export interface RgbaImage {
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** `width * height * 4` bytes: r, g, b, a of each pixel, rows top to bottom. */
  data: Uint8Array;
}

/** A pixel rectangle; x, y is its top-left pixel. */
export interface Rect {
  /** Left edge, pixels from the canvas's left. */
  x: number;
  /** Top edge, pixels from the canvas's top. */
  y: number;
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
}

/** How {@linkcode Canvas.text} places and draws a string. */
export interface TextOptions {
  /** pixels per font pixel (default 2) */
  scale?: number;
  /** where x is on the drawn box (default "left") */
  align?: "left" | "center" | "right";
  /** where y is on the drawn box (default "top") */
  valign?: "top" | "middle" | "bottom";
  /** 90 turns the text counter-clockwise, to read bottom to top (a y-axis title) */
  rotate?: 0 | 90;
  /** overstrike one pixel to the right, for titles */
  bold?: boolean;
}

/** Stroke style for {@linkcode Canvas.line} and {@linkcode Canvas.polyline}. */
export interface LineOptions {
  /** stroke width in pixels (default 1) */
  width?: number;
  /** dash and gap lengths in pixels; solid when absent */
  dash?: readonly [number, number];
  /** pixels outside this rectangle are left alone */
  clip?: Rect;
}

/** Opaque white, the default canvas background. */
export const WHITE: Color = [255, 255, 255];
/** Opaque black, for axes and text. */
export const BLACK: Color = [0, 0, 0];
const GRID_GRAY: Color = [225, 225, 225];
const DIAGONAL_GRAY: Color = [150, 150, 150];
const LEGEND_BORDER: Color = [170, 170, 170];

/**
 * Fifteen series colours that stay apart from each other and from the black axes and gray grid: matplotlib's
 * tab10, then navy, olive, plum, teal and gold (Table 3 has 13 rows). Bars use the first, a highlighted bar
 * the second.
 */
export const PALETTE: readonly Color[] = [
  [31, 119, 180],
  [255, 127, 14],
  [44, 160, 44],
  [214, 39, 40],
  [148, 103, 189],
  [140, 86, 75],
  [227, 119, 194],
  [127, 127, 127],
  [188, 189, 34],
  [23, 190, 207],
  [57, 59, 121],
  [99, 121, 57],
  [170, 0, 120],
  [0, 120, 110],
  [230, 171, 2],
];

// ---- Font ----------------------------------------------------------------------------------------------

// The classic 5x7 LCD font for ASCII 32..126, then "±" (for mean ± std), with a descender row added below so
// that g j p q y hang under the baseline instead of being squeezed above it. Five bytes a glyph, one a column
// from left to right; bit 0 is the top row, bit 6 the baseline row, bit 7 the descender row.
const FONT_HEX = [
  "0000000000 00005f0000 0007000700 147f147f14 242a7f2a12 2313086462 3649552250", // space ! " # $ % &
  "0000070000 001c224100 0041221c00 082a1c2a08 08083e0808 0050300000 0808080808", // ' ( ) * + , -
  "0060600000 2010080402 3e4141413e 00427f4000 4261514946 2141454b31 1814127f10", // . / 0 1 2 3 4
  "2745454539 3c4a494930 0171090503 3649494936 064949291e 0036360000 0056360000", // 5 6 7 8 9 : ;
  "0814224100 1414141414 0041221408 0201510906 3249794132 7e1111117e 7f49494936", // < = > ? @ A B
  "3e41414122 7f4141221c 7f49494941 7f09090101 3e41415132 7f0808087f 00417f4100", // C D E F G H I
  "2040413f01 7f08142241 7f40404040 7f0204027f 7f0408107f 3e4141413e 7f09090906", // J K L M N O P
  "3e4151215e 7f09192946 4649494931 01017f0101 3f4040403f 1f2040201f 7f2018207f", // Q R S T U V W
  "6314081463 0304780403 6151494543 007f414100 0204081020 0041417f00 0402010204", // X Y Z [ \ ] ^
  "4040404040 0001020400 2054545478 7f48444438 3844444420 384444487f 3854545418", // _ ` a b c d e
  "087e090102 18a4a4a47c 7f08040478 00447d4000 408080847d 7f10284400 00417f4000", // f g h i j k l
  "7c04180478 7c08040478 3844444438 fc24242418 18242424fc 7c08040408 4854545420", // m n o p q r s
  "043f444020 3c4040207c 1c2040201c 3c4030403c 4428102844 1ca0a0a07c 4464544c44", // t u v w x y z
  "0008364100 00007f0000 0041360800 0804081008 44445f4444", // { | } ~ ±
].join("").replaceAll(" ", "");
const GLYPH_COLUMNS = 5, GLYPH_ROWS = 8, GLYPH_ADVANCE = 6;
const FONT = Uint8Array.from(
  { length: FONT_HEX.length / 2 },
  (_, i) => parseInt(FONT_HEX.slice(2 * i, 2 * i + 2), 16),
);
const PLUS_MINUS_GLYPH = 95, QUESTION_GLYPH = "?".charCodeAt(0) - 32;

function glyphIndex(code: number): number {
  if (code >= 32 && code <= 126) return code - 32;
  return code === 0xb1 ? PLUS_MINUS_GLYPH : QUESTION_GLYPH;
}

/** The default text scale: a 5x8 glyph cell becomes 10x16 screen pixels, readable at 100% zoom. */
export const TEXT_SCALE = 2;
const TEXT_HEIGHT = GLYPH_ROWS * TEXT_SCALE;
/** Baseline-to-baseline distance of wrapped lines. */
const LINE_HEIGHT = (GLYPH_ROWS + 2) * TEXT_SCALE;

/** The size of the box `text` fills, unrotated; characters outside ASCII and "±" draw as "?". */
export function measureText(text: string, scale = TEXT_SCALE): { width: number; height: number } {
  return {
    width: text.length === 0 ? 0 : (text.length * GLYPH_ADVANCE - 1) * scale,
    height: GLYPH_ROWS * scale,
  };
}

/** Greedy word wrap to `maxWidth` pixels; a word wider than that is cut between characters. */
export function wrapText(text: string, maxWidth: number, scale = TEXT_SCALE): string[] {
  const maxChars = Math.max(1, Math.floor((maxWidth / scale + 1) / GLYPH_ADVANCE));
  const lines: string[] = [];
  let current = "";
  for (const word of text.split(/\s+/).filter((w) => w.length > 0)) {
    for (let start = 0; start < word.length; start += maxChars) {
      const piece = word.slice(start, start + maxChars);
      const joined = current.length === 0 ? piece : `${current} ${piece}`;
      if (joined.length <= maxChars) current = joined;
      else {
        lines.push(current);
        current = piece;
      }
    }
  }
  if (current.length > 0 || lines.length === 0) lines.push(current);
  return lines;
}

// ---- Canvas --------------------------------------------------------------------------------------------

const clamp01 = (v: number) => (v < 0 ? 0 : v > 1 ? 1 : v);

function distanceToSegment(px: number, py: number, ax: number, ay: number, bx: number, by: number): number {
  const dx = bx - ax, dy = by - ay;
  const lengthSquared = dx * dx + dy * dy;
  const t = lengthSquared === 0 ? 0 : clamp01(((px - ax) * dx + (py - ay) * dy) / lengthSquared);
  return Math.hypot(px - ax - t * dx, py - ay - t * dy);
}

/** Cuts a polyline into the segments a dash pattern keeps, carrying the pattern's phase across corners. */
function dashSegments(points: readonly number[], dash: readonly [number, number]): number[] {
  const [on, off] = dash;
  const segments: number[] = [];
  let phase = 0;
  for (let k = 0; k + 3 < points.length; k += 2) {
    const ax = points[k], ay = points[k + 1], bx = points[k + 2], by = points[k + 3];
    const length = Math.hypot(bx - ax, by - ay);
    let t = 0;
    while (t < length) {
      const drawing = phase < on;
      const step = Math.min((drawing ? on : on + off) - phase, length - t);
      if (drawing) {
        const f0 = t / length, f1 = (t + step) / length;
        segments.push(ax + f0 * (bx - ax), ay + f0 * (by - ay), ax + f1 * (bx - ax), ay + f1 * (by - ay));
      }
      t += step;
      phase = (phase + step) % (on + off);
    }
  }
  return segments;
}

/**
 * An RGBA raster with the few primitives figures need. Coordinates are pixels from the top-left; pixel (i, j)
 * covers [i, i+1) x [j, j+1), so a 1-pixel line through pixel centres lies at i + 0.5. Rectangles and text
 * are pixel-exact (crisp axes and glyphs); lines and circles are anti-aliased (smooth curves).
 */
export class Canvas implements RgbaImage {
  /** The pixels, row-major RGBA, 4 bytes a pixel; drawing writes here. */
  readonly data: Uint8Array;

  /**
   * A `width` x `height` canvas filled with `background` (default {@linkcode WHITE}).
   * @throws Error when the size is not two positive integers.
   */
  constructor(readonly width: number, readonly height: number, background: Color = WHITE) {
    if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0)) {
      throw new Error(`Canvas: size must be positive integers, got ${width} x ${height}`);
    }
    this.data = new Uint8Array(width * height * 4);
    const [r, g, b, a = 255] = background;
    for (let i = 0; i < this.data.length; i += 4) {
      this.data[i] = r, this.data[i + 1] = g, this.data[i + 2] = b, this.data[i + 3] = a;
    }
  }

  /** [r, g, b, a] at a pixel. */
  pixel(x: number, y: number): [number, number, number, number] {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) {
      throw new Error(`Canvas.pixel: (${x}, ${y}) is outside ${this.width} x ${this.height}`);
    }
    const i = (y * this.width + x) * 4;
    return [this.data[i], this.data[i + 1], this.data[i + 2], this.data[i + 3]];
  }

  /** Composites `color` over pixel (x, y) with opacity coverage * its alpha (source-over). */
  private blend(x: number, y: number, color: Color, coverage: number): void {
    const opacity = coverage * (color[3] ?? 255) / 255;
    const i = (y * this.width + x) * 4, d = this.data;
    d[i] = Math.round(d[i] + (color[0] - d[i]) * opacity);
    d[i + 1] = Math.round(d[i + 1] + (color[1] - d[i + 1]) * opacity);
    d[i + 2] = Math.round(d[i + 2] + (color[2] - d[i + 2]) * opacity);
    d[i + 3] = Math.round(d[i + 3] + (255 - d[i + 3]) * opacity);
  }

  /** Fills the pixels whose centres lie inside the rectangle (edges rounded to whole pixels). */
  fillRect(x: number, y: number, width: number, height: number, color: Color): void {
    const x0 = Math.max(0, Math.round(x)), x1 = Math.min(this.width, Math.round(x + width));
    const y0 = Math.max(0, Math.round(y)), y1 = Math.min(this.height, Math.round(y + height));
    for (let py = y0; py < y1; py++) for (let px = x0; px < x1; px++) this.blend(px, py, color, 1);
  }

  /** A 1-pixel outline on the rectangle's own edge pixels. */
  strokeRect(rect: Rect, color: Color): void {
    const { x, y, width, height } = rect;
    this.fillRect(x, y, width, 1, color);
    this.fillRect(x, y + height - 1, width, 1, color);
    this.fillRect(x, y, 1, height, color);
    this.fillRect(x + width - 1, y, 1, height, color);
  }

  /** An anti-aliased straight line from (x0, y0) to (x1, y1); a two-point {@linkcode Canvas.polyline}. */
  line(x0: number, y0: number, x1: number, y1: number, color: Color, options: LineOptions = {}): void {
    this.polyline([x0, y0, x1, y1], color, options);
  }

  /**
   * An anti-aliased stroke through [x0, y0, x1, y1, ...]. Coverage is the distance from each pixel centre
   * to the nearest segment, taken as a maximum over all segments before blending once, so joints of a
   * dense curve are not darkened by overlapping segments.
   */
  polyline(points: readonly number[], color: Color, options: LineOptions = {}): void {
    if (points.length < 4 || points.length % 2 !== 0) {
      throw new Error(
        `Canvas.polyline: needs x, y pairs for at least 2 points, got ${points.length} numbers`,
      );
    }
    const halfWidth = (options.width ?? 1) / 2;
    if (options.dash && !(options.dash[0] > 0 && options.dash[1] > 0)) {
      throw new Error(`Canvas.polyline: dash lengths must be positive, got [${options.dash}]`);
    }
    const segments = options.dash ? dashSegments(points, options.dash) : points;
    const step = options.dash ? 4 : 2;
    const clip = options.clip ?? { x: 0, y: 0, width: this.width, height: this.height };
    const bx0 = Math.max(0, clip.x), by0 = Math.max(0, clip.y);
    const bx1 = Math.min(this.width, clip.x + clip.width), by1 = Math.min(this.height, clip.y + clip.height);
    if (bx1 <= bx0 || by1 <= by0) return;
    const maskWidth = bx1 - bx0;
    const mask = new Float32Array(maskWidth * (by1 - by0));
    const reach = halfWidth + 1;
    for (let k = 0; k + 3 < segments.length; k += step) {
      const ax = segments[k], ay = segments[k + 1], sx = segments[k + 2], sy = segments[k + 3];
      const x0 = Math.max(bx0, Math.floor(Math.min(ax, sx) - reach));
      const x1 = Math.min(bx1, Math.ceil(Math.max(ax, sx) + reach));
      const y0 = Math.max(by0, Math.floor(Math.min(ay, sy) - reach));
      const y1 = Math.min(by1, Math.ceil(Math.max(ay, sy) + reach));
      for (let py = y0; py < y1; py++) {
        for (let px = x0; px < x1; px++) {
          const coverage = halfWidth + 0.5 - distanceToSegment(px + 0.5, py + 0.5, ax, ay, sx, sy);
          const m = (py - by0) * maskWidth + (px - bx0);
          if (coverage > mask[m]) mask[m] = Math.min(1, coverage);
        }
      }
    }
    for (let m = 0; m < mask.length; m++) {
      if (mask[m] > 0) this.blend(bx0 + (m % maskWidth), by0 + Math.floor(m / maskWidth), color, mask[m]);
    }
  }

  /** An anti-aliased filled disc (a marker). */
  circle(cx: number, cy: number, radius: number, color: Color): void {
    const x0 = Math.max(0, Math.floor(cx - radius - 1)),
      x1 = Math.min(this.width, Math.ceil(cx + radius + 1));
    const y0 = Math.max(0, Math.floor(cy - radius - 1)),
      y1 = Math.min(this.height, Math.ceil(cy + radius + 1));
    for (let py = y0; py < y1; py++) {
      for (let px = x0; px < x1; px++) {
        const coverage = clamp01(radius + 0.5 - Math.hypot(px + 0.5 - cx, py + 0.5 - cy));
        if (coverage > 0) this.blend(px, py, color, coverage);
      }
    }
  }

  /** Draws `text` in the bitmap font and returns the box it occupies (before clipping to the canvas). */
  text(x: number, y: number, text: string, color: Color, options: TextOptions = {}): Rect {
    const { scale = TEXT_SCALE, align = "left", valign = "top", rotate = 0, bold = false } = options;
    const run = measureText(text, scale);
    const runWidth = run.width + (bold && text.length > 0 ? 1 : 0);
    const boxWidth = rotate === 90 ? run.height : runWidth, boxHeight = rotate === 90 ? runWidth : run.height;
    const left = Math.round(x - (align === "center" ? boxWidth / 2 : align === "right" ? boxWidth : 0));
    const top = Math.round(y - (valign === "middle" ? boxHeight / 2 : valign === "bottom" ? boxHeight : 0));
    // (tx, ty) is a pixel block in unrotated text space; the 90-degree turn maps it to (ty, runWidth - tx).
    const block = (tx: number, ty: number) => {
      if (rotate === 90) this.fillRect(left + ty, top + runWidth - tx - scale, scale, scale, color);
      else this.fillRect(left + tx, top + ty, scale, scale, color);
    };
    for (let c = 0; c < text.length; c++) {
      const glyph = glyphIndex(text.charCodeAt(c)) * GLYPH_COLUMNS;
      for (let col = 0; col < GLYPH_COLUMNS; col++) {
        const bits = FONT[glyph + col];
        for (let row = 0; row < GLYPH_ROWS; row++) {
          if (((bits >> row) & 1) === 0) continue;
          const tx = (c * GLYPH_ADVANCE + col) * scale, ty = row * scale;
          block(tx, ty);
          if (bold) block(tx + 1, ty);
        }
      }
    }
    return { x: left, y: top, width: boxWidth, height: boxHeight };
  }

  /** Composites an RGBA image with its top-left at (x, y). */
  drawImage(image: RgbaImage, x: number, y: number): void {
    for (let iy = 0; iy < image.height; iy++) {
      const py = y + iy;
      if (py < 0 || py >= this.height) continue;
      for (let ix = 0; ix < image.width; ix++) {
        const px = x + ix;
        if (px < 0 || px >= this.width) continue;
        const i = (iy * image.width + ix) * 4, s = image.data;
        this.blend(px, py, [s[i], s[i + 1], s[i + 2], s[i + 3]], 1);
      }
    }
  }

  /** Lossless 8-bit PNG (upng-js may pick RGB or a palette when that loses nothing). */
  toPNG(): Uint8Array {
    return new Uint8Array(UPNG.encode([this.data.slice().buffer], this.width, this.height, 0));
  }
}

/** Writes PNG bytes atomically (a temporary sibling, then a rename), creating the folder. */
export function savePNG(path: string, png: Uint8Array): void {
  writeFileAtomic(path, png);
}

/** RGBA pixels of a PNG file's bytes. */
export function decodePNG(png: Uint8Array): RgbaImage {
  const image = UPNG.decode(png.slice().buffer);
  return { width: image.width, height: image.height, data: new Uint8Array(UPNG.toRGBA8(image)[0]) };
}

// ---- Ticks and colour maps -----------------------------------------------------------------------------

/** Axis ticks: values ascending and their labels, one per value. */
export interface Ticks {
  /** Tick positions in data units, ascending. */
  values: number[];
  /** Each value formatted with the decimals the tick step needs (`"0.2"`, `"2.50"`). */
  labels: string[];
}

/**
 * The smallest step of 1, 2, 2.5 or 5 times a power of ten whose multiples from `first(step)` to `last(step)`
 * are at most `maxTicks`, as those values and their labels with the decimals the step needs.
 */
function roundSteps(
  span: number,
  maxTicks: number,
  first: (step: number) => number,
  last: (step: number) => number,
): Ticks {
  for (let exponent = Math.floor(Math.log10(span / Math.max(1, maxTicks)));; exponent++) {
    for (const mantissa of [1, 2, 2.5, 5]) {
      const step = mantissa * 10 ** exponent;
      const from = first(step), to = last(step);
      if (to - from + 1 > maxTicks) continue;
      // k * mantissa / 10^-exponent keeps decimal steps exact (0.6, not 0.6000000000000001)
      const at = (k: number) => (exponent < 0 ? (k * mantissa) / 10 ** -exponent : k * step);
      const decimals = Math.max(0, -exponent) + (mantissa === 2.5 ? 1 : 0);
      const values: number[] = [];
      for (let k = from; k <= to; k++) values.push(at(k));
      return { values, labels: values.map((v) => (v === 0 ? 0 : v).toFixed(decimals)) };
    }
  }
}

const EPS = 1e-9; // a value within this many steps of a multiple counts as on it

/**
 * At most `maxTicks` round values in [min, max] (steps of 1, 2, 2.5 or 5 times a power of ten) and their
 * labels with the decimals that step needs: [0, 1] gives 0.0, 0.2, ..., 1.0.
 */
export function niceTicks(min: number, max: number, maxTicks = 6): Ticks {
  if (!(Number.isFinite(min) && Number.isFinite(max) && max > min)) {
    throw new Error(`niceTicks: need finite min < max, got [${min}, ${max}]`);
  }
  return roundSteps(max - min, maxTicks, (s) => Math.ceil(min / s - EPS), (s) => Math.floor(max / s + EPS));
}

/**
 * For an axis the caller left to the data: [min, max] widened out to the nearest ticks, so the frame starts
 * and ends on a labelled value, and those ticks (up to 8, as widening can add one at each end).
 */
function autoAxis(min: number, max: number): { range: [number, number]; ticks: Ticks } {
  if (min === max) return autoAxis(min - (Math.abs(min) || 1) / 10, max + (Math.abs(max) || 1) / 10);
  const ticks = roundSteps(max - min, 8, (s) => Math.floor(min / s + EPS), (s) => Math.ceil(max / s - EPS));
  return { range: [ticks.values[0], ticks.values[ticks.values.length - 1]], ticks };
}

/** The caller's range (checked) with ticks inside it, or, without one, a range fitted to data in [min, max]. */
function axis(
  where: string,
  name: string,
  range: readonly [number, number] | undefined,
  min: number,
  max: number,
): { range: [number, number]; ticks: Ticks } {
  if (!range) return autoAxis(min, max);
  if (!(Number.isFinite(range[0]) && Number.isFinite(range[1]) && range[1] > range[0])) {
    throw new Error(`${where}: ${name} must be finite with min < max, got [${range[0]}, ${range[1]}]`);
  }
  return { range: [range[0], range[1]], ticks: niceTicks(range[0], range[1]) };
}

function interpolateStops(stops: readonly Color[], t: number): Color {
  const position = clamp01(t) * (stops.length - 1);
  const k = Math.min(stops.length - 2, Math.floor(position)), f = position - k;
  const a = stops[k], b = stops[k + 1];
  const mix = (c: number) => Math.round(a[c] + (b[c] - a[c]) * f);
  return [mix(0), mix(1), mix(2)];
}

// ColorBrewer's 9-class Blues (matplotlib's "Blues"): each stop darker than the one before, so darkness
// rises with the value.
const BLUES: readonly Color[] = [
  [247, 251, 255],
  [222, 235, 247],
  [198, 219, 239],
  [158, 202, 225],
  [107, 174, 214],
  [66, 146, 198],
  [33, 113, 181],
  [8, 81, 156],
  [8, 48, 107],
];

/** matplotlib's "jet": dark blue, blue, cyan, yellow, red, dark red as t goes 0 to 1. */
function jet(t: number): [number, number, number] {
  const channel = (centre: number) => Math.round(255 * clamp01(1.5 - Math.abs(4 * clamp01(t) - centre)));
  return [channel(3), channel(2), channel(1)];
}

// ---- Figure layout -------------------------------------------------------------------------------------

const PAD = 14; // figure edge to the outermost text
const GAP = 6; // tick to its label
const TICK = 5; // tick mark length, outward
const TITLE_GAP = 12; // title or axis title to what it names

/** A linear map from data values to pixel-centre coordinates. */
class Scale {
  constructor(readonly min: number, readonly max: number, readonly from: number, readonly to: number) {}
  at(v: number): number {
    return this.from + (v - this.min) / (this.max - this.min) * (this.to - this.from);
  }
}

/** Scales that put [min, max] on the frame's pixel centres, `inset` pixels inside its edge lines. */
function frameScales(frame: Rect, x: [number, number], y: [number, number], inset: number) {
  return {
    x: new Scale(x[0], x[1], frame.x + 0.5 + inset, frame.x + frame.width - 0.5 - inset),
    y: new Scale(y[0], y[1], frame.y + frame.height - 0.5 - inset, frame.y + 0.5 + inset),
  };
}

/** A bold title centred over `centre` (the plot frame's middle, as matplotlib does), kept on the canvas. */
function drawTitle(canvas: Canvas, title: string, centre: number): void {
  if (!title) return;
  const half = measureText(title).width / 2;
  const x = Math.min(canvas.width - PAD - half, Math.max(PAD + half, centre));
  canvas.text(x, PAD, title, BLACK, { align: "center", bold: true });
}

const titleBand = (title: string) => (title ? PAD + TEXT_HEIGHT + TITLE_GAP : PAD);

/** Value ticks on the left edge: gray grid lines across the frame, tick marks and right-aligned labels. */
function drawYTicks(canvas: Canvas, frame: Rect, scale: Scale, ticks: Ticks): void {
  ticks.values.forEach((v, k) => {
    const py = Math.floor(scale.at(v));
    canvas.fillRect(frame.x + 1, py, frame.width - 2, 1, GRID_GRAY);
    canvas.fillRect(frame.x - TICK, py, TICK, 1, BLACK);
    canvas.text(frame.x - TICK - GAP, py + 0.5, ticks.labels[k], BLACK, { align: "right", valign: "middle" });
  });
}

/** Value ticks on the bottom edge: gray grid lines up the frame, tick marks and centred labels. */
function drawXTicks(canvas: Canvas, frame: Rect, scale: Scale, ticks: Ticks): void {
  const bottom = frame.y + frame.height;
  ticks.values.forEach((v, k) => {
    const px = Math.floor(scale.at(v));
    canvas.fillRect(px, frame.y + 1, 1, frame.height - 2, GRID_GRAY);
    canvas.fillRect(px, bottom, 1, TICK, BLACK);
    canvas.text(px + 0.5, bottom + TICK + GAP, ticks.labels[k], BLACK, { align: "center" });
  });
}

const widest = (texts: readonly string[]) => Math.max(0, ...texts.map((t) => measureText(t).width));

/** Labels under a row of slots (bars, matrix columns), each wrapped between words, or all turned upright
 * when a word does not fit its slot; `height` is the band they take below the ticks. */
interface SlotLabels {
  lines: string[][];
  upright: boolean;
  height: number;
}

function layoutSlotLabels(labels: readonly string[], slotWidth: number): SlotLabels {
  const room = slotWidth - 8;
  const wordsFit = labels.every((l) => l.split(/\s+/).every((w) => measureText(w).width <= room));
  if (!wordsFit) return { lines: labels.map((l) => [l]), upright: true, height: widest(labels) };
  const lines = labels.map((l) => wrapText(l, room));
  const count = Math.max(...lines.map((ls) => ls.length));
  return { lines, upright: false, height: (count - 1) * LINE_HEIGHT + TEXT_HEIGHT };
}

function drawSlotLabels(canvas: Canvas, layout: SlotLabels, centres: readonly number[], top: number): void {
  layout.lines.forEach((lines, k) => {
    if (layout.upright) {
      canvas.text(centres[k], top, lines[0], BLACK, { rotate: 90, align: "center" });
      return;
    }
    lines.forEach((line, j) =>
      canvas.text(centres[k], top + j * LINE_HEIGHT, line, BLACK, { align: "center" })
    );
  });
}

function drawYTitle(canvas: Canvas, frame: Rect, label: string): void {
  if (label) {
    canvas.text(PAD, frame.y + frame.height / 2, label, BLACK, { rotate: 90, valign: "middle" });
  }
}

const yTitleBand = (label: string) => (label ? TEXT_HEIGHT + TITLE_GAP : 0);

function checkFinite(where: string, what: string, values: ArrayLike<number>): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) {
      throw new Error(`${where}: ${what}[${i}] is ${values[i]}, not a finite number`);
    }
  }
}

// ---- Bar chart with error bars (Fig. 2) ----------------------------------------------------------------

/** Input of {@linkcode barChartWithErrors}. */
export interface BarChartOptions {
  /** Bold text over the plot; `""` for none. */
  title: string;
  /** Value axis title, drawn upright at the left; `""` for none. */
  yLabel: string;
  /** one per bar, drawn under it; long names are wrapped, or turned upright when a word does not fit */
  categories: readonly string[];
  /** Bar heights, one per category (e.g. mean F1 over folds); finite. */
  means: readonly number[];
  /** error bar half-lengths (the standard deviation over folds); 0 draws no error bar */
  stds: readonly number[];
  /** value axis range; default: round values around 0 and every mean +- std */
  yRange?: readonly [number, number];
  /** index of a bar to draw in the second palette colour (FLANNEL against its base learners) */
  highlight?: number;
  /** Category axis title under the labels (default none). */
  xLabel?: string;
  /** decimals of the mean printed over each bar (default 3) */
  valueDigits?: number;
}

/** Mean bars with +-std error bars and the mean printed above each; PNG bytes. */
export function barChartWithErrors(options: BarChartOptions): Uint8Array {
  const where = "barChartWithErrors";
  const { title, yLabel, categories, means, stds, highlight, xLabel = "", valueDigits = 3 } = options;
  if (categories.length === 0) throw new Error(`${where}: no categories`);
  if (means.length !== categories.length) {
    throw new Error(`${where}: ${means.length} means for ${categories.length} categories`);
  }
  if (stds.length !== means.length) {
    throw new Error(`${where}: ${means.length} means but ${stds.length} stds`);
  }
  checkFinite(where, "means", means);
  checkFinite(where, "stds", stds);
  stds.forEach((s, i) => {
    if (s < 0) throw new Error(`${where}: stds[${i}] is ${s}, negative`);
  });
  if (
    highlight !== undefined && !(Number.isInteger(highlight) && highlight >= 0 && highlight < means.length)
  ) {
    throw new Error(`${where}: highlight ${highlight} is not a bar index in 0..${means.length - 1}`);
  }
  const { range: yRange, ticks: yTicks } = axis(
    where,
    "yRange",
    options.yRange,
    Math.min(0, ...means.map((m, i) => m - stds[i])),
    Math.max(0, ...means.map((m, i) => m + stds[i])),
  );

  // Slots are wide enough for the longest word of any label, so labels usually wrap rather than turn.
  const longestWord = Math.max(...categories.flatMap((c) => c.split(/\s+/).map((w) => measureText(w).width)));
  const slotWidth = Math.max(130, Math.min(220, longestWord + 16));
  const frameWidth = Math.max(400, slotWidth * categories.length);
  const frameHeight = 400;
  const labels = layoutSlotLabels(categories, frameWidth / categories.length);
  const left = PAD + yTitleBand(yLabel) + widest(yTicks.labels) + GAP + TICK;
  const top = titleBand(title);
  const bottom = TICK + GAP + labels.height + (xLabel ? TITLE_GAP + TEXT_HEIGHT : 0) + PAD;
  const width = Math.max(left + frameWidth + PAD, measureText(title).width + 2 * PAD);
  const canvas = new Canvas(width, top + frameHeight + bottom);
  const frame: Rect = { x: left, y: top, width: frameWidth, height: frameHeight };
  const y = frameScales(frame, [0, 1], yRange, 0).y;

  drawTitle(canvas, title, frame.x + frame.width / 2);
  drawYTicks(canvas, frame, y, yTicks);
  drawYTitle(canvas, frame, yLabel);
  const slot = frameWidth / categories.length, barWidth = Math.round(slot * 0.6);
  const centres = categories.map((_, k) => frame.x + (k + 0.5) * slot);
  const clipToFrame = (v: number) => Math.min(yRange[1], Math.max(yRange[0], v));
  // A bar covers the rows whose pixel centres lie between 0 and its mean, both ends included.
  const baseRow = Math.floor(y.at(clipToFrame(0)));
  means.forEach((mean, k) => {
    const colour = k === highlight ? PALETTE[1] : PALETTE[0];
    const topRow = Math.floor(y.at(clipToFrame(mean)));
    const barLeft = Math.round(centres[k] - barWidth / 2);
    canvas.fillRect(barLeft, Math.min(topRow, baseRow), barWidth, Math.abs(baseRow - topRow) + 1, colour);
    const cx = Math.floor(centres[k]) + 0.5;
    const errTop = y.at(clipToFrame(mean + stds[k])), errBottom = y.at(clipToFrame(mean - stds[k]));
    if (stds[k] > 0) {
      const cap = barWidth * 0.2;
      canvas.line(cx, errTop, cx, errBottom, BLACK, { width: 2 });
      canvas.line(cx - cap, errTop, cx + cap, errTop, BLACK, { width: 2 });
      canvas.line(cx - cap, errBottom, cx + cap, errBottom, BLACK, { width: 2 });
    }
    // The mean goes past the bar's outer end (above it, or below a negative one) and its error bar; where
    // that would leave the frame, inside the bar's foot in white instead.
    const value = mean.toFixed(valueDigits);
    const up = mean >= 0;
    const outer = up
      ? Math.min(errTop, y.at(clipToFrame(mean))) - 6
      : Math.max(errBottom, y.at(clipToFrame(mean))) + 6;
    const fits = up ? outer - TEXT_HEIGHT >= frame.y + 2 : outer + TEXT_HEIGHT <= frame.y + frame.height - 2;
    const valign = up ? "bottom" : "top";
    if (fits) canvas.text(cx, outer, value, BLACK, { align: "center", valign });
    else canvas.text(cx, up ? baseRow - 6 : baseRow + 7, value, WHITE, { align: "center", valign });
  });
  canvas.strokeRect(frame, BLACK);
  centres.forEach((c) => canvas.fillRect(Math.floor(c), frame.y + frame.height, 1, TICK, BLACK));
  drawSlotLabels(canvas, labels, centres, frame.y + frame.height + TICK + GAP);
  if (xLabel) {
    canvas.text(frame.x + frame.width / 2, canvas.height - PAD, xLabel, BLACK, {
      align: "center",
      valign: "bottom",
    });
  }
  return canvas.toPNG();
}

// ---- Line chart: ROC and precision-recall curves (Fig. 3) ----------------------------------------------

/** One curve of a {@linkcode lineChart}: points (x[i], y[i]) joined in order. */
export interface Series {
  /** legend text, e.g. "covid (AUC 0.95)" */
  name: string;
  /** Horizontal coordinates in data units; finite, as many as `y`, at least one. */
  x: readonly number[];
  /** Vertical coordinates in data units; finite, as many as `x`. A single point draws as a dot. */
  y: readonly number[];
}

/** Input of {@linkcode lineChart}. */
export interface LineChartOptions {
  /** Bold text over the plot; `""` for none. */
  title: string;
  /** Horizontal axis title under the tick labels; `""` for none. */
  xLabel: string;
  /** Vertical axis title, drawn upright at the left; `""` for none. */
  yLabel: string;
  /** at most 15, each in its own PALETTE colour */
  series: readonly Series[];
  /** default: round values around the data */
  xRange?: readonly [number, number];
  /** default: round values around the data */
  yRange?: readonly [number, number];
  /** a dashed gray y = x line, the chance level of a ROC curve */
  diagonal?: boolean;
  /** figure size in pixels (default 720 x 560); a legend too big for the plot widens it */
  width?: number;
  /** figure height in pixels (default 560) */
  height?: number;
}

/** [min, max] over several arrays, by a loop: curves can hold more points than a spread call takes. */
function extent(arrays: readonly (readonly number[])[]): [number, number] {
  let min = Infinity, max = -Infinity;
  for (const values of arrays) for (const v of values) min = Math.min(min, v), max = Math.max(max, v);
  return [min, max];
}

const CURVE_WIDTH = 2.5;
const DATA_INSET = 6; // curves at the range's ends stay clear of the frame lines
const LEGEND_PAD = 8, LEGEND_SWATCH = 28;

/** Curves with a legend; PNG bytes. */
export function lineChart(options: LineChartOptions): Uint8Array {
  const where = "lineChart";
  const { title, xLabel, yLabel, series, diagonal = false } = options;
  if (series.length === 0) throw new Error(`${where}: no series`);
  if (series.length > PALETTE.length) {
    throw new Error(`${where}: ${series.length} series, but only ${PALETTE.length} have distinct colours`);
  }
  series.forEach((s, k) => {
    const name = `series ${k} (${JSON.stringify(s.name)})`;
    if (s.x.length === 0 || s.y.length === 0) throw new Error(`${where}: ${name} is empty`);
    if (s.x.length !== s.y.length) {
      throw new Error(`${where}: ${name} has ${s.x.length} x but ${s.y.length} y`);
    }
    checkFinite(where, `${name} x`, s.x);
    checkFinite(where, `${name} y`, s.y);
  });
  const [xMin, xMax] = extent(series.map((s) => s.x)), [yMin, yMax] = extent(series.map((s) => s.y));
  const { range: xRange, ticks: xTicks } = axis(where, "xRange", options.xRange, xMin, xMax);
  const { range: yRange, ticks: yTicks } = axis(where, "yRange", options.yRange, yMin, yMax);

  const legendWidth = 2 * LEGEND_PAD + LEGEND_SWATCH + GAP + widest(series.map((s) => s.name));
  const legendHeight = 2 * LEGEND_PAD + series.length * LINE_HEIGHT - (LINE_HEIGHT - TEXT_HEIGHT);
  const left = PAD + yTitleBand(yLabel) + widest(yTicks.labels) + GAP + TICK;
  const top = titleBand(title);
  const bottom = TICK + GAP + TEXT_HEIGHT + (xLabel ? TITLE_GAP + TEXT_HEIGHT : 0) + PAD;
  // the last x tick label is centred on the frame's right edge, so half of it sticks out
  const right = PAD + Math.ceil(measureText(xTicks.labels[xTicks.labels.length - 1]).width / 2);
  const width = options.width ?? 720, height = options.height ?? 560;
  const frame: Rect = { x: left, y: top, width: width - left - right, height: height - top - bottom };
  if (frame.width < 100 || frame.height < 100) {
    throw new Error(
      `${where}: ${width} x ${height} leaves a ${frame.width} x ${frame.height} plot, under 100 x 100`,
    );
  }
  // A legend that would hide much of the plot goes beside it instead, widening the figure.
  const outside = legendWidth > frame.width * 0.6 || legendHeight > frame.height * 0.7;
  const canvas = new Canvas(outside ? width + legendWidth + PAD : width, height);
  const scales = frameScales(frame, xRange, yRange, DATA_INSET);

  drawTitle(canvas, title, frame.x + frame.width / 2);
  drawXTicks(canvas, frame, scales.x, xTicks);
  drawYTicks(canvas, frame, scales.y, yTicks);
  drawYTitle(canvas, frame, yLabel);
  if (xLabel) {
    canvas.text(frame.x + frame.width / 2, canvas.height - PAD, xLabel, BLACK, {
      align: "center",
      valign: "bottom",
    });
  }
  const clip: Rect = { x: frame.x + 1, y: frame.y + 1, width: frame.width - 2, height: frame.height - 2 };
  const curves: number[][] = [];
  if (diagonal) {
    const lo = Math.max(xRange[0], yRange[0]), hi = Math.min(xRange[1], yRange[1]);
    if (hi > lo) {
      const points = [scales.x.at(lo), scales.y.at(lo), scales.x.at(hi), scales.y.at(hi)];
      canvas.polyline(points, DIAGONAL_GRAY, { width: 1.5, dash: [8, 6], clip });
      curves.push(points);
    }
  }
  series.forEach((s, k) => {
    const points = s.x.flatMap((x, i) => [scales.x.at(x), scales.y.at(s.y[i])]);
    if (points.length === 2) canvas.circle(points[0], points[1], CURVE_WIDTH + 1, PALETTE[k]);
    else canvas.polyline(points, PALETTE[k], { width: CURVE_WIDTH, clip });
    curves.push(points);
  });
  canvas.strokeRect(frame, BLACK);

  const legendBox = outside
    ? { x: frame.x + frame.width + PAD, y: frame.y, width: legendWidth, height: legendHeight }
    : emptiestCorner(frame, legendWidth, legendHeight, curves);
  canvas.fillRect(legendBox.x, legendBox.y, legendBox.width, legendBox.height, [255, 255, 255, 230]);
  canvas.strokeRect(legendBox, LEGEND_BORDER);
  series.forEach((s, k) => {
    const rowMiddle = legendBox.y + LEGEND_PAD + k * LINE_HEIGHT + TEXT_HEIGHT / 2;
    const swatchLeft = legendBox.x + LEGEND_PAD;
    canvas.line(swatchLeft, rowMiddle, swatchLeft + LEGEND_SWATCH, rowMiddle, PALETTE[k], {
      width: CURVE_WIDTH,
    });
    canvas.text(swatchLeft + LEGEND_SWATCH + GAP, rowMiddle, s.name, BLACK, { valign: "middle" });
  });
  return canvas.toPNG();
}

/**
 * The frame corner where a legend box covers the fewest curve points (sampled every 2 pixels along each
 * segment), as matplotlib's loc="best"; ties go to lower right, the empty corner of a ROC plot.
 */
function emptiestCorner(frame: Rect, width: number, height: number, curves: readonly number[][]): Rect {
  const margin = 10;
  const xs = [frame.x + frame.width - margin - width, frame.x + margin];
  const ys = [frame.y + frame.height - margin - height, frame.y + margin];
  const candidates: Rect[] = [
    { x: xs[0], y: ys[0], width, height },
    { x: xs[1], y: ys[1], width, height },
    { x: xs[0], y: ys[1], width, height },
    { x: xs[1], y: ys[0], width, height },
  ];
  const covered = candidates.map(() => 0);
  for (const points of curves) {
    for (let k = 0; k + 1 < points.length; k += 2) {
      const ax = points[k], ay = points[k + 1];
      const bx = points[k + 2] ?? ax, by = points[k + 3] ?? ay;
      const samples = Math.max(1, Math.ceil(Math.hypot(bx - ax, by - ay) / 2));
      for (let s = 0; s < samples; s++) {
        const px = ax + (bx - ax) * s / samples, py = ay + (by - ay) * s / samples;
        candidates.forEach((c, i) => {
          if (px >= c.x - 4 && px <= c.x + c.width + 4 && py >= c.y - 4 && py <= c.y + c.height + 4) {
            covered[i]++;
          }
        });
      }
    }
  }
  return candidates[covered.indexOf(Math.min(...covered))];
}

// ---- Confusion matrix (Fig. 4) -------------------------------------------------------------------------

/** Input of {@linkcode confusionMatrixChart}. */
export interface ConfusionMatrixOptions {
  /** Bold text over the matrix; `""` for none. */
  title: string;
  /** Row and column labels, one per class, in label order. */
  classNames: readonly string[];
  /** counts, rows the true class, columns the predicted one */
  matrix: readonly (readonly number[])[];
  /** colour by each row's share (recall along the diagonal) and print it above the count */
  normalize?: boolean;
}

/** A Blues heatmap with the count (and row share) in each cell and a colour bar; PNG bytes. */
export function confusionMatrixChart(options: ConfusionMatrixOptions): Uint8Array {
  const where = "confusionMatrixChart";
  const { title, classNames, matrix, normalize = false } = options;
  const n = matrix.length;
  if (n === 0) throw new Error(`${where}: empty matrix`);
  matrix.forEach((row, i) => {
    if (row.length !== n) {
      throw new Error(`${where}: matrix is not square: row ${i} has ${row.length} entries, not ${n}`);
    }
    checkFinite(where, `matrix[${i}]`, row);
    row.forEach((v, j) => {
      if (v < 0) throw new Error(`${where}: matrix[${i}][${j}] is ${v}, negative`);
    });
  });
  if (classNames.length !== n) {
    throw new Error(`${where}: ${classNames.length} class names for a ${n} x ${n} matrix`);
  }

  const rowSums = matrix.map((row) => row.reduce((a, b) => a + b, 0));
  const share = (i: number, j: number) => (rowSums[i] === 0 ? 0 : matrix[i][j] / rowSums[i]);
  const colourMax = normalize ? 1 : Math.max(1, ...matrix.flat());
  const value = (i: number, j: number) => (normalize ? share(i, j) : matrix[i][j]);
  const formatCount = (v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(1));
  const cellLines = (i: number, j: number) =>
    normalize ? [share(i, j).toFixed(2), `(${formatCount(matrix[i][j])})`] : [formatCount(matrix[i][j])];

  const allCellText = matrix.flatMap((row, i) => row.flatMap((_, j) => cellLines(i, j)));
  const cell = Math.max(90, widest(allCellText) + 20, widest(classNames.flatMap((c) => c.split(/\s+/))) + 16);
  const xLabels = layoutSlotLabels(classNames, cell);
  const barTicks = niceTicks(0, colourMax, 6);
  const barWidth = 20;
  const left = PAD + yTitleBand("true class") + widest(classNames) + GAP + TICK;
  const top = titleBand(title);
  const bottom = TICK + GAP + xLabels.height + TITLE_GAP + TEXT_HEIGHT + PAD;
  const right = 3 * GAP + barWidth + TICK + GAP + widest(barTicks.labels) + PAD;
  const frame: Rect = { x: left, y: top, width: n * cell, height: n * cell };
  const width = Math.max(left + frame.width + right, measureText(title).width + 2 * PAD);
  const canvas = new Canvas(width, top + frame.height + bottom);

  drawTitle(canvas, title, frame.x + frame.width / 2);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const t = value(i, j) / colourMax;
      const x = frame.x + j * cell, y = frame.y + i * cell;
      canvas.fillRect(x, y, cell, cell, interpolateStops(BLUES, t));
      // white on the dark half of the map, black on the light half
      const ink = t > 0.5 ? WHITE : BLACK;
      const lines = cellLines(i, j);
      const firstTop = y + cell / 2 - ((lines.length - 1) * LINE_HEIGHT + TEXT_HEIGHT) / 2;
      lines.forEach((line, k) =>
        canvas.text(x + cell / 2, firstTop + k * LINE_HEIGHT, line, ink, { align: "center" })
      );
    }
  }
  canvas.strokeRect(frame, BLACK);
  const centres = classNames.map((_, k) => frame.x + (k + 0.5) * cell);
  centres.forEach((c, k) => {
    canvas.fillRect(Math.floor(c), frame.y + frame.height, 1, TICK, BLACK);
    const rowMiddle = Math.floor(frame.y + (k + 0.5) * cell);
    canvas.fillRect(frame.x - TICK, rowMiddle, TICK, 1, BLACK);
    canvas.text(frame.x - TICK - GAP, rowMiddle + 0.5, classNames[k], BLACK, {
      align: "right",
      valign: "middle",
    });
  });
  drawSlotLabels(canvas, xLabels, centres, frame.y + frame.height + TICK + GAP);
  canvas.text(frame.x + frame.width / 2, canvas.height - PAD, "predicted class", BLACK, {
    align: "center",
    valign: "bottom",
  });
  drawYTitle(canvas, frame, "true class");

  // Colour bar: one row of the map per pixel, its value ticks on the right.
  const bar: Rect = { x: frame.x + frame.width + 3 * GAP, y: frame.y, width: barWidth, height: frame.height };
  for (let row = 0; row < bar.height; row++) {
    canvas.fillRect(bar.x, bar.y + row, bar.width, 1, interpolateStops(BLUES, 1 - row / (bar.height - 1)));
  }
  canvas.strokeRect(bar, BLACK);
  const barScale = frameScales(bar, [0, 1], [0, colourMax], 0).y;
  barTicks.values.forEach((v, k) => {
    const py = Math.floor(barScale.at(v));
    canvas.fillRect(bar.x + bar.width, py, TICK, 1, BLACK);
    canvas.text(bar.x + bar.width + TICK + GAP, py + 0.5, barTicks.labels[k], BLACK, { valign: "middle" });
  });
  return canvas.toPNG();
}

// ---- Class activation map overlay and image grid (Fig. 6) ----------------------------------------------

function checkGray(where: string, name: string, image: GrayImage): void {
  const { width, height, data } = image;
  if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0)) {
    throw new Error(`${where}: ${name} size must be positive integers, got ${width} x ${height}`);
  }
  if (data.length !== width * height) {
    throw new Error(`${where}: ${name} has ${data.length} values for ${width} x ${height}`);
  }
}

/** An RGBA image resized channel by channel with the project's image resampler (PIL's bilinear). */
function resizeRgba(image: RgbaImage, width: number, height: number): RgbaImage {
  const data = new Uint8Array(width * height * 4);
  const plane = new Float32Array(image.width * image.height);
  for (let c = 0; c < 4; c++) {
    for (let p = 0; p < plane.length; p++) plane[p] = image.data[p * 4 + c];
    const resized = resizeGray({ width: image.width, height: image.height, data: plane }, width, height).data;
    for (let p = 0; p < resized.length; p++) {
      data[p * 4 + c] = Math.min(255, Math.max(0, Math.round(resized[p])));
    }
  }
  return { width, height, data };
}

/** Input of {@linkcode heatmapOverlay}. */
export interface HeatmapOverlayOptions {
  /** the X-ray, values in [0, 1] */
  gray: GrayImage;
  /** the class activation map, any size and range; resized to the X-ray and scaled to [0, 1] */
  heat: GrayImage;
  /** opacity of the hottest point (default 0.5) */
  alpha?: number;
}

/**
 * The X-ray with a jet-coloured activation map blended on top, as PNG bytes the X-ray's size. Each pixel's
 * opacity is alpha times its heat, so where the model does not look the X-ray stays gray and readable.
 */
export function heatmapOverlay(options: HeatmapOverlayOptions): Uint8Array {
  const where = "heatmapOverlay";
  const { gray, heat, alpha = 0.5 } = options;
  checkGray(where, "gray", gray);
  checkGray(where, "heat", heat);
  checkFinite(where, "gray.data", gray.data);
  checkFinite(where, "heat.data", heat.data);
  if (!(alpha >= 0 && alpha <= 1)) throw new Error(`${where}: alpha ${alpha} is outside [0, 1]`);
  const resized = resizeGray(heat, gray.width, gray.height).data;
  let lo = Infinity, hi = -Infinity;
  for (const v of resized) lo = Math.min(lo, v), hi = Math.max(hi, v);
  const canvas = new Canvas(gray.width, gray.height);
  for (let p = 0; p < resized.length; p++) {
    const t = hi > lo ? (resized[p] - lo) / (hi - lo) : 0;
    const level = Math.round(255 * clamp01(gray.data[p]));
    const [r, g, b] = jet(t);
    const opacity = alpha * t;
    canvas.data[4 * p] = Math.round(level + (r - level) * opacity);
    canvas.data[4 * p + 1] = Math.round(level + (g - level) * opacity);
    canvas.data[4 * p + 2] = Math.round(level + (b - level) * opacity);
  }
  return canvas.toPNG();
}

/** Layout of {@linkcode imageGrid}. */
export interface ImageGridOptions {
  /** images per row (default: all in one row up to 6, then the square root's ceiling) */
  columns?: number;
  /** each image is scaled to fit a tile this many pixels on its long side (default: the largest image's,
   * at most 320) */
  tileSize?: number;
  /** Bold text over the grid (default none). */
  title?: string;
}

/** Tiles images (PNG bytes or RGBA) in a grid with a caption under each, one per learner; PNG bytes. */
export function imageGrid(
  images: readonly (Uint8Array | RgbaImage)[],
  labels: readonly string[],
  options: ImageGridOptions = {},
): Uint8Array {
  const where = "imageGrid";
  if (images.length === 0) throw new Error(`${where}: no images`);
  if (labels.length !== images.length) {
    throw new Error(`${where}: ${images.length} images but ${labels.length} labels`);
  }
  const rgba = images.map((image) => (image instanceof Uint8Array ? decodePNG(image) : image));
  rgba.forEach((image, k) => {
    if (image.data.length !== image.width * image.height * 4) {
      throw new Error(
        `${where}: image ${k} has ${image.data.length} bytes for ${image.width} x ${image.height} RGBA`,
      );
    }
  });
  const columns = options.columns ??
    (images.length <= 6 ? images.length : Math.ceil(Math.sqrt(images.length)));
  if (!(Number.isInteger(columns) && columns > 0)) {
    throw new Error(`${where}: columns ${columns} is not a positive integer`);
  }
  const tile = options.tileSize ?? Math.min(320, Math.max(...rgba.map((i) => Math.max(i.width, i.height))));
  if (!(Number.isInteger(tile) && tile > 0)) {
    throw new Error(`${where}: tileSize ${tile} is not a positive integer`);
  }
  const title = options.title ?? "";
  const captions = labels.map((l) => wrapText(l, tile));
  const captionHeight = Math.max(...captions.map((c) => c.length)) * LINE_HEIGHT;
  const rows = Math.ceil(images.length / columns);
  const cellWidth = tile + 2 * GAP, cellHeight = tile + GAP + captionHeight;
  const top = titleBand(title);
  const width = Math.max(2 * PAD + columns * cellWidth, measureText(title).width + 2 * PAD);
  const canvas = new Canvas(width, top + rows * cellHeight + PAD);
  drawTitle(canvas, title, width / 2);
  const gridLeft = Math.round((width - columns * cellWidth) / 2);
  rgba.forEach((image, k) => {
    const fit = tile / Math.max(image.width, image.height);
    const w = Math.max(1, Math.round(image.width * fit)), h = Math.max(1, Math.round(image.height * fit));
    const scaled = w === image.width && h === image.height ? image : resizeRgba(image, w, h);
    const x = gridLeft + (k % columns) * cellWidth + GAP, y = top + Math.floor(k / columns) * cellHeight;
    canvas.drawImage(scaled, x + Math.floor((tile - w) / 2), y + Math.floor((tile - h) / 2));
    captions[k].forEach((line, j) => {
      canvas.text(x + tile / 2, y + tile + GAP + j * LINE_HEIGHT, line, BLACK, { align: "center" });
    });
  });
  return canvas.toPNG();
}
