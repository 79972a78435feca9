// Synthetic chest X-rays: the demo's built-in data set (no real images are committed). A frontal radiograph
// is drawn from a few shapes: dark background, soft-tissue body, two dark lung fields cut by the diaphragm
// domes, heart, spine, clavicles and posterior ribs, with global contrast, exposure gradient and noise. The
// four classes differ only inside the lungs, as opacity (lost aeration, which brightens the lung):
//   covid      bilateral, peripheral, lower-zone ground-glass patches (soft, hazy), some fine reticulation
//   viral      bilateral diffuse interstitial (reticular) pattern, perihilar, some faint peripheral haze
//   bacterial  one dense, irregular but well-defined lobar consolidation in one lung, usually lower
//   normal     clear lungs
// Severity varies by patient down to nearly normal, and every class carries the same confounders (vessel
// markings, breast shadows, ECG leads, AP views with larger hearts), so the classes overlap somewhat.
// Patients have 1-3 images: the same anatomy and disease, with new position, exposure and noise.
//
// Determinism: every draw comes from the project's Threefry generator and the pixels use only +, -, *, /,
// sqrt and floor (no Math.sin/exp/pow, whose last bits differ between V8 and JavaScriptCore), so a seed
// gives the same bits in Deno and Bun.
import { join } from "../platform/runtime.ts";
import * as fl from "../../mod.ts";
import { PAPER_CLASS_COUNTS } from "./synthetic_outputs.ts";

/** The `source` of every synthetic record (and of the rows of a written labels.csv). */
export const SYNTHETIC_SOURCE = "synthetic";
const FILE_PREFIX = "synthetic://";
/** Images in the demo's synthetic data set when neither `counts` nor `total` is given. */
export const DEFAULT_SYNTHETIC_TOTAL = 800;
/** Side of the synthetic images in pixels: room for the 64-pixel random crops of tiny learners. */
export const DEFAULT_SYNTHETIC_SIZE = 72;
/** The paper's covid share (1.7%) would leave a demo a dozen covid images; each class gets at least this. */
const MIN_CLASS_SHARE = 0.08;
const SQRT3 = Math.sqrt(3);

/** Options of {@link syntheticXrayDataset}. */
export interface SyntheticXrayOptions {
  /** Images per class (covid, viral, bacterial, normal); default `total` split by the paper's imbalance. */
  counts?: number[];
  /** Images in all when `counts` is not given (default 800). */
  total?: number;
  /** Side of the square images in pixels (default 72, for 64-pixel crops). */
  size?: number;
  /** Seeds every draw: the same seed gives the same images, bit for bit, in Deno and Bun. */
  seed: number;
}

/** The synthetic images and their records, in the same order (a patient's images together). */
export interface SyntheticXrayDataset {
  /** `file` is a name such as `synthetic://covid/000123.png`; `source` is "synthetic". */
  records: fl.data.ImageRecord[];
  /** The decoded gray images, `size` x `size`. */
  images: fl.io.GrayImage[];
}

/**
 * Class counts (covid, viral, bacterial, normal) for `total` images: the paper's shares with each class
 * raised to at least 8%, rounded so that they add up to `total`.
 *
 * @throws {Error} when `total` is not an integer of at least 4 (one per class).
 */
export function syntheticClassCounts(total: number): number[] {
  if (!Number.isInteger(total) || total < fl.data.CLASSES.length) {
    throw new Error(
      `syntheticClassCounts: total must be an integer >= ${fl.data.CLASSES.length}, got ${total}`,
    );
  }
  const paperTotal = PAPER_CLASS_COUNTS.reduce((a, b) => a + b, 0);
  const raw = PAPER_CLASS_COUNTS.map((c) => c / paperTotal);
  const rest = raw.filter((s) => s >= MIN_CLASS_SHARE).reduce((a, b) => a + b, 0);
  const lifted = raw.filter((s) => s < MIN_CLASS_SHARE).length * MIN_CLASS_SHARE;
  const shares = raw.map((s) => (s < MIN_CLASS_SHARE ? MIN_CLASS_SHARE : (s * (1 - lifted)) / rest));
  // largest remainder, so the counts add up to `total` exactly
  const exact = shares.map((s) => s * total);
  const counts = exact.map(Math.floor);
  const order = exact.map((e, i) => [e - Math.floor(e), i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  for (let k = 0; counts.reduce((a, b) => a + b, 0) < total; k++) counts[order[k][1]]++;
  return counts;
}

// ---------------------------------------------------------------- random draws

type StreamKey = readonly [number, number, number];

const between = (gen: fl.Generator, lo: number, hi: number) => lo + (hi - lo) * gen.uniform();
const chance = (gen: fl.Generator, p: number) => gen.uniform() < p;

/** Value noise on a (cells + 1)^2 lattice over [-EXTENT, EXTENT]^2, smoothly interpolated, in [0, 1). */
class ValueNoise {
  static readonly EXTENT = 1.3;
  private readonly lattice: Float64Array;
  constructor(key: StreamKey, private readonly cells: number) {
    this.lattice = Float64Array.from(
      { length: (cells + 1) * (cells + 1) },
      (_, i) => fl.threefry2x32(key[0], key[1], i, key[2])[0] / 2 ** 32,
    );
  }

  at(u: number, v: number): number {
    const n = this.cells, scale = n / (2 * ValueNoise.EXTENT);
    const gx = clamp((u + ValueNoise.EXTENT) * scale, 0, n - 1e-9);
    const gy = clamp((v + ValueNoise.EXTENT) * scale, 0, n - 1e-9);
    const ix = Math.floor(gx), iy = Math.floor(gy);
    const tx = fade(gx - ix), ty = fade(gy - iy);
    const i = iy * (n + 1) + ix, l = this.lattice;
    const top = l[i] + (l[i + 1] - l[i]) * tx;
    const bottom = l[i + n + 1] + (l[i + n + 2] - l[i + n + 1]) * tx;
    return top + (bottom - top) * ty;
  }

  /** A network of thin lines along the noise's mid level: 1 on a line, falling to 0 within a cell. */
  ridge(u: number, v: number): number {
    const r = 1 - Math.abs(2 * this.at(u, v) - 1);
    return r * r * r;
  }
}

function clamp(x: number, lo: number, hi: number): number {
  return x < lo ? lo : x > hi ? hi : x;
}

function fade(t: number): number {
  return t * t * (3 - 2 * t);
}

/** 0 below e0, 1 above e1 (or the reverse when e0 > e1), smooth in between. */
function smoothstep(e0: number, e1: number, x: number): number {
  return fade(clamp((x - e0) / (e1 - e0), 0, 1));
}

/** 1 inside the ellipse, 0 outside, with a soft rim of relative width `soft`. */
function ellipse(u: number, v: number, cu: number, cv: number, ru: number, rv: number, soft: number): number {
  const du = (u - cu) / ru, dv = (v - cv) / rv;
  return 1 - smoothstep(1 - soft, 1 + soft, Math.sqrt(du * du + dv * dv));
}

/** sin and cos of a small angle (|a| < 0.2) by their Taylor series: the same bits in every engine. */
function sinCosSmall(a: number): [number, number] {
  const a2 = a * a;
  return [a * (1 - (a2 / 6) * (1 - a2 / 20)), 1 - (a2 / 2) * (1 - a2 / 12)];
}

// ---------------------------------------------------------------- patients and shots

interface Patient {
  label: number;
  view: "PA" | "AP";
  severity: number;
  // anatomy, in a frame where the thorax spans about [-1, 1]^2 (u to the image's right, v down)
  bodyLevel: number;
  lungDepth: number;
  lungCenter: number;
  lungHalfWidth: number;
  lungTop: number;
  diaphragm: number;
  heartScale: number;
  ribSpacing: number;
  ribLevel: number;
  vesselLevel: number;
  breastLevel: number;
  leads: { u: number; v: number }[];
  vessels: ValueNoise;
  // disease
  reticular: ValueNoise;
  reticularLevel: number;
  patches: ValueNoise;
  ggoLevel: number;
  /** ground glass on the image's left and right lung (covid both, viral faint) */
  ggoSides: [number, number];
  haze: ValueNoise;
  hazeLevel: number;
  consolidation: {
    side: number;
    u: number;
    v: number;
    ru: number;
    rv: number;
    level: number;
    /** height of a parapneumonic effusion at the lateral wall (0 for none) */
    effusion: number;
  } | null;
  outline: ValueNoise;
}

interface Shot {
  shiftU: number;
  shiftV: number;
  rotation: number;
  scale: number;
  severity: number;
  brightness: number;
  contrast: number;
  /** bends the tone curve: v + curve * v * (1 - v) */
  curve: number;
  gradientU: number;
  gradientV: number;
  noiseStd: number;
  noise: StreamKey;
}

function drawPatient(gen: fl.Generator, label: number): Patient {
  const name = fl.data.CLASSES[label];
  const view = chance(gen, 0.45) ? "AP" : "PA";
  const ap = view === "AP";
  // about one in eight of the sick is mild, down to nearly normal: the classes overlap there
  const severity = name === "normal"
    ? 0
    : chance(gen, 0.12)
    ? between(gen, 0.1, 0.4)
    : between(gen, 0.6, 1.1);
  const lungCenter = between(gen, 0.41, 0.46);
  const lungHalfWidth = between(gen, 0.3, 0.35);
  const lungTop = between(gen, -0.86, -0.76);
  // AP films are often taken lying down, with lower lung volumes and a magnified heart
  const diaphragm = between(gen, 0.46, 0.58) - (ap ? 0.06 : 0);
  const leads = ap && chance(gen, 0.5)
    ? Array.from({ length: 2 + Math.floor(gen.uniform() * 3) }, () => ({
      u: between(gen, -0.7, 0.7),
      v: between(gen, -0.65, 0.1),
    }))
    : [];
  const patient: Patient = {
    label,
    view,
    severity,
    bodyLevel: between(gen, 0.57, 0.66),
    lungDepth: between(gen, 0.35, 0.43),
    lungCenter,
    lungHalfWidth,
    lungTop,
    diaphragm,
    heartScale: between(gen, 0.88, 1.12) * (ap ? 1.12 : 1),
    ribSpacing: between(gen, 0.12, 0.15),
    ribLevel: between(gen, 0.05, 0.1),
    vesselLevel: between(gen, 0.08, 0.18),
    breastLevel: chance(gen, 0.45) ? between(gen, 0.06, 0.16) : 0,
    leads,
    vessels: new ValueNoise(gen.nextStream(), 12),
    reticular: new ValueNoise(gen.nextStream(), 26),
    reticularLevel: 0,
    patches: new ValueNoise(gen.nextStream(), 7),
    ggoLevel: 0,
    ggoSides: [between(gen, 0.55, 1), between(gen, 0.55, 1)],
    haze: new ValueNoise(gen.nextStream(), 4),
    hazeLevel: 0,
    consolidation: null,
    outline: new ValueNoise(gen.nextStream(), 6),
  };
  if (name === "covid") {
    patient.ggoLevel = between(gen, 0.85, 1.15);
    patient.reticularLevel = chance(gen, 0.5) ? between(gen, 0.1, 0.3) : 0;
    patient.hazeLevel = between(gen, 0.1, 0.2);
  } else if (name === "viral") {
    patient.reticularLevel = between(gen, 0.75, 1.1);
    patient.hazeLevel = between(gen, 0.15, 0.3);
    patient.ggoLevel = chance(gen, 0.35) ? between(gen, 0.1, 0.3) : 0;
  } else if (name === "bacterial") {
    const side = chance(gen, 0.5) ? -1 : 1;
    // as a fraction of the lung's height: more often the lower zone, above the dome
    const height = chance(gen, 0.65) ? between(gen, 0.5, 0.75) : between(gen, 0.15, 0.5);
    patient.consolidation = {
      side,
      u: side * (lungCenter + between(gen, -0.35, 0.35) * lungHalfWidth),
      v: lungTop + height * (diaphragm - lungTop),
      ru: between(gen, 0.22, 0.34),
      rv: between(gen, 0.22, 0.38),
      level: between(gen, 0.8, 1),
      effusion: chance(gen, 0.5) ? between(gen, 0.15, 0.3) : 0,
    };
    patient.hazeLevel = between(gen, 0, 0.08);
  }
  return patient;
}

function drawShot(gen: fl.Generator, patient: Patient, base: Shot | null): Shot {
  // a patient's later images move a little and have their own exposure and noise
  const jitter = base ? 0.3 : 1;
  return {
    shiftU: (base?.shiftU ?? 0) + jitter * between(gen, -0.06, 0.06),
    shiftV: (base?.shiftV ?? 0) + jitter * between(gen, -0.06, 0.06),
    rotation: (base?.rotation ?? 0) + jitter * between(gen, -0.06, 0.06),
    scale: base ? base.scale * between(gen, 0.98, 1.02) : between(gen, 0.9, 1.04),
    severity: patient.severity * between(gen, 0.9, 1.1),
    brightness: between(gen, -0.05, 0.05),
    contrast: between(gen, 0.85, 1.15),
    curve: between(gen, -0.2, 0.2),
    gradientU: between(gen, -0.04, 0.04),
    gradientV: between(gen, -0.04, 0.04),
    noiseStd: between(gen, 0.01, 0.03),
    noise: gen.nextStream(),
  };
}

// ---------------------------------------------------------------- rendering

/** How aerated lung the point is (0..1) on one side (-1 image left, +1 image right), heart excluded. */
function lungMask(p: Patient, u: number, v: number, side: number): number {
  // the image's left lung (the patient's right) sits a little higher on its liver
  const diaphragm = p.diaphragm - (side < 0 ? 0.03 : 0);
  const du = (side * u - p.lungCenter) / p.lungHalfWidth;
  const centerV = diaphragm - 0.05, halfHeight = centerV - p.lungTop;
  const dv = (v - centerV) / halfHeight;
  const inEllipse = 1 - smoothstep(0.93, 1.05, Math.sqrt(du * du + dv * dv));
  // the dome is highest mid-lung and lowest at the costophrenic angle
  const lateral = clamp(du, -1, 1);
  const dome = diaphragm - 0.1 * (1 - lateral * lateral);
  return inEllipse * (1 - smoothstep(dome - 0.03, dome + 0.03, v));
}

/** Opacity (0..1, lost aeration) of disease and normal structures on one side. */
function opacity(p: Patient, s: Shot, u: number, v: number, side: number): number {
  const diaphragm = p.diaphragm;
  const lateral = clamp((side * u - (p.lungCenter - p.lungHalfWidth)) / (2 * p.lungHalfWidth), 0, 1);
  const height = clamp((v - p.lungTop) / (diaphragm - p.lungTop), 0, 1);
  // vessels branch from the hila and fade towards the periphery
  const hilum = ellipse(u, v, side * 0.22, 0, 0.35, 0.45, 0.6);
  let o = p.vesselLevel * p.vessels.ridge(u, v) * (0.3 + 0.7 * hilum);
  if (p.breastLevel > 0) o += p.breastLevel * ellipse(u, v, side * 0.58, diaphragm - 0.05, 0.36, 0.24, 0.4);
  const sev = s.severity;
  if (p.reticularLevel > 0) {
    // stretched vertically: streaks more than a honeycomb
    o += sev * p.reticularLevel * p.reticular.ridge(u, 0.5 * v) * (0.45 + 0.55 * hilum);
  }
  if (p.ggoLevel > 0) {
    const peripheral = smoothstep(0.25, 0.8, lateral), lowerZone = smoothstep(0.25, 0.7, height);
    const patch = smoothstep(0.25, 0.65, p.patches.at(u, v));
    o += sev * p.ggoLevel * p.ggoSides[side < 0 ? 0 : 1] * patch * peripheral * lowerZone;
  }
  if (p.hazeLevel > 0) o += sev * p.hazeLevel * p.haze.at(u, v);
  const c = p.consolidation;
  if (c && c.side === side) {
    // an irregular outline, sharp compared to ground glass; mottled inside
    const du = (u - c.u) / c.ru, dv = (v - c.v) / c.rv;
    const r = Math.sqrt(du * du + dv * dv) / (0.6 + 0.8 * p.outline.at(u, v));
    const inside = 1 - smoothstep(0.85, 1.05, r);
    o += sev * c.level * inside * (0.8 + 0.2 * p.patches.at(u, v));
    if (c.effusion > 0) {
      // fluid fills the costophrenic angle, its meniscus climbing the lateral wall
      const surface = diaphragm - c.effusion * (0.3 + 0.9 * lateral);
      o += sev * smoothstep(surface - 0.02, surface + 0.04, v);
    }
  }
  return o > 1 ? 1 : o;
}

function render(p: Patient, s: Shot, size: number): fl.io.GrayImage {
  const data = new Float32Array(size * size);
  const [sin, cos] = sinCosSmall(s.rotation);
  const heartU = 0.1,
    heartV = p.diaphragm - 0.22,
    heartRU = 0.3 * p.heartScale,
    heartRV = 0.24 * p.heartScale;
  const clavicleDrop = 0.16;
  for (let y = 0; y < size; y++) {
    const py = (2 * (y + 0.5)) / size - 1;
    for (let x = 0; x < size; x++) {
      const px = (2 * (x + 0.5)) / size - 1;
      // image -> anatomy frame: undo the shift, rotation and scale of this shot
      const dx = px - s.shiftU, dy = py - s.shiftV;
      const u = (cos * dx + sin * dy) / s.scale, v = (cos * dy - sin * dx) / s.scale;
      const au = Math.abs(u);
      // body: the neck and shoulders narrow towards the top
      const halfWidth = 0.95 - 0.6 * smoothstep(-0.7, -1.1, v);
      const body = (1 - smoothstep(halfWidth - 0.05, halfWidth + 0.05, au)) * smoothstep(-1.25, -1.1, v);
      let value = 0.05 + body * (p.bodyLevel - 0.05 + 0.05 * smoothstep(p.diaphragm, 1, v));
      const heart = ellipse(u, v, heartU, heartV, heartRU, heartRV, 0.2);
      let lungs = 0;
      for (const side of [-1, 1]) {
        const m = lungMask(p, u, v, side) * (1 - heart);
        if (m > 0) lungs += m * p.lungDepth * (1 - opacity(p, s, u, v, side));
      }
      value -= lungs;
      // posterior ribs curve down from the spine; brighter where they cross the dark lungs
      const phase = (v - 0.6 * (au - 0.12) * (au - 0.12)) / p.ribSpacing;
      const fromRib = Math.abs(phase - Math.floor(phase) - 0.5);
      const rib = (1 - smoothstep(0.1, 0.2, fromRib)) * smoothstep(p.lungTop - 0.05, p.lungTop + 0.1, v) *
        (1 - smoothstep(p.diaphragm - 0.05, p.diaphragm + 0.1, v)) * (1 - smoothstep(0.72, 0.82, au));
      value += body * p.ribLevel * rib * (0.4 + 1.5 * lungs);
      const spine = 1 - smoothstep(0.05, 0.09, au);
      value += body * 0.1 * spine;
      const clavicleV = p.lungTop + 0.05 - clavicleDrop * (au - 0.1);
      const clavicle = (1 - smoothstep(0.02, 0.04, Math.abs(v - clavicleV))) * smoothstep(0.06, 0.12, au) *
        (1 - smoothstep(0.55, 0.62, au));
      value += body * 0.12 * clavicle;
      for (const lead of p.leads) value += 0.35 * ellipse(u, v, lead.u, lead.v, 0.025, 0.025, 0.3);
      // exposure: contrast, brightness, a bent tone curve and a gradient across the film
      value = s.brightness + 0.5 + s.contrast * (value - 0.5) + s.gradientU * px + s.gradientV * py;
      value = clamp(value, 0, 1);
      value += s.curve * value * (1 - value);
      // near-Gaussian noise: the sum of four 16-bit uniforms (Irwin-Hall), scaled to unit variance
      const [b0, b1] = fl.threefry2x32(s.noise[0], s.noise[1], y * size + x, s.noise[2]);
      const sum = ((b0 & 0xffff) + (b0 >>> 16) + (b1 & 0xffff) + (b1 >>> 16)) / 65536;
      value += s.noiseStd * (sum - 2) * SQRT3;
      data[y * size + x] = clamp(value, 0, 1);
    }
  }
  return { width: size, height: size, data };
}

// ---------------------------------------------------------------- data set

/**
 * A deterministic synthetic 4-class chest X-ray data set: `counts[c]` images of class c (or `total` split
 * by the paper's imbalance), each patient 1-3 images, patients in a seeded random order with each
 * patient's images together.
 *
 * @throws {Error} when `size` is below 16, `counts` is not 4 non-negative integers, or `counts` and
 * `total` disagree.
 */
export function syntheticXrayDataset(options: SyntheticXrayOptions): SyntheticXrayDataset {
  const { seed, size = DEFAULT_SYNTHETIC_SIZE } = options;
  if (!Number.isInteger(size) || size < 16) {
    throw new Error(`syntheticXrayDataset: size must be an integer >= 16, got ${size}`);
  }
  const counts = options.counts ?? syntheticClassCounts(options.total ?? DEFAULT_SYNTHETIC_TOTAL);
  if (counts.length !== fl.data.CLASSES.length || counts.some((c) => !Number.isInteger(c) || c < 0)) {
    throw new Error(
      `syntheticXrayDataset: counts must be ${fl.data.CLASSES.length} non-negative integers, got ${counts}`,
    );
  }
  const sum = counts.reduce((a, b) => a + b, 0);
  if (options.counts && options.total !== undefined && options.total !== sum) {
    throw new Error(`syntheticXrayDataset: counts add up to ${sum}, not total ${options.total}`);
  }
  const gen = new fl.Generator(seed);
  const patients: { patient: Patient; images: number }[] = [];
  for (const [label, count] of counts.entries()) {
    for (let left = count; left > 0;) {
      // 70% of patients have one image, 20% two, 10% three (fewer when the class is nearly full)
      const u = gen.uniform();
      const images = Math.min(u < 0.7 ? 1 : u < 0.9 ? 2 : 3, left);
      patients.push({ patient: drawPatient(gen, label), images });
      left -= images;
    }
  }
  const records: fl.data.ImageRecord[] = [], images: fl.io.GrayImage[] = [];
  for (const [n, k] of gen.permutation(patients.length).entries()) {
    const { patient, images: shots } = patients[k];
    const labelName: fl.data.ClassName = fl.data.CLASSES[patient.label];
    let first: Shot | null = null;
    for (let i = 0; i < shots; i++) {
      const shot = drawShot(gen, patient, first);
      first ??= shot;
      records.push({
        file: `${FILE_PREFIX}${labelName}/${String(records.length).padStart(6, "0")}.png`,
        label: patient.label,
        labelName,
        patientId: `synthetic:p${String(n).padStart(5, "0")}`,
        view: patient.view,
        source: SYNTHETIC_SOURCE,
      });
      images.push(render(patient, shot, size));
    }
  }
  return { records, images };
}

/**
 * Writes `dir/images/<class>/<n>.png` (8-bit gray) and `dir/labels.csv` (file, label, source, patient_id,
 * view), the layout `loadDataset([dir])` reads, each file atomically. Returns the labels.csv path.
 *
 * @throws {Error} when records and images differ in number or a record's file is not a synthetic name.
 */
export function writeSyntheticPngs(dir: string, dataset: SyntheticXrayDataset): string {
  const { records, images } = dataset;
  if (records.length !== images.length) {
    throw new Error(`writeSyntheticPngs: ${records.length} records and ${images.length} images`);
  }
  const lines = ["file,label,source,patient_id,view"];
  for (const [i, r] of records.entries()) {
    if (!r.file.startsWith(FILE_PREFIX)) {
      throw new Error(`writeSyntheticPngs: ${r.file} is not a ${FILE_PREFIX} name`);
    }
    const name = r.file.slice(FILE_PREFIX.length);
    fl.io.writeFileAtomic(join(dir, "images", name), fl.io.encodePngGray(images[i]));
    lines.push([name, r.labelName, r.source, r.patientId, r.view].join(","));
  }
  const labels = join(dir, "labels.csv");
  fl.io.writeFileAtomic(labels, lines.join("\n") + "\n");
  return labels;
}
