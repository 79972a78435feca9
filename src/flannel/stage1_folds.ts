// Stage 1 over the cross-validation folds: for every learner and fold, train on the fold's training part
// and write the learner's probabilities on the fold's held-out images (out-of-fold: stage 2's training
// data) and on the test part. Resumable: finished (learner, fold) pairs are skipped, a started one continues
// from its last epoch's checkpoint.
//
// The epoch a learner keeps is chosen on a patient-disjoint share of its own training part (`selectFraction`),
// not on the held-out fold: the held-out fold's outputs then come from a model that never saw those images
// in any way, so stage 2 is trained on honest out-of-fold predictions.
//
// Files under `outDir/stage1/<arch>/fold<f>/`:
//   checkpoint.safetensors (+ .best)   trainStage1's checkpoint (resume) and best epoch's weights
//   log.jsonl                          one line per epoch
//   val.safetensors, test.safetensors  saveLearnerOutputs files (probs [S, 4], labels, files in metadata);
//                                      test.safetensors is written last: its presence marks the pair done
import { existsSync, join, mkdirSync } from "../platform/runtime.ts";
import * as fl from "../../mod.ts";
import { createLearner, isBaselineArch, ownRecipe, type Stage1Arch } from "./learners.ts";
import { loadPretrained, pretrainedFiles, pretrainedMessage } from "./pretrained.ts";
import {
  loadLearnerOutputs,
  predictStage1,
  saveLearnerOutputs,
  type Stage1BatchProgress,
  type Stage1EpochLog,
  trainStage1,
} from "./stage1.ts";

/** Whether a run of {@link runStage1Folds} balances negatives by source (its default: yes). */
export function balancesSources(config: Pick<Stage1FoldsConfig, "balanceSources">): boolean {
  return config.balanceSources ?? true;
}

/** Settings of {@link runStage1Folds}: the data and its split, the learners, and stage 1's training settings. */
export interface Stage1FoldsConfig {
  /** the records `split` indexes, with their decoded images (same order) */
  records: readonly (Pick<fl.data.ImageRecord, "file" | "label" | "patientId"> & { source?: string })[];
  /** The decoded (resized) images of `records`, in the same order. */
  images: readonly fl.io.GrayImage[];
  /** The patient-wise test part and cross-validation folds of the training part. */
  split: fl.data.PatientSplit;
  /** The learners (and baselines) to train, each on every fold. */
  archs: readonly Stage1Arch[];
  /** The learners' size (see LearnerOptions.scale). */
  scale: "tiny" | "full";
  /** Root of the output files (`outDir/stage1/<arch>/fold<f>/`). */
  outDir: string;
  /** Stage-1 epochs per (learner, fold) pair. */
  epochs: number;
  /** Images per batch (default 32). */
  batchSize?: number;
  /** Micro-batches per batch, or "auto" (default; see Stage1Config.accumulate). */
  accumulate?: number | "auto";
  /** "f32" (default) or "f16": float16 activations with loss scaling (see Stage1Config.precision). */
  precision?: "f32" | "f16";
  /** Crop side in pixels (default 224). */
  crop?: number;
  /** The training augmentation (default "basic"; see Stage1Config.augment). */
  augment?: fl.data.AugmentMode;
  /** Adam's learning rate (default 1e-3). */
  lr?: number;
  /** Adam's weight decay (default 1e-4). */
  weightDecay?: number;
  /** Seeds the learners' initial weights, their training and the epoch-choosing split (default 0). */
  seed?: number;
  /** folds to run (default all) */
  folds?: readonly number[];
  /**
   * learners of `archs` to run (default all): a pair's seeds come from its learner's position in `archs`, so
   * one pair run alone (a scheduled job) trains exactly as in the run of them all
   */
  only?: readonly Stage1Arch[];
  /** share of a fold's training images (by patient) that chooses the learner's epoch (default 0.1) */
  selectFraction?: number;
  /**
   * "shared" (default): every learner and baseline trains with the settings above; "own": the baselines
   * train with their published recipes (ownRecipe), the learners still with the shared one.
   */
  recipe?: "shared" | "own";
  /**
   * Negatives balanced by source in every learner's training (Stage1Recipe.balanceSources, from the
   * records' `source`; "unknown" where a record has none). Default true: in the README's experiment it
   * lowered the share of the covid source's non-covid images called covid without lowering macro-F1; it
   * changes nothing where no source has both covid and non-covid images.
   */
  balanceSources?: boolean;
  /**
   * a folder of ImageNet weights to start each learner from: torchvision's hub cache, or `<arch>.pth`,
   * `<arch>.pt`, `<arch>.safetensors` (see findPretrained, loadPretrained); a learner without a file is an
   * error before anything trains
   */
  pretrained?: string;
  /** continue: skip finished pairs, resume started ones; without it, existing outputs are an error */
  resume?: boolean;
  /** Stops at the next training step, or before the next pair, once aborted (see Stage1Config.signal). */
  signal?: AbortSignal;
  /** One line of progress per event (a pair started, skipped or finished, pretrained weights loaded). */
  onMessage?: (message: string) => void;
  /** After every epoch of every pair. */
  onEpoch?: (arch: Stage1Arch, fold: number, log: Stage1EpochLog) => void;
  /** After every training batch of every pair. */
  onBatch?: (arch: Stage1Arch, fold: number, progress: Stage1BatchProgress) => void;
}

/** One (learner, fold) pair of stage 1: where its outputs are and how well it did. */
export interface Stage1FoldResult {
  /** The learner or baseline. */
  arch: Stage1Arch;
  /** The fold held out (its index in `split.foldSplits`). */
  fold: number;
  /** false when it was already done (resume) */
  trained: boolean;
  /** The learner's out-of-fold outputs on the held-out fold (a saveLearnerOutputs file): stage 2's training data. */
  valPath: string;
  /** The learner's outputs on the test part (a saveLearnerOutputs file). */
  testPath: string;
  /** on the held-out fold and on the test part */
  val: fl.metrics.ClassificationReport;
  /** The learner on the test part. */
  test: fl.metrics.ClassificationReport;
}

/** The folder of one (learner, fold) pair's files: `outDir/stage1/<arch>/fold<fold>`. */
export function stage1FoldDir(outDir: string, arch: string, fold: number): string {
  return join(outDir, "stage1", arch, `fold${fold}`);
}

/**
 * A learner (or baseline) of a finished run with its kept epoch's weights (the caller disposes it), read
 * from `checkpoint.safetensors.best` in {@link stage1FoldDir}; `crop` is the run's crop side (COVID-Net and
 * AI-Covid size their dense heads by it; default 224).
 *
 * @throws {Error} when that file is missing or does not fit the learner.
 */
export async function loadTrainedLearner(
  outDir: string,
  arch: Stage1Arch,
  fold: number,
  scale: "tiny" | "full",
  crop = 224,
): Promise<fl.nn.Module> {
  const weights = join(stage1FoldDir(outDir, arch, fold), "checkpoint.safetensors.best");
  if (!existsSync(weights)) throw new Error(`no trained ${arch} for fold ${fold}: ${weights} is missing`);
  const model = createLearner(arch, { scale, crop });
  try {
    model.loadStateDict(await fl.io.loadSafetensors(weights) as Record<string, fl.nn.TensorRecord>);
  } catch (err) {
    model.dispose();
    throw err;
  }
  return model;
}

/**
 * Runs stage 1 for every (learner, fold) pair: trains on the fold's training part (its epoch chosen on a
 * patient-disjoint `selectFraction` of it), then writes the learner's out-of-fold outputs on the held-out
 * fold (`val.safetensors`) and its outputs on the test part (`test.safetensors`) under {@link stage1FoldDir}.
 * Pairs run learner by learner, folds ascending.
 *
 * @throws {Error} when records and images differ in length, a fold does not exist, or a pair's files exist
 * without `resume`.
 */
export async function runStage1Folds(config: Stage1FoldsConfig): Promise<Stage1FoldResult[]> {
  const { records, images, split, outDir } = config;
  const seed = config.seed ?? 0, selectFraction = config.selectFraction ?? 0.1;
  const folds = config.folds ?? split.foldSplits.map((_, f) => f);
  const say = config.onMessage ?? (() => {});
  if (images.length !== records.length) {
    throw new Error(`stage 1 folds: ${records.length} records and ${images.length} images`);
  }
  for (const f of folds) {
    if (!Number.isInteger(f) || f < 0 || f >= split.foldSplits.length) {
      throw new Error(
        `stage 1 folds: fold ${f} does not exist (the split has ${split.foldSplits.length} folds, 0..${
          split.foldSplits.length - 1
        })`,
      );
    }
  }
  const pick = (idx: readonly number[]) => ({
    images: idx.map((i) => images[i]),
    labels: Int32Array.from(idx, (i) => records[i].label),
    files: idx.map((i) => records[i].file),
    sources: idx.map((i) => records[i].source ?? "unknown"),
  });
  const test = pick(split.test);
  const pretrained = config.pretrained
    ? pretrainedFiles(config.pretrained, config.archs.filter((a) => !config.only || config.only.includes(a)))
    : new Map<Stage1Arch, string>();
  const results: Stage1FoldResult[] = [];
  for (const [a, arch] of config.archs.entries()) {
    if (config.only && !config.only.includes(arch)) continue;
    for (const f of folds) {
      if (config.signal?.aborted) {
        throw new Error(`stage 1: stopped (${String(config.signal.reason)}) before ${arch} fold ${f}`);
      }
      const dir = stage1FoldDir(outDir, arch, f);
      const valPath = join(dir, "val.safetensors"), testPath = join(dir, "test.safetensors");
      const held = pick(split.foldSplits[f].val);
      if (existsSync(testPath)) {
        if (!config.resume) {
          throw new Error(
            `stage 1: ${testPath} exists; pass resume (--resume) to continue that run, or use another output folder`,
          );
        }
        const [v, t] = [await loadLearnerOutputs(valPath), await loadLearnerOutputs(testPath)];
        say(`${arch} fold ${f}: done before, skipped`);
        results.push({
          arch,
          fold: f,
          trained: false,
          valPath,
          testPath,
          val: fl.metrics.classificationReport(v.labels, v.probs),
          test: fl.metrics.classificationReport(t.labels, t.probs),
        });
        continue;
      }
      const checkpointPath = join(dir, "checkpoint.safetensors");
      if (existsSync(checkpointPath) && !config.resume) {
        throw new Error(
          `stage 1: ${checkpointPath} exists; pass resume (--resume) to continue it, or use another output folder`,
        );
      }
      if (existsSync(checkpointPath)) say(`${arch} fold ${f}: resuming from ${checkpointPath}`);
      // a writer killed in this pair's folder (this run owns it) left its temporary files
      fl.io.removeTemporaries(dir);
      mkdirSync(dir, { recursive: true });
      // The fold's training part, split by patient into what the learner trains on and what picks its epoch.
      const trainIdx = split.foldSplits[f].train;
      const inner = fl.data.patientSplit(trainIdx.map((i) => records[i]), {
        testFraction: selectFraction,
        folds: 2,
        seed: seed + 7919 * (f + 1),
      });
      const learnSet = pick(inner.train.map((j) => trainIdx[j]));
      const selectSet = pick(inner.test.map((j) => trainIdx[j]));
      const runSeed = seed * 100 + a * 10 + f;
      say(
        `${arch} fold ${f}: training on ${learnSet.images.length} images, epoch chosen on ${selectSet.images.length}, ` +
          `held out ${held.images.length}, test ${test.images.length}`,
      );
      const model = createLearner(arch, { scale: config.scale, seed: runSeed, crop: config.crop });
      try {
        const pretrainedPath = pretrained.get(arch);
        if (pretrainedPath) {
          say(pretrainedMessage(arch, pretrainedPath, await loadPretrained(model, pretrainedPath)));
        } else if (config.pretrained) {
          say(`${arch}: no pretrained file in ${config.pretrained}; starts from its initialisation`);
        }
        const own = config.recipe === "own" && isBaselineArch(arch)
          ? ownRecipe(arch, model, learnSet.labels)
          : null;
        if (own) say(`${arch}: its own recipe, ${JSON.stringify(own)}`);
        await trainStage1({
          model,
          train: { images: learnSet.images, labels: learnSet.labels, sources: learnSet.sources },
          val: { images: selectSet.images, labels: selectSet.labels },
          epochs: config.epochs,
          batchSize: own?.batchSize ?? config.batchSize,
          accumulate: config.accumulate,
          precision: config.precision,
          onNotice: (m) => say(`${arch} fold ${f}: ${m}`),
          lr: own?.lr ?? config.lr,
          weightDecay: own?.weightDecay ?? config.weightDecay,
          recipe: balancesSources(config) ? { ...own?.recipe, balanceSources: true } : own?.recipe,
          seed: runSeed,
          crop: config.crop,
          augment: config.augment,
          checkpointPath,
          resume: config.resume,
          logPath: join(dir, "log.jsonl"),
          onProgress: (log) => config.onEpoch?.(arch, f, log),
          onBatch: (p) => config.onBatch?.(arch, f, p),
          signal: config.signal,
        });
        const crop = config.crop, batchSize = config.batchSize;
        const valProbs = await predictStage1(model, held.images, { crop, batchSize });
        const testProbs = await predictStage1(model, test.images, { crop, batchSize });
        await saveLearnerOutputs(valPath, {
          files: held.files,
          labels: held.labels,
          probs: valProbs,
          learner: arch,
          fold: f,
        });
        await saveLearnerOutputs(testPath, {
          files: test.files,
          labels: test.labels,
          probs: testProbs,
          learner: arch,
          fold: f,
        });
        const val = fl.metrics.classificationReport(held.labels, valProbs),
          testReport = fl.metrics.classificationReport(test.labels, testProbs);
        say(
          `${arch} fold ${f}: held-out macro-F1 ${val.macroF1.toFixed(3)}, test macro-F1 ${
            testReport.macroF1.toFixed(3)
          }`,
        );
        results.push({ arch, fold: f, trained: true, valPath, testPath, val, test: testReport });
      } catch (err) {
        throw new Error(`${arch} fold ${f}: ${(err as Error).message}`, { cause: err });
      } finally {
        model.dispose();
      }
    }
  }
  return results;
}
