// A trained experiment as one zip file that travels: every fold's kept learner weights, every fold's trained
// combiners, the preprocessing settings, the class names, the data summary and Table 3 as a model card.
// `predict --model NAME.zip` and `loadBundle` run from it on any machine and runtime, with no experiment
// folder.
//
// A bundle is checked before anything is built from it: the archive's directory (names, sizes, zip-bomb
// caps: src/io/zip.ts), a bounded manifest whose every field is validated, exactly the entries the manifest
// lists, each entry's SHA-256 against the manifest (a changed byte is refused), and each weights file's
// safetensors header (bounded, offsets and shapes consistent) and metadata (format, learner, fold, method).
import {
  basename,
  existsSync,
  fileURLToPath,
  join,
  readdirSync,
  readFileSync,
  resolve,
  sha256,
} from "../platform/runtime.ts";
import * as fl from "../../mod.ts";
import { STAGE2_MODEL_FORMAT } from "./experiment.ts";
import { createLearner, isLearnerArch, type Stage1Arch } from "./learners.ts";
import {
  type Combiner,
  learnerTemperature,
  readCombiner,
  readRunSettings,
  type RunSettings,
  type TrainedModels,
} from "./predict.ts";
import { stage1FoldDir } from "./stage1_folds.ts";

/** `format` of a bundle's manifest.json. */
export const BUNDLE_FORMAT = "flannel-bundle/1";
/** `format` metadata of a learner's weights inside a bundle. */
export const BUNDLE_LEARNER_FORMAT = "flannel-bundle-learner/1";
/** The bundle that `predict` uses when no model is named: tiny learners trained on the project's real data. */
export const SHIPPED_BUNDLE: URL = new URL("../../weights/flannel-chestxray-tiny.zip", import.meta.url);

const MANIFEST = "manifest.json", CARD = "MODEL_CARD.md", RESULTS = "results.json";
const MAX_MANIFEST_BYTES = 1 << 20, MAX_TEXT_BYTES = 16 << 20;
/** Caps of a bundle's archive: one entry (a full-size VGG19 is 0.56 GB in float32), all entries. */
const BUNDLE_LIMITS = { maxEntries: 10_000, maxEntryBytes: 2 * 2 ** 30, maxTotalBytes: 64 * 2 ** 30 };

/** What manifest.json of a bundle holds. */
export interface BundleManifest {
  /** {@linkcode BUNDLE_FORMAT}. */
  format: string;
  /** The class names, in the order of the probabilities. */
  classes: string[];
  /** The learners (combined in this order), their size and the preprocessing of new images. */
  settings: RunSettings;
  /** The folds whose learners and combiners the bundle holds; predictions average over them. */
  folds: number[];
  /** The combiners every fold holds (Table 3 method names), FLANNEL first when present. */
  methods: string[];
  /** How the learners' float weights are stored: "F32" (as trained) or "F16" (half the size). */
  weights: "F32" | "F16";
  /** Every other entry of the archive: its byte length and SHA-256 (hex). */
  entries: Record<string, { bytes: number; sha256: string }>;
}

/** Options of {@linkcode exportBundle}. */
export interface ExportBundleOptions {
  /** "F32" (default: predictions identical to the folder's) or "F16" (half the size, probabilities within ~1e-3). */
  weights?: "F32" | "F16";
  /** Markdown added to the model card (data provenance, licences, intended use). */
  notes?: string;
}

const learnerEntry = (fold: number, arch: string) => `fold${fold}/${arch}.safetensors`;
const combinerEntry = (fold: number, method: string) =>
  `fold${fold}/stage2/${method.replace(/[^A-Za-z0-9_]+/g, "_")}.safetensors`;
const sha256Hex = (bytes: Uint8Array) => sha256().update(bytes).hex();

/**
 * The combiners saved for `fold` in the experiment folder: method name -> file, from each file's header only
 * (the whole file is checked when the bundle is read).
 */
async function runCombiners(runDir: string, fold: number): Promise<Map<string, string>> {
  const dir = join(runDir, "stage2", `fold${fold}`);
  const out = new Map<string, string>();
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir).filter((n) => n.endsWith(".safetensors")).sort()) {
    const path = join(dir, name);
    const meta = await fl.io.readSafetensorsMetadata(path);
    if (meta.format !== STAGE2_MODEL_FORMAT || !meta.method) {
      throw new Error(`${path} is not a ${STAGE2_MODEL_FORMAT} file`);
    }
    out.set(meta.method, path);
  }
  return out;
}

/**
 * Sections of the run's report.md worth a model card: the data, Table 3, calibration, the folds' ensemble and
 * what Table 3 hides.
 */
function reportSections(runDir: string): string {
  const path = join(runDir, "report.md");
  if (!existsSync(path)) return "";
  const sections = readFileSync(path, "utf8").split(/^(?=## )/m);
  return sections.filter((s) =>
    /^## (Table 1|Table 3|Calibration|The folds' ensemble|What Table 3 hides)/.test(s)
  )
    .map((s) => s.replace(/^!\[.*$/gm, "").trimEnd()).join("\n\n");
}

function modelCard(runDir: string, manifest: BundleManifest, notes: string | undefined): string {
  const s = manifest.settings;
  return `# FLANNEL bundle: model card

**Not for clinical use.** These models were trained to test and demonstrate a software library. They are
not a medical device, were not validated for diagnosis, and on the public chest X-ray collections they
largely recognise where an image comes from (almost every covid image comes from one collection): read
"What Table 3 hides" below before drawing any conclusion from the scores.

- Learners: ${s.archs.join(", ")} (${s.scale} scale), combined by ${
    manifest.methods.join(", ")
  }; ${manifest.folds.length} folds (folds ${manifest.folds.join(", ")}), whose probabilities are averaged.
- Input: a gray chest X-ray (PNG or JPEG), short side resized to ${s.resize} px${
    s.equalize ? ", histogram-equalised" : ""
  }${
    s.lungCrop ? "; first cropped to its lung fields (fl.data.lungFieldBox)" : ""
  }, centre ${s.crop} x ${s.crop} crop, replicated to 3 channels, ImageNet mean/std.
- Output: probabilities of ${manifest.classes.join(", ")}.
- Weights stored as ${manifest.weights}${
    manifest.weights === "F16"
      ? " (half precision: probabilities within about 1e-3 of the trained F32 models)"
      : ""
  }.
- Made with \`flannel export\` from the experiment folder \`${basename(runDir)}\`; \`results.json\` in this
  archive is that experiment's, with every fold's scores.
${notes ? `\n${notes.trim()}\n` : ""}
${reportSections(runDir)}
`;
}

/**
 * Writes the experiment in `runDir` as one bundle at `outPath` (atomically): manifest.json, MODEL_CARD.md,
 * the run's results.json, every fold's learner weights (the kept epoch's; baselines are not part of the
 * ensemble and are left out) and every fold's trained combiners. Entries are written one at a time.
 * @returns the manifest written.
 * @throws Error when the folder is not a finished experiment (settings, a learner or a combiner missing), or
 * a weight does not fit F16.
 */
export async function exportBundle(
  runDir: string,
  outPath: string,
  options: ExportBundleOptions = {},
): Promise<BundleManifest> {
  const weights = options.weights ?? "F32";
  if (weights !== "F32" && weights !== "F16") {
    throw new Error(`export: weights must be F32 or F16, not ${weights}`);
  }
  const run = readRunSettings(runDir);
  const { folds, ...settings } = run;
  const combiners = await Promise.all(folds.map((f) => runCombiners(runDir, f)));
  const methods = [...combiners[0].keys()].filter((m) => combiners.every((c) => c.has(m)))
    .sort((a, b) => (a === "FLANNEL" ? -1 : b === "FLANNEL" ? 1 : a.localeCompare(b)));
  if (methods.length === 0) throw new Error(`${runDir}: no trained combiner common to every fold (stage2/)`);
  const manifest: BundleManifest = {
    format: BUNDLE_FORMAT,
    classes: [...fl.metrics.CLASS_NAMES],
    settings: { ...settings, baselines: [] },
    folds,
    methods,
    weights,
    entries: {},
  };
  const record = (name: string, data: Uint8Array, compress = true): fl.io.ZipInput => {
    manifest.entries[name] = { bytes: data.length, sha256: sha256Hex(data) };
    return { name, data, compress };
  };
  const results = join(runDir, "results.json");
  async function* entries(): AsyncGenerator<fl.io.ZipInput> {
    yield record(RESULTS, readFileSync(results));
    for (const [i, fold] of folds.entries()) {
      for (const arch of settings.archs) {
        const path = join(stage1FoldDir(runDir, arch, fold), "checkpoint.safetensors.best");
        if (!existsSync(path)) throw new Error(`no trained ${arch} for fold ${fold}: ${path} is missing`);
        const tensors = await fl.io.loadSafetensors(path);
        const out: Record<string, fl.io.SafetensorsInput> = {};
        for (const [k, t] of Object.entries(tensors)) {
          out[k] = { dtype: t.data instanceof Float32Array ? weights : "I32", shape: t.shape, data: t.data };
        }
        const bytes = await fl.io.encodeSafetensors(out, {
          format: BUNDLE_LEARNER_FORMAT,
          arch,
          fold: String(fold),
        });
        yield record(learnerEntry(fold, arch), bytes, false); // floats barely deflate
      }
      for (const method of methods) {
        yield record(combinerEntry(fold, method), readFileSync(combiners[i].get(method)!));
      }
    }
    yield record(CARD, new TextEncoder().encode(modelCard(runDir, manifest, options.notes)));
    yield { name: MANIFEST, data: new TextEncoder().encode(JSON.stringify(manifest, null, 1)) };
  }
  await fl.io.writeZip(outPath, entries());
  return manifest;
}

function bad(path: string, what: string): never {
  throw new Error(`${path}: not a usable FLANNEL bundle: ${what}`);
}

/** Checks every field of a parsed manifest; returns it typed. */
function checkManifest(path: string, m: unknown): BundleManifest {
  if (typeof m !== "object" || m === null || Array.isArray(m)) bad(path, "manifest.json is not an object");
  const o = m as Record<string, unknown>;
  if (o.format !== BUNDLE_FORMAT) bad(path, `format ${JSON.stringify(o.format)}, expected ${BUNDLE_FORMAT}`);
  const classes = o.classes;
  if (!Array.isArray(classes) || classes.join() !== fl.metrics.CLASS_NAMES.join()) {
    bad(path, `classes ${JSON.stringify(classes)}, expected ${fl.metrics.CLASS_NAMES.join(", ")}`);
  }
  const s = o.settings as Record<string, unknown> | undefined;
  const posInt = (v: unknown, max: number) =>
    Number.isInteger(v) && (v as number) >= 1 && (v as number) <= max;
  if (
    !s || !Array.isArray(s.archs) || s.archs.length === 0 || s.archs.length > 16 ||
    !s.archs.every(isLearnerArch) ||
    new Set(s.archs).size !== s.archs.length || !Array.isArray(s.baselines) || s.baselines.length !== 0 ||
    (s.scale !== "tiny" && s.scale !== "full") || !posInt(s.crop, 4096) || !posInt(s.resize, 8192) ||
    (s.crop as number) > (s.resize as number) || typeof s.equalize !== "boolean" ||
    (s.lungCrop !== undefined && typeof s.lungCrop !== "boolean")
  ) {
    bad(path, "settings (archs, scale, crop, resize, equalize, lungCrop) missing or out of range");
  }
  const folds = o.folds;
  if (
    !Array.isArray(folds) || folds.length === 0 || folds.length > 100 ||
    !folds.every((f) => Number.isInteger(f) && f >= 0 && f < 100) || new Set(folds).size !== folds.length
  ) {
    bad(path, "folds must be distinct integers in [0, 100)");
  }
  const methods = o.methods;
  if (
    !Array.isArray(methods) || methods.length === 0 || methods.length > 32 ||
    !methods.every((x) => typeof x === "string" && /^[A-Za-z0-9_ ()+/-]{1,64}$/.test(x))
  ) {
    bad(path, "methods must be 1-32 method names");
  }
  if (o.weights !== "F32" && o.weights !== "F16") {
    bad(path, `weights ${JSON.stringify(o.weights)}, expected F32 or F16`);
  }
  const entries = o.entries as Record<string, { bytes: unknown; sha256: unknown }> | undefined;
  if (typeof entries !== "object" || entries === null) bad(path, "entries missing");
  for (const [name, e] of Object.entries(entries)) {
    if (
      !Number.isSafeInteger(e?.bytes) || typeof e?.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(e.sha256)
    ) {
      bad(path, `entry "${name}" has no valid bytes and sha256`);
    }
  }
  return o as unknown as BundleManifest;
}

/**
 * A bundle opened by {@linkcode loadBundle}: its manifest and model card, and the {@linkcode TrainedModels}
 * that `predictFiles` and `camFigure` take. Entries are read when a fold needs them, not at once.
 */
export class Bundle implements TrainedModels {
  /** Absolute path of the archive, or the name given with its bytes. */
  readonly source: string;
  /** The checked manifest. */
  readonly manifest: BundleManifest;
  /** The settings and folds prediction needs (from the manifest). */
  readonly settings: RunSettings & { folds: number[] };
  private readonly zip: fl.io.ZipReader;

  private constructor(zip: fl.io.ZipReader, manifest: BundleManifest) {
    this.zip = zip;
    this.source = zip.path;
    this.manifest = manifest;
    // Bundles written before the lung-field crop existed carry no lungCrop: they did not crop.
    this.settings = {
      ...manifest.settings,
      lungCrop: manifest.settings.lungCrop ?? false,
      folds: manifest.folds,
    };
  }

  /** Opens and checks a bundle (see {@linkcode loadBundle}): a file, or bytes in memory named `name`. */
  static open(source: string | { bytes: Uint8Array; name: string }): Bundle {
    const zip = typeof source === "string"
      ? fl.io.ZipReader.open(source, BUNDLE_LIMITS)
      : fl.io.ZipReader.fromBytes(source.bytes, source.name, BUNDLE_LIMITS);
    const where = zip.path;
    const manifestEntry = zip.entry(MANIFEST);
    if (!manifestEntry || manifestEntry.folder) {
      bad(where, "no manifest.json (was it written by 'flannel export'?)");
    }
    if (manifestEntry.size > MAX_MANIFEST_BYTES) bad(where, `manifest.json is ${manifestEntry.size} bytes`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(zip.readText(MANIFEST));
    } catch (err) {
      bad(where, `manifest.json does not parse (${(err as Error).message})`);
    }
    const manifest = checkManifest(where, parsed);
    const expected = new Set([RESULTS, CARD]);
    for (const f of manifest.folds) {
      for (const a of manifest.settings.archs) expected.add(learnerEntry(f, a));
      for (const m of manifest.methods) expected.add(combinerEntry(f, m));
    }
    const listed = new Set(Object.keys(manifest.entries));
    for (const name of expected) if (!listed.has(name)) bad(where, `the manifest does not list ${name}`);
    for (const name of listed) {
      if (!expected.has(name)) bad(where, `the manifest lists an unexpected entry ${name}`);
    }
    const files = zip.entries().filter((e) => !e.folder).map((e) => e.name);
    for (const name of files) {
      if (name !== MANIFEST && !listed.has(name)) bad(where, `unexpected entry ${name}`);
    }
    for (const name of listed) {
      const e = zip.entry(name);
      if (!e || e.folder) bad(where, `entry ${name} is missing`);
      if (e.size !== manifest.entries[name].bytes) {
        bad(where, `entry ${name} is ${e.size} bytes, the manifest says ${manifest.entries[name].bytes}`);
      }
    }
    if (zip.entry(CARD)!.size > MAX_TEXT_BYTES || zip.entry(RESULTS)!.size > MAX_TEXT_BYTES) {
      bad(where, "MODEL_CARD.md or results.json is over 16 MiB");
    }
    return new Bundle(zip, manifest);
  }

  private resultsForTemperatures: unknown;

  /** The model card (MODEL_CARD.md). */
  card(): string {
    return new TextDecoder().decode(this.entry(CARD));
  }

  /** The experiment's results.json (Table 3 and every fold's scores), parsed. */
  results(): unknown {
    return JSON.parse(new TextDecoder().decode(this.entry(RESULTS)));
  }

  /** An entry's bytes, refused when its SHA-256 differs from the manifest's. */
  private entry(name: string): Uint8Array {
    const bytes = this.zip.read(name);
    if (sha256Hex(bytes) !== this.manifest.entries[name].sha256) {
      bad(this.source, `entry ${name} does not match its SHA-256 in the manifest (the bundle was altered)`);
    }
    return bytes;
  }

  /** Fold `fold`'s kept weights of learner `arch`, in a new model (dispose it). */
  async loadLearner(arch: Stage1Arch, fold: number): Promise<fl.nn.Module> {
    const name = learnerEntry(fold, arch);
    if (!(name in this.manifest.entries)) bad(this.source, `no ${arch} for fold ${fold}`);
    const bytes = this.entry(name);
    const meta = await fl.io.readSafetensorsMetadata(bytes);
    if (meta.format !== BUNDLE_LEARNER_FORMAT || meta.arch !== arch || meta.fold !== String(fold)) {
      bad(
        this.source,
        `${name} holds ${meta.arch ?? "unknown"} weights of fold ${meta.fold ?? "?"}, not ${arch}'s`,
      );
    }
    const s = this.settings;
    const model = createLearner(arch, { scale: s.scale, crop: s.crop });
    try {
      model.loadStateDict(await fl.io.loadSafetensors(bytes) as Record<string, fl.nn.TensorRecord>);
    } catch (err) {
      model.dispose();
      bad(this.source, `${name}: ${(err as Error).message}`);
    }
    return model;
  }

  /** The temperature of `arch` alone on fold `fold`, from the bundle's results.json. */
  learnerTemperature(arch: Stage1Arch, fold: number): number | null {
    this.resultsForTemperatures ??= this.results(); // checked and parsed once, when first asked
    const where = `${this.source}: ${RESULTS}`;
    return learnerTemperature(this.resultsForTemperatures, this.settings.folds, arch, fold, where);
  }

  /** Fold `fold`'s trained combiner `method`: its config and state dict. */
  loadCombiner(fold: number, method: string): Promise<Combiner> {
    const name = combinerEntry(fold, method);
    if (!(name in this.manifest.entries)) {
      bad(this.source, `no ${method} for fold ${fold} (it holds ${this.manifest.methods.join(", ")})`);
    }
    const c = readCombiner(this.entry(name), `${this.source}: ${name}`);
    if (c.method !== method) bad(this.source, `${name} holds ${c.method}, not ${method}`);
    return Promise.resolve(c);
  }
}

/**
 * Opens a bundle written by {@linkcode exportBundle} (or `flannel export`): a path or file: URL, or its bytes
 * (in a page: `loadBundle(await fl.io.bytesOf(url or File))`, named `name` in messages). It is checked
 * before anything is allocated: the archive (names, sizes, zip-bomb caps), manifest.json (at most 1 MiB, every
 * field), exactly the listed entries with their sizes (MODEL_CARD.md and results.json at most 16 MiB); each entry's SHA-256 and safetensors header are checked when a fold
 * reads it. Pass the result to `predictFiles` or `camFigure`.
 * @throws Error naming the bundle and the problem.
 */
export function loadBundle(source: string | URL | Uint8Array, name = "bundle.zip"): Bundle {
  if (source instanceof Uint8Array) return Bundle.open({ bytes: source, name });
  return Bundle.open(source instanceof URL ? fileURLToPath(source) : resolve(source));
}
