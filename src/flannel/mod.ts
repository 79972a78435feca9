/**
 * FLANNEL (Qiao et al., "Focal Loss Based Neural Network Ensemble for COVID-19 Detection") on this library:
 * the five base learners, stage 1 (fine-tuning each learner on every fold, out-of-fold outputs), stage 2
 * (the Neural Weight Module trained with focal loss, and the paper's baselines), the whole experiment with
 * Table 3 and the figures, prediction from a trained run, and the synthetic chest X-rays of the demo.
 *
 * It uses only the public library (`mod.ts`), as a user's own application would.
 *
 * @example Stage 2 on synthetic learner outputs
 * ```ts
 * import * as fl from "flannel-webgpu";
 * import * as flannel from "flannel-webgpu/flannel";
 * await fl.init();
 * const train = flannel.syntheticLearnerOutputs({ samples: 2000, seed: 1 });
 * const val = flannel.syntheticLearnerOutputs({ samples: 500, seed: 2 });
 * const run = await flannel.trainStage2(train, val, { method: "flannel", loss: "focal", epochs: 20 });
 * const probs = await flannel.predictStage2(run.model, val);
 * console.log(fl.metrics.classificationReport(val.labels, probs).macroF1);
 * ```
 * @module
 */
export {
  BASELINE_ARCHS,
  type BaselineArch,
  createLearner,
  isBaselineArch,
  isLearnerArch,
  isStage1Arch,
  LEARNER_ARCHS,
  LEARNER_TITLES,
  type LearnerArch,
  type LearnerOptions,
  type OwnRecipe,
  ownRecipe,
  type Stage1Arch,
} from "./learners.ts";
export {
  auditExperiment,
  auditMarkdown,
  type CalledCovid,
  type ExperimentAudit,
  type PairedComparison,
} from "./audit.ts";
export {
  Ensemble,
  type EnsembleShape,
  MLPStacking,
  type MLPStackingOptions,
  NeuralWeightModule,
  type NeuralWeightOptions,
  SoftVoting,
} from "./ensembles.ts";
export {
  LEARNER_OUTPUTS_FORMAT,
  type LearnerOutputsFile,
  loadLearnerOutputs,
  predictStage1,
  saveLearnerOutputs,
  type Stage1BatchProgress,
  type Stage1Config,
  type Stage1EpochLog,
  type Stage1Recipe,
  type Stage1Result,
  type Stage1Set,
  trainStage1,
} from "./stage1.ts";
export {
  findPretrained,
  loadPretrained,
  type LoadPretrainedOptions,
  pretrainedFiles,
  type PretrainedLoad,
  pretrainedMessage,
} from "./pretrained.ts";
export {
  loadTrainedLearner,
  runStage1Folds,
  stage1FoldDir,
  type Stage1FoldResult,
  type Stage1FoldsConfig,
} from "./stage1_folds.ts";
export {
  buildEnsemble,
  type EpochLog,
  inverseFrequencyAlpha,
  predictStage2,
  type Stage2Config,
  type Stage2Method,
  type Stage2Result,
  trainStage2,
  validateLearnerOutputs,
} from "./stage2.ts";
export {
  type CalibrationScores,
  type CalibrationSummary,
  calibrationTable,
  type FoldCalibration,
  type FoldEnsemble,
  foldEnsembleTable,
  foldMean,
  foldTemperature,
  type MethodResult,
  type MethodSpec,
  runStage2Experiment,
  runStage2Folds,
  STAGE2_METHODS,
  type Stage2ExperimentOptions,
  type Stage2ExperimentResult,
  type Stage2Fold,
  type Stage2FoldsOptions,
  subset,
  summarizeCalibration,
  table3,
  withoutProbabilities,
} from "./stage2_experiment.ts";
export {
  type ExperimentConfig,
  type ExperimentResult,
  runExperiment,
  stackLearnerOutputs,
  STAGE2_MODEL_FORMAT,
  stage2FoldsFromStage1,
  stage2ModelPath,
} from "./experiment.ts";
export {
  type Calibration,
  CALIBRATIONS,
  type Combiner,
  predictFiles,
  type PredictionResult,
  predictionsCsv,
  type PredictOptions,
  readCombiner,
  readRunSettings,
  runFolderModels,
  type RunSettings,
  type TrainedModels,
} from "./predict.ts";
export {
  checkFinalReady,
  jobIndex,
  type JobRecord,
  type JobState,
  jobStates,
  loadPlan,
  type Plan,
  PLAN_FORMAT,
  type PlanJob,
  planJobs,
  readJobRecord,
  runJob,
  savePlan,
  STALE_LOCK_SECONDS,
  takeJobLock,
} from "./jobs.ts";
export {
  Bundle,
  BUNDLE_FORMAT,
  BUNDLE_LEARNER_FORMAT,
  type BundleManifest,
  exportBundle,
  type ExportBundleOptions,
  loadBundle,
  SHIPPED_BUNDLE,
} from "./bundle.ts";
export { camFigure, writeFigures } from "./figures.ts";
export {
  buildWebApp,
  ISOLATION_HEADERS,
  MODEL_FILE,
  serveWebApp,
  type ServeWebOptions,
  type WebAppOptions,
  type WebFile,
  writeWebApp,
} from "./web/build.ts";
export type { Server } from "../platform/runtime.ts";
export { exportOnnx, type ExportOnnxOptions } from "./onnx.ts";
export {
  type LearnerOutputs,
  PAPER_CLASS_COUNTS,
  syntheticLearnerOutputs,
  type SyntheticOptions,
} from "./synthetic_outputs.ts";
export {
  DEFAULT_SYNTHETIC_SIZE,
  DEFAULT_SYNTHETIC_TOTAL,
  SYNTHETIC_SOURCE,
  syntheticClassCounts,
  type SyntheticXrayDataset,
  syntheticXrayDataset,
  type SyntheticXrayOptions,
  writeSyntheticPngs,
} from "./synthetic_xrays.ts";
