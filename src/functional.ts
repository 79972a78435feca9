/**
 * `fl.F`: every differentiable op by its PyTorch-like name (torch.nn.functional and the torch tensor
 * functions), with the option and argument types they take.
 *
 * @module
 */
export {
  abs,
  add,
  addScalar,
  div,
  exp,
  log,
  mul,
  neg,
  relu,
  scale,
  sigmoid,
  silu,
  sqrt,
  sub,
  tanh,
} from "./kernels/elementwise.ts";
export { mean, sum } from "./kernels/reduce.ts";
export { linear, matmul } from "./kernels/matmul.ts";
export { logSoftmax, softmax } from "./kernels/softmax.ts";
export { outer, weightedSum } from "./kernels/ensemble.ts";
export {
  crossEntropy,
  type CrossEntropyOptions,
  focalLoss,
  type FocalOptions,
  l1l2Penalty,
  type PenaltyOptions,
  type Reduction,
  type Targets,
} from "./kernels/loss.ts";
export { dropout, stochasticDepth } from "./kernels/random.ts";
export { flatten, reshape } from "./kernels/view.ts";
export { batchNorm2d, type BatchNormOptions, foldBatchNorm } from "./kernels/batchnorm.ts";
export {
  adaptiveAvgPool2d,
  avgPool2d,
  type AvgPool2dOptions,
  maxPool2d,
  type MaxPool2dOptions,
} from "./kernels/pool.ts";
export { cat } from "./kernels/concat.ts";
export type { Pair } from "./kernels/shape.ts";
export {
  conv2d,
  conv2dFused,
  type Conv2dOptions,
  type ConvEpilogue,
  setWasmConvAlgorithm,
  type WasmConvAlgorithm,
} from "./kernels/conv.ts";
export type { WinogradTile } from "./kernels/winograd.ts";
export { gatherRows } from "./kernels/gather.ts";
