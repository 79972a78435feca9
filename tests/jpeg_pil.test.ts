// JPEG decoding (fl.io.decodeImage, jpeg-js underneath) against PIL 9.4 / libjpeg-turbo, pixel by pixel, on the
// kinds of file chest X-rays come as: 1-component gray and YCbCr colour at 4:2:0, 4:2:2 and 4:4:4, sizes off
// the MCU grid, progressive and Huffman-optimised scans, restart intervals, EXIF/ICC/comment segments.
// tests/fixtures/make_jpeg_goldens.py writes the JPEGs and PIL's decode (for colour: PIL's RGB through the
// library's BT.601 luma, in float) into tests/fixtures/jpeg_goldens.json.
//
// The two decoders are not bit-identical, and the bounds below sit just above what they measure (in 8-bit
// levels, L = 1/255):
//   gray:     max 1 L, mean <= 0.073 L over the cases (on 7 real 1-component X-ray JPEGs of ../shared/data,
//             checked once by hand: max 1 L, mean <= 0.069 L): jpeg-js's IDCT rounds a few samples one level
//             up from libjpeg's islow IDCT (signed mean +0.06 L).
//   4:4:4:    max 1.70 L, mean 0.468 L: jpeg-js writes R, G, B into a Uint8Array, which truncates where
//             libjpeg rounds (about -0.4 L signed on coloured pixels; on neutral pixels Cb = Cr = 128 and
//             nothing is lost, which is why 6 real 4:2:0 colour X-ray JPEGs show a mean of only 0.03-0.06 L).
//   4:2:0/2:  max 10.66 L, mean 0.494 L, 0.59 % of pixels off by more than 2 L: jpeg-js replicates chroma
//             (nearest), libjpeg interpolates it ("fancy upsampling"); luma cancels chroma except where
//             R, G or B clamps, i.e. next to the saturated red patch of the scene (real X-rays: max 3.3 L).
// Each test also proves its own power: the decode transposed, flipped, shifted by one pixel or offset by one
// level must land outside the same bounds.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as fl from "../mod.ts";
import { assert, assertEquals, test } from "./harness.ts";

const here = dirname(fileURLToPath(import.meta.url));
const LEVEL = 1 / 255;

interface JpegCase {
  name: string;
  what: string;
  width: number;
  height: number;
  mode: "L" | "RGB";
  jpeg: string;
  gray_f32: string;
}
// Read at import: a missing or broken fixture fails the file (run.ts reports the import error).
const fixture = JSON.parse(readFileSync(join(here, "fixtures", "jpeg_goldens.json"), "utf8")) as {
  luma: number[];
  cases: JpegCase[];
};

/** Tolerances against PIL, in levels of 1/255, per kind of file (see the header for the measurements). */
interface Bounds {
  max: number;
  mean: number;
  /** largest share of pixels more than 2 levels off */
  over2: number;
}
const GRAY: Bounds = { max: 1, mean: 0.08, over2: 0 };
const YCC444: Bounds = { max: 2, mean: 0.5, over2: 0 };
const YCC_SUBSAMPLED: Bounds = { max: 11, mean: 0.52, over2: 0.01 };

/** What each file must contain (checked in its bytes, so that a regenerated fixture cannot lose coverage). */
interface Structure {
  /** 0xC0 baseline or 0xC2 progressive */
  sof: number;
  /** each component's sampling factors as "HV" */
  sampling: string[];
  /** restart interval in MCUs (DRI), and at least this many RSTn markers in the scan */
  restart?: number;
  /** APP/COM segments that must be present */
  segments?: string[];
  bounds: Bounds;
}
const EXPECTED: Record<string, Structure> = {
  gray_64x48_baseline_q90: { sof: 0xc0, sampling: ["11"], bounds: GRAY },
  gray_37x23_odd_q85: { sof: 0xc0, sampling: ["11"], bounds: GRAY },
  gray_96x64_q75: { sof: 0xc0, sampling: ["11"], bounds: GRAY },
  gray_61x45_progressive_optimized: { sof: 0xc2, sampling: ["11"], bounds: GRAY },
  gray_53x35_restart5: { sof: 0xc0, sampling: ["11"], restart: 5, bounds: GRAY },
  gray_40x32_exif_icc_comment: {
    sof: 0xc0,
    sampling: ["11"],
    segments: ["JFIF", "Exif", "ICC_PROFILE", "COM"],
    bounds: GRAY,
  },
  ycc420_37x23_odd: { sof: 0xc0, sampling: ["22", "11", "11"], bounds: YCC_SUBSAMPLED },
  ycc422_45x30: { sof: 0xc0, sampling: ["21", "11", "11"], bounds: YCC_SUBSAMPLED },
  ycc444_48x32: { sof: 0xc0, sampling: ["11", "11", "11"], bounds: YCC444 },
  ycc420_progressive_51x39: { sof: 0xc2, sampling: ["22", "11", "11"], bounds: YCC_SUBSAMPLED },
};

function base64Bytes(s: string): Uint8Array {
  return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
}

function float32LE(bytes: Uint8Array): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Float32Array.from({ length: bytes.length / 4 }, (_, i) => view.getFloat32(4 * i, true));
}

interface Parsed {
  sof: number;
  height: number;
  width: number;
  sampling: string[];
  restart: number;
  rstMarkers: number;
  segments: string[];
}

/** The file's frame header, restart interval, RSTn count and named APP/COM segments (a plain marker walk). */
function parseJpeg(b: Uint8Array): Parsed {
  const p: Parsed = { sof: 0, height: 0, width: 0, sampling: [], restart: 0, rstMarkers: 0, segments: [] };
  let off = 2;
  while (off + 4 <= b.length) {
    assert(b[off] === 0xff, `marker expected at byte ${off}`);
    const m = b[off + 1];
    const len = (b[off + 2] << 8) | b[off + 3];
    const body = b.subarray(off + 4, off + 2 + len);
    const tag = String.fromCharCode(...body.subarray(0, 11));
    if (m === 0xc0 || m === 0xc1 || m === 0xc2) {
      p.sof = m;
      p.height = (body[1] << 8) | body[2];
      p.width = (body[3] << 8) | body[4];
      for (let c = 0; c < body[5]; c++) p.sampling.push(body[7 + 3 * c].toString(16));
    } else if (m === 0xdd) p.restart = (body[0] << 8) | body[1];
    else if (m === 0xe0 && tag.startsWith("JFIF")) p.segments.push("JFIF");
    else if (m === 0xe1 && tag.startsWith("Exif")) p.segments.push("Exif");
    else if (m === 0xe2 && tag.startsWith("ICC_PROFILE")) p.segments.push("ICC_PROFILE");
    else if (m === 0xfe) p.segments.push("COM");
    if (m === 0xda) break;
    off += 2 + len;
  }
  for (let i = off; i + 1 < b.length; i++) {
    if (b[i] === 0xff && b[i + 1] >= 0xd0 && b[i + 1] <= 0xd7) p.rstMarkers++;
  }
  return p;
}

/** Max and mean absolute difference in levels, and the share of pixels more than 2 levels off. */
function compare(actual: ArrayLike<number>, expected: Float32Array) {
  let max = 0, sum = 0, over2 = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]) / LEVEL;
    if (d > max) max = d;
    sum += d;
    if (d > 2 + 1e-3) over2++;
  }
  return { max, mean: sum / expected.length, over2: over2 / expected.length };
}

// float32 rounding of values in [0, 1] (and of the reference) is below 1e-4 levels
const SLACK = 1e-4;
const within = (s: ReturnType<typeof compare>, b: Bounds) =>
  s.max <= b.max + SLACK && s.mean <= b.mean + SLACK && s.over2 <= b.over2;
const fmt = (s: ReturnType<typeof compare>) =>
  `max ${s.max.toFixed(3)} L, mean ${s.mean.toFixed(4)} L, ${(100 * s.over2).toFixed(2)} % over 2 L`;

/** Decodes gone wrong, built from the correct decode: what the bounds must reject. */
function wrongDecodes(img: fl.io.GrayImage): Record<string, Float32Array> {
  const { width: w, height: h, data } = img;
  const build = (f: (y: number, x: number) => number) => {
    const out = new Float32Array(w * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out[y * w + x] = f(y, x);
    return out;
  };
  // a decoder that fills the buffer column by column: pixel (y, x) stored at x * h + y
  const columnMajor = new Float32Array(w * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) columnMajor[x * h + y] = data[y * w + x];
  return {
    "transposed (column-major)": columnMajor,
    "flipped left-right": build((y, x) => data[y * w + (w - 1 - x)]),
    "flipped upside down": build((y, x) => data[(h - 1 - y) * w + x]),
    "shifted right by one pixel": build((y, x) => data[y * w + Math.max(0, x - 1)]),
    "shifted down by one pixel": build((y, x) => data[Math.max(0, y - 1) * w + x]),
    "one level brighter": data.map((v) => v + LEVEL),
  };
}

test("the JPEG fixture holds every expected case, made with the library's luma weights", () => {
  assertEquals(fixture.cases.map((c) => c.name), Object.keys(EXPECTED));
  assertEquals(fixture.luma, [0.299, 0.587, 0.114]);
});

for (const c of fixture.cases) {
  test(`JPEG decode matches PIL pixel by pixel: ${c.name} (${c.what})`, () => {
    const expected = EXPECTED[c.name];
    assert(expected !== undefined, `no expectations for fixture case ${c.name}`);
    const bytes = base64Bytes(c.jpeg);
    const reference = float32LE(base64Bytes(c.gray_f32));
    assertEquals(reference.length, c.width * c.height, "reference size");

    const parsed = parseJpeg(bytes);
    assertEquals(parsed.sof, expected.sof, "frame type (0xC0 baseline, 0xC2 progressive)");
    assertEquals(parsed.sampling, expected.sampling, "sampling factors per component");
    assertEquals([parsed.width, parsed.height], [c.width, c.height], "frame header size");
    if (expected.restart) {
      assertEquals(parsed.restart, expected.restart, "restart interval");
      const mcus = Math.ceil(c.width / 8) * Math.ceil(c.height / 8);
      assertEquals(parsed.rstMarkers, Math.ceil(mcus / expected.restart) - 1, "RST markers in the scan");
    }
    for (const s of expected.segments ?? []) assert(parsed.segments.includes(s), `no ${s} segment`);

    const img = fl.io.decodeImage(bytes, `${c.name}.jpg`);
    assertEquals([img.width, img.height], [c.width, c.height], "decoded width and height");
    assertEquals(img.data.length, c.width * c.height, "decoded pixel count");
    const b = expected.bounds;
    const s = compare(img.data, reference);
    assert(
      within(s, b),
      `${c.name}: decode vs PIL ${fmt(s)}; allowed max ${b.max} L, mean ${b.mean} L, ${
        100 * b.over2
      } % over 2 L`,
    );

    // The bounds must catch a wrong decode: each of these is far outside them (the geometric ones by a mean
    // at least 10 times the allowed one).
    for (const [how, wrong] of Object.entries(wrongDecodes(img))) {
      const w = compare(wrong, reference);
      assert(!within(w, b), `${c.name}: a decode ${how} (${fmt(w)}) would pass the bounds`);
      if (how !== "one level brighter") {
        assert(w.mean >= 10 * b.mean, `${c.name}: a decode ${how} is only ${fmt(w)} off: too close to pass`);
      }
    }
  });
}
