// Class probabilities for new images from trained models (an experiment folder, or a bundle made from one):
// on each fold, the fold's learners (their kept epoch's weights) give their probabilities and the fold's
// trained combiner (FLANNEL unless another method is named) combines them; the folds' probabilities are
// averaged.
import { existsSync, join, readFileSync } from "../platform/runtime.ts";
import * as fl from "../../mod.ts";
import {
  type BaselineArch,
  isBaselineArch,
  isLearnerArch,
  LEARNER_TITLES,
  type LearnerArch,
  type Stage1Arch,
} from "./learners.ts";
import { stackLearnerOutputs, STAGE2_MODEL_FORMAT, stage2ModelPath } from "./experiment.ts";
import { foldTemperature } from "./stage2_experiment.ts";
import { type LearnerOutputsFile, predictStage1 } from "./stage1.ts";
import { loadTrainedLearner } from "./stage1_folds.ts";
import { NeuralWeightModule } from "./ensembles.ts";
import { buildEnsemble, predictStage2, type Stage2Config } from "./stage2.ts";

/** What `experiment` wrote into results.json's `settings` that prediction needs. */
export interface RunSettings {
  /** The learners, in the N order the combiners were trained with. */
  archs: LearnerArch[];
  /** The baselines trained beside them (none in runs written before they existed). */
  baselines: BaselineArch[];
  /** The learners' size. */
  scale: "tiny" | "full";
  /** Centre-crop side in pixels. */
  crop: number;
  /** Short side new images are resized to, in pixels. */
  resize: number;
  /** Whether new images are histogram-equalised after resizing, as the training images were. */
  equalize: boolean;
  /** Whether new images are cropped to their lung fields before resizing, as the training images were. */
  lungCrop: boolean;
}

/**
 * The settings of the experiment in `runDir`, read from its results.json, with the stage-1 folds it ran
 * (ascending).
 *
 * @throws {Error} when results.json is missing, unreadable, lacks usable settings or lists no folds.
 */
export function readRunSettings(runDir: string): RunSettings & { folds: number[] } {
  const path = join(runDir, "results.json");
  if (!existsSync(path)) throw new Error(`${runDir} is not an experiment folder: ${path} is missing`);
  let results: { settings?: Partial<RunSettings>; stage1?: { fold: number }[] };
  try {
    results = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as Error).message}`);
  }
  const s = results.settings;
  const baselines = s?.baselines ?? [];
  if (
    !s || !Array.isArray(s.archs) || !s.archs.every(isLearnerArch) || !Array.isArray(baselines) ||
    !baselines.every(isBaselineArch) || !s.crop || !s.resize || !s.scale
  ) {
    throw new Error(
      `${path} has no usable settings (archs, baselines, scale, crop, resize): was it written by 'experiment'?`,
    );
  }
  const folds = [...new Set((results.stage1 ?? []).map((r) => r.fold))].sort((a, b) => a - b);
  if (folds.length === 0) throw new Error(`${path} lists no stage-1 folds`);
  return {
    archs: s.archs,
    baselines,
    scale: s.scale,
    crop: s.crop,
    resize: s.resize,
    equalize: s.equalize ?? false,
    lungCrop: s.lungCrop ?? false,
    folds,
  };
}

/**
 * Trained models that prediction and class activation maps run from: an experiment folder
 * ({@link runFolderModels}) or a bundle (`loadBundle`).
 */
export interface TrainedModels {
  /** Where the models come from (a folder or an archive), for messages. */
  readonly source: string;
  /** The learners, their preprocessing, and the folds to average over. */
  readonly settings: RunSettings & { folds: number[] };
  /** Fold `fold`'s kept weights of `arch`, in a new model (the caller disposes it). */
  loadLearner(arch: Stage1Arch, fold: number): Promise<fl.nn.Module>;
  /** Fold `fold`'s trained combiner `method` (a Table 3 method name): its config and state dict. */
  loadCombiner(fold: number, method: string): Promise<Combiner>;
  /**
   * The temperature of `arch` alone on fold `fold` (see {@link learnerTemperature}); null when the models were
   * trained before calibration existed.
   */
  learnerTemperature(arch: Stage1Arch, fold: number): number | null;
}

/** A temperature read from a file, checked against `fl.metrics.TEMPERATURE_RANGE`. */
function checkedTemperature(value: unknown, where: string): number {
  const [low, high] = fl.metrics.TEMPERATURE_RANGE;
  const t = typeof value === "string" ? Number(value) : value;
  if (typeof t !== "number" || !(t >= low && t <= high)) {
    throw new Error(`${where}: its temperature ${JSON.stringify(value)} is not in [${low}, ${high}]`);
  }
  return t;
}

/**
 * Fold `fold`'s temperature of `arch` alone, from an experiment's parsed results.json (`results`): what its
 * Table 3 row fitted on that fold's selection share (`methods[].calibration[]`, in the order of `folds`);
 * null when the results predate calibration.
 *
 * @throws {Error} naming `where` when the row or fold is missing or the temperature is out of range.
 */
export function learnerTemperature(
  results: unknown,
  folds: readonly number[],
  arch: Stage1Arch,
  fold: number,
  where: string,
): number | null {
  const rows =
    (results as { methods?: { name: string; calibration?: { temperature: unknown }[] }[] }).methods;
  const row = rows?.find((r) => r.name === LEARNER_TITLES[arch]);
  if (!row) throw new Error(`${where}: no Table 3 row for ${LEARNER_TITLES[arch]}`);
  if (row.calibration === undefined) return null;
  const entry = row.calibration[folds.indexOf(fold)];
  if (!entry) throw new Error(`${where}: no calibration of ${LEARNER_TITLES[arch]} on fold ${fold}`);
  return checkedTemperature(entry.temperature, `${where}: ${LEARNER_TITLES[arch]}, fold ${fold}`);
}

/** A trained combiner as saved by `experiment`: its method name, config and state dict. */
export interface Combiner {
  /** The Table 3 method name. */
  method: string;
  /** How the ensemble is built (`buildEnsemble`'s config). */
  config: Stage2Config;
  /** Its trained tensors. */
  state: Record<string, fl.nn.TensorRecord>;
  /**
   * The temperature fitted on its fold's selection share (see `fl.metrics.fitTemperature`); null in files
   * written before calibration existed.
   */
  temperature: number | null;
}

/**
 * A trained combiner's file (bytes), checked: its `format` metadata, method name and config.
 * @throws Error naming `where` when it is not a combiner written by `experiment`.
 */
export function readCombiner(
  bytes: Uint8Array,
  where: string,
): Combiner {
  const meta = fl.io.inspectSafetensors(bytes).metadata;
  if (meta.format !== STAGE2_MODEL_FORMAT || !meta.method || !meta.config) {
    throw new Error(`${where} is not a ${STAGE2_MODEL_FORMAT} file`);
  }
  let config: Stage2Config;
  try {
    config = JSON.parse(meta.config);
  } catch (err) {
    throw new Error(`${where}: its config does not parse (${(err as Error).message})`);
  }
  const temperature = meta.temperature === undefined ? null : checkedTemperature(meta.temperature, where);
  const state = fl.io.loadSafetensorsSync(bytes) as Record<string, fl.nn.TensorRecord>;
  return { method: meta.method, config, state, temperature };
}

/** The trained models of the experiment folder `runDir` (see {@link readRunSettings}). */
export function runFolderModels(runDir: string): TrainedModels {
  const settings = readRunSettings(runDir);
  const resultsPath = join(runDir, "results.json");
  let results: unknown;
  return {
    source: runDir,
    settings,
    loadLearner: (arch, fold) => loadTrainedLearner(runDir, arch, fold, settings.scale, settings.crop),
    loadCombiner(fold, method) {
      const path = stage2ModelPath(runDir, fold, method);
      if (!existsSync(path)) throw new Error(`no trained ${method} for fold ${fold}: ${path} is missing`);
      return Promise.resolve(readCombiner(readFileSync(path), path));
    },
    learnerTemperature(arch, fold) {
      results ??= JSON.parse(readFileSync(resultsPath, "utf8")); // read once, when first asked
      return learnerTemperature(results, settings.folds, arch, fold, resultsPath);
    },
  };
}

/** What {@link predictFiles} returns. */
export interface PredictionResult {
  /** the readable files, in the order given */
  files: string[];
  /**
   * [files, classes]: the folds' probabilities averaged, then temperature-scaled by `temperature` (the argmax
   * is that of the average either way).
   */
  probs: Float32Array;
  /**
   * The temperature applied: the mean of the folds' fitted temperatures; null with `calibration: "none"` or
   * when the models carry none (trained before calibration existed): `probs` are then the raw average.
   */
  temperature: number | null;
  /** Each learner's probabilities [files, learners, classes] (`settings.archs` order), averaged over the folds. */
  learnerProbs: Float32Array;
  /**
   * FLANNEL only: the weight the Neural Weight Module gave each learner for each image [files, learners],
   * averaged over the folds; null for the other methods.
   */
  learnerWeights: Float32Array | null;
  /** The files that could not be read, with the reason. */
  skipped: fl.data.Skipped[];
  /** The folds whose models were averaged. */
  folds: number[];
}

/** Options of {@link predictFiles}. */
export interface PredictOptions {
  /** The combiner, a Table 3 method name (default FLANNEL). */
  method?: string;
  /**
   * "temperature" (default): the averaged probabilities scaled by the mean of the folds' fitted temperatures,
   * so that a probability of 0.8 is right about 80% of the time; "none": the raw average.
   */
  calibration?: Calibration;
}

/** How {@link predictFiles} calibrates: temperature scaling (the default) or none. */
export type Calibration = "temperature" | "none";

/** The calibrations {@link predictFiles} accepts. */
export const CALIBRATIONS: readonly Calibration[] = ["temperature", "none"];

/**
 * Refuses a calibration other than those of {@link CALIBRATIONS}, naming `what` asked for it.
 * @throws {Error} naming the calibrations accepted.
 */
export function checkCalibration(what: string, calibration: string): void {
  if (!CALIBRATIONS.includes(calibration as Calibration)) {
    throw new Error(
      `${what}: calibration must be ${CALIBRATIONS.join(" or ")}, not ${JSON.stringify(calibration)}`,
    );
  }
}

/**
 * The one temperature for the folds' averaged probabilities (one temperature keeps the average's argmax): the
 * mean of the folds' combiners' `temperatures`; null with calibration "none", or when no fold carries one
 * (models trained before calibration existed).
 *
 * @throws {Error} naming `where` when some folds carry a temperature and others not.
 */
export function ensembleTemperature(
  temperatures: readonly (number | null)[],
  calibration: Calibration,
  where: string,
): number | null {
  const fitted = temperatures.filter((t): t is number => t !== null);
  if (fitted.length > 0 && fitted.length < temperatures.length) {
    throw new Error(
      `${where}: a temperature on ${fitted.length} of ${temperatures.length} folds (mixed runs?)`,
    );
  }
  return calibration === "temperature" && fitted.length > 0 ? foldTemperature(fitted) : null;
}

/**
 * Probabilities of `files` (paths, or names with their encoded bytes) by `method` (default FLANNEL; a Table 3
 * method name) of trained models (an experiment folder's path, or {@link TrainedModels} such as a bundle), with
 * each learner's probabilities and FLANNEL's learner weights: on each fold, the fold's learners
 * give their probabilities and its trained combiner combines them; the folds' results are averaged and, unless
 * `calibration` is "none", temperature-scaled. Unreadable files are skipped and listed.
 *
 * @throws {Error} when no file is readable, the models lack a fold's combiner or learner, `calibration` is
 *   unknown, or some folds' combiners carry a temperature and others not.
 */
export async function predictFiles(
  models: string | TrainedModels,
  files: readonly (string | fl.data.ImageSource)[],
  { method = "FLANNEL", calibration = "temperature" }: PredictOptions = {},
): Promise<PredictionResult> {
  checkCalibration("predict", calibration);
  const source = typeof models === "string" ? runFolderModels(models) : models;
  const { settings } = source;
  const cache = new fl.data.ImageCache(settings.resize, settings);
  const readable = await cache.getReadable(files.map((f) => (typeof f === "string" ? { file: f } : f)));
  const readableFiles = readable.records.map((r) => r.file);
  const s = readable.images.length, n = settings.archs.length;
  if (s === 0) {
    throw new Error(
      `none of the ${files.length} images could be read${
        readable.skipped[0] ? `: ${readable.skipped[0].reason}` : ""
      }`,
    );
  }
  const m = fl.metrics.CLASS_NAMES.length;
  // Sums over the folds, divided by their count at the end.
  const probs = new Float32Array(s * m), learnerProbs = new Float32Array(s * n * m);
  let learnerWeights: Float32Array | null = null;
  const temperatures: (number | null)[] = [];
  const add = (into: Float32Array, values: Float32Array) => values.forEach((v, i) => (into[i] += v));
  for (const fold of settings.folds) {
    const combiner = await source.loadCombiner(fold, method);
    temperatures.push(combiner.temperature);
    const perLearner: LearnerOutputsFile[] = [];
    for (const arch of settings.archs) {
      const model = await source.loadLearner(arch, fold);
      try {
        const probs = await predictStage1(model, readable.images, { crop: settings.crop });
        perLearner.push({ files: readableFiles, labels: new Int32Array(s), probs, learner: arch, fold });
      } finally {
        model.dispose();
      }
    }
    const stacked = stackLearnerOutputs(perLearner);
    add(learnerProbs, stacked.probs);
    const ensemble = buildEnsemble(combiner.config, n, stacked.classes, new fl.Generator(0));
    try {
      ensemble.loadStateDict(combiner.state);
      add(probs, await predictStage2(ensemble, stacked));
      if (ensemble instanceof NeuralWeightModule) {
        const weights = await fl.scope(() =>
          fl.noGrad(() => ensemble.learnerWeights(fl.tensor(stacked.probs, [s, n, stacked.classes])))
            .toArray()
        );
        add(learnerWeights ??= new Float32Array(s * n), weights);
      }
    } finally {
      ensemble.dispose();
    }
  }
  const folds = settings.folds.length;
  for (const sums of [probs, learnerProbs, learnerWeights]) sums?.forEach((v, i) => (sums[i] = v / folds));
  const temperature = ensembleTemperature(temperatures, calibration, `${source.source}: ${method}`);
  return {
    files: readableFiles,
    probs: temperature === null ? probs : fl.metrics.temperatureScale(probs, temperature, m),
    temperature,
    learnerProbs,
    learnerWeights,
    skipped: readable.skipped,
    folds: settings.folds,
  };
}

/**
 * The CSV that `flannel predict` prints (and the page downloads): a header
 * `file,covid,viral,bacterial,normal,predicted`, then one row per file with six decimals, the file quoted when it holds a comma, quote or newline.
 */
export function predictionsCsv(files: readonly string[], probs: Float32Array): string {
  const classes = fl.metrics.CLASS_NAMES;
  const lines = [["file", ...classes, "predicted"].join(",")];
  files.forEach((file, i) => {
    const row = Array.from(probs.subarray(i * classes.length, (i + 1) * classes.length));
    const quoted = /[",\n]/.test(file) ? `"${file.replaceAll('"', '""')}"` : file;
    lines.push([quoted, ...row.map((p) => p.toFixed(6)), classes[row.indexOf(Math.max(...row))]].join(","));
  });
  return lines.join("\n") + "\n";
}
