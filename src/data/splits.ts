// Seeded, stratified splits: a train/test split and k folds on the training part, each class spread
// evenly, by sample (stratifiedSplit, stratifiedKFold: stage 2 on learner outputs) or by patient
// (patientSplit, saveSplit, loadSplit: images). Deterministic for a seed in every runtime (every random
// choice uses the project's counter RNG).
import { readFileSync, sha256 } from "../platform/runtime.ts";
import { writeFileAtomic } from "../io/files.ts";
import { CLASS_NAMES } from "../train/metrics.ts";
import { Generator } from "../kernels/random.ts";

function shuffledByClass(labels: ArrayLike<number>, gen: Generator): number[][] {
  const byClass = new Map<number, number[]>();
  for (let i = 0; i < labels.length; i++) {
    const y = labels[i];
    if (!byClass.has(y)) byClass.set(y, []);
    byClass.get(y)!.push(i);
  }
  return [...byClass.keys()].sort((a, b) => a - b).map((y) => {
    const list = byClass.get(y)!;
    const perm = gen.permutation(list.length);
    return Array.from(perm, (j) => list[j]);
  });
}

/** Indices of a stratified train/test split (test share `testFraction`, per class rounded). */
export function stratifiedSplit(
  labels: ArrayLike<number>,
  testFraction: number,
  seed: number,
): { train: number[]; test: number[] } {
  if (!(testFraction > 0 && testFraction < 1)) {
    throw new Error(`split: testFraction must be in (0, 1), got ${testFraction}`);
  }
  const train: number[] = [], test: number[] = [];
  for (const list of shuffledByClass(labels, new Generator(seed))) {
    const nTest = Math.round(list.length * testFraction);
    test.push(...list.slice(0, nTest));
    train.push(...list.slice(nTest));
  }
  return { train: train.sort((a, b) => a - b), test: test.sort((a, b) => a - b) };
}

/**
 * k stratified folds of `indices` (positions into `labels`): fold f validates on its part and trains on the
 * rest. Each class is dealt round-robin, so fold sizes per class differ by at most one.
 */
export function stratifiedKFold(
  labels: ArrayLike<number>,
  indices: number[],
  k: number,
  seed: number,
): { train: number[]; val: number[] }[] {
  if (!Number.isInteger(k) || k < 2) throw new Error(`folds: k must be an integer >= 2, got ${k}`);
  if (indices.length < k) throw new Error(`folds: ${indices.length} samples cannot make ${k} folds`);
  const sub = indices.map((i) => labels[i]);
  const parts: number[][] = Array.from({ length: k }, () => []);
  let next = 0;
  for (const list of shuffledByClass(sub, new Generator(seed))) {
    for (const j of list) parts[next++ % k].push(indices[j]);
  }
  return parts.map((val, f) => ({
    train: parts.flatMap((p, g) => (g === f ? [] : p)).sort((a, b) => a - b),
    val: [...val].sort((a, b) => a - b),
  }));
}

// ---------------------------------------------------------------------------------------------------------
// Patient-disjoint splits for image data: a seeded, class-stratified train/test split with k folds on the
// training part, where every image of a patient lands in the same part and the same fold; optional seeded
// per-class subsampling by patient; and JSON files that pin a split to the exact dataset it was made on.

/** One image: its class index and the patient it belongs to (`file` is needed to save and load splits). */
export interface SplitRecord {
  /** Class index, an integer >= 0. */
  label: number;
  /** Groups images: all of one patient's images land in the same part and fold. Non-empty. */
  patientId: string;
  /** The image's path; unique. Required by {@linkcode saveSplit}, {@linkcode loadSplit} and the hash. */
  file?: string;
}

/**
 * Per-class subsampling, applied by patient before splitting. Keys are class names (`covid`, `viral`,
 * `bacterial`, `normal`, or `classNames` given to `patientSplit`) or class indices ("0", "1", ...); classes
 * not named keep every image. A value that is an integer >= 1 is an image count, a value in (0, 1) a
 * fraction of the class's images (rounded to an image count).
 */
export type SubsampleSpec = Record<string, number>;

/** Options of {@linkcode patientSplit}. */
export interface PatientSplitOptions {
  /** Share of every class that goes to the test part, in (0, 1). Default 0.2 (the paper's 4:1). */
  testFraction?: number;
  /** Cross-validation folds on the training part, an integer >= 2. Default 5. */
  folds?: number;
  /** Seeds every random choice (subsampling and the order of equal-sized patients). */
  seed: number;
  /** Per-class subsampling by patient before splitting; none by default. */
  subsample?: SubsampleSpec;
  /** Names for `subsample` keys, by class index. Default FLANNEL's covid, viral, bacterial, normal. */
  classNames?: readonly string[];
}

/** A patient-disjoint train/test split with cross-validation folds on the training part, as indices. */
export interface PatientSplit {
  /** The seed it was made with. */
  seed: number;
  /** The test share it was made with, in (0, 1). */
  testFraction: number;
  /** Number of cross-validation folds, >= 2. */
  folds: number;
  /** The subsampling applied, when any. */
  subsample?: SubsampleSpec;
  /** SHA-256 (hex) of the sorted `file` list of all records given (before subsampling), when every record has one. */
  fileListHash?: string;
  /** Indices into the records, ascending. Records dropped by subsampling are in neither part. */
  train: number[];
  /** Indices of the held-out test images, ascending; no patient here has an image in `train`. */
  test: number[];
  /** Fold f validates on `val` and trains on `train` (the other folds); together the vals cover `train`. */
  foldSplits: { train: number[]; val: number[] }[];
}

interface Patient {
  id: string;
  images: number[];
  /** Majority label (ties: lowest class index), the class the patient is stratified and subsampled under. */
  cls: number;
  /** Images per label (sparse: label -> count). */
  labelCounts: Map<number, number>;
}

function checkRecords(records: readonly SplitRecord[]): void {
  if (!Array.isArray(records) || records.length === 0) throw new Error("patientSplit: no records");
  records.forEach((r, i) => {
    if (!Number.isInteger(r?.label) || r.label < 0) {
      throw new Error(`patientSplit: record ${i} has label ${r?.label}; expected an integer >= 0`);
    }
    if (typeof r.patientId !== "string" || r.patientId === "") {
      throw new Error(`patientSplit: record ${i} has no patientId`);
    }
  });
}

function groupPatients(records: readonly SplitRecord[], indices: Iterable<number>): Patient[] {
  const byId = new Map<string, Patient>();
  for (const i of indices) {
    const r = records[i];
    let p = byId.get(r.patientId);
    if (!p) byId.set(r.patientId, p = { id: r.patientId, images: [], cls: -1, labelCounts: new Map() });
    p.images.push(i);
    p.labelCounts.set(r.label, (p.labelCounts.get(r.label) ?? 0) + 1);
  }
  for (const p of byId.values()) {
    let best = -1, bestCount = -1;
    for (const [label, n] of p.labelCounts) {
      if (n > bestCount || (n === bestCount && label < best)) [best, bestCount] = [label, n];
    }
    p.cls = best;
  }
  return [...byId.values()];
}

/** The patients in a seeded random order, then stably sorted by size, largest first. */
function seededBySizeDesc(patients: Patient[], gen: Generator): Patient[] {
  const perm = gen.permutation(patients.length);
  return Array.from(perm, (j) => patients[j]).sort((a, b) => b.images.length - a.images.length);
}

function resolveSubsample(
  spec: SubsampleSpec,
  classNames: readonly string[],
  present: Set<number>,
): Map<number, number> {
  const out = new Map<number, number>();
  for (const [key, value] of Object.entries(spec)) {
    let cls = classNames.indexOf(key);
    if (cls < 0 && /^\d+$/.test(key)) cls = Number(key);
    if (cls < 0) {
      throw new Error(
        `subsample: unknown class ${JSON.stringify(key)} (known: ${classNames.join(", ")} or a class index)`,
      );
    }
    if (!present.has(cls)) throw new Error(`subsample: class ${JSON.stringify(key)} has no images`);
    if (out.has(cls)) throw new Error(`subsample: class ${JSON.stringify(key)} given twice`);
    const ok = typeof value === "number" &&
      ((value > 0 && value < 1) || (Number.isInteger(value) && value >= 1));
    if (!ok) {
      throw new Error(
        `subsample: ${key} must be an image count (integer >= 1) or a fraction in (0, 1), got ${value}`,
      );
    }
    out.set(cls, value);
  }
  return out;
}

/**
 * Seeded subsampling by patient. A patient counts under its majority class with all its images. For each
 * class named in `spec`, the class's patients are visited in a seeded random order and kept while the kept
 * images stay at or below the target (a patient that would overshoot is skipped, the next ones are still
 * tried), so the count is the target unless no remaining patient fits: short by less than one patient.
 */
function subsamplePatients(
  patients: Patient[],
  spec: Map<number, number>,
  classNames: readonly string[],
  gen: Generator,
): Patient[] {
  const keep = new Set<Patient>(patients);
  for (const [cls, value] of [...spec].sort((a, b) => a[0] - b[0])) {
    const members = patients.filter((p) => p.cls === cls);
    const total = members.reduce((s, p) => s + p.images.length, 0);
    const target = value < 1 ? Math.round(value * total) : value;
    const name = classNames[cls] ?? `class ${cls}`;
    if (target > total) {
      throw new Error(
        `subsample: ${name} has ${total} images (by patient majority label), cannot draw ${target}`,
      );
    }
    if (target < 1) throw new Error(`subsample: ${name} fraction ${value} of ${total} images keeps no image`);
    const perm = gen.permutation(members.length);
    let kept = 0;
    for (const j of perm) {
      const p = members[j];
      if (kept + p.images.length <= target) kept += p.images.length;
      else keep.delete(p);
    }
  }
  return patients.filter((p) => keep.has(p));
}

/** SHA-256 (hex) of the records' files, sorted by code unit and joined with newlines. */
export function fileListHash(records: readonly { file?: string }[]): string {
  const files = records.map((r, i) => {
    if (typeof r.file !== "string" || r.file === "") {
      throw new Error(`split file: record ${i} has no file name`);
    }
    return r.file;
  });
  const sorted = [...files].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i] === sorted[i - 1]) {
      throw new Error(`split file: file ${JSON.stringify(sorted[i])} appears twice in the records`);
    }
  }
  return sha256().update(sorted.join("\n")).hex();
}

/**
 * A seeded, class-stratified, patient-disjoint train/test split with `folds` cross-validation folds on the
 * training part. Returns indices into `records`.
 *
 * Algorithm (StratifiedGroupKFold in spirit, in one pass): the images are grouped by patient; a patient's
 * class is its majority label (ties: lowest class index), but all its images move together. There are
 * `folds + 1` bins: the test part with quota `testFraction` of every label's images, and each fold with
 * `(1 - testFraction) / folds`. Patients are shuffled with the seed and then stably sorted by size, largest
 * first (so equal-sized patients come in a seeded order), and each goes to the bin furthest below its quota
 * in images: the bin maximizing sum over the patient's labels l of n_l * (quota_bin * N_l - placed_bin,l),
 * which for a single-label patient is just its class's deficit (ties: the test part, then the lowest fold).
 * Each bin ends within about one image, or one patient's images, of its quota for every label.
 */
export function patientSplit(records: readonly SplitRecord[], options: PatientSplitOptions): PatientSplit {
  const { testFraction = 0.2, folds = 5, seed, subsample } = options;
  const classNames = options.classNames ?? CLASS_NAMES;
  if (!(typeof testFraction === "number" && testFraction > 0 && testFraction < 1)) {
    throw new Error(`patientSplit: testFraction must be in (0, 1), got ${testFraction}`);
  }
  if (!Number.isInteger(folds) || folds < 2) {
    throw new Error(`patientSplit: folds must be an integer >= 2, got ${folds}`);
  }
  checkRecords(records);
  const gen = new Generator(seed);
  const hash = records.every((r) => typeof r.file === "string" && r.file !== "")
    ? fileListHash(records)
    : undefined;

  let patients = groupPatients(records, records.keys());
  if (subsample !== undefined) {
    const present = new Set(patients.map((p) => p.cls));
    patients = subsamplePatients(patients, resolveSubsample(subsample, classNames, present), classNames, gen);
  }
  if (patients.length < folds + 1) {
    throw new Error(
      `patientSplit: ${patients.length} patients cannot fill a test part and ${folds} folds (need at least ${
        folds + 1
      })`,
    );
  }

  // Label totals over the kept images and the per-bin quotas.
  const totals = new Map<number, number>();
  for (const p of patients) for (const [l, n] of p.labelCounts) totals.set(l, (totals.get(l) ?? 0) + n);
  const nBins = folds + 1;
  const share = [testFraction, ...Array.from({ length: folds }, () => (1 - testFraction) / folds)];
  const placed: Map<number, number>[] = Array.from({ length: nBins }, () => new Map());
  const bins: number[][] = Array.from({ length: nBins }, () => []);

  for (const p of seededBySizeDesc(patients, gen)) {
    let best = 0, bestScore = -Infinity;
    for (let b = 0; b < nBins; b++) {
      let score = 0;
      for (const [l, n] of p.labelCounts) score += n * (share[b] * totals.get(l)! - (placed[b].get(l) ?? 0));
      if (score > bestScore + 1e-9) [best, bestScore] = [b, score];
    }
    bins[best].push(...p.images);
    for (const [l, n] of p.labelCounts) placed[best].set(l, (placed[best].get(l) ?? 0) + n);
  }
  if (bins.some((b) => b.length === 0)) {
    throw new Error(
      `patientSplit: ${patients.length} patients are too few or too uneven to give the test part and all ${folds} folds an image`,
    );
  }

  const asc = (a: number, b: number) => a - b;
  const foldVals = bins.slice(1).map((b) => [...b].sort(asc));
  return {
    seed,
    testFraction,
    folds,
    ...(subsample !== undefined ? { subsample: { ...subsample } } : {}),
    ...(hash !== undefined ? { fileListHash: hash } : {}),
    train: foldVals.flat().sort(asc),
    test: [...bins[0]].sort(asc),
    foldSplits: foldVals.map((val, f) => ({
      train: foldVals.flatMap((v, g) => (g === f ? [] : v)).sort(asc),
      val,
    })),
  };
}

const SPLIT_FORMAT = "flannel-patient-split";
const SPLIT_VERSION = 1;

interface SplitFile {
  format: string;
  version: number;
  seed: number;
  testFraction: number;
  folds: number;
  subsample?: SubsampleSpec;
  fileListHash: string;
  fileCount: number;
  train: string[];
  test: string[];
  /** The validation files of each fold; a fold trains on the other folds' files. */
  foldVal: string[][];
}

/**
 * Writes `split` (made on `records`) as JSON, atomically: the seed and options, the files (`record.file`) of
 * each part and of each fold's validation set, and the SHA-256 of the sorted file list of all `records`.
 */
export function saveSplit(path: string, split: PatientSplit, records: readonly SplitRecord[]): void {
  const hash = fileListHash(records);
  if (split.fileListHash !== undefined && split.fileListHash !== hash) {
    throw new Error(
      `saveSplit: the split was made on a different file list (hash ${split.fileListHash}, records ${hash})`,
    );
  }
  const name = (i: number) => {
    if (!Number.isInteger(i) || i < 0 || i >= records.length) {
      throw new Error(`saveSplit: index ${i} is outside the ${records.length} records`);
    }
    return records[i].file!;
  };
  const data: SplitFile = {
    format: SPLIT_FORMAT,
    version: SPLIT_VERSION,
    seed: split.seed,
    testFraction: split.testFraction,
    folds: split.folds,
    ...(split.subsample !== undefined ? { subsample: split.subsample } : {}),
    fileListHash: hash,
    fileCount: records.length,
    train: split.train.map(name),
    test: split.test.map(name),
    foldVal: split.foldSplits.map((f) => f.val.map(name)),
  };
  writeFileAtomic(path, JSON.stringify(data, null, 1) + "\n");
}

/**
 * Reads a split written by `saveSplit` and maps its files back to indices into `records`. Refuses a file
 * made on another dataset (its file-list hash differs from that of `records`) and malformed files.
 */
export function loadSplit(path: string, records: readonly SplitRecord[]): PatientSplit {
  let data: SplitFile;
  try {
    data = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`loadSplit: cannot read ${path}: ${(err as Error).message}`);
  }
  if (data?.format !== SPLIT_FORMAT || data.version !== SPLIT_VERSION) {
    throw new Error(`loadSplit: ${path} is not a ${SPLIT_FORMAT} v${SPLIT_VERSION} file`);
  }
  const hash = fileListHash(records);
  if (data.fileListHash !== hash) {
    throw new Error(
      `loadSplit: ${path} was made on a different dataset: file-list hash ${data.fileListHash} (${data.fileCount} files), ` +
        `the records give ${hash} (${records.length} files)`,
    );
  }
  const index = new Map<string, number>();
  records.forEach((r, i) => index.set(r.file!, i));
  const asc = (a: number, b: number) => a - b;
  const seen = new Set<number>();
  const toIndices = (files: unknown, what: string, track: boolean): number[] => {
    if (!Array.isArray(files)) throw new Error(`loadSplit: ${path}: ${what} is not a list of files`);
    return files.map((f) => {
      const i = index.get(f);
      if (i === undefined) {
        throw new Error(
          `loadSplit: ${path}: ${what} names ${JSON.stringify(f)}, which is not in the records`,
        );
      }
      if (track) {
        if (seen.has(i)) throw new Error(`loadSplit: ${path}: ${JSON.stringify(f)} appears twice`);
        seen.add(i);
      }
      return i;
    }).sort(asc);
  };
  const test = toIndices(data.test, "test", true);
  if (!Array.isArray(data.foldVal) || data.foldVal.length !== data.folds) {
    throw new Error(`loadSplit: ${path}: expected ${data.folds} folds`);
  }
  const foldVals = data.foldVal.map((v, f) => toIndices(v, `fold ${f}`, true));
  const train = toIndices(data.train, "train", false);
  const fromFolds = foldVals.flat().sort(asc);
  if (train.length !== fromFolds.length || train.some((v, i) => v !== fromFolds[i])) {
    throw new Error(`loadSplit: ${path}: the folds' validation files do not make up the train part`);
  }
  return {
    seed: data.seed,
    testFraction: data.testFraction,
    folds: data.folds,
    ...(data.subsample !== undefined ? { subsample: data.subsample } : {}),
    fileListHash: hash,
    train,
    test,
    foldSplits: foldVals.map((val, f) => ({
      train: foldVals.flatMap((v, g) => (g === f ? [] : v)).sort(asc),
      val,
    })),
  };
}
