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
  type LearnerOutputs,
  PAPER_CLASS_COUNTS,
  syntheticLearnerOutputs,
  type SyntheticOptions,
} from "./synthetic.ts";
export {
  fileListHash,
  loadSplit,
  type PatientSplit,
  patientSplit,
  type PatientSplitOptions,
  saveSplit,
  type SplitRecord,
  stratifiedKFold,
  stratifiedSplit,
  type SubsampleSpec,
} from "./splits.ts";
export {
  type BatchOptions,
  ImageCache,
  IMAGENET_MEAN,
  IMAGENET_STD,
  loadImages,
  makeBatch,
  resizeShortSide,
} from "./preprocess.ts";
export {
  LEARNER_OUTPUTS_FORMAT,
  type LearnerOutputsFile,
  loadLearnerOutputs,
  predictStage1,
  saveLearnerOutputs,
  type Stage1BatchProgress,
  type Stage1Config,
  type Stage1EpochLog,
  type Stage1Result,
  type Stage1Set,
  trainStage1,
} from "./stage1.ts";
export {
  loadPretrained,
  loadTrainedLearner,
  runStage1Folds,
  stage1FoldDir,
  type Stage1FoldResult,
  type Stage1FoldsConfig,
} from "./stage1_folds.ts";
export { formatDuration, ProgressBar, progressLine } from "./progress.ts";
export {
  type ExperimentConfig,
  type ExperimentResult,
  runExperiment,
  stackLearnerOutputs,
  stage2FoldsFromStage1,
} from "./experiment.ts";
export {
  type MethodResult,
  type MethodSpec,
  runStage2Folds,
  STAGE2_METHODS,
  type Stage2Fold,
  table3,
  withoutProbabilities,
} from "./stage2_experiment.ts";
export { type CamModel, type ClassActivationMap, classActivationMap, isCamModel } from "./cam.ts";
export { predictFiles, type PredictionResult, readRunSettings, type RunSettings } from "./predict.ts";
export * as plots from "./plots.ts";
export { camFigure, writeFigures } from "./figures.ts";
export {
  DEFAULT_SYNTHETIC_SIZE,
  DEFAULT_SYNTHETIC_TOTAL,
  SYNTHETIC_SOURCE,
  syntheticClassCounts,
  type SyntheticXrayDataset,
  syntheticXrayDataset,
  type SyntheticXrayOptions,
  writeSyntheticPngs,
} from "./synthetic_images.ts";
