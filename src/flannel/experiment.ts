// The FLANNEL experiment on images, end to end: stage 1 for every learner on every fold (out-of-fold and
// test outputs, see stage1_folds.ts), then stage 2 on each fold: the combiners train on that fold's
// out-of-fold outputs (80%) and choose their epoch on the rest (20%, stratified), and every learner and
// combiner is scored on the test part with that fold's learners. Mean (std) over the folds.
import { join } from "../platform/runtime.ts";
import * as fl from "../../mod.ts";
import { auditExperiment, type ExperimentAudit } from "./audit.ts";
import type { Ensemble } from "./ensembles.ts";
import {
  type BaselineArch,
  isBaselineArch,
  isLearnerArch,
  LEARNER_TITLES,
  type LearnerArch,
  type Stage1Arch,
} from "./learners.ts";
import { type LearnerOutputsFile, loadLearnerOutputs } from "./stage1.ts";
import {
  balancesSources,
  runStage1Folds,
  type Stage1FoldResult,
  type Stage1FoldsConfig,
} from "./stage1_folds.ts";
import {
  type MethodSpec,
  runStage2Folds,
  type Stage2ExperimentResult,
  type Stage2Fold,
  subset,
} from "./stage2_experiment.ts";
import type { LearnerOutputs } from "./synthetic_outputs.ts";

/** Stage 1's settings for every fold (folds and selectFraction at their defaults), and stage 2's. */
export interface ExperimentConfig extends Omit<Stage1FoldsConfig, "folds" | "selectFraction" | "records"> {
  /** The records `split` indexes (their `source` feeds the audit; "unknown" where absent). */
  records: readonly (Stage1FoldsConfig["records"][number] & { source?: string })[];
  /** the short side `images` were resized to (recorded for prediction on new images) */
  resize: number;
  /** Whether `images` were histogram-equalised after resizing (recorded for prediction; default false). */
  equalize?: boolean;
  /** Whether `images` were cropped to their lung fields before resizing (recorded for prediction; default false). */
  lungCrop?: boolean;
  /** stage-2 epochs per combiner and fold (default 20) */
  stage2Epochs?: number;
  /** The ensemble rows (default STAGE2_METHODS, those of Table 3). */
  methods?: MethodSpec[];
}

/**
 * What {@link runExperiment} returns: Table 3's rows (scored on the test part, mean (std) over folds) with
 * the run's settings and every stage-1 pair's macro-F1; the command line writes it to results.json.
 */
export interface ExperimentResult extends Stage2ExperimentResult {
  /** what a later prediction on new images needs, and the training settings */
  settings: {
    /** The learners, in the N order of stage 2's inputs. */
    archs: LearnerArch[];
    /** The baselines trained beside them (rows of Table 3 of their own, not combined). */
    baselines: BaselineArch[];
    /** The learners' size. */
    scale: "tiny" | "full";
    /** Crop side in pixels. */
    crop: number;
    /** Stage 1's training augmentation (paper, basic or none). */
    augment: fl.data.AugmentMode;
    /** Short side the images were resized to, in pixels. */
    resize: number;
    /** Whether the images were histogram-equalised after resizing. */
    equalize: boolean;
    /** Whether the images were cropped to their lung fields before resizing. */
    lungCrop: boolean;
    /** "shared": every row trained alike; "own": the baselines with their published recipes. */
    recipe: "shared" | "own";
    /** Whether stage 1 balanced the negatives by source (Stage1Recipe.balanceSources). */
    balanceSources: boolean;
    /** Stage-1 epochs. */
    epochs: number;
    /** Stage-1 batch size. */
    batchSize: number;
    /** Stage-1 learning rate. */
    lr: number;
    /** The run's seed. */
    seed: number;
    /** Stage-2 epochs per combiner and fold. */
    stage2Epochs: number;
  };
  /** The learners, then the baselines, with their names in the paper (LEARNER_TITLES). */
  learners: { arch: Stage1Arch; title: string }[];
  /** Every (learner or baseline, fold) pair of stage 1: macro-F1 on the held-out fold and on the test part. */
  stage1: { arch: Stage1Arch; fold: number; heldOutMacroF1: number; testMacroF1: number }[];
  /** The sources of the test images, in the order of `testLabels`. */
  testSources: string[];
  /** Non-covid images called covid per source, Table 3 on the mixed source, FLANNEL's paired comparisons. */
  audit: ExperimentAudit;
}

/**
 * The learners' outputs on the same images, side by side: probs [S, N, M], learners in the order given,
 * labels from the first.
 *
 * @throws {Error} when there are no outputs, or they differ in their files (or their order) or classes.
 */
export function stackLearnerOutputs(outputs: readonly LearnerOutputsFile[]): LearnerOutputs {
  if (outputs.length === 0) throw new Error("stackLearnerOutputs: no learners");
  const [first] = outputs;
  const s = first.files.length, m = first.probs.length / Math.max(s, 1), n = outputs.length;
  for (const o of outputs) {
    if (o.files.length !== s || o.files.some((f, i) => f !== first.files[i])) {
      throw new Error(
        `stackLearnerOutputs: ${o.learner} (fold ${o.fold}) has other images than ${first.learner} (fold ${first.fold})`,
      );
    }
    if (o.probs.length !== s * m) {
      throw new Error(
        `stackLearnerOutputs: ${o.learner} has ${o.probs.length / s} classes, ${first.learner} ${m}`,
      );
    }
  }
  const probs = new Float32Array(s * n * m);
  for (let i = 0; i < s; i++) {
    outputs.forEach((o, j) => probs.set(o.probs.subarray(i * m, (i + 1) * m), (i * n + j) * m));
  }
  return { probs, labels: Int32Array.from(first.labels), learners: n, classes: m };
}

/**
 * Stage 2's folds from stage 1's files: fold f's out-of-fold outputs of the learners `archs` split 80/20
 * (stratified, seeded by `seed` and f) into training and validation, their test outputs, and the test
 * outputs of the `baselines`; folds ascending.
 *
 * @throws {Error} when a fold lacks one of the learners' or baselines' outputs.
 */
export async function stage2FoldsFromStage1(
  stage1: readonly Stage1FoldResult[],
  archs: readonly LearnerArch[],
  seed: number,
  baselines: readonly BaselineArch[] = [],
): Promise<Stage2Fold[]> {
  const folds = stage1Folds(stage1);
  const out: Stage2Fold[] = [];
  for (const f of folds) {
    const pairsOf = (list: readonly Stage1Arch[]) =>
      list.map((arch) => {
        const r = stage1.find((x) => x.arch === arch && x.fold === f);
        if (!r) throw new Error(`stage 2: no stage-1 outputs for ${arch} on fold ${f}`);
        return r;
      });
    const pairs = pairsOf(archs);
    const oof = stackLearnerOutputs(await Promise.all(pairs.map((r) => loadLearnerOutputs(r.valPath))));
    const test = stackLearnerOutputs(await Promise.all(pairs.map((r) => loadLearnerOutputs(r.testPath))));
    const inner = fl.data.stratifiedSplit(oof.labels, 0.2, seed + 31 * (f + 1));
    const fold: Stage2Fold = { train: subset(oof, inner.train), val: subset(oof, inner.test), test };
    if (baselines.length > 0) {
      const baselinePairs = pairsOf(baselines);
      fold.baselines = stackLearnerOutputs(
        await Promise.all(baselinePairs.map((r) => loadLearnerOutputs(r.testPath))),
      );
      // Stacked after the learners' so that stackLearnerOutputs checks they hold the same images.
      const oofAll = stackLearnerOutputs(
        await Promise.all([...pairs, ...baselinePairs].map((r) => loadLearnerOutputs(r.valPath))),
      );
      fold.baselinesVal = subset(learnerRange(oofAll, archs.length, baselines.length), inner.test);
    }
    out.push(fold);
  }
  return out;
}

/** Learners `first` .. `first + count - 1` of `set`, as a set of their own. */
function learnerRange(set: LearnerOutputs, first: number, count: number): LearnerOutputs {
  const { learners: n, classes: m } = set, s = set.labels.length;
  const probs = new Float32Array(s * count * m);
  for (let i = 0; i < s; i++) {
    probs.set(set.probs.subarray((i * n + first) * m, (i * n + first + count) * m), i * count * m);
  }
  return { probs, labels: set.labels, learners: count, classes: m };
}

/** The folds stage 1 ran, ascending (stage 2's fold i is the i-th of them). */
function stage1Folds(stage1: readonly Stage1FoldResult[]): number[] {
  return [...new Set(stage1.map((r) => r.fold))].sort((a, b) => a - b);
}

/**
 * File of a trained combiner: OUT/stage2/fold<f>/<method name as a file name>.safetensors (runs of
 * characters other than letters, digits and `_` become `_`).
 */
export function stage2ModelPath(outDir: string, fold: number, methodName: string): string {
  return join(stage2FoldDir(outDir, fold), `${methodName.replace(/[^A-Za-z0-9_]+/g, "_")}.safetensors`);
}

/** The folder of fold `fold`'s trained combiners: OUT/stage2/fold<f>. */
function stage2FoldDir(outDir: string, fold: number): string {
  return join(outDir, "stage2", `fold${fold}`);
}

async function saveStage2Model(
  outDir: string,
  fold: number,
  method: MethodSpec,
  archs: readonly LearnerArch[],
  model: Ensemble,
  temperature: number,
): Promise<void> {
  await fl.io.saveSafetensors(stage2ModelPath(outDir, fold, method.name), await model.downloadStateDict(), {
    format: STAGE2_MODEL_FORMAT,
    method: method.name,
    config: JSON.stringify(method.config),
    learners: JSON.stringify(archs),
    fold: String(fold),
    temperature: String(temperature),
  });
}

/**
 * The `format` metadata of a trained combiner's file (at {@link stage2ModelPath}): its state dict, with
 * metadata `method` (name), `config` (JSON MethodSpec config), `learners` (JSON archs), `fold` and
 * `temperature` (fitted on the fold's selection share; absent in files written before calibration existed).
 */
export const STAGE2_MODEL_FORMAT = "flannel-stage2-model/1";

/**
 * The whole FLANNEL experiment on images: stage 1 for every learner and baseline on every fold
 * (runStage1Folds), stage 2 on each fold's out-of-fold outputs of the learners (every combiner of `methods`,
 * saved at {@link stage2ModelPath}), every learner, baseline and combiner scored on the test part. With
 * `resume`, finished stage-1 pairs are skipped and started ones continue; stage 2 always runs anew.
 *
 * @throws {Error} when `archs` holds no learner (the ensembles need at least one), and as runStage1Folds,
 * stage2FoldsFromStage1 and runStage2Folds do.
 */
export async function runExperiment(config: ExperimentConfig): Promise<ExperimentResult> {
  const seed = config.seed ?? 0, stage2Epochs = config.stage2Epochs ?? 20;
  const archs = config.archs.filter(isLearnerArch), baselines = config.archs.filter(isBaselineArch);
  if (archs.length === 0) {
    throw new Error(
      "experiment: stage 2 combines the base learners, and none is among the archs; " +
        "use the stage1 command to train baselines alone",
    );
  }
  const stage1 = await runStage1Folds(config);
  if (config.signal?.aborted) {
    throw new Error(`experiment: stopped (${String(config.signal.reason)}) before stage 2`);
  }
  // Stage 2 and the report are written by this process alone (after every stage-1 pair): a killed run's
  // temporary files there are garbage.
  const foldIds = stage1Folds(stage1); // stage 2's fold i is stage 1's fold foldIds[i]
  fl.io.removeTemporaries(config.outDir);
  for (const f of foldIds) fl.io.removeTemporaries(stage2FoldDir(config.outDir, f));
  config.onMessage?.("stage 2: every combiner on each fold's out-of-fold outputs");
  const folds = await stage2FoldsFromStage1(stage1, archs, seed, baselines);
  const methods = await runStage2Folds(folds, {
    learnerNames: archs.map((a) => LEARNER_TITLES[a]),
    baselineNames: baselines.map((a) => LEARNER_TITLES[a]),
    epochs: stage2Epochs,
    seed,
    methods: config.methods,
    onProgress: config.onMessage,
    onModel: (method, i, model, temperature) =>
      saveStage2Model(config.outDir, foldIds[i], method, archs, model, temperature),
  });
  const labelsOf = (idx: readonly number[]) => idx.map((i) => config.records[i].label);
  const kept = labelsOf([...config.split.train, ...config.split.test]);
  const testSources = config.split.test.map((i) => config.records[i].source ?? "unknown");
  config.onMessage?.("audit: sources, the mixed source, paired bootstrap against FLANNEL");
  const sourceOf = new Map(config.records.map((r) => [r.file, r.source ?? "unknown"]));
  const outOfFold = await Promise.all([...archs, ...baselines].map(async (arch) => {
    const files: string[] = [], labels: number[] = [], probs: number[] = [];
    for (const r of stage1.filter((x) => x.arch === arch)) {
      const o = await loadLearnerOutputs(r.valPath);
      files.push(...o.files);
      labels.push(...Array.from(o.labels));
      probs.push(...o.probs);
    }
    return {
      method: LEARNER_TITLES[arch],
      labels,
      sources: files.map((f) => sourceOf.get(f) ?? "unknown"),
      probs: Float32Array.from(probs),
    };
  }));
  const audit = auditExperiment(methods, folds[0].test.labels, testSources, { seed, outOfFold });
  return {
    classNames: [...fl.metrics.CLASS_NAMES],
    samples: {
      train: config.split.train.length,
      test: config.split.test.length,
      classCounts: fl.metrics.CLASS_NAMES.map((_, c) => kept.filter((y) => y === c).length),
    },
    testLabels: folds[0].test.labels,
    folds: folds.length,
    seed,
    epochs: stage2Epochs,
    methods,
    settings: {
      archs,
      baselines,
      scale: config.scale,
      crop: config.crop ?? 224,
      augment: config.augment ?? "basic",
      resize: config.resize,
      equalize: config.equalize ?? false,
      lungCrop: config.lungCrop ?? false,
      recipe: config.recipe ?? "shared",
      balanceSources: balancesSources(config),
      epochs: config.epochs,
      batchSize: config.batchSize ?? 32,
      lr: config.lr ?? 1e-3,
      seed,
      stage2Epochs,
    },
    learners: [...archs, ...baselines].map((arch) => ({ arch, title: LEARNER_TITLES[arch] })),
    stage1: stage1.map((r) => ({
      arch: r.arch,
      fold: r.fold,
      heldOutMacroF1: r.val.macroF1,
      testMacroF1: r.test.macroF1,
    })),
    testSources,
    audit,
  };
}
