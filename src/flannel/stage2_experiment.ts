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
}

/** JSON.stringify replacer that leaves the bulky per-sample probabilities out of a results file. */
export function withoutProbabilities(key: string, value: unknown): unknown {
  return key === "testProbs" || key === "testLabels" ? undefined : value;
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
  /** Each trained combiner before it is disposed (to save it). */
  onModel?: (method: MethodSpec, fold: number, model: Ensemble) => Promise<void>;
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
  }
  const row = (name: string): MethodResult => ({
    name,
    folds: [],
    summary: null!,
    bestEpochs: [],
    testProbs: [],
  });
  const results: MethodResult[] = [
    ...options.learnerNames.map(row),
    ...baselineNames.map(row),
    ...methods.map((m) => row(m.name)),
  ];
  const single = [...options.learnerNames, ...baselineNames].length;
  for (const [f, { train, val, test, baselines }] of folds.entries()) {
    for (let i = 0; i < single; i++) {
      const probs = i < learners ? learnerColumn(test, i) : learnerColumn(baselines!, i - learners);
      results[i].folds.push(fl.metrics.classificationReport(test.labels, probs, classNames));
      results[i].testProbs.push(probs);
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
      await options.onModel?.(method, f, run.model);
      run.model.dispose();
      const r = results[single + j];
      r.folds.push(report);
      r.testProbs.push(probs);
      r.bestEpochs.push(run.bestEpoch);
      log(
        `fold ${f + 1}/${folds.length} ${method.name}: test macro-F1 ${report.macroF1.toFixed(3)}, covid F1 ${
          report.perClass[classNames[0]].f1.toFixed(3)
        } (best epoch ${run.bestEpoch}, ${((performance.now() - t0) / 1000).toFixed(1)}s)`,
      );
    }
  }
  for (const r of results) r.summary = fl.metrics.aggregateFolds(r.folds);
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
