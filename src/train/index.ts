// `fl.train`: what any training loop needs besides ops and optimizers: the step with its loss accumulated on
// the device, progress display, Grad-CAM, and the PNG charts.
export {
  ACCUMULATION_HEADROOM,
  type AccumulationBudget,
  type AccumulationPlan,
  fitStepToMemory,
  microBatches,
  type PeakProbe,
  planAccumulation,
  type PreparableOptimizer,
  stepPeakBytes,
} from "./accumulate.ts";
export {
  LossScaler,
  type LossScalerOptions,
  type ScaledStep,
  type StepHealth,
  type Steppable,
  takeEpochLoss,
  trainStep,
  trainStepScaled,
} from "./step.ts";
export { formatDuration, ProgressBar, progressLine } from "./progress.ts";
export { type CamModel, type ClassActivationMap, classActivationMap, isCamModel } from "./cam.ts";
/** PNG charts: training curves, ROC and precision-recall curves, confusion matrices, bar charts and image grids. */
export * as plots from "./plots.ts";
