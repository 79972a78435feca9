// Stage 2: train a combiner (FLANNEL's Neural Weight Module or an MLP) on the learners' probabilities with
// focal loss or cross-entropy, Adam, seeded shuffles, and the epoch with the best validation macro-F1 kept.
import * as fl from "../../mod.ts";
import { type Ensemble, MLPStacking, NeuralWeightModule, SoftVoting } from "./ensembles.ts";
import type { LearnerOutputs } from "./synthetic_outputs.ts";

/**
 * A stage-2 combiner: "flannel" (NeuralWeightModule), "mlp1" / "mlp2" (MLPStacking with one or two layers,
 * Ensemble_MLP_1 / _2), "voting" (SoftVoting, untrained).
 */
export type Stage2Method = "flannel" | "mlp1" | "mlp2" | "voting";

/** Settings of {@link trainStage2}: the combiner, its loss and Adam's hyperparameters. */
export interface Stage2Config {
  /** Which combiner to build (see {@link buildEnsemble}). */
  method: Stage2Method;
  /** "focal" (FLANNEL) or "ce" (the "w/o focal" ablations); default focal. */
  loss?: "focal" | "ce";
  /** Focal loss's focusing parameter (default 3). */
  gamma?: number;
  /** Per-class focal weights; default inverse class frequency of the training labels, summing to M. */
  alpha?: number[];
  /** Class-balanced resampling of each epoch (the "+ sampling" ablation). */
  resample?: boolean;
  /** The Neural Weight Module's weight activation (default "tanh"); "flannel" only. */
  activation?: "tanh" | "softmax";
  /** The hidden width of "mlp2" (default 32). */
  hidden?: number;
  /** Training epochs (default 30); 0 returns the freshly initialised model. */
  epochs?: number;
  /** Samples per batch (default 64). */
  batchSize?: number;
  /** Adam's learning rate (default 1e-3). */
  lr?: number;
  /** Adam's weight decay (default 0). */
  weightDecay?: number;
  /** Seeds the initial weights and every epoch's order (default 0). */
  seed?: number;
  /** Names of the M classes in the reports (default covid, viral, bacterial, normal when M is 4, else class0...). */
  classNames?: string[];
}

/** One epoch of stage 2. */
export interface EpochLog {
  /** 1-based. */
  epoch: number;
  /** Mean training loss (focal or cross-entropy) over the epoch's samples. */
  trainLoss: number;
  /** Macro-F1 on the validation set after the epoch (what chooses the epoch kept). */
  valMacroF1: number;
}

/** What {@link trainStage2} returns. */
export interface Stage2Result {
  /** The combiner, holding its best epoch's weights; the caller disposes it. */
  model: Ensemble;
  /** 1-based epoch whose weights the model holds (0: nothing trained, as soft voting). */
  bestEpoch: number;
  /** Every epoch trained (empty for voting or 0 epochs). */
  history: EpochLog[];
  /** The kept model on the validation set. */
  valReport: fl.metrics.ClassificationReport;
  /** The focal loss's class weights used (given or inverse frequency); null for cross-entropy or no training. */
  alpha: number[] | null;
}

/**
 * Checks a set of learner outputs: sizes, finite probabilities in [0, 1], labels in range.
 *
 * @param what names the set in the error messages.
 * @throws {Error} at the first problem, naming the sample (and learner and class) at fault.
 */
export function validateLearnerOutputs(set: LearnerOutputs, what = "learner outputs"): void {
  const { probs, labels, learners: n, classes: m } = set;
  const s = labels?.length ?? 0;
  if (s === 0) throw new Error(`${what}: empty (no samples)`);
  if (!Number.isInteger(n) || n < 1 || !Number.isInteger(m) || m < 2) {
    throw new Error(`${what}: learners (${n}) must be >= 1 and classes (${m}) >= 2`);
  }
  if (probs.length !== s * n * m) {
    throw new Error(
      `${what}: probs hold ${probs.length} values, expected samples x learners x classes = ${s}x${n}x${m}`,
    );
  }
  for (let i = 0; i < probs.length; i++) {
    const v = probs[i];
    if (!Number.isFinite(v) || v < -1e-6 || v > 1 + 1e-6) {
      const sample = Math.floor(i / (n * m));
      throw new Error(
        `${what}: probability ${v} at sample ${sample}, learner ${Math.floor(i / m) % n}, class ${
          i % m
        } is not in [0, 1]`,
      );
    }
  }
  for (let i = 0; i < s; i++) {
    if (!Number.isInteger(labels[i]) || labels[i] < 0 || labels[i] >= m) {
      throw new Error(`${what}: label ${labels[i]} of sample ${i} is outside 0..${m - 1}`);
    }
  }
}

/**
 * Focal loss's default class weights alpha [M]: inverse class frequency of `labels`, scaled to sum to M;
 * classes absent from the labels get 0.
 */
export function inverseFrequencyAlpha(labels: ArrayLike<number>, classes: number): number[] {
  const counts = new Array(classes).fill(0);
  for (let i = 0; i < labels.length; i++) counts[labels[i]]++;
  const inv = counts.map((c) => (c > 0 ? 1 / c : 0));
  const total = inv.reduce((a, b) => a + b, 0);
  return inv.map((v) => (v * classes) / total);
}

/**
 * A fresh, untrained combiner for `config.method` on N `learners` and M `classes` (it uses `activation` and
 * `hidden` of the config), initialised from `generator`.
 *
 * @throws {Error} on an unknown method.
 */
export function buildEnsemble(
  config: Stage2Config,
  learners: number,
  classes: number,
  generator: fl.Generator,
): Ensemble {
  switch (config.method) {
    case "flannel":
      return new NeuralWeightModule({ learners, classes, activation: config.activation, generator });
    case "mlp1":
      return new MLPStacking({ learners, classes, layers: 1, generator });
    case "mlp2":
      return new MLPStacking({ learners, classes, layers: 2, hidden: config.hidden, generator });
    case "voting":
      return new SoftVoting({ learners, classes });
    default:
      throw new Error(
        `stage 2: unknown method ${JSON.stringify(config.method)} (flannel, mlp1, mlp2, voting)`,
      );
  }
}

/**
 * One epoch's sample order for class-balanced resampling (the "+ sampling" ablation): `labels.length`
 * indices into the training set, drawn with replacement. Each draw picks one of the classes present in
 * `labels` with equal probability, then one of that class's samples uniformly, so every present class gets
 * an equal share in expectation (the per-epoch counts vary binomially; they are not forced equal), minority
 * samples repeat and majority samples are left out. Classes absent from `labels` are never drawn. Takes two
 * draws per index from `gen`: the same seeded generator gives the same order.
 */
export function balancedOrder(labels: Int32Array, classes: number, gen: fl.Generator): Int32Array {
  const byClass: number[][] = Array.from({ length: classes }, () => []);
  labels.forEach((y, i) => byClass[y].push(i));
  const present = byClass.filter((list) => list.length > 0);
  const order = new Int32Array(labels.length);
  for (let i = 0; i < order.length; i++) {
    const list = present[Math.floor(gen.uniform() * present.length)];
    order[i] = list[Math.floor(gen.uniform() * list.length)];
  }
  return order;
}

/**
 * Class probabilities [S, M], row-major, of a trained (or parameter-free) combiner on `set`, in batches of
 * `batchSize` samples (default 2048), without a graph.
 *
 * @throws {Error} when `set` is invalid (see {@link validateLearnerOutputs}) or its N x M differs from the model's.
 */
export async function predictStage2(
  model: Ensemble,
  set: LearnerOutputs,
  batchSize = 2048,
): Promise<Float32Array> {
  validateLearnerOutputs(set);
  const s = set.labels.length, n = set.learners, m = set.classes;
  if (n !== model.learners || m !== model.classes) {
    throw new Error(
      `predict: the model combines ${model.learners} learners x ${model.classes} classes, the data has ${n} x ${m}`,
    );
  }
  const out = new Float32Array(s * m);
  for (let start = 0; start < s; start += batchSize) {
    const count = Math.min(batchSize, s - start);
    const chunk = set.probs.subarray(start * n * m, (start + count) * n * m);
    const probs = await fl.scope(() =>
      fl.noGrad(() => model.predictProba(fl.tensor(chunk, [count, n, m]))).toArray()
    );
    out.set(probs, start * m);
  }
  return out;
}

/**
 * Stage 2: trains `config.method` on `train` (learner outputs [S, N, M]) with Adam and focal loss or
 * cross-entropy, evaluates macro-F1 on `val` after each epoch, and returns the model holding its best
 * epoch's weights. Deterministic for a given seed. Voting (or 0 epochs) trains nothing and is only evaluated.
 *
 * @throws {Error} when either set is invalid, the two differ in N or M, or epochs, batchSize or loss is invalid.
 */
export async function trainStage2(
  train: LearnerOutputs,
  val: LearnerOutputs,
  config: Stage2Config,
): Promise<Stage2Result> {
  validateLearnerOutputs(train, "training set");
  validateLearnerOutputs(val, "validation set");
  if (train.learners !== val.learners || train.classes !== val.classes) {
    throw new Error(
      `stage 2: training data is ${train.learners}x${train.classes}, validation ${val.learners}x${val.classes}`,
    );
  }
  const { learners: n, classes: m } = train;
  const classNames = config.classNames ??
    (m === fl.metrics.CLASS_NAMES.length
      ? [...fl.metrics.CLASS_NAMES]
      : Array.from({ length: m }, (_, i) => `class${i}`));
  const epochs = config.epochs ?? 30, batchSize = config.batchSize ?? 64, seed = config.seed ?? 0;
  if (!Number.isInteger(epochs) || epochs < 0) {
    throw new Error(`stage 2: epochs must be a non-negative integer, got ${epochs}`);
  }
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new Error(`stage 2: batchSize must be a positive integer, got ${batchSize}`);
  }
  const gen = new fl.Generator(seed);
  const model = buildEnsemble(config, n, m, gen);
  const evaluate = async () =>
    fl.metrics.classificationReport(val.labels, await predictStage2(model, val), classNames);

  if (config.method === "voting" || epochs === 0) {
    return { model, bestEpoch: 0, history: [], valReport: await evaluate(), alpha: null };
  }
  const lossKind = config.loss ?? "focal";
  if (lossKind !== "focal" && lossKind !== "ce") {
    throw new Error(`stage 2: loss must be "focal" or "ce", got ${JSON.stringify(lossKind)}`);
  }
  const alpha = lossKind === "focal" ? config.alpha ?? inverseFrequencyAlpha(train.labels, m) : null;
  const gamma = config.gamma ?? 3;
  const optimizer = new fl.optim.Adam(model.parameters(), {
    lr: config.lr ?? 1e-3,
    weightDecay: config.weightDecay ?? 0,
  });
  const s = train.labels.length;
  // The training set goes to the device once; batches are gathered there by index.
  const probsT = fl.tensor(train.probs, [s, n, m]).keep();
  const labelsT = fl.intTensor(train.labels).keep();
  const lossSum = fl.zeros([1]).keep();
  const history: EpochLog[] = [];
  let best = {
    epoch: 0,
    f1: -Infinity,
    weights: await model.downloadStateDict(),
    report: null as fl.metrics.ClassificationReport | null,
  };
  try {
    for (let epoch = 1; epoch <= epochs; epoch++) {
      model.train();
      const order = config.resample ? balancedOrder(train.labels, m, gen) : gen.permutation(s);
      fl.scope(() => {
        const index = fl.intTensor(order);
        for (let start = 0; start < s; start += batchSize) {
          const count = Math.min(batchSize, s - start);
          fl.train.trainStep(
            optimizer,
            () => {
              const logits = model.forward(fl.F.gatherRows(probsT, index, start, count));
              const y = fl.F.gatherRows(labelsT, index, start, count);
              return lossKind === "focal"
                ? fl.F.focalLoss(logits, y, { gamma, alpha: alpha! })
                : fl.F.crossEntropy(logits, y);
            },
            lossSum,
            count / s,
          );
        }
      });
      const trainLoss = await fl.train.takeEpochLoss(lossSum);
      model.eval();
      const report = await evaluate();
      history.push({ epoch, trainLoss, valMacroF1: report.macroF1 });
      if (report.macroF1 > best.f1) {
        best = { epoch, f1: report.macroF1, weights: await model.downloadStateDict(), report };
      }
    }
  } finally {
    probsT.dispose();
    labelsT.dispose();
    lossSum.dispose();
    optimizer.dispose();
  }
  model.loadStateDict(best.weights);
  return { model, bestEpoch: best.epoch, history, valReport: best.report ?? await evaluate(), alpha };
}
