// Chest X-ray data sources -> one index of labelled images (FLANNEL's 4 classes), plus the paper's Table 1.
// Three layouts, detected from the folder: Kaggle chest-xray-pneumonia (`chest_xray/{train,val,test}/
// {NORMAL,PNEUMONIA}/*.jpeg`), covid-chestxray-dataset (`metadata.csv` + `images/`) and a plain
// `labels.csv` + `images/` (one row per image). Loading the index reads no pixels; `loadImage`
// decodes one record and `validateImages` decodes all, moving unreadable files to `skipped`. A source may
// also be a zip archive, read entry by entry through `../io/tree.ts` (records' files are then
// `<archive>!/<entry>`), or a folder holding such archives.
import { basename } from "../platform/runtime.ts";
import { decodeImage, type DecodeOptions, type GrayImage, readImage } from "../io/images.ts";
import {
  archivePath,
  baseName,
  isFile,
  isFolder,
  joinPath,
  listFolder,
  openArchive,
  readText,
  resolvePath,
  splitArchivePath,
} from "../io/tree.ts";
import { isZipFile, type ZipLimits } from "../io/zip.ts";

/** FLANNEL's four classes in label order: an {@linkcode ImageRecord}'s `label` indexes this. */
export const CLASSES = ["covid", "viral", "bacterial", "normal"] as const;
/** One of {@linkcode CLASSES}. */
export type ClassName = typeof CLASSES[number];

/** `source` of records from covid-chestxray-dataset (Cohen et al., github.com/ieee8023). */
export const SOURCE_IEEE = "ieee8023";
/** `source` of records from Kaggle's chest-xray-pneumonia (Kermany et al.). */
export const SOURCE_KAGGLE = "kaggle_chest_xray_pneumonia";

/**
 * An image to read: a file path, or (in a page, or for bytes in memory) a name with the encoded PNG or JPEG
 * bytes, which are decoded instead of reading the file.
 */
export interface ImageSource {
  /** The path, or the name that messages and results give it. */
  file: string;
  /** The encoded image, when it does not come from the file system. */
  bytes?: Uint8Array;
}

/** One labelled image of the index; no pixels (see {@linkcode loadImage}). */
export interface ImageRecord {
  /** Absolute path of the image; inside a zip archive `<archive>!/<entry>` (see `fl.io.readBytes`). */
  file: string;
  /** Class index in [0, 4): the position of `labelName` in {@linkcode CLASSES}. */
  label: number;
  /** The class by name. */
  labelName: ClassName;
  /** `ieee8023:<patientid>`, `kaggle:personN`, `kaggle:IM-xxxx` or `kaggle:NORMAL2-IM-xxxx` */
  patientId: string;
  /** PA, AP, AP Supine, ... */
  view: string;
  /** The data set it came from: {@linkcode SOURCE_IEEE}, {@linkcode SOURCE_KAGGLE}, or a labels.csv `source`. */
  source: string;
  /** the source's own finding text or folder, for reference */
  finding?: string;
  /** Kaggle's train/val/test folder, when there is one */
  split?: string;
}

/** An image left out of the index, and why. */
export interface Skipped {
  /** The file, or `<csv path>:row N` for a CSV row naming no file. */
  file: string;
  /** Human-readable cause: unreadable, missing, unknown finding, not frontal, duplicate, ... */
  reason: string;
}

/** Images per class, and their sum in `total`. */
export type ClassCounts = Record<ClassName, number> & { total: number };

/** The paper's Table 1 for a loaded index: counts by class, source and view. */
export interface DatasetSummary {
  /** Number of records. */
  images: number;
  /** Records per class. */
  classes: Record<ClassName, number>;
  /** Number of skipped files. */
  skipped: number;
  /** Counts per {@linkcode ImageRecord.source}. */
  sources: Record<string, ClassCounts>;
  /** Counts per {@linkcode ImageRecord.view}. */
  views: Record<string, ClassCounts>;
  /** Table 1 rows: one per (source, view) */
  table: ({ source: string; view: string } & ClassCounts)[];
}

/** The index of one data source: usable records and the files left out. */
export interface LoadedSource {
  /** Labelled images, in folder or CSV order. */
  records: ImageRecord[];
  /** Files left out, each with its reason. */
  skipped: Skipped[];
}

/** The combined index of several sources, with its Table 1 summary. */
export interface LoadedDataset extends LoadedSource {
  /** {@linkcode summarize} of `records` and `skipped`. */
  summary: DatasetSummary;
}

/**
 * A folder layout: `"kaggle"` (`chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/`),
 * `"covid-chestxray-dataset"` (`metadata.csv` + `images/`) or `"labels-csv"` (`labels.csv` + `images/`).
 */
export type SourceKind = "kaggle" | "covid-chestxray-dataset" | "labels-csv";

/** Options of the loaders for sources in zip archives. */
export interface LoadOptions {
  /**
   * Caps checked against each archive's central directory before anything is read (defaults: 1,000,000
   * entries, 4 GiB an entry, 64 GiB in all, inflation ratio 200 for entries over 1 MiB); an archive over
   * them fails the load with a message naming it and the entry.
   */
  archiveLimits?: ZipLimits;
}

// ---------------------------------------------------------------- CSV

/**
 * RFC 4180 CSV: quoted fields may hold commas, newlines and doubled quotes; CRLF or LF; a leading BOM
 * is dropped; blank lines are skipped. Throws on an unterminated quoted field.
 */
export function parseCsv(text: string): string[][] {
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  const rows: string[][] = [];
  let row: string[] = [], field = "", i = 0, quoted = false, line = 1, quoteLine = 0;
  const n = text.length;
  const endRow = () => {
    row.push(field);
    field = "";
    if (!(row.length === 1 && row[0] === "")) rows.push(row);
    row = [];
  };
  while (i < n) {
    const c = text[i];
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
      } else {
        if (c === "\n") line++;
        field += c;
      }
      i++;
      continue;
    }
    if (c === '"' && field === "") {
      quoted = true;
      quoteLine = line;
    } else if (c === ",") {
      row.push(field);
      field = "";
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      line++;
      endRow();
    } else field += c;
    i++;
  }
  if (quoted) throw new Error(`unterminated quoted field starting on line ${quoteLine}`);
  if (field !== "" || row.length > 0) endRow();
  return rows;
}

/** CSV with a header row -> one object per row (missing cells are ""). */
export function parseCsvObjects(text: string): Record<string, string>[] {
  return csvObjects(parseCsv(text));
}

/** Parsed CSV rows -> one object per row after the header, keyed by the trimmed header names. */
function csvObjects(rows: string[][]): Record<string, string>[] {
  if (rows.length === 0) return [];
  const header = rows[0].map((h) => h.trim());
  return rows.slice(1).map((r) => Object.fromEntries(header.map((h, i) => [h, r[i] ?? ""])));
}

/** The columns covid-chestxray-dataset's metadata.csv must have (the others are optional). */
const METADATA_COLUMNS = ["filename", "finding", "view"];
/** The columns a labels.csv must have. */
const LABELS_COLUMNS = ["file", "label"];

/**
 * The rows of the CSV at `path` as objects keyed by the header.
 * @throws Error naming the file when it cannot be read or parsed, or when its header lacks one of `required`
 * (once for the file, not once a row).
 */
function readCsv(path: string, required: readonly string[]): Record<string, string>[] {
  let text: string;
  try {
    text = readText(path);
  } catch (err) {
    const message = (err as Error).message; // starts with the path
    throw new Error(
      message.startsWith(path) ? `cannot read CSV ${message}` : `${path}: cannot read CSV (${message})`,
    );
  }
  let rows: string[][];
  try {
    rows = parseCsv(text);
  } catch (err) {
    throw new Error(`${path}: cannot read CSV (${(err as Error).message})`);
  }
  const header = (rows[0] ?? []).map((h) => h.trim());
  const missing = required.filter((c) => !header.includes(c));
  if (missing.length > 0) {
    throw new Error(
      `${path}: no ${missing.map((c) => `"${c}"`).join(" or ")} column (it needs ${required.join(", ")}; ` +
        `its header: ${header.length ? header.join(", ") : "empty"})`,
    );
  }
  return csvObjects(rows);
}

// ---------------------------------------------------------------- helpers

const hidden = (name: string) => name.startsWith(".") || name === "__MACOSX";
const isZipName = (name: string) => /\.zip$/i.test(name);

/**
 * The folder a loader reads for `path`: the folder itself, or for a zip archive its root folder (the
 * archive opened and checked with `options.archiveLimits`).
 * @throws Error when `path` is neither a folder nor a zip archive, or the archive fails its checks.
 */
function sourceRoot(path: string, options: LoadOptions = {}): string {
  const inside = splitArchivePath(path);
  if (inside) {
    openArchive(inside.archive, options.archiveLimits);
    if (isFolder(path)) return resolvePath(path);
  } else {
    const abs = resolvePath(path);
    if (isFolder(abs)) return abs;
    if (isFile(abs) && isZipFile(abs)) {
      openArchive(abs, options.archiveLimits);
      return archivePath(abs);
    }
  }
  throw new Error(`${resolvePath(path)}: not a folder or a zip archive`);
}

/**
 * `root`, or in an archive whose root holds nothing but one folder (a GitHub download such as
 * `covid-chestxray-dataset-master/`), that folder when `marker` is there and not at the root.
 */
function layoutRoot(root: string, marker: string): string {
  const a = splitArchivePath(root);
  if (!a || a.entry !== "" || isFile(joinPath(root, marker))) return root;
  const names = listFolder(root).filter((n) => !hidden(n));
  if (names.length === 1 && isFolder(joinPath(root, names[0])) && isFile(joinPath(root, names[0], marker))) {
    return joinPath(root, names[0]);
  }
  return root;
}

function record(
  file: string,
  labelName: ClassName,
  patientId: string,
  view: string,
  source: string,
  extra = {},
): ImageRecord {
  return { file, label: CLASSES.indexOf(labelName), labelName, patientId, view, source, ...extra };
}

// ---------------------------------------------------------------- Kaggle chest-xray-pneumonia

const KAGGLE_SPLITS = ["train", "val", "test"];
const KAGGLE_CLASSES = ["NORMAL", "PNEUMONIA"];
/** Kermany et al.'s pediatric radiographs are anteroposterior; the labels.csv of the assembled chest X-ray set says AP too. */
export const KAGGLE_VIEW = "AP";

function findKaggleClassDirs(dir: string, depth = 4): { dir: string; cls: string; split: string }[] {
  const out: { dir: string; cls: string; split: string }[] = [];
  if (depth < 0 || !isFolder(dir)) return out;
  for (const name of listFolder(dir)) {
    if (hidden(name)) continue;
    const p = joinPath(dir, name);
    if (!isFolder(p)) continue;
    if (KAGGLE_CLASSES.includes(name)) {
      const parent = basename(dir);
      out.push({ dir: p, cls: name, split: KAGGLE_SPLITS.includes(parent) ? parent : "" });
    } else out.push(...findKaggleClassDirs(p, depth - 1));
  }
  return out;
}

/** Label and patient of a Kaggle file name, or a reason to skip it. */
export function parseKaggleName(
  name: string,
  folder: string,
): { labelName: ClassName; patient: string } | { reason: string } {
  const person = /^(person\d+)_(bacteria|virus)_\d+/i.exec(name);
  const im = /^((?:NORMAL\d*-)?IM-\d+)-/i.exec(name);
  if (folder === "NORMAL") {
    if (person) return { reason: `a ${person[2]} file name in the NORMAL folder` };
    if (!im) return { reason: "NORMAL file name not of the form [NORMAL2-]IM-xxxx-....jpeg" };
    return { labelName: "normal", patient: `kaggle:${im[1]}` };
  }
  if (!person) return { reason: "PNEUMONIA file name has no personN_bacteria_/personN_virus_ pattern" };
  return {
    labelName: person[2].toLowerCase() === "virus" ? "viral" : "bacterial",
    patient: `kaggle:${person[1]}`,
  };
}

/**
 * Indexes a Kaggle chest-xray-pneumonia folder: NORMAL and PNEUMONIA folders up to four levels down, label
 * and patient from the file name ({@linkcode parseKaggleName}), view {@linkcode KAGGLE_VIEW}. The archive's
 * second copy under `chest_xray/chest_xray` is skipped as duplicates. `dir` may be a zip archive (Kaggle's
 * download) or a folder inside one.
 * @throws Error when no NORMAL or PNEUMONIA folder is found, or when an archive fails its checks.
 */
export function loadKaggle(dir: string, options: LoadOptions = {}): LoadedSource {
  const root = sourceRoot(dir, options);
  const records: ImageRecord[] = [], skipped: Skipped[] = [];
  const classDirs = findKaggleClassDirs(root);
  if (classDirs.length === 0) {
    throw new Error(`${root}: no NORMAL or PNEUMONIA folders (Kaggle chest-xray-pneumonia layout)`);
  }
  const seen = new Map<string, string>();
  for (const { dir: cdir, cls, split } of classDirs) {
    for (const name of listFolder(cdir)) {
      if (hidden(name)) continue;
      const file = joinPath(cdir, name);
      if (!isFile(file)) continue;
      // the Kaggle archive holds a second copy under chest_xray/chest_xray; keep the first
      const key = `${split}/${cls}/${name}`;
      const first = seen.get(key);
      if (first) {
        skipped.push({ file, reason: `duplicate of ${first}` });
        continue;
      }
      seen.set(key, file);
      const parsed = parseKaggleName(name, cls);
      if ("reason" in parsed) {
        skipped.push({ file, reason: parsed.reason });
        continue;
      }
      records.push(record(file, parsed.labelName, parsed.patient, KAGGLE_VIEW, SOURCE_KAGGLE, {
        finding: cls,
        ...(split ? { split } : {}),
      }));
    }
  }
  return { records, skipped };
}

// ---------------------------------------------------------------- covid-chestxray-dataset

/** The covid-chestxray-dataset views kept (matched ignoring case); lateral and CT images are skipped. */
export const FRONTAL_VIEWS = ["PA", "AP", "AP Supine", "AP semi erect", "AP Erect"];

const VIRAL = [
  "sars",
  "mers",
  "mers-cov",
  "influenza",
  "varicella",
  "herpes",
  "h1n1",
  "rsv",
  "adenovirus",
  "viral",
];
const BACTERIAL = [
  "streptococcus",
  "klebsiella",
  "pneumocystis", // a fungus; FLANNEL's grouping puts it with the bacterial pneumonias
  "e.coli",
  "staphylococcus",
  "legionella",
  "chlamydophila",
  "mycoplasma",
  "nocardia",
  "haemophilus",
  "pseudomonas",
  "moraxella",
  "bacterial",
  "mycobacterium",
  "tuberculosis",
];

/** covid-chestxray-dataset finding (flat "SARS" or hierarchical "Pneumonia/Viral/SARS") -> class or a reason. */
export function classifyFinding(finding: string): ClassName | { reason: string } {
  const text = finding.trim();
  if (text === "") return { reason: "empty finding" };
  const tokens = text.split(/[\/,;]/).map((t) => t.trim().toLowerCase()).filter((t) => t !== "");
  if (tokens.some((t) => /covid-?19|sars-cov-2/.test(t))) return "covid";
  if (tokens.length === 1 && /^no finding$/.test(tokens[0])) return "normal";
  const viral = tokens.some((t) => VIRAL.includes(t) || VIRAL.some((v) => t.startsWith(v + " ")));
  const bacterial = tokens.some((t) => BACTERIAL.includes(t) || BACTERIAL.some((v) => t.startsWith(v + " ")));
  if (viral && bacterial) return { reason: `finding "${text}" is both viral and bacterial` };
  if (viral) return "viral";
  if (bacterial) return "bacterial";
  return { reason: `finding "${text}" is none of covid, viral, bacterial, normal` };
}

/**
 * Indexes covid-chestxray-dataset from its `metadata.csv`: X-ray rows in a {@linkcode FRONTAL_VIEWS} view
 * whose finding {@linkcode classifyFinding} maps to a class and whose file exists; every other row is skipped
 * with its reason. Patients are `ieee8023:<patientid>`. `dir` may be a zip archive, also GitHub's download
 * with everything under one top folder; inside an archive a row whose file would lie outside it is skipped.
 * @throws Error when `metadata.csv` cannot be read or parsed, or when an archive fails its checks.
 */
export function loadCovidChestxray(dir: string, options: LoadOptions = {}): LoadedSource {
  const root = layoutRoot(sourceRoot(dir, options), "metadata.csv");
  const meta = joinPath(root, "metadata.csv");
  const rows = readCsv(meta, METADATA_COLUMNS);
  const records: ImageRecord[] = [], skipped: Skipped[] = [];
  for (const [i, r] of rows.entries()) {
    const folder = (r.folder ?? "").trim() || "images";
    const filename = (r.filename ?? "").trim();
    let file = `${meta}:row ${i + 2}`;
    if (!filename) {
      skipped.push({ file, reason: "no filename" });
      continue;
    }
    try {
      file = resolvePath(root, folder, filename);
    } catch (err) {
      skipped.push({ file: `${file} (${folder}/${filename})`, reason: (err as Error).message });
      continue;
    }
    const modality = (r.modality ?? "").trim();
    if (modality && modality.toLowerCase() !== "x-ray") {
      skipped.push({ file, reason: `modality ${modality}, not X-ray` });
      continue;
    }
    const view = (r.view ?? "").trim();
    if (!FRONTAL_VIEWS.some((v) => v.toLowerCase() === view.toLowerCase())) {
      skipped.push({ file, reason: `view "${view}" is not frontal (PA, AP, AP Supine)` });
      continue;
    }
    const cls = classifyFinding(r.finding ?? "");
    if (typeof cls !== "string") {
      skipped.push({ file, reason: cls.reason });
      continue;
    }
    if (!isFile(file)) {
      skipped.push({ file, reason: "file missing" });
      continue;
    }
    const patient = (r.patientid ?? "").trim() || `row${i + 2}`;
    records.push(
      record(
        file,
        cls,
        `ieee8023:${patient}`,
        FRONTAL_VIEWS.find((v) => v.toLowerCase() === view.toLowerCase())!,
        SOURCE_IEEE,
        {
          finding: (r.finding ?? "").trim(),
        },
      ),
    );
  }
  return { records, skipped };
}

// ---------------------------------------------------------------- labels.csv + images/

/**
 * Indexes a `labels.csv` folder. Columns: `file` (under `images/`, or the folder itself when there is none)
 * and `label` (a class name, any case), required; `patient_id`, `view`, `source` and `finding` optional
 * (a missing patient becomes `<folder name>:<file>`, view `"unknown"`, source the folder's name; for an
 * archive's root, the archive's name without `.zip`). `dir` may be a zip archive, also one with everything
 * under one top folder; inside an archive a row whose file would lie outside it is skipped.
 * @throws Error when `labels.csv` cannot be read or parsed, or when an archive fails its checks.
 */
export function loadLabelsCsv(dir: string, options: LoadOptions = {}): LoadedSource {
  const root = layoutRoot(sourceRoot(dir, options), "labels.csv");
  const path = joinPath(root, "labels.csv");
  const rows = readCsv(path, LABELS_COLUMNS);
  const records: ImageRecord[] = [], skipped: Skipped[] = [];
  const imagesDir = isFolder(joinPath(root, "images")) ? joinPath(root, "images") : root;
  for (const [i, r] of rows.entries()) {
    const name = (r.file ?? "").trim();
    if (!name) {
      skipped.push({ file: `${path}:row ${i + 2}`, reason: "no file name" });
      continue;
    }
    let file: string;
    try {
      file = joinPath(imagesDir, name);
    } catch (err) {
      skipped.push({ file: `${path}:row ${i + 2} (${name})`, reason: (err as Error).message });
      continue;
    }
    const label = (r.label ?? "").trim().toLowerCase() as ClassName;
    if (!CLASSES.includes(label)) {
      skipped.push({ file, reason: `label "${r.label}" is none of ${CLASSES.join(", ")}` });
      continue;
    }
    if (!isFile(file)) {
      skipped.push({ file, reason: "file missing" });
      continue;
    }
    records.push(
      record(
        file,
        label,
        (r.patient_id ?? "").trim() || `${baseName(root)}:${name}`,
        (r.view ?? "").trim() || "unknown",
        (r.source ?? "").trim() || baseName(root),
        r.finding ? { finding: r.finding.trim() } : {},
      ),
    );
  }
  return { records, skipped };
}

// ---------------------------------------------------------------- detection and combination

function looksKaggle(dir: string): boolean {
  return findKaggleClassDirs(dir, 3).length > 0;
}

/** The layout found right in folder `d`, if any. */
function kindAt(d: string): SourceKind | null {
  if (isFile(joinPath(d, "metadata.csv"))) return "covid-chestxray-dataset";
  if (isFile(joinPath(d, "labels.csv"))) return "labels-csv";
  if (
    KAGGLE_CLASSES.some((c) => isFolder(joinPath(d, c))) ||
    ["chest_xray", ...KAGGLE_SPLITS].some((s) => isFolder(joinPath(d, s)))
  ) {
    if (looksKaggle(d)) return "kaggle";
  }
  return null;
}

/** `root` when it holds a layout, else the layouts in its subfolders and (on disk) in its zip archives. */
function sourcesIn(root: string, options: LoadOptions): { kind: SourceKind; dir: string }[] {
  const kind = kindAt(root);
  if (kind) return [{ kind, dir: root }];
  const onDisk = splitArchivePath(root) === null;
  const found: { kind: SourceKind; dir: string }[] = [];
  for (const name of listFolder(root)) {
    if (hidden(name)) continue;
    const p = joinPath(root, name);
    if (isFolder(p)) {
      const k = kindAt(p);
      if (k) found.push({ kind: k, dir: p });
    } else if (onDisk && isZipName(name) && isZipFile(p)) {
      found.push(...sourcesIn(sourceRoot(p, options), options));
    }
  }
  return found;
}

/**
 * The sources under `dir`: the folder itself, or (for a folder of sources) its subfolders and the zip
 * archives in it. `dir` may be a zip archive, or a folder inside one (`data.zip!/top`); in an archive, as in
 * a folder, the layouts may lie one folder down (a GitHub download's top folder).
 * @throws Error when `dir` is neither a folder nor a zip archive, when an archive fails its checks (unsafe
 * or duplicate names, encryption, the caps of `options.archiveLimits`, a corrupt directory), or when no
 * source is found.
 */
export function detectSources(dir: string, options: LoadOptions = {}): { kind: SourceKind; dir: string }[] {
  const root = sourceRoot(dir, options);
  const found = sourcesIn(root, options);
  if (found.length === 0) {
    throw new Error(
      `${root}: no data source found (expected metadata.csv + images/ [covid-chestxray-dataset], labels.csv + images/, ` +
        `or chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/ [Kaggle], here or in a subfolder or zip archive)`,
    );
  }
  return found;
}

/** Indexes `dir` with the loader for `kind`. */
export function loadSource(kind: SourceKind, dir: string, options: LoadOptions = {}): LoadedSource {
  if (kind === "kaggle") return loadKaggle(dir, options);
  if (kind === "covid-chestxray-dataset") return loadCovidChestxray(dir, options);
  return loadLabelsCsv(dir, options);
}

/**
 * Loads and combines every source in `dirs` (kinds detected; folders, zip archives, folders holding zip
 * archives); the index only, no pixels read.
 */
export function loadDataset(dirs: string[], options: LoadOptions = {}): LoadedDataset {
  if (dirs.length === 0) throw new Error("loadDataset: no folders given");
  const records: ImageRecord[] = [], skipped: Skipped[] = [];
  const seen = new Set<string>();
  for (const d of dirs) {
    for (const s of detectSources(d, options)) {
      const part = loadSource(s.kind, s.dir, options);
      for (const r of part.records) {
        if (seen.has(r.file)) {
          skipped.push({ file: r.file, reason: "listed twice" });
          continue;
        }
        seen.add(r.file);
        records.push(r);
      }
      skipped.push(...part.skipped);
    }
  }
  return { records, skipped, summary: summarize(records, skipped) };
}

function zeroCounts(): ClassCounts {
  return { covid: 0, viral: 0, bacterial: 0, normal: 0, total: 0 };
}

/** Table 1 of the paper: images per source, view and class. */
export function summarize(records: ImageRecord[], skipped: Skipped[] = []): DatasetSummary {
  const classes = { covid: 0, viral: 0, bacterial: 0, normal: 0 };
  const sources: Record<string, ClassCounts> = {}, views: Record<string, ClassCounts> = {};
  const cells = new Map<string, { source: string; view: string } & ClassCounts>();
  for (const r of records) {
    classes[r.labelName]++;
    for (const c of [sources[r.source] ??= zeroCounts(), views[r.view] ??= zeroCounts()]) {
      c[r.labelName]++;
      c.total++;
    }
    const key = `${r.source}\u0000${r.view}`;
    if (!cells.has(key)) cells.set(key, { source: r.source, view: r.view, ...zeroCounts() });
    const cell = cells.get(key)!;
    cell[r.labelName]++;
    cell.total++;
  }
  const table = [...cells.values()].sort((a, b) =>
    a.source.localeCompare(b.source) || a.view.localeCompare(b.view)
  );
  return { images: records.length, classes, skipped: skipped.length, sources, views, table };
}

/** Table 1 as aligned text. */
export function formatSummary(s: DatasetSummary): string {
  const head = ["source", "view", ...CLASSES, "total"];
  const rows: string[][] = [];
  const line = (
    a: string,
    b: string,
    c: ClassCounts,
  ) => [a, b, ...CLASSES.map((k) => String(c[k])), String(c.total)];
  for (const src of Object.keys(s.sources).sort()) {
    for (const cell of s.table.filter((t) => t.source === src)) rows.push(line(src, cell.view, cell));
    rows.push(line(src, "all", s.sources[src]));
  }
  for (const v of Object.keys(s.views).sort()) rows.push(line("all", v, s.views[v]));
  rows.push(line("all", "all", { ...s.classes, total: s.images }));
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (r: string[]) =>
    r.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ").trimEnd();
  return [
    "Table 1: images per source, view and class",
    fmt(head),
    fmt(widths.map((w) => "-".repeat(w))),
    ...rows.map(fmt),
    `skipped: ${s.skipped}`,
  ].join("\n");
}

// ---------------------------------------------------------------- pixels

/** Decodes one record's image to gray in [0, 1]; the error names the file. */
export function loadImage(record: ImageSource, opts: DecodeOptions = {}): Promise<GrayImage> {
  if (record.bytes) return Promise.resolve(decodeImage(record.bytes, record.file, opts));
  return readImage(record.file, opts);
}

/** Decodes every record; unreadable ones move to `skipped` with the decoder's message. */
export async function validateImages(
  records: ImageRecord[],
  opts: DecodeOptions & { onProgress?: (done: number, total: number) => void } = {},
): Promise<LoadedSource> {
  const ok: ImageRecord[] = [], skipped: Skipped[] = [];
  for (const [i, r] of records.entries()) {
    try {
      await loadImage(r, opts);
      ok.push(r);
    } catch (err) {
      skipped.push({ file: r.file, reason: (err as Error).message }); // the message starts with the file
    }
    opts.onProgress?.(i + 1, records.length);
  }
  return { records: ok, skipped };
}
