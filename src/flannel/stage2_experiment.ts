// Stage 2 over cross-validation folds: every learner alone and every ensemble of the paper's Table 3,
// scored on the test part per fold, mean (std) over the folds. `runStage2Folds` takes the folds' learner
// outputs as they are (the image experiment's out-of-fold outputs); `runStage2Experiment` makes the
// folds from one set of outputs (the demo's synthetic ones).
import * as fl from "../../mod.ts";
import { predictStage2, type Stage2Config, trainStage2 } from "./stage2.ts";
import type { Ensemble } from "./ensembles.ts";
import type { LearnerOutputs } from "./synthetic_outputs.ts";

/** One ensemble row of Table 3: its name and how to train it (seed, epochs and class names come from the run). */
export interface MethodSpec {
  /** The row's name in Table 3, the results and the saved models' file names ("FLANNEL", ...). */
  name: string;
  /** The combiner and its loss settings. */
  config: Omit<Stage2Config, "seed" | "epochs" | "classNames">;
}

/** The ensembles of the paper's Table 3, in its row order. */
export const STAGE2_METHODS: MethodSpec[] = [
  { name: "Voting", config: { method: "voting" } },
  { name: "Ensemble_MLP_1", config: { method: "mlp1", loss: "ce" } },
  { name: "Ensemble_MLP_2", config: { method: "mlp2", loss: "ce" } },
  { name: "FLANNEL w/o focal", config: { method: "flannel", loss: "ce" } },
  { name: "FLANNEL w/o focal + sampling", config: { method: "flannel", loss: "ce", resample: true } },
  { name: "FLANNEL", config: { method: "flannel", loss: "focal" } },
];

/** Settings of {@link runStage2Experiment}. */
export interface Stage2ExperimentOptions {
  /** The N learners' names, the single-learner rows of Table 3 (one per learner of the data). */
  learnerNames: string[];
  /** Names of the M classes (default covid, viral, bacterial, normal). */
  classNames?: string[];
  /** Cross-validation folds on the training part (default 5). */
  folds?: number;
  /** Share of the samples, stratified by class, held out as the test part (default 0.2). */
  testFraction?: number;
  /** Stage-2 epochs per combiner and fold (default 20). */
  epochs?: number;
  /** Seeds the split, the folds and every combiner (default 0). */
  seed?: number;
  /** The ensemble rows (default {@link STAGE2_METHODS}). */
  methods?: MethodSpec[];
  /** One line per combiner and fold, with its test macro-F1 and COVID F1. */
  onProgress?: (message: string) => void;
}

/** One row of Table 3 (a learner alone or a combiner): its test scores per fold and over the folds. */
export interface MethodResult {
  /** The learner's or method's name. */
  name: string;
  /** The test part's report for each fold. */
  folds: fl.metrics.ClassificationReport[];
  /** Mean (std) over the folds. */
  summary: fl.metrics.FoldSummary;
  /** The epoch each fold's combiner kept (empty for single learners; 0 for voting). */
  bestEpochs: number[];
  /** per fold, the test part's probabilities [S, M] (for curves; left out of results.json) */
  testProbs: Float32Array[];
  /** Per fold: the temperature fitted on the fold's selection share, and the test part's calibration. */
  calibration: FoldCalibration[];
  /** Mean (std) over the folds of the temperature and of each calibration score, raw and calibrated. */
  calibrationSummary: CalibrationSummary;
  /** per fold, `testProbs` after temperature scaling (for the reliability diagram; left out of results.json) */
  calibratedTestProbs: Float32Array[];
  /** The folds' models as one ensemble, as `predict` and a bundle run them, on the test part. */
  foldEnsemble: FoldEnsemble;
}

/**
 * A row's folds as one ensemble on the test part, what `predict` and a bundle compute: the folds' test
 * probabilities averaged, then scaled by the folds' mean temperature (one temperature keeps the argmax).
 */
export interface FoldEnsemble {
  /** The averaged probabilities' scores (F1 per class, macro-F1, confusion). */
  report: fl.metrics.ClassificationReport;
  /** The folds' mean temperature. */
  temperature: number;
  /** Calibration of the averaged probabilities. */
  raw: CalibrationScores;
  /** Calibration after scaling by `temperature`. */
  calibrated: CalibrationScores;
  /** ECE's floor at the test part's size (see {@link FoldCalibration.eceFloor}). */
  eceFloor: number;
}

/** ECE, classwise ECE, Brier score and NLL (see `fl.metrics.calibration`). */
export type CalibrationScores = Omit<fl.metrics.CalibrationReport, "bins">;

/** One row's calibration on one fold's test part, before and after temperature scaling. */
export interface FoldCalibration {
  /**
   * The temperature fitted (`fl.metrics.fitTemperature`) on the fold's selection share: the out-of-fold
   * samples that chose the stage-2 epoch, never the test part.
   */
  temperature: number;
  /** The raw probabilities' scores. */
  raw: CalibrationScores;
  /** The scores after temperature scaling. */
  calibrated: CalibrationScores;
  /**
   * The ECE perfectly calibrated probabilities would show on the test part (`fl.metrics.eceFloor` of the
   * calibrated probabilities): ECE's bias at this sample size.
   */
  eceFloor: number;
}

/** Mean (std) over the folds of {@link FoldCalibration}. */
export interface CalibrationSummary {
  /** The fitted temperatures. */
  temperature: fl.metrics.MeanStd;
  /** The raw probabilities' scores. */
  raw: Record<keyof CalibrationScores, fl.metrics.MeanStd>;
  /** The scores after temperature scaling. */
  calibrated: Record<keyof CalibrationScores, fl.metrics.MeanStd>;
  /** ECE's floor at the test part's size. */
  eceFloor: fl.metrics.MeanStd;
}

const CALIBRATION_SCORES = ["ece", "classwiseEce", "brier", "nll"] as const;

/** `fl.metrics.calibration`'s scores without its bins. */
function calibrationScores(labels: Int32Array, probs: Float32Array, numClasses: number): CalibrationScores {
  const { bins: _, ...scores } = fl.metrics.calibration(labels, probs, { numClasses });
  return scores;
}

/**
 * A row's calibration on one fold: `temperature` fitted on the selection share (`valLabels`, `valProbs`),
 * the test part's scores before and after it, and the scaled test probabilities.
 */
function calibrateRow(
  valLabels: Int32Array,
  valProbs: Float32Array,
  testLabels: Int32Array,
  testProbs: Float32Array,
  numClasses: number,
): { fold: FoldCalibration; calibratedProbs: Float32Array } {
  const temperature = fl.metrics.fitTemperature(valLabels, valProbs, { numClasses });
  const calibratedProbs = fl.metrics.temperatureScale(testProbs, temperature, numClasses);
  const scores = (probs: Float32Array) => calibrationScores(testLabels, probs, numClasses);
  return {
    fold: {
      temperature,
      raw: scores(testProbs),
      calibrated: scores(calibratedProbs),
      eceFloor: fl.metrics.eceFloor(calibratedProbs, { numClasses }),
    },
    calibratedProbs,
  };
}

/** The mean of the folds' probabilities [S, M] (every fold scores the same test images). */
export function foldMean(probs: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(probs[0].length);
  for (const p of probs) p.forEach((v, i) => (out[i] += v / probs.length));
  return out;
}

/**
 * The one temperature of a fold ensemble: the mean of its folds' temperatures (what `predict` applies to the
 * folds' averaged probabilities; one temperature keeps the average's argmax).
 */
export function foldTemperature(temperatures: readonly number[]): number {
  return temperatures.reduce((a, b) => a + b, 0) / temperatures.length;
}

/** A row's {@link FoldEnsemble} from its folds' test probabilities and temperatures. */
function foldEnsemble(r: MethodResult, testLabels: Int32Array, classNames: string[]): FoldEnsemble {
  const m = classNames.length;
  const mean = foldMean(r.testProbs);
  const temperature = foldTemperature(r.calibration.map((c) => c.temperature));
  const scaled = fl.metrics.temperatureScale(mean, temperature, m);
  const scores = (probs: Float32Array) => calibrationScores(testLabels, probs, m);
  return {
    report: fl.metrics.classificationReport(testLabels, mean, classNames),
    temperature,
    raw: scores(mean),
    calibrated: scores(scaled),
    eceFloor: fl.metrics.eceFloor(scaled, { numClasses: m }),
  };
}

/** Mean (std) over the folds of each row's calibration. */
export function summarizeCalibration(folds: readonly FoldCalibration[]): CalibrationSummary {
  const over = (pick: (f: FoldCalibration) => CalibrationScores) =>
    Object.fromEntries(
      CALIBRATION_SCORES.map((k) => [k, fl.metrics.meanStd(folds.map((f) => pick(f)[k]))]),
    ) as Record<keyof CalibrationScores, fl.metrics.MeanStd>;
  return {
    temperature: fl.metrics.meanStd(folds.map((f) => f.temperature)),
    raw: over((f) => f.raw),
    calibrated: over((f) => f.calibrated),
    eceFloor: fl.metrics.meanStd(folds.map((f) => f.eceFloor)),
  };
}

/** JSON.stringify replacer that leaves the bulky per-sample probabilities out of a results file. */
export function withoutProbabilities(key: string, value: unknown): unknown {
  return key === "testProbs" || key === "testLabels" || key === "calibratedTestProbs" ? undefined : value;
}

/**
 * The results of a stage-2 experiment: Table 3's rows with the data's sizes and the run's settings (what
 * the command line writes to results.json, through {@link withoutProbabilities}).
 */
export interface Stage2ExperimentResult {
  /** Names of the M classes; the first is the one the figures focus on (covid). */
  classNames: string[];
  /** Samples in the training and test parts, and per class in both together. */
  samples: { train: number; test: number; classCounts: number[] };
  /** the test part's labels, the rows of every method's testProbs (left out of results.json) */
  testLabels: Int32Array;
  /** Cross-validation folds. */
  folds: number;
  /** The run's seed. */
  seed: number;
  /** Stage-2 epochs per combiner and fold. */
  epochs: number;
  /** Table 3's rows: every learner alone, then every method. */
  methods: MethodResult[];
}

/** The samples `indices` of `set` (in that order), as a new set of learner outputs. */
export function subset(set: LearnerOutputs, indices: readonly number[]): LearnerOutputs {
  const row = set.learners * set.classes;
  const probs = new Float32Array(indices.length * row);
  indices.forEach((i, j) => probs.set(set.probs.subarray(i * row, (i + 1) * row), j * row));
  return {
    probs,
    labels: Int32Array.from(indices, (i) => set.labels[i]),
    learners: set.learners,
    classes: set.classes,
  };
}

/** One learner's own probabilities [S, M] (the "each learner alone" rows). */
function learnerColumn(set: LearnerOutputs, learner: number): Float32Array {
  const { learners: n, classes: m } = set;
  const s = set.labels.length;
  const out = new Float32Array(s * m);
  for (let i = 0; i < s; i++) {
    out.set(set.probs.subarray((i * n + learner) * m, (i * n + learner + 1) * m), i * m);
  }
  return out;
}

/** One fold of stage 2: combiners train on `train`, choose their epoch on `val`, are scored on `test`. */
export interface Stage2Fold {
  /** What the combiners train on (out-of-fold learner outputs). */
  train: LearnerOutputs;
  /** What chooses each combiner's epoch. */
  val: LearnerOutputs;
  /** What every row is scored on (the test part: the same images in every fold). */
  test: LearnerOutputs;
  /**
   * The baselines' outputs on the same test images (COVID-Net, AI-Covid: scored as rows of their own, never
   * combined); absent or with 0 learners when there are none.
   */
  baselines?: LearnerOutputs;
  /**
   * The baselines' outputs on the images of `val` (in its order), on which their temperatures are fitted;
   * required with `baselines`.
   */
  baselinesVal?: LearnerOutputs;
}

/** Settings of {@link runStage2Folds}. */
export interface Stage2FoldsOptions {
  /** The N learners' names, the single-learner rows of Table 3 (one per learner of the folds' data). */
  learnerNames: string[];
  /** The baselines' names, their rows after the learners' (one per learner of the folds' `baselines`). */
  baselineNames?: string[];
  /** Names of the M classes (default covid, viral, bacterial, normal). */
  classNames?: string[];
  /** Stage-2 epochs per combiner and fold (default 20). */
  epochs?: number;
  /** Seeds every combiner: method j on fold f uses `seed + 100 f + j` (default 0). */
  seed?: number;
  /** The ensemble rows (default {@link STAGE2_METHODS}). */
  methods?: MethodSpec[];
  /** One line per combiner and fold, with its test macro-F1 and COVID F1. */
  onProgress?: (message: string) => void;
  /** Each trained combiner, with its fitted temperature, before it is disposed (to save it). */
  onModel?: (method: MethodSpec, fold: number, model: Ensemble, temperature: number) => Promise<void>;
}

/**
 * Every learner alone, every baseline and every method on each fold, scored on the fold's test outputs;
 * the rows of Table 3 (learners, baselines, methods) with their per-fold reports and mean (std) over folds.
 *
 * @throws {Error} when there are no folds, `learnerNames` does not name every learner or `baselineNames`
 * every baseline, or a fold's baselines were scored on other images.
 */
export async function runStage2Folds(
  folds: Stage2Fold[],
  options: Stage2FoldsOptions,
): Promise<MethodResult[]> {
  const { epochs = 20, seed = 0, methods = STAGE2_METHODS } = options;
  const classNames = options.classNames ?? [...fl.metrics.CLASS_NAMES];
  const log = options.onProgress ?? (() => {});
  const learners = folds[0]?.test.learners ?? 0;
  if (folds.length === 0) throw new Error("stage 2: no folds");
  if (options.learnerNames.length !== learners) {
    throw new Error(`stage 2: ${options.learnerNames.length} learner names for ${learners} learners`);
  }
  const baselineNames = options.baselineNames ?? [];
  for (const [f, fold] of folds.entries()) {
    const t = fold.test.labels, first = folds[0].test.labels;
    if (t.length !== first.length || t.some((y, i) => y !== first[i])) {
      throw new Error(
        `stage 2: fold ${f}'s test part differs from fold 0's (every fold scores the same images)`,
      );
    }
    const b = fold.baselines;
    if ((b?.learners ?? 0) !== baselineNames.length) {
      throw new Error(
        `stage 2: ${baselineNames.length} baseline names for ${b?.learners ?? 0} baselines (fold ${f})`,
      );
    }
    if (
      b && b.learners > 0 &&
      (b.labels.length !== fold.test.labels.length || b.labels.some((y, i) => y !== fold.test.labels[i]))
    ) {
      throw new Error(`stage 2: fold ${f}'s baselines were scored on other test images than its learners`);
    }
    const bv = fold.baselinesVal;
    if (
      b && b.learners > 0 &&
      (bv?.learners !== b.learners || bv.labels.length !== fold.val.labels.length ||
        bv.labels.some((y, i) => y !== fold.val.labels[i]))
    ) {
      throw new Error(
        `stage 2: fold ${f}'s baselines need their outputs on the selection share (baselinesVal) to fit temperatures`,
      );
    }
  }
  const row = (name: string): MethodResult => ({
    name,
    folds: [],
    summary: null!,
    bestEpochs: [],
    testProbs: [],
    calibration: [],
    calibrationSummary: null!,
    calibratedTestProbs: [],
    foldEnsemble: null!,
  });
  const m = folds[0].test.classes;
  const calibrate = (r: MethodResult, val: LearnerOutputs, valProbs: Float32Array, test: LearnerOutputs) => {
    const { fold, calibratedProbs } = calibrateRow(val.labels, valProbs, test.labels, r.testProbs.at(-1)!, m);
    r.calibration.push(fold);
    r.calibratedTestProbs.push(calibratedProbs);
    return fold.temperature;
  };
  const results: MethodResult[] = [
    ...options.learnerNames.map(row),
    ...baselineNames.map(row),
    ...methods.map((m) => row(m.name)),
  ];
  const single = [...options.learnerNames, ...baselineNames].length;
  for (const [f, { train, val, test, baselines, baselinesVal }] of folds.entries()) {
    for (let i = 0; i < single; i++) {
      const [probs, valProbs] = i < learners
        ? [learnerColumn(test, i), learnerColumn(val, i)]
        : [learnerColumn(baselines!, i - learners), learnerColumn(baselinesVal!, i - learners)];
      results[i].folds.push(fl.metrics.classificationReport(test.labels, probs, classNames));
      results[i].testProbs.push(probs);
      calibrate(results[i], val, valProbs, test);
    }
    for (const [j, method] of methods.entries()) {
      const t0 = performance.now();
      const run = await trainStage2(train, val, {
        ...method.config,
        epochs,
        seed: seed + 100 * f + j,
        classNames,
      });
      const probs = await predictStage2(run.model, test);
      const report = fl.metrics.classificationReport(test.labels, probs, classNames);
      const r = results[single + j];
      r.folds.push(report);
      r.testProbs.push(probs);
      r.bestEpochs.push(run.bestEpoch);
      const temperature = calibrate(r, val, await predictStage2(run.model, val), test);
      await options.onModel?.(method, f, run.model, temperature);
      run.model.dispose();
      log(
        `fold ${f + 1}/${folds.length} ${method.name}: test macro-F1 ${report.macroF1.toFixed(3)}, covid F1 ${
          report.perClass[classNames[0]].f1.toFixed(3)
        } (best epoch ${run.bestEpoch}, temperature ${temperature.toPrecision(3)}, ${
          ((performance.now() - t0) / 1000).toFixed(1)
        }s)`,
      );
    }
  }
  const testLabels = folds[0].test.labels;
  for (const r of results) {
    r.summary = fl.metrics.aggregateFolds(r.folds);
    r.calibrationSummary = summarizeCalibration(r.calibration);
    r.foldEnsemble = foldEnsemble(r, testLabels, classNames);
  }
  return results;
}

/**
 * The paper's protocol on one set of learner outputs: a stratified train/test split, k folds on the
 * training part (each combiner trained on k-1 folds, its epoch chosen on the held-out fold), every method
 * scored on the test part.
 */
export async function runStage2Experiment(
  data: LearnerOutputs,
  options: Stage2ExperimentOptions,
): Promise<Stage2ExperimentResult> {
  const { folds = 5, testFraction = 0.2, epochs = 20, seed = 0 } = options;
  const classNames = options.classNames ?? [...fl.metrics.CLASS_NAMES];
  const split = fl.data.stratifiedSplit(data.labels, testFraction, seed);
  const test = subset(data, split.test);
  const foldData = fl.data.stratifiedKFold(data.labels, split.train, folds, seed + 1).map((f) => ({
    train: subset(data, f.train),
    val: subset(data, f.val),
    test,
  }));
  const methods = await runStage2Folds(foldData, { ...options, classNames });
  const classCounts = classNames.map((_, c) => data.labels.filter((y) => y === c).length);
  return {
    classNames,
    samples: { train: split.train.length, test: split.test.length, classCounts },
    testLabels: test.labels,
    folds,
    seed,
    epochs,
    methods,
  };
}

/**
 * Table 3 of the paper as a Markdown table: F1 per class and macro-F1, mean (std) over folds, one row per
 * entry of `result.methods` (the learners alone, then the ensembles).
 */
export function table3(result: Stage2ExperimentResult): string {
  const head = `| Method | ${result.classNames.map((c) => `${c} F1`).join(" | ")} | macro-F1 |`;
  const rule = `|---|${result.classNames.map(() => "---").join("|")}|---|`;
  const rows = result.methods.map((m) =>
    `| ${m.name} | ${
      result.classNames.map((c) => fl.metrics.formatMeanStd(m.summary.perClass[c].f1)).join(" | ")
    } | ${fl.metrics.formatMeanStd(m.summary.macroF1)} |`
  );
  return [head, rule, ...rows].join("\n");
}

/**
 * The calibration of every row of Table 3 on the test part as a Markdown table, mean (std) over folds: the
 * temperature fitted on each fold's selection share, then ECE (15 bins), classwise ECE, the Brier score and
 * the NLL of the raw probabilities and after temperature scaling ("(T)"), and ECE's floor at the test part's
 * size (what perfectly calibrated probabilities would show).
 */
export function calibrationTable(result: Stage2ExperimentResult): string {
  const names = { ece: "ECE", classwiseEce: "classwise ECE", brier: "Brier", nll: "NLL" };
  const head = `| Method | temperature | ${
    CALIBRATION_SCORES.map((k) => `${names[k]} | ${names[k]} (T)`).join(" | ")
  } | ECE floor |`;
  const rule = `|---|---|${CALIBRATION_SCORES.map(() => "---|---").join("|")}|---|`;
  const rows = result.methods.map(({ name, calibrationSummary: c }) =>
    `| ${name} | ${fl.metrics.formatMeanStd(c.temperature, 2)} | ${
      CALIBRATION_SCORES.map((k) =>
        `${fl.metrics.formatMeanStd(c.raw[k])} | ${fl.metrics.formatMeanStd(c.calibrated[k])}`
      ).join(" | ")
    } | ${fl.metrics.formatMeanStd(c.eceFloor)} |`
  );
  return [head, rule, ...rows].join("\n");
}

/**
 * Each row's folds as one ensemble on the test part (what `predict` and a bundle run: the folds' probabilities
 * averaged, scaled by their mean temperature) as a Markdown table: F1 per class, macro-F1, the temperature,
 * ECE raw and scaled, the Brier score and NLL scaled, and ECE's floor.
 */
export function foldEnsembleTable(result: Stage2ExperimentResult): string {
  const head = `| Method | ${
    result.classNames.map((c) => `${c} F1`).join(" | ")
  } | macro-F1 | temperature | ECE | ECE (T) | Brier (T) | NLL (T) | ECE floor |`;
  const rule = `|---|${result.classNames.map(() => "---").join("|")}|---|---|---|---|---|---|---|`;
  const rows = result.methods.map(({ name, foldEnsemble: e }) =>
    `| ${name} | ${result.classNames.map((c) => e.report.perClass[c].f1.toFixed(3)).join(" | ")} | ${
      e.report.macroF1.toFixed(3)
    } | ${e.temperature.toFixed(2)} | ${e.raw.ece.toFixed(3)} | ${e.calibrated.ece.toFixed(3)} | ${
      e.calibrated.brier.toFixed(3)
    } | ${e.calibrated.nll.toFixed(3)} | ${e.eceFloor.toFixed(3)} |`
  );
  return [head, rule, ...rows].join("\n");
}
