// Classification metrics for the FLANNEL evaluation tables: per-class precision/recall/F1, ROC-AUC and
// average precision (one-vs-rest), the confusion matrix, and mean (std) over cross-validation folds.
// Definitions follow scikit-learn (tests/fixtures/metrics_goldens.json holds its values) so the numbers
// can be set beside the paper's, which were computed with it.
import { Generator } from "../kernels/random.ts";

/** The four FLANNEL classes in label order: label `i` is `CLASS_NAMES[i]`. */
export const CLASS_NAMES = ["covid", "viral", "bacterial", "normal"] as const;

/** One class's one-vs-rest metrics, as in scikit-learn's `classification_report` plus the two curve areas. */
export interface ClassMetrics {
  /** TP / (TP + FP); 0 when the class is never predicted. */
  precision: number;
  /** TP / (TP + FN); 0 when the class has no samples. */
  recall: number;
  /** Harmonic mean of precision and recall; 0 when both are 0. */
  f1: number;
  /** Number of samples whose true label is this class. */
  support: number;
  /** NaN when the class has no positives or no negatives: the curve is undefined there. */
  rocAuc: number;
  /** Average precision; NaN when the class has no positives. */
  prAuc: number;
}

/** The result of {@linkcode classificationReport}. */
export interface ClassificationReport {
  /** The class names, in label order. */
  classNames: string[];
  /** Metrics keyed by class name. */
  perClass: Record<string, ClassMetrics>;
  /** Unweighted mean of the per-class F1 (scikit-learn's `average="macro"`). */
  macroF1: number;
  /** Unweighted mean of the per-class precision. */
  macroPrecision: number;
  /** Unweighted mean of the per-class recall. */
  macroRecall: number;
  /** Share of samples whose argmax prediction is the true label, in [0, 1]. */
  accuracy: number;
  /** confusion[true][predicted], counts. */
  confusion: number[][];
  /** Number of samples. */
  n: number;
}

/** Class indices in [0, M), one per sample. */
export type Labels = Int32Array | ArrayLike<number>;
/** Row-major [n, M] scores, flat or as one array per row. */
export type Probabilities = ArrayLike<number> | ArrayLike<number>[];

/** A metric's mean and spread over cross-validation folds. */
export interface MeanStd {
  /** Arithmetic mean. */
  mean: number;
  /** Sample standard deviation (n - 1 denominator); 0 for a single value. */
  std: number;
}

/** The result of {@linkcode aggregateFolds}: each metric as mean (std) over the folds. */
export interface FoldSummary {
  /** Per-class metrics keyed by class name. */
  perClass: Record<
    string,
    { precision: MeanStd; recall: MeanStd; f1: MeanStd; rocAuc: MeanStd; prAuc: MeanStd }
  >;
  /** Macro-averaged F1 over folds. */
  macroF1: MeanStd;
  /** Accuracy over folds. */
  accuracy: MeanStd;
  /** Summed over folds: each sample is in exactly one test fold, so this is the whole data set's matrix. */
  confusion: number[][];
}

function isRows(probs: Probabilities): probs is ArrayLike<number>[] {
  return probs.length > 0 && typeof probs[0] !== "number";
}

function flattenProbs(probs: Probabilities, numClasses: number): Float64Array {
  if (!Number.isInteger(numClasses) || numClasses < 1) {
    throw new Error(`numClasses must be a positive integer, got ${numClasses}`);
  }
  let flat: Float64Array;
  if (isRows(probs)) {
    flat = new Float64Array(probs.length * numClasses);
    for (let i = 0; i < probs.length; i++) {
      const row = probs[i];
      if (row.length !== numClasses) {
        throw new Error(`probs row ${i} has ${row.length} entries, expected ${numClasses} (one per class)`);
      }
      for (let c = 0; c < numClasses; c++) flat[i * numClasses + c] = row[c];
    }
  } else {
    if (probs.length % numClasses !== 0) {
      throw new Error(`probs has ${probs.length} entries, not a multiple of the ${numClasses} classes`);
    }
    flat = Float64Array.from(probs as ArrayLike<number>);
  }
  for (let k = 0; k < flat.length; k++) {
    if (!Number.isFinite(flat[k])) {
      const i = Math.floor(k / numClasses), c = k % numClasses;
      throw new Error(`probs[${i}][${c}] is not finite (${flat[k]})`);
    }
  }
  return flat;
}

function checkLabels(labels: Labels, numClasses: number, what: string): void {
  for (let i = 0; i < labels.length; i++) {
    const y = labels[i];
    if (!Number.isInteger(y) || y < 0 || y >= numClasses) {
      throw new Error(`${what}[${i}] = ${y} is not a class index in [0, ${numClasses})`);
    }
  }
}

/** Index of each row's largest entry; the first wins a tie, as numpy's argmax. */
export function argmaxRows(probs: Probabilities, numClasses: number): Int32Array {
  const flat = flattenProbs(probs, numClasses);
  const n = flat.length / numClasses;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0, bestValue = flat[i * numClasses];
    for (let c = 1; c < numClasses; c++) {
      const v = flat[i * numClasses + c];
      if (v > bestValue) {
        best = c;
        bestValue = v;
      }
    }
    out[i] = best;
  }
  return out;
}

/**
 * Counts `m[true][predicted]` over samples, an M x M matrix as scikit-learn's `confusion_matrix`.
 * @throws Error when the lengths differ or a label is not an integer in [0, numClasses).
 */
export function confusionMatrix(yTrue: Labels, yPred: Labels, numClasses: number): number[][] {
  if (!Number.isInteger(numClasses) || numClasses < 1) {
    throw new Error(`numClasses must be a positive integer, got ${numClasses}`);
  }
  if (yTrue.length !== yPred.length) {
    throw new Error(`length mismatch: yTrue has ${yTrue.length} labels, yPred has ${yPred.length}`);
  }
  checkLabels(yTrue, numClasses, "yTrue");
  checkLabels(yPred, numClasses, "yPred");
  const m = Array.from({ length: numClasses }, () => new Array<number>(numClasses).fill(0));
  for (let i = 0; i < yTrue.length; i++) m[yTrue[i]][yPred[i]]++;
  return m;
}

interface BinaryCounts {
  /** Cumulative true / false positives when predicting positive for scores >= thresholds[k]. */
  tps: number[];
  fps: number[];
  /** Distinct scores, descending. */
  thresholds: number[];
}

// sklearn's _binary_clf_curve: one point per distinct score, so tied samples enter the curve together
// and the result does not depend on the order of ties.
function binaryCounts(binaryTrue: ArrayLike<number>, scores: ArrayLike<number>): BinaryCounts {
  if (binaryTrue.length !== scores.length) {
    throw new Error(`length mismatch: ${binaryTrue.length} labels, ${scores.length} scores`);
  }
  if (binaryTrue.length === 0) throw new Error("empty input: no samples");
  for (let i = 0; i < scores.length; i++) {
    if (binaryTrue[i] !== 0 && binaryTrue[i] !== 1) {
      throw new Error(`binaryTrue[${i}] = ${binaryTrue[i]}, expected 0 or 1`);
    }
    if (!Number.isFinite(scores[i])) throw new Error(`scores[${i}] is not finite (${scores[i]})`);
  }
  const order = Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => scores[b] - scores[a]);
  const tps: number[] = [], fps: number[] = [], thresholds: number[] = [];
  let tp = 0, fp = 0;
  for (let k = 0; k < order.length; k++) {
    const i = order[k];
    if (binaryTrue[i] === 1) tp++;
    else fp++;
    if (k === order.length - 1 || scores[order[k + 1]] !== scores[i]) {
      tps.push(tp);
      fps.push(fp);
      thresholds.push(scores[i]);
    }
  }
  return { tps, fps, thresholds };
}

/**
 * ROC points from (0, 0) up, one per distinct score (no intermediate points are dropped, unlike sklearn's
 * default, which leaves the area unchanged). thresholds[0] is Infinity, standing for "predict nothing".
 * With no positives tpr is NaN, with no negatives fpr is NaN.
 */
export function rocCurve(
  binaryTrue: ArrayLike<number>,
  scores: ArrayLike<number>,
): { fpr: number[]; tpr: number[]; thresholds: number[] } {
  const { tps, fps, thresholds } = binaryCounts(binaryTrue, scores);
  const p = tps[tps.length - 1], n = fps[fps.length - 1];
  return {
    fpr: [0, ...fps].map((f) => f / n),
    tpr: [0, ...tps].map((t) => t / p),
    thresholds: [Infinity, ...thresholds],
  };
}

/** Area under rocCurve by the trapezoid rule; NaN when binaryTrue holds only one class. */
export function rocAuc(binaryTrue: ArrayLike<number>, scores: ArrayLike<number>): number {
  const { fpr, tpr } = rocCurve(binaryTrue, scores);
  if (Number.isNaN(fpr[1]) || Number.isNaN(tpr[1])) return NaN;
  let area = 0;
  for (let k = 1; k < fpr.length; k++) area += (fpr[k] - fpr[k - 1]) * (tpr[k] + tpr[k - 1]) / 2;
  return area;
}

/**
 * As sklearn's precision_recall_curve: thresholds ascending, precision and recall one longer, ending at
 * precision 1, recall 0. With no positives recall is NaN.
 */
export function precisionRecallCurve(
  binaryTrue: ArrayLike<number>,
  scores: ArrayLike<number>,
): { precision: number[]; recall: number[]; thresholds: number[] } {
  const { tps, fps, thresholds } = binaryCounts(binaryTrue, scores);
  const p = tps[tps.length - 1];
  const precision = tps.map((t, k) => t / (t + fps[k])).reverse();
  const recall = tps.map((t) => t / p).reverse();
  precision.push(1);
  recall.push(0);
  return { precision, recall, thresholds: thresholds.reverse() };
}

/** sum_k (R_k - R_{k-1}) P_k over distinct thresholds, without interpolation; NaN with no positives. */
export function averagePrecision(binaryTrue: ArrayLike<number>, scores: ArrayLike<number>): number {
  const { tps, fps } = binaryCounts(binaryTrue, scores);
  const p = tps[tps.length - 1];
  if (p === 0) return NaN;
  let ap = 0, prevTp = 0;
  for (let k = 0; k < tps.length; k++) {
    ap += (tps[k] - prevTp) / p * (tps[k] / (tps[k] + fps[k]));
    prevTp = tps[k];
  }
  return ap;
}

const safeDiv = (a: number, b: number) => (b === 0 ? 0 : a / b);

/**
 * Per-class one-vs-rest metrics for predictions argmax(probs row). Precision, recall and F1 are 0 where
 * their denominator is (sklearn's zero_division=0), so a never-predicted class counts as 0 in the macro mean.
 */
export function classificationReport(
  yTrue: Labels,
  probs: Probabilities,
  classNames: readonly string[] = CLASS_NAMES,
): ClassificationReport {
  const m = classNames.length;
  if (m === 0) throw new Error("classNames is empty");
  const n = yTrue.length;
  if (n === 0) throw new Error("empty input: no samples");
  const flat = flattenProbs(probs, m);
  if (flat.length / m !== n) {
    throw new Error(`length mismatch: yTrue has ${n} labels, probs has ${flat.length / m} rows of ${m}`);
  }
  checkLabels(yTrue, m, "yTrue");
  const yPred = argmaxRows(flat, m);
  const confusion = confusionMatrix(yTrue, yPred, m);

  const perClass: Record<string, ClassMetrics> = {};
  let sumP = 0, sumR = 0, sumF = 0, correct = 0;
  const isClass = new Uint8Array(n), column = new Float64Array(n);
  const scores = scoresFromConfusion(confusion);
  for (let c = 0; c < m; c++) {
    const { precision, recall, f1, support } = scores[c];
    for (let i = 0; i < n; i++) {
      isClass[i] = yTrue[i] === c ? 1 : 0;
      column[i] = flat[i * m + c];
    }
    perClass[classNames[c]] = {
      precision,
      recall,
      f1,
      support,
      rocAuc: rocAuc(isClass, column),
      prAuc: averagePrecision(isClass, column),
    };
    sumP += precision;
    sumR += recall;
    sumF += f1;
    correct += confusion[c][c];
  }
  return {
    classNames: [...classNames],
    perClass,
    macroF1: sumF / m,
    macroPrecision: sumP / m,
    macroRecall: sumR / m,
    accuracy: correct / n,
    confusion,
    n,
  };
}

/**
 * Mean and sample standard deviation (n - 1 denominator, numpy's `ddof=1`); std is 0 for one value.
 * @throws Error on an empty array.
 */
export function meanStd(values: number[]): MeanStd {
  if (values.length === 0) throw new Error("meanStd of no values");
  const mean = values.reduce((s, v) => s + v, 0) / values.length;
  if (values.length === 1) return { mean, std: 0 };
  const ss = values.reduce((s, v) => s + (v - mean) ** 2, 0);
  return { mean, std: Math.sqrt(ss / (values.length - 1)) };
}

/**
 * Mean (sample std) of each metric over folds. A NaN in any fold (a class absent from a test fold) makes
 * that aggregate NaN rather than quietly averaging over fewer folds.
 */
export function aggregateFolds(reports: ClassificationReport[]): FoldSummary {
  if (reports.length === 0) throw new Error("aggregateFolds needs at least one report");
  const names = reports[0].classNames;
  for (let f = 1; f < reports.length; f++) {
    if (JSON.stringify(reports[f].classNames) !== JSON.stringify(names)) {
      throw new Error(
        `fold ${f} has classes ${JSON.stringify(reports[f].classNames)}, fold 0 has ${JSON.stringify(names)}`,
      );
    }
  }
  const over = (get: (r: ClassificationReport) => number) => meanStd(reports.map(get));
  const perClass: FoldSummary["perClass"] = {};
  for (const name of names) {
    perClass[name] = {
      precision: over((r) => r.perClass[name].precision),
      recall: over((r) => r.perClass[name].recall),
      f1: over((r) => r.perClass[name].f1),
      rocAuc: over((r) => r.perClass[name].rocAuc),
      prAuc: over((r) => r.perClass[name].prAuc),
    };
  }
  const confusion = names.map((_, t) =>
    names.map((_, p) => reports.reduce((s, r) => s + r.confusion[t][p], 0))
  );
  return { perClass, macroF1: over((r) => r.macroF1), accuracy: over((r) => r.accuracy), confusion };
}

/** "mean (std)", the form of the paper's tables. */
export function formatMeanStd(m: MeanStd, digits = 3): string {
  return `${m.mean.toFixed(digits)} (${m.std.toFixed(digits)})`;
}

/** Per-class precision, recall, F1 and support from a confusion matrix (rows true, columns predicted). */
function scoresFromConfusion(confusion: readonly (readonly number[])[]) {
  const m = confusion.length;
  return confusion.map((row, c) => {
    let predicted = 0, support = 0;
    for (let k = 0; k < m; k++) {
      predicted += confusion[k][c];
      support += row[k];
    }
    const precision = safeDiv(row[c], predicted), recall = safeDiv(row[c], support);
    return { precision, recall, f1: safeDiv(2 * precision * recall, precision + recall), support };
  });
}

/** Per-class F1 from a confusion matrix (rows true, columns predicted); 0 where precision and recall are. */
export function f1FromConfusion(confusion: readonly (readonly number[])[]): number[] {
  return scoresFromConfusion(confusion).map((s) => s.f1);
}

/** What {@linkcode pairedBootstrap} compares: macro-F1, or one class's F1 (by label). */
export type BootstrapMetric = "macroF1" | { f1: number };

/** Options of {@linkcode pairedBootstrap}. */
export interface PairedBootstrapOptions {
  /** What to compare (default macro-F1). */
  metric?: BootstrapMetric;
  /** Resamples (default 2000). */
  replicates?: number;
  /** Seeds the resampling (default 0): the same seed gives the same p-value in every runtime. */
  seed?: number;
  /** Number of classes (default 4). */
  numClasses?: number;
}

/** What {@linkcode pairedBootstrap} returns. */
export interface PairedBootstrapResult {
  /** metric(a) - metric(b) on the test set itself (each the mean over its fold models). */
  difference: number;
  /** 2.5% and 97.5% percentiles of the resampled differences. */
  low: number;
  /** See `low`. */
  high: number;
  /**
   * Two-sided p-value of "no difference": twice the smaller share of resampled differences on either side of
   * 0, counting the observed set as one resample ((k + 1) / (B + 1)), at most 1.
   */
  pValue: number;
  /** Resamples drawn. */
  replicates: number;
}

/**
 * Paired bootstrap of a metric difference between two classifiers scored on the same test images: the
 * images are resampled with replacement, and on each resample both classifiers are scored on the same
 * images. A classifier may be several fold models (Table 3's rows: one per fold, same test part); its
 * metric on a resample is the mean over them, as the table's is. The resampling covers the variation of
 * the test images, not of training (seeds, folds' training parts).
 *
 * @throws Error when the fold lists are empty, or their predictions do not have one row per label.
 */
export function pairedBootstrap(
  yTrue: Labels,
  a: readonly Probabilities[],
  b: readonly Probabilities[],
  options: PairedBootstrapOptions = {},
): PairedBootstrapResult {
  const { metric = "macroF1", replicates = 2000, seed = 0, numClasses = CLASS_NAMES.length } = options;
  if (a.length === 0 || b.length === 0) {
    throw new Error("pairedBootstrap: each side needs at least one model");
  }
  const n = yTrue.length;
  if (n === 0) throw new Error("pairedBootstrap: no samples");
  checkLabels(yTrue, numClasses, "yTrue");
  const predictions = (side: readonly Probabilities[]) =>
    side.map((probs) => {
      const flat = flattenProbs(probs, numClasses);
      if (flat.length !== n * numClasses) {
        throw new Error(`pairedBootstrap: ${flat.length / numClasses} prediction rows for ${n} labels`);
      }
      return argmaxRows(flat, numClasses);
    });
  const [pa, pb] = [predictions(a), predictions(b)];
  const score = (confusion: number[][]) => {
    const f1 = f1FromConfusion(confusion);
    return metric === "macroF1" ? f1.reduce((s, v) => s + v, 0) / numClasses : f1[metric.f1];
  };
  // One confusion matrix, refilled for every fold model of every resample.
  const confusion = Array.from({ length: numClasses }, () => new Array<number>(numClasses).fill(0));
  const meanScore = (preds: Int32Array[], idx: ArrayLike<number>) => {
    let total = 0;
    for (const p of preds) {
      for (const row of confusion) row.fill(0);
      for (let i = 0; i < idx.length; i++) confusion[yTrue[idx[i]]][p[idx[i]]]++;
      total += score(confusion);
    }
    return total / preds.length;
  };
  const all = Int32Array.from({ length: n }, (_, i) => i);
  const difference = meanScore(pa, all) - meanScore(pb, all);
  const gen = new Generator(seed);
  const diffs = new Float64Array(replicates), idx = new Int32Array(n);
  let atOrBelow = 1, atOrAbove = 1; // the observed set counts as one resample on each side
  for (let r = 0; r < replicates; r++) {
    for (let i = 0; i < n; i++) idx[i] = Math.floor(gen.uniform() * n);
    const d = meanScore(pa, idx) - meanScore(pb, idx);
    diffs[r] = d;
    if (d <= 0) atOrBelow++;
    if (d >= 0) atOrAbove++;
  }
  diffs.sort();
  const at = (q: number) => diffs[Math.min(replicates - 1, Math.max(0, Math.round(q * (replicates - 1))))];
  return {
    difference,
    low: at(0.025),
    high: at(0.975),
    pValue: Math.min(1, (2 * Math.min(atOrBelow, atOrAbove)) / (replicates + 1)),
    replicates,
  };
}

/** One bin of a reliability diagram: the samples whose confidence lies in (lower, upper]. */
export interface ReliabilityBin {
  /** Lower edge (excluded; the first bin takes 0 too). */
  lower: number;
  /** Upper edge (included). */
  upper: number;
  /** Samples in the bin. */
  count: number;
  /** Their mean confidence (the top class's probability); NaN for an empty bin. */
  confidence: number;
  /** The share of them whose top class is the true one; NaN for an empty bin. */
  accuracy: number;
}

/** The result of {@linkcode calibration}. */
export interface CalibrationReport {
  /**
   * Expected calibration error (Guo et al. 2017): over equal-width confidence bins, the sample-weighted mean
   * of |accuracy - mean confidence|, the confidence being the top class's probability.
   */
  ece: number;
  /**
   * Classwise ECE (Kull et al. 2019): for each class, the same over bins of that class's probability with the
   * class's frequency in place of accuracy; the mean over classes.
   */
  classwiseEce: number;
  /** Multiclass Brier score: the mean over samples of sum_c (p_c - [y = c])^2 (0 to 2). */
  brier: number;
  /** Negative log-likelihood: the mean of -ln p_y, p_y clamped at 1e-12 (stage 1's validation loss). */
  nll: number;
  /** The top-label bins (a reliability diagram's bars). */
  bins: ReliabilityBin[];
}

/** The equal-width bin of `p` among `bins` over [0, 1]: (k/bins, (k+1)/bins], 0 in the first. */
const binOf = (p: number, bins: number) => Math.min(bins - 1, Math.max(0, Math.ceil(p * bins) - 1));

/**
 * How far probabilities are from meaning what they say: ECE (top-label and classwise), the Brier score and
 * the negative log-likelihood, with the reliability diagram's bins. `bins` equal-width bins (default 15).
 *
 * @throws Error when there are no samples, the lengths differ, a label is not a class index, a probability is
 *   not finite, or `bins` is not a positive integer.
 */
export function calibration(
  yTrue: Labels,
  probs: Probabilities,
  options: { numClasses?: number; bins?: number } = {},
): CalibrationReport {
  const { numClasses = CLASS_NAMES.length, bins = 15 } = options;
  if (!Number.isInteger(bins) || bins < 1) {
    throw new Error(`calibration: bins must be a positive integer, got ${bins}`);
  }
  const flat = flattenProbs(probs, numClasses);
  const n = yTrue.length;
  if (n === 0) throw new Error("calibration: no samples");
  if (flat.length !== n * numClasses) {
    throw new Error(`calibration: ${flat.length / numClasses} probability rows for ${n} labels`);
  }
  checkLabels(yTrue, numClasses, "yTrue");
  const predicted = argmaxRows(flat, numClasses);
  const count = new Float64Array(bins), confidence = new Float64Array(bins), correct = new Float64Array(bins);
  let brier = 0, nll = 0;
  for (let i = 0; i < n; i++) {
    const row = flat.subarray(i * numClasses, (i + 1) * numClasses), y = yTrue[i];
    const top = row[predicted[i]], b = binOf(top, bins);
    count[b]++;
    confidence[b] += top;
    if (predicted[i] === y) correct[b]++;
    for (let c = 0; c < numClasses; c++) brier += (row[c] - (c === y ? 1 : 0)) ** 2;
    nll -= Math.log(Math.max(row[y], 1e-12));
  }
  let ece = 0;
  for (let b = 0; b < bins; b++) ece += Math.abs(correct[b] - confidence[b]) / n;
  let classwise = 0;
  for (let c = 0; c < numClasses; c++) {
    const mass = new Float64Array(bins), hits = new Float64Array(bins);
    for (let i = 0; i < n; i++) {
      const p = flat[i * numClasses + c], b = binOf(p, bins);
      mass[b] += p;
      if (yTrue[i] === c) hits[b]++;
    }
    for (let b = 0; b < bins; b++) classwise += Math.abs(hits[b] - mass[b]) / n / numClasses;
  }
  return {
    ece,
    classwiseEce: classwise,
    brier: brier / n,
    nll: nll / n,
    bins: Array.from({ length: bins }, (_, b) => ({
      lower: b / bins,
      upper: (b + 1) / bins,
      count: count[b],
      confidence: count[b] ? confidence[b] / count[b] : NaN,
      accuracy: count[b] ? correct[b] / count[b] : NaN,
    })),
  };
}

/** The log-probability floor of temperature scaling: probabilities are clamped at 1e-12, as `calibration`'s NLL. */
const LOG_FLOOR = Math.log(1e-12);

/** `probs` [S, M] as log-probabilities clamped at {@link LOG_FLOOR}, checked finite and non-negative. */
function logProbs(probs: Probabilities, numClasses: number, what: string): Float64Array {
  const flat = flattenProbs(probs, numClasses);
  for (let i = 0; i < flat.length; i++) {
    const p = flat[i];
    if (!Number.isFinite(p) || p < 0) {
      throw new Error(
        `${what}: probability ${p} at row ${Math.floor(i / numClasses)} is not finite and >= 0`,
      );
    }
    flat[i] = Math.max(Math.log(p), LOG_FLOOR);
  }
  return flat;
}

/**
 * Temperature scaling (Guo et al. 2017): each row of probabilities `probs` [S, M] becomes softmax(ln p / T).
 * T > 1 softens, T < 1 sharpens, T = 1 renormalises; a row's order of classes, and so its argmax, is kept.
 * Probabilities are clamped at 1e-12 before the logarithm. Computed in float64; returns a new [S, M] array.
 *
 * @throws Error when `temperature` is not a finite positive number or a probability is negative or not finite.
 */
export function temperatureScale(
  probs: Probabilities,
  temperature: number,
  numClasses: number = CLASS_NAMES.length,
): Float32Array {
  if (!Number.isFinite(temperature) || temperature <= 0) {
    throw new Error(`temperatureScale: the temperature must be a finite positive number, got ${temperature}`);
  }
  const z = logProbs(probs, numClasses, "temperatureScale");
  const out = new Float32Array(z.length);
  for (let row = 0; row < z.length; row += numClasses) {
    let top = -Infinity;
    for (let c = 0; c < numClasses; c++) top = Math.max(top, z[row + c]);
    let sum = 0;
    for (let c = 0; c < numClasses; c++) sum += z[row + c] = Math.exp((z[row + c] - top) / temperature);
    for (let c = 0; c < numClasses; c++) out[row + c] = z[row + c] / sum;
  }
  return out;
}

/** The range {@linkcode fitTemperature} searches: T in [1/100, 100]. */
export const TEMPERATURE_RANGE: readonly [number, number] = [0.01, 100];

/**
 * The temperature T minimising the negative log-likelihood of softmax(ln p / T) for labels `yTrue` (the fit of
 * temperature scaling, on data the model did not train on). The NLL is convex in the inverse temperature
 * b = 1/T, so its derivative mean(sum_c softmax(b z)_c z_c - z_y), z = ln p, is bisected in ln b to a
 * relative precision of 1e-12: deterministic, no step size. When the optimum lies outside
 * {@link TEMPERATURE_RANGE} (such as data every row of which is already right with probability 1), the nearer
 * bound is returned.
 *
 * @throws Error when there are no samples, the lengths differ, a label is not a class index, or a probability
 *   is negative or not finite.
 */
export function fitTemperature(
  yTrue: Labels,
  probs: Probabilities,
  options: { numClasses?: number } = {},
): number {
  const { numClasses = CLASS_NAMES.length } = options;
  const z = logProbs(probs, numClasses, "fitTemperature");
  const n = yTrue.length;
  if (n === 0) throw new Error("fitTemperature: no samples");
  if (z.length !== n * numClasses) {
    throw new Error(`fitTemperature: ${z.length / numClasses} probability rows for ${n} labels`);
  }
  checkLabels(yTrue, numClasses, "yTrue");
  // d NLL / d b at inverse temperature b; increasing in b.
  const slope = (b: number) => {
    let g = 0;
    for (let i = 0; i < n; i++) {
      const row = i * numClasses;
      let top = -Infinity;
      for (let c = 0; c < numClasses; c++) top = Math.max(top, z[row + c]);
      let sum = 0, weighted = 0;
      for (let c = 0; c < numClasses; c++) {
        const e = Math.exp(b * (z[row + c] - top));
        sum += e;
        weighted += e * z[row + c];
      }
      g += weighted / sum - z[row + yTrue[i]];
    }
    return g / n;
  };
  let lo = -Math.log(TEMPERATURE_RANGE[1]), hi = -Math.log(TEMPERATURE_RANGE[0]); // ln b
  if (slope(Math.exp(hi)) <= 0) return TEMPERATURE_RANGE[0];
  if (slope(Math.exp(lo)) >= 0) return TEMPERATURE_RANGE[1];
  while (hi - lo > 1e-12) {
    const mid = (lo + hi) / 2;
    if (slope(Math.exp(mid)) < 0) lo = mid;
    else hi = mid;
  }
  return Math.exp(-(lo + hi) / 2);
}

/**
 * The ECE that perfectly calibrated probabilities would show on a set this size: for each of `draws`
 * (default 200) draws, every row's label is drawn from the row's own probabilities (so the probabilities are
 * right by construction) and the ECE measured over `bins` bins (default 15); the mean over the draws. ECE is
 * biased upward on small sets, each bin's accuracy being a noisy share of few samples: a measured ECE is to be
 * read against this floor, not against 0. Seeded by `seed` (default 0): deterministic.
 *
 * @throws Error as {@linkcode calibration}, or when `draws` is not a positive integer.
 */
export function eceFloor(
  probs: Probabilities,
  options: { numClasses?: number; bins?: number; draws?: number; seed?: number } = {},
): number {
  const { numClasses = CLASS_NAMES.length, bins = 15, draws = 200, seed = 0 } = options;
  if (!Number.isInteger(draws) || draws < 1) {
    throw new Error(`eceFloor: draws must be a positive integer, got ${draws}`);
  }
  const flat = flattenProbs(probs, numClasses);
  const n = flat.length / numClasses, gen = new Generator(seed), labels = new Int32Array(n);
  let sum = 0;
  for (let d = 0; d < draws; d++) {
    for (let i = 0; i < n; i++) {
      let u = gen.uniform() * flat.subarray(i * numClasses, (i + 1) * numClasses).reduce((a, b) => a + b, 0);
      let c = 0;
      while (c < numClasses - 1 && u >= flat[i * numClasses + c]) u -= flat[i * numClasses + c++];
      labels[i] = c;
    }
    sum += calibration(labels, flat, { numClasses, bins }).ece;
  }
  return sum / draws;
}
