/**
 * `fl.nn`: modules with parameters and state dicts, and the layers built on the ops.
 *
 * @module
 */
export { forwardChain, Module, shapeFits, type StateDict, type TensorRecord } from "./module.ts";
export {
  Dropout,
  Flatten,
  type InitOptions,
  Linear,
  ReLU,
  Sequential,
  Sigmoid,
  SiLU,
  StochasticDepth,
  Tanh,
} from "./layers.ts";
export {
  AdaptiveAvgPool2d,
  AvgPool2d,
  BatchNorm1d,
  BatchNorm2d,
  type BatchNorm2dOptions,
  Conv2d,
  type Conv2dOptions,
  convBatchNorm,
  type ConvBatchNormOptions,
  MaxPool2d,
  type MaxPool2dLayerOptions,
  setFusedInference,
} from "./cnn_layers.ts";
