// Stage 1: train one base learner (an image classifier giving logits [B, 4]) with Adam and cross-entropy,
// validate macro-F1 after every epoch, keep the best epoch, checkpoint after every epoch and resume
// exactly; then predict class probabilities for stage 2 (the out-of-fold outputs).
//
// Determinism: epoch e draws its shuffle, crops, flips (or the `paper` augmentation's warps) and noise from
// `new Generator(seed * 1000 + e)`, so a resumed run needs no RNG state and ends with the same weights, bit
// for bit, as an uninterrupted one.
//
// Files (all safetensors, written atomically):
//   checkpointPath                 fl.io checkpoint: model + Adam state; metadata `epoch`, `seed`, `best`
//                                  ({ epoch, macroF1 }), `history` (EpochLog[]), `stage1` (the config)
//   checkpointPath + ".best"       the best epoch's state dict; metadata { epoch, macroF1 } (written after
//                                  the checkpoint, so a crash between the two is recovered from the checkpoint)
//   logPath                        JSON lines, one per epoch: epoch, trainLoss, valMacroF1, valAccuracy,
//                                  seconds, imagesPerSecond
//   saveLearnerOutputs(path, ...)  `probs` F32 [S, 4] and `labels` I32 [S]; metadata `format`
//                                  ("flannel-learner-outputs/1"), `learner`, `fold`, `classes`, `files`
//                                  (JSON list of S paths, the rows' order)
import { appendFileSync, dirname, existsSync, mkdirSync, writeFileSync } from "../platform/runtime.ts";
import * as fl from "../../mod.ts";

/** The `format` metadata of a {@link saveLearnerOutputs} file; {@link loadLearnerOutputs} refuses other values. */
export const LEARNER_OUTPUTS_FORMAT = "flannel-learner-outputs/1";

/**
 * A labelled image set: records (decoded and resized through the cache) or images already in memory; with
 * each image's source (a record's `source`, or `sources`) where the recipe balances sources.
 */
export type Stage1Set =
  | { records: readonly (Pick<fl.data.ImageRecord, "file" | "label"> & { source?: string })[] }
  | { images: readonly fl.io.GrayImage[]; labels: ArrayLike<number>; sources?: readonly string[] };

/** One epoch of stage 1, as `onProgress` receives it and `logPath` records it (one JSON line). */
export interface Stage1EpochLog {
  /** 1-based. */
  epoch: number;
  /** Mean cross-entropy over the epoch's training images. */
  trainLoss: number;
  /** Macro-F1 on the validation set after the epoch (what chooses the best epoch). */
  valMacroF1: number;
  /** Accuracy on the validation set after the epoch. */
  valAccuracy: number;
  /** Mean cross-entropy on the validation set (unweighted, no penalty): what `patience` watches. */
  valLoss: number;
  /** Wall-clock seconds of the epoch, validation included. */
  seconds: number;
  /** training images per second (the validation pass excluded) */
  imagesPerSecond: number;
}

/** Progress within one stage-1 epoch, given to `onBatch` after every training batch. */
export interface Stage1BatchProgress {
  /** 1-based epoch under way. */
  epoch: number;
  /** Epochs of the whole run. */
  epochs: number;
  /** training images of this epoch submitted so far, and in all */
  done: number;
  /** Training images of the epoch in all. */
  total: number;
  /** training images per second so far in this epoch */
  imagesPerSecond: number;
}

/** Settings of {@link trainStage1}: one learner, its data, Adam's hyperparameters and the files it writes. */
export interface Stage1Config {
  /** The learner (logits [B, M] for images [B, 3, crop, crop]); trained in place. */
  model: fl.nn.Module;
  /** What the learner trains on (with random crops, flips and noise). */
  train: Stage1Set;
  /** What chooses the epoch kept: macro-F1 after every epoch (centre crops). */
  val: Stage1Set;
  /** Epochs to train, an integer >= 0 (0 trains nothing). */
  epochs: number;
  /** Images per batch (default 32); a last batch of one image is dropped (batch norm needs two). */
  batchSize?: number;
  /**
   * Gradient accumulation: each batch runs as this many micro-batches (near-equal, at least two images
   * each), one forward and backward pass each, their gradients summed, then one optimizer step; the loss is
   * weighted so that the step's gradient is the whole batch's. Batch norm normalises each micro-batch by its
   * own statistics, as PyTorch's accumulation loop does. "auto" (default): 1 unless the backend's memory
   * (the WebAssembly memory) would not hold a step of the whole batch, measured by two probe passes of 2
   * and 4 images before training (the model's state is restored after them); then the fewest micro-batches
   * that fit, said through `onNotice`. Saved with the checkpoint: resume refuses another number ("auto"
   * takes the checkpoint's).
   */
  accumulate?: number | "auto";
  /**
   * "f32" (default), or "f16": the forward pass under `fl.autocast("float16")` (activations stored as float16,
   * every kernel computing in float32, weights and Adam's state float32) with dynamic loss scaling
   * (`fl.train.trainStepScaled`; a step whose gradients overflow is skipped and the scale halved). About
   * half the activations' memory. Needs WebGPU with `shader-f16`; validation runs in float32. Saved with the
   * checkpoint: resume refuses the other precision.
   */
  precision?: "f32" | "f16";
  /** Messages about choices the trainer made itself (the micro-batches "auto" chose); default console.warn. */
  onNotice?: (message: string) => void;
  /** Adam's learning rate (default 1e-3). */
  lr?: number;
  /** Adam's weight decay (default 1e-4). */
  weightDecay?: number;
  /** Seeds every epoch's shuffle and augmentation: epoch e uses `seed * 1000 + e` (default 0). */
  seed?: number;
  /** crop side (default 224; 64 for CPU runs) */
  crop?: number;
  /** short side the records' images are resized to (default 256); unused for in-memory images */
  resize?: number;
  /** Gaussian noise std added in training (default 0.01) */
  noiseStd?: number;
  /**
   * The training augmentation (default "basic"): "basic" makeBatch's random crop, flip and noise on the CPU;
   * "paper" the device affine warp of fl.data.warpBatch (flip, crop, scaling, small rotation, translation)
   * with the same noise; "none" the centre crop without noise. Saved with the checkpoint: resume refuses
   * another.
   */
  augment?: fl.data.AugmentMode;
  /** Decodes and resizes the records' images (default a new cache at `resize`); unused for in-memory images. */
  cache?: fl.data.ImageCache;
  /**
   * Where to checkpoint after every epoch (model, Adam state, history); the best epoch's weights go to
   * `checkpointPath + ".best"`. No files when omitted.
   */
  checkpointPath?: string;
  /** continue from `checkpointPath` when it exists */
  resume?: boolean;
  /** JSON-lines log, one {@link Stage1EpochLog} per epoch (rewritten from the checkpoint's history on resume). */
  logPath?: string;
  /** After every epoch's validation. */
  onProgress?: (log: Stage1EpochLog) => void;
  /** After every training batch has been submitted (for a progress bar). */
  onBatch?: (progress: Stage1BatchProgress) => void;
  /**
   * Stops training at the next step once aborted (e.g. by SIGINT/SIGTERM in the CLI): files being written are
   * finished first, and the error says which checkpoint to resume from.
   */
  signal?: AbortSignal;
  /** stop after this epoch (as if interrupted), without restoring the best weights; for tests */
  stopAfterEpoch?: number;
  /** Names of the M classes in the reports (default covid, viral, bacterial, normal). */
  classNames?: readonly string[];
  /** The training recipe beyond lr and weight decay (default: Adam, plain cross-entropy, shuffled batches). */
  recipe?: Stage1Recipe;
}

/**
 * How a learner is trained beyond the learning rate, weight decay and batch size: what the published
 * baselines' own recipes need (see BASELINE_RECIPES in learners.ts).
 */
export interface Stage1Recipe {
  /** "adam" (default) or "sgd": SGD with Nesterov momentum `momentum`. */
  optimizer?: "adam" | "sgd";
  /** SGD's momentum (default 0.9). */
  momentum?: number;
  /** Per-class weights of the training cross-entropy (COVID-Net: covid 12); default all 1. */
  classWeights?: readonly number[];
  /** Share of class 0 (covid) in every training batch, oversampled with replacement (COVID-Net: 0.3). */
  covidShare?: number;
  /** l1 sum |w| + l2 sum w^2 of the named parameters added to the training loss (AI-Covid's dense kernels). */
  penalty?: { l1: number; l2: number; parameters: readonly string[] };
  /** Stop after this many epochs without a lower validation loss (AI-Covid: 7); default never. */
  patience?: number;
  /**
   * Negatives balanced by source (a mitigation of the source shortcut): in every source that has covid and
   * non-covid training images, the non-covid ones are drawn again, with replacement, until they are as many
   * as its covid images, so that within a source the source no longer tells covid apart (the epoch grows
   * by those draws). Needs every training image's source. Default false.
   */
  balanceSources?: boolean;
}

/**
 * The epoch's order with {@link Stage1Recipe.balanceSources}: `order` plus, for every source with covid
 * (class 0) and non-covid images, non-covid images of that source drawn with replacement until they are as
 * many as its covid images; the whole then shuffled. Deterministic in `gen`; `order` itself, with no draw
 * taken, where nothing is added.
 */
export function balanceSourcesOrder(
  order: Int32Array,
  labels: ArrayLike<number>,
  sources: readonly string[],
  gen: fl.Generator,
): Int32Array {
  const bySource = new Map<string, { covid: number; negatives: number[] }>();
  for (const i of order) {
    let group = bySource.get(sources[i]);
    if (!group) bySource.set(sources[i], group = { covid: 0, negatives: [] });
    if (labels[i] === 0) group.covid++;
    else group.negatives.push(i);
  }
  const all = [...order];
  for (const { covid, negatives } of bySource.values()) {
    for (let k = negatives.length; k < covid && negatives.length > 0; k++) {
      all.push(negatives[Math.floor(gen.uniform() * negatives.length)]);
    }
  }
  // Nothing drawn (no source mixes the classes, or its negatives already suffice): the epoch and the
  // generator's later draws stay exactly as without the recipe.
  if (all.length === order.length) return order;
  const shuffle = gen.permutation(all.length);
  return Int32Array.from(shuffle, (j) => all[j]);
}

/** The epochs' training batches (indices into the training set): shuffled, or with a set covid share. */
export function epochBatches(
  order: Int32Array,
  labels: Int32Array,
  batchSize: number,
  covidShare: number | undefined,
  gen: fl.Generator,
): Int32Array[] {
  const batches: Int32Array[] = [];
  const covid = covidShare === undefined ? [] : [...order].filter((i) => labels[i] === 0);
  if (covid.length === 0) {
    // batch norm needs two samples: a last batch of one is dropped
    for (let start = 0; start < order.length; start += batchSize) {
      if (Math.min(batchSize, order.length - start) >= 2 || order.length === 1) {
        batches.push(order.subarray(start, Math.min(start + batchSize, order.length)));
      }
    }
    return batches;
  }
  // Each batch: the next (batchSize - k) other images in shuffled order, plus k covid images drawn with
  // replacement, k = round(share x batchSize) (at least 1); the epoch ends with the other images.
  const others = [...order].filter((i) => labels[i] !== 0);
  const k = Math.min(batchSize - 1, Math.max(1, Math.round(covidShare! * batchSize)));
  for (let start = 0; start < others.length; start += batchSize - k) {
    const batch = others.slice(start, start + batchSize - k);
    for (let j = 0; j < k; j++) batch.push(covid[Math.floor(gen.uniform() * covid.length)]);
    if (batch.length >= 2) batches.push(Int32Array.from(batch));
  }
  return batches;
}

/** Mean cross-entropy of probabilities [S, M] against labels (log clamped at 1e-12). */
function meanCrossEntropy(probs: Float32Array, labels: ArrayLike<number>): number {
  const m = probs.length / Math.max(labels.length, 1);
  let sum = 0;
  for (let i = 0; i < labels.length; i++) sum -= Math.log(Math.max(probs[i * m + labels[i]], 1e-12));
  return sum / Math.max(labels.length, 1);
}

/** Whether the last `patience` epochs of `history` all failed to lower the best validation loss before them. */
export function patienceExhausted(history: readonly Stage1EpochLog[], patience: number | undefined): boolean {
  if (patience === undefined || history.length <= patience) return false;
  const bestBefore = Math.min(...history.slice(0, -patience).map((h) => h.valLoss));
  return history.slice(-patience).every((h) => !(h.valLoss < bestBefore));
}

/** What {@link trainStage1} returns. */
export interface Stage1Result {
  /** `config.model`, holding the best epoch's weights (the last epoch's when stopped by `stopAfterEpoch`). */
  model: fl.nn.Module;
  /** 1-based epoch whose weights the model holds (0 when no epoch ran) */
  bestEpoch: number;
  /** Micro-batches per batch the run used (see {@link Stage1Config.accumulate}). */
  accumulate: number;
  /** Every epoch so far, resumed ones included. */
  history: Stage1EpochLog[];
  /** The kept model on the validation set (the last epoch's report when stopped early); null when no epoch ran. */
  valReport: fl.metrics.ClassificationReport | null;
}

async function materialize(
  set: Stage1Set,
  resize: number,
  cache: fl.data.ImageCache | undefined,
  what: string,
) {
  if ("images" in set) {
    if (set.images.length !== set.labels.length) {
      throw new Error(`stage 1: ${what} has ${set.images.length} images and ${set.labels.length} labels`);
    }
    if (set.sources && set.sources.length !== set.labels.length) {
      throw new Error(`stage 1: ${what} has ${set.labels.length} labels and ${set.sources.length} sources`);
    }
    return { images: set.images, labels: Int32Array.from(set.labels), sources: set.sources };
  }
  const c = cache ?? new fl.data.ImageCache(resize);
  const sources = set.records.every((r) => r.source !== undefined)
    ? set.records.map((r) => r.source!)
    : undefined;
  return {
    images: await c.getAll(set.records),
    labels: Int32Array.from(set.records, (r) => r.label),
    sources,
  };
}

/**
 * Class probabilities [S, M], row-major, of `model` on `images` (eval mode, centre crop of side `crop`
 * (default 224), batches of `batchSize` (default 32), no augmentation, no graph); the model's training
 * mode is restored afterwards. These are a learner's outputs for stage 2.
 */
export async function predictStage1(
  model: fl.nn.Module,
  images: readonly fl.io.GrayImage[],
  { crop = 224, batchSize = 32 }: { crop?: number; batchSize?: number } = {},
): Promise<Float32Array> {
  const wasTraining = model.training;
  model.eval();
  let out: Float32Array | null = null;
  try {
    for (let start = 0; start < images.length; start += batchSize) {
      const count = Math.min(batchSize, images.length - start);
      const idx = Int32Array.from({ length: count }, (_, i) => start + i);
      const x = fl.data.makeBatch(images, idx, { crop, train: false });
      const p = await fl.scope(() =>
        fl.noGrad(() => fl.F.softmax(model.forward(fl.tensor(x, [count, 3, crop, crop])), -1)).toArray()
      );
      const m = p.length / count;
      out ??= new Float32Array(images.length * m);
      out.set(p as Float32Array, start * m);
    }
  } finally {
    model.train(wasTraining);
  }
  return out ?? new Float32Array(0);
}

/**
 * One training batch of stage 1 under `augment` (images[idx], all draws from `generator`): "basic"
 * makeBatch's training batch (CPU), "none" makeBatch's centre crop (CPU, nothing drawn), "paper"
 * fl.data.warpBatch's device tensor with PAPER_AFFINE_RANGES (the caller disposes it).
 */
export function trainingBatch(
  images: readonly fl.io.GrayImage[],
  idx: ArrayLike<number>,
  options: { augment: fl.data.AugmentMode; crop: number; generator: fl.Generator; noiseStd: number },
): Float32Array | fl.Tensor {
  const { crop, generator, noiseStd } = options;
  switch (fl.data.checkAugmentMode(options.augment, "stage 1: augment")) {
    case "basic":
      return fl.data.makeBatch(images, idx, { crop, train: true, generator, noiseStd });
    case "none":
      return fl.data.makeBatch(images, idx, { crop, train: false });
    case "paper":
      return fl.data.warpBatch(images, idx, { crop, generator, noiseStd });
  }
}

type Stage1Settings = {
  epochs: number;
  batchSize: number;
  seed: number;
  crop: number;
  lr: number;
  weightDecay: number;
  noiseStd: number;
  augment: fl.data.AugmentMode;
  /** The recipe as JSON ("{}" for the default). */
  recipe: string;
  /** Micro-batches per batch (1: none). */
  accumulate: number;
  /** "f32", or "f16" (float16 activations with loss scaling). */
  precision: "f32" | "f16";
};

/**
 * Micro-batches per step for `accumulate: "auto"` (fl.train.fitStepToMemory on the first training images'
 * centre crops: what a step holds does not depend on the pixels); said through `onNotice` when the batch has
 * to split.
 */
async function accumulationToFit(
  model: fl.nn.Module,
  optimizer: fl.optim.Adam | fl.optim.SGD,
  train: { images: readonly fl.io.GrayImage[]; labels: Int32Array },
  batchSize: number,
  crop: number,
  onNotice: (message: string) => void = console.warn,
): Promise<number> {
  let plan: fl.train.AccumulationPlan | null;
  try {
    plan = await fl.train.fitStepToMemory(model, optimizer, batchSize, (images) => {
      const idx = Int32Array.from({ length: images }, (_, i) => i % train.labels.length);
      const x = fl.data.makeBatch(train.images, idx, { crop, train: false });
      return fl.F.crossEntropy(
        model.forward(fl.tensor(x, [images, 3, crop, crop])),
        Int32Array.from(idx, (i) => train.labels[i]),
      );
    });
  } catch (err) {
    throw new Error(`stage 1: ${(err as Error).message}`);
  }
  if (plan && plan.parts > 1) {
    const gb = (bytes: number) => (bytes / 1e9).toFixed(2);
    onNotice(
      `stage 1: a step of ${batchSize} images would need about ${gb(plan.wholeBatchBytes)} GB, past the ` +
        `${
          gb(fl.train.ACCUMULATION_HEADROOM * fl.poolStats().limitBytes)
        } GB this backend holds for tensors: ` +
        `each batch runs as ${plan.parts} micro-batches of up to ${plan.microBatch} images (accumulate ${plan.parts}, ` +
        `about ${gb(plan.predictedBytes)} GB)`,
    );
  }
  return plan?.parts ?? 1;
}

/** Whether every parameter is finite: x * 0 is 0 for a finite x and NaN otherwise, and a sum keeps a NaN. */
function parametersFinite(model: fl.nn.Module): Promise<boolean> {
  return fl.scope(async () => {
    const total = fl.noGrad(() =>
      model.parameters().reduce((acc, p) => fl.F.add(acc, fl.F.sum(fl.F.scale(p, 0))), fl.zeros([]))
    );
    return Number.isFinite(await total.item());
  });
}

/**
 * The error that stops a diverged run: where (epoch, and step when known), what was not finite, and which
 * checkpoint is the last good one (a diverged epoch is never checkpointed).
 */
/** Below this loss scale a float16 run's gradients overflow whatever the scale: it has diverged. */
const MIN_LOSS_SCALE = 2 ** -8;

function divergedError(checkpointPath: string | undefined, epoch: number, what: string): Error {
  return new Error(
    `stage 1: epoch ${epoch}, ${what} (training diverged); ${
      checkpointPath && epoch > 1
        ? `${checkpointPath} still holds epoch ${
          epoch - 1
        }: resume from it (--resume) with a lower learning rate`
        : "nothing was checkpointed"
    }`,
  );
}

/** The error that ends a run stopped by its `signal` before step `step` of `epoch`. */
function stoppedError(signal: AbortSignal, checkpointPath: string | undefined, epoch: number, step: number) {
  return new Error(
    `stage 1: stopped (${String(signal.reason)}) before step ${step} of epoch ${epoch}; ${
      checkpointPath && epoch > 1
        ? `${checkpointPath} holds epoch ${epoch - 1}, whole: --resume continues from it`
        : "nothing was checkpointed yet"
    }`,
  );
}

/** Writes the best epoch's weights with its epoch and macro-F1 as metadata. */
function saveBest(
  path: string,
  weights: Record<string, fl.nn.TensorRecord>,
  best: { epoch: number; macroF1: number },
) {
  return fl.io.saveSafetensors(path, weights, { epoch: String(best.epoch), macroF1: String(best.macroF1) });
}

/** Restores model and optimizer from a checkpoint; returns the history, the best epoch and its weights. */
async function resumeFrom(
  path: string,
  bestPath: string,
  model: fl.nn.Module,
  optimizer: fl.optim.Adam | fl.optim.SGD,
  settings: Stage1Settings,
  autoAccumulate: boolean,
) {
  const meta = await fl.io.loadCheckpoint(path, { model, optimizer });
  // checkpoints from before `augment` and `accumulate` existed trained with "basic" and whole batches
  const saved = {
    recipe: "{}",
    augment: "basic",
    accumulate: 1,
    precision: "f32",
    ...meta.stage1 as Stage1Settings | undefined,
  };
  // "auto" continues with the checkpoint's micro-batches: the same ones give the same weights
  if (autoAccumulate) settings.accumulate = saved.accumulate;
  for (
    const k of [
      "batchSize",
      "seed",
      "crop",
      "noiseStd",
      "augment",
      "recipe",
      "accumulate",
      "precision",
    ] as const
  ) {
    if (saved?.[k] !== settings[k]) {
      throw new Error(`stage 1: ${path} was trained with ${k} ${saved?.[k]}, this run has ${settings[k]}`);
    }
  }
  const epoch = meta.epoch as number;
  const best = meta.best as { epoch: number; macroF1: number };
  let bestWeights: Record<string, fl.nn.TensorRecord> | null = null;
  // the best file is written after the checkpoint: when the checkpoint's own epoch is the best, its
  // weights are the best ones, and a process killed between the two writes left the best file behind: write it
  if (best.epoch === epoch) {
    bestWeights = await model.downloadStateDict();
    const written = existsSync(bestPath) &&
      Number((await fl.io.readSafetensorsMetadata(bestPath)).epoch) === epoch;
    if (!written) await saveBest(bestPath, bestWeights, best);
  } else if (best.epoch > 0) {
    const bestMeta = await fl.io.readSafetensorsMetadata(bestPath);
    if (Number(bestMeta.epoch) !== best.epoch) {
      throw new Error(
        `stage 1: ${bestPath} holds epoch ${bestMeta.epoch}, the checkpoint's best is epoch ${best.epoch}`,
      );
    }
    bestWeights = await fl.io.loadSafetensors(bestPath) as Record<string, fl.nn.TensorRecord>;
  }
  return { history: meta.history as Stage1EpochLog[], best, bestWeights, startEpoch: epoch + 1 };
}

/**
 * Stage 1 for one learner: trains `config.model` in place with Adam (or the recipe's optimizer) and
 * cross-entropy, validates macro-F1 after every epoch, and returns it holding its best validation macro-F1
 * epoch's weights. Writes the files of `checkpointPath` and `logPath` when they are given, and with
 * `resume` continues from the checkpoint to the same final weights, bit for bit, as an uninterrupted run.
 * Reseeds the global generator (fl.manualSeed) at every epoch: the models' dropout draws from it.
 *
 * Every step's loss and the gradients of its first and last parameter are checked (one number read back per
 * step), and every weight after each epoch: a non-finite one ends the run with an error naming the epoch and
 * the step, before that epoch is checkpointed. A resumed run takes this
 * config's `lr` and `weightDecay` (a diverged run resumes with a lower rate).
 *
 * @throws {Error} on invalid epochs, batchSize or seed, on `resume` without `checkpointPath`, on an empty
 * training or validation set, on an unknown `augment`, when a resumed checkpoint was trained with
 * another batchSize, seed, crop, noiseStd, augment or recipe, when training diverges, and when `signal` is
 * aborted (naming the checkpoint to resume from).
 */
export async function trainStage1(config: Stage1Config): Promise<Stage1Result> {
  const { model, epochs } = config;
  const batchSize = config.batchSize ?? 32, seed = config.seed ?? 0, crop = config.crop ?? 224;
  const resize = config.resize ?? config.cache?.resize ?? 256;
  const classNames = config.classNames ?? fl.metrics.CLASS_NAMES;
  if (!Number.isInteger(epochs) || epochs < 0) {
    throw new Error(`stage 1: epochs must be a non-negative integer, got ${epochs}`);
  }
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new Error(`stage 1: batchSize must be a positive integer, got ${batchSize}`);
  }
  if (!Number.isSafeInteger(seed * 1000 + epochs) || seed < 0) {
    throw new Error(`stage 1: seed must be a non-negative integer below 2^53 / 1000, got ${seed}`);
  }
  if (config.resume && !config.checkpointPath) throw new Error("stage 1: resume needs checkpointPath");
  const accumulate = config.accumulate ?? "auto";
  const maxParts = Math.max(1, Math.floor(batchSize / 2)); // micro-batches of at least two images
  if (accumulate !== "auto" && !(Number.isInteger(accumulate) && accumulate >= 1 && accumulate <= maxParts)) {
    throw new Error(
      `stage 1: accumulate must be "auto" or an integer from 1 to ${maxParts} (batch ${batchSize} in ` +
        `micro-batches of at least two images), got ${accumulate}`,
    );
  }
  const precision = config.precision ?? "f32";
  if (precision !== "f32" && precision !== "f16") {
    throw new Error(`stage 1: precision must be "f32" or "f16", got ${JSON.stringify(precision)}`);
  }
  const info = fl.backendInfo();
  if (precision === "f16" && !(info?.backend === "webgpu" && info.features.includes("shader-f16"))) {
    throw new Error(
      `stage 1: precision "f16" needs the WebGPU backend on an adapter with shader-f16; this is ${
        info ? `${info.backend} (${info.adapter})` : "no backend (call fl.init first)"
      }`,
    );
  }
  const augment = fl.data.checkAugmentMode(config.augment ?? "basic", "stage 1: augment");
  const train = await materialize(config.train, resize, config.cache, "the training set");
  const val = await materialize(config.val, resize, config.cache, "the validation set");
  if (train.labels.length === 0) throw new Error("stage 1: the training set is empty");
  if (val.labels.length === 0) throw new Error("stage 1: the validation set is empty");

  const recipe = config.recipe ?? {};
  const trainSources = train.sources;
  if (recipe.balanceSources && !trainSources) {
    throw new Error(
      "stage 1: balanceSources needs the source of every training image (records' source, or sources)",
    );
  }
  const named = new Map(model.namedParameters());
  const penalized = (recipe.penalty?.parameters ?? []).map((name) => {
    const p = named.get(name);
    if (!p) throw new Error(`stage 1: the penalty names ${name}, which is not a parameter of the model`);
    return p;
  });
  const lr = config.lr ?? 1e-3, weightDecay = config.weightDecay ?? 1e-4;
  const parameters = model.parameters();
  const optimizer = recipe.optimizer === "sgd"
    ? new fl.optim.SGD(parameters, {
      lr,
      weightDecay,
      momentum: recipe.momentum ?? 0.9,
      nesterov: true,
    })
    : new fl.optim.Adam(parameters, { lr, weightDecay });
  const settings: Stage1Settings = {
    epochs,
    batchSize,
    seed,
    crop,
    lr: optimizer.hyper.lr,
    weightDecay: optimizer.hyper.weightDecay,
    noiseStd: config.noiseStd ?? 0.01,
    augment,
    recipe: JSON.stringify(recipe),
    accumulate: accumulate === "auto" ? 1 : accumulate,
    precision,
  };
  const bestPath = config.checkpointPath ? config.checkpointPath + ".best" : null;
  let history: Stage1EpochLog[] = [];
  let best = { epoch: 0, macroF1: -Infinity };
  let bestWeights: Record<string, fl.nn.TensorRecord> | null = null;
  let startEpoch = 1;

  if (config.resume && config.checkpointPath && existsSync(config.checkpointPath)) {
    try {
      ({ history, best, bestWeights, startEpoch } = await resumeFrom(
        config.checkpointPath,
        bestPath!,
        model,
        optimizer,
        settings,
        accumulate === "auto",
      ));
    } catch (err) {
      optimizer.dispose();
      throw err;
    }
    // The checkpoint restored its own learning rate and weight decay; this run's win, so that a diverged run
    // can resume with a lower learning rate (with the same values, a resumed run equals an uninterrupted one).
    optimizer.hyper.lr = settings.lr;
    optimizer.hyper.weightDecay = settings.weightDecay;
  } else if (accumulate === "auto" && startEpoch <= epochs) {
    try {
      settings.accumulate = await accumulationToFit(
        model,
        optimizer,
        train,
        batchSize,
        crop,
        config.onNotice,
      );
    } catch (err) {
      optimizer.dispose();
      throw err;
    }
  }

  if (config.logPath) {
    // the log restarts with the epochs already done (from the checkpoint when resuming)
    mkdirSync(dirname(config.logPath), { recursive: true });
    writeFileSync(config.logPath, history.map((h) => JSON.stringify(h) + "\n").join(""));
  }
  const s = train.labels.length;
  // Each step checks the loss and the gradients of the first and the last parameter (the stem and the
  // classifier): backpropagation carries a NaN or an infinity from any layer down to the stem's gradient.
  // Not every gradient: 3 kernels a parameter a step, each with new buffers, made so many bind groups that
  // lavapipe under Deno crashed (the weights are all checked after every epoch).
  const watched = [parameters[0], parameters[parameters.length - 1]];
  const lossSum = fl.zeros([1]).keep();
  // float16: the scale carries over from epoch to epoch (a resumed run starts it afresh)
  const scaler = precision === "f16" ? new fl.train.LossScaler() : null;
  const lastEpoch = Math.min(epochs, config.stopAfterEpoch ?? epochs);
  let lastReport: fl.metrics.ClassificationReport | null = null;
  try {
    for (let epoch = startEpoch; epoch <= lastEpoch; epoch++) {
      if (patienceExhausted(history, recipe.patience)) break;
      const t0 = performance.now();
      const gen = new fl.Generator(seed * 1000 + epoch);
      // Dropout and stochastic depth draw from the global generator: reseeded per epoch from (seed, epoch),
      // so that a resumed run draws the same masks as an uninterrupted one.
      fl.manualSeed(fl.threefry2x32(seed >>> 0, Math.floor(seed / 2 ** 32) >>> 0, epoch, 0x64726f70)[0]);
      const shuffled = gen.permutation(s);
      const order = recipe.balanceSources
        ? balanceSourcesOrder(shuffled, train.labels, trainSources!, gen)
        : shuffled;
      model.train();
      const batches = epochBatches(order, train.labels, batchSize, recipe.covidShare, gen);
      // With a covid share the epoch's images are the batches' (covid drawn with replacement); else the order's.
      const imagesPerEpoch = recipe.covidShare === undefined
        ? order.length
        : batches.reduce((a, b) => a + b.length, 0);
      const assemble = (idx: Int32Array) => {
        const x = trainingBatch(train.images, idx, {
          augment,
          crop,
          generator: gen,
          noiseStd: settings.noiseStd,
        });
        return { x, y: Int32Array.from(idx, (i) => train.labels[i]) };
      };
      // The CPU assembles batch b + 1 while the device runs batch b; at most two batches are queued, so the
      // CPU never runs far ahead of the device (nor do the uploads that wait in the queue pile up).
      let next = batches.length > 0 ? assemble(batches[0]) : null;
      let previous: Promise<void> = Promise.resolve();
      // A step's health is read once the device has run it (after the next step is submitted), so the check
      // costs one number per step and never stalls the pipeline.
      let unchecked: { step: number; health: fl.train.StepHealth } | null = null;
      const check = async (entry: { step: number; health: fl.train.StepHealth } | null) => {
        if (!entry) return;
        const { step, health } = entry;
        try {
          if (Number.isFinite(await health.health.item())) return;
          const loss = await health.loss.item();
          throw divergedError(
            config.checkpointPath,
            epoch,
            `step ${step} of ${batches.length}: ${
              Number.isFinite(loss)
                ? `a gradient is not finite (the step's loss was ${loss})`
                : `the training loss is ${loss}`
            }`,
          );
        } finally {
          health.loss.dispose();
          health.health.dispose();
        }
      };
      let done = 0;
      try {
        for (let b = 0; b < batches.length; b++) {
          if (config.signal) {
            // One turn of the event loop, so that a signal handler that aborts can run: on the WebAssembly
            // backend a step's awaits are all microtasks, and the loop would otherwise never reach it. A timer,
            // not setImmediate: Deno delivers a signal to a timer's turn at once, to setImmediate's ~0.4 s late.
            await new Promise((resolve) => setTimeout(resolve, 0));
            if (config.signal.aborted) throw stoppedError(config.signal, config.checkpointPath, epoch, b + 1);
          }
          const { x, y } = next!;
          next = null;
          const count = y.length;
          // every micro-batch keeps two images (batch norm); a short last batch runs in fewer parts
          const parts = fl.train.microBatches(
            count,
            Math.max(1, Math.min(settings.accumulate, Math.floor(count / 2))),
          );
          // A part's cross-entropy is its (weighted) mean: times its share of the batch's weight, the parts
          // add up to the whole batch's mean.
          const weightOf = (i: number) => recipe.classWeights?.[y[i]] ?? 1;
          let batchWeight = 0;
          for (let i = 0; i < count; i++) batchWeight += weightOf(i);
          const rowIndex = x instanceof fl.Tensor && parts.length > 1
            ? fl.intTensor(Int32Array.from({ length: count }, (_, i) => i))
            : null;
          let health: fl.train.StepHealth | null = null;
          try {
            const partLoss = (part: number) => {
              const [start, end] = parts[part];
              const rows = end - start, shape = [rows, 3, crop, crop];
              const input = parts.length === 1
                ? (x instanceof fl.Tensor ? x : fl.tensor(x, shape))
                : rowIndex
                ? fl.F.gatherRows(x as fl.Tensor, rowIndex, start, rows)
                : fl.tensor(
                  (x as Float32Array).subarray(start * 3 * crop * crop, end * 3 * crop * crop),
                  shape,
                );
              const logits = model.forward(input);
              let loss = fl.F.crossEntropy(logits, y.subarray(start, end), { weight: recipe.classWeights });
              if (parts.length > 1) {
                let partWeight = 0;
                for (let i = start; i < end; i++) partWeight += weightOf(i);
                loss = fl.F.scale(loss, partWeight / batchWeight);
              }
              const { l1 = 0, l2 = 0 } = recipe.penalty ?? {};
              return penalized.length && part === 0
                ? fl.F.add(loss, fl.F.l1l2Penalty(penalized, { l1, l2 }))
                : loss;
            };
            if (scaler) {
              const r = await fl.train.trainStepScaled(
                optimizer,
                (part) => fl.autocast("float16", () => partLoss(part)),
                lossSum,
                count / imagesPerEpoch,
                scaler,
                parameters,
                parts.length,
                watched,
              );
              const at = `step ${b + 1} of ${batches.length}`;
              if (!Number.isFinite(r.loss)) {
                throw divergedError(config.checkpointPath, epoch, `${at}: the training loss is ${r.loss}`);
              }
              if (scaler.scale < MIN_LOSS_SCALE) {
                throw divergedError(
                  config.checkpointPath,
                  epoch,
                  `${at}: the gradients overflow float16 even at a loss scale of ${r.scale}`,
                );
              }
            } else {
              health = fl.train.trainStep(
                optimizer,
                partLoss,
                lossSum,
                count / imagesPerEpoch,
                watched,
                parts.length,
              );
            }
          } finally {
            if (x instanceof fl.Tensor) x.dispose(); // a device batch ("paper"), made outside the step's scope
            rowIndex?.dispose();
          }
          const submitted = fl.syncDevice(); // submits this batch now; resolves when the device has run it
          next = b + 1 < batches.length ? assemble(batches[b + 1]) : null;
          await previous;
          const prior = unchecked;
          unchecked = health ? { step: b + 1, health } : null;
          await check(prior);
          previous = submitted;
          done += count;
          config.onBatch?.({
            epoch,
            epochs,
            done,
            total: imagesPerEpoch,
            imagesPerSecond: done / ((performance.now() - t0) / 1000),
          });
        }
        await previous;
        const last = unchecked;
        unchecked = null;
        await check(last);
      } finally {
        // a diverged step leaves the next batch and the newest step's health behind
        if (next?.x instanceof fl.Tensor) next.x.dispose();
        const left = unchecked as { health: fl.train.StepHealth } | null;
        left?.health.loss.dispose();
        left?.health.health.dispose();
      }
      const trainLoss = await fl.train.takeEpochLoss(lossSum);
      // A diverged epoch is never checkpointed: the previous epoch's checkpoint stays the one to resume from.
      // Every step's loss and the stem's and classifier's gradients were checked above; all the weights are
      // checked here (a NaN that stayed in a middle layer's gradient, or a finite update that overflowed).
      if (!Number.isFinite(trainLoss) || !(await parametersFinite(model))) {
        throw divergedError(
          config.checkpointPath,
          epoch,
          `after its last step some weights are not finite (epoch loss ${trainLoss})`,
        );
      }
      const trainSeconds = (performance.now() - t0) / 1000;
      const probs = await predictStage1(model, val.images, { crop, batchSize });
      const report = fl.metrics.classificationReport(val.labels, probs, classNames);
      lastReport = report;
      const log: Stage1EpochLog = {
        epoch,
        trainLoss,
        valMacroF1: report.macroF1,
        valAccuracy: report.accuracy,
        valLoss: meanCrossEntropy(probs, val.labels),
        seconds: (performance.now() - t0) / 1000,
        imagesPerSecond: imagesPerEpoch / trainSeconds,
      };
      history.push(log);
      const improved = report.macroF1 > best.macroF1;
      if (improved) {
        best = { epoch, macroF1: report.macroF1 };
        bestWeights = await model.downloadStateDict();
      }
      if (config.checkpointPath) {
        await fl.io.saveCheckpoint(config.checkpointPath, {
          model,
          optimizer,
          meta: { epoch, seed, best, history, stage1: settings },
        });
        if (improved) await saveBest(bestPath!, bestWeights!, best);
      }
      if (config.logPath) appendFileSync(config.logPath, JSON.stringify(log) + "\n");
      config.onProgress?.(log);
    }
  } finally {
    lossSum.dispose();
    optimizer.dispose();
  }
  if (lastEpoch < epochs) {
    return { model, bestEpoch: best.epoch, accumulate: settings.accumulate, history, valReport: lastReport };
  }
  if (bestWeights) model.loadStateDict(bestWeights);
  const valReport = best.epoch > 0
    ? fl.metrics.classificationReport(
      val.labels,
      await predictStage1(model, val.images, { crop, batchSize }),
      classNames,
    )
    : null;
  return { model, bestEpoch: best.epoch, accumulate: settings.accumulate, history, valReport };
}

/** One learner's probabilities on one image set, as {@link saveLearnerOutputs} writes them. */
export interface LearnerOutputsFile {
  /** The S images, in the rows' order. */
  files: readonly string[];
  /** S class indices. */
  labels: ArrayLike<number>;
  /** [S, M] row-major */
  probs: Float32Array;
  /** The learner's architecture name (see LEARNER_ARCHS). */
  learner: string;
  /** The cross-validation fold whose model gave these outputs. */
  fold: number;
  /** Names of the M classes (default covid, viral, bacterial, normal). */
  classNames?: readonly string[];
}

/**
 * Saves one learner's (out-of-fold) probabilities as safetensors: `probs` F32 [S, M] and `labels` I32 [S],
 * with metadata `format` ({@link LEARNER_OUTPUTS_FORMAT}), `learner`, `fold`, `classes` and `files` (JSON).
 *
 * @throws {Error} when the labels or probabilities do not match the S files and M classes.
 */
export async function saveLearnerOutputs(path: string, out: LearnerOutputsFile): Promise<void> {
  const s = out.files.length, classes = out.classNames ?? fl.metrics.CLASS_NAMES;
  const m = classes.length;
  if (out.labels.length !== s || out.probs.length !== s * m) {
    throw new Error(
      `saveLearnerOutputs: ${s} files, ${out.labels.length} labels and ${out.probs.length} probabilities (expected ${s} x ${m})`,
    );
  }
  await fl.io.saveSafetensors(path, {
    probs: { dtype: "F32", shape: [s, m], data: out.probs },
    labels: { dtype: "I32", shape: [s], data: Int32Array.from(out.labels) },
  }, {
    format: LEARNER_OUTPUTS_FORMAT,
    learner: out.learner,
    fold: String(out.fold),
    classes: JSON.stringify(classes),
    files: JSON.stringify(out.files),
  });
}

/**
 * Reads a file written by {@link saveLearnerOutputs}.
 *
 * @throws {Error} when the file's `format` is not {@link LEARNER_OUTPUTS_FORMAT}.
 */
export async function loadLearnerOutputs(path: string): Promise<LearnerOutputsFile> {
  const meta = await fl.io.readSafetensorsMetadata(path);
  if (meta.format !== LEARNER_OUTPUTS_FORMAT) {
    throw new Error(`loadLearnerOutputs: ${path} is not a ${LEARNER_OUTPUTS_FORMAT} file`);
  }
  const t = await fl.io.loadSafetensors(path);
  return {
    files: JSON.parse(meta.files),
    labels: t.labels.data as Int32Array,
    probs: t.probs.data as Float32Array,
    learner: meta.learner,
    fold: Number(meta.fold),
    classNames: JSON.parse(meta.classes),
  };
}
