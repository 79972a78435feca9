// FLANNEL on WebGPU: the public surface (see ../shared/API.md and README.md).
import "./src/autograd/tape.ts";

export { backendInfo, type BackendInfo, init, type InitOptions } from "./src/backend/device.ts";
export { liveTensorCount, noGrad, scope, Tensor, type TensorOptions } from "./src/autograd/tensor.ts";
export { full, intTensor, ones, tensor, zeros } from "./src/kernels/basic.ts";
export { Generator, manualSeed, rand, randn } from "./src/kernels/random.ts";
export { poolStats, syncDevice, trimPool } from "./src/backend/stats.ts";
export * as F from "./src/functional.ts";
export * as optim from "./src/optim/optimizers.ts";
export * as metrics from "./src/train/metrics.ts";
export * as nn from "./src/nn/index.ts";
export * as models from "./src/models/index.ts";
export * as train from "./src/train/index.ts";
export * as io from "./src/io/index.ts";
export * as data from "./src/train/data.ts";
