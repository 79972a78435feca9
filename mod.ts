/**
 * A deep-learning library for Deno and Bun on WebGPU (hand-written WGSL kernels) and on CPUs (WebAssembly
 * SIMD kernels on worker threads): tensors with reverse-mode autograd, the ops and layers of CNNs, Adam and
 * SGD, torchvision-exact ResNet/ResNeXt, VGG, DenseNet and Inception v3, safetensors and image I/O, chest
 * X-ray data sets with patient-disjoint splits, metrics and Grad-CAM.
 *
 * FLANNEL (Qiao et al., "Focal Loss Based Neural Network Ensemble for COVID-19 Detection"), the application
 * built on this library, is its own entry point: `flannel-webgpu/flannel` (`src/flannel/mod.ts`).
 *
 * @example Train one step
 * ```ts
 * import * as fl from "flannel-webgpu";
 * await fl.init(); // WebGPU where an adapter exists, else WebAssembly
 * const x = fl.randn([8, 3], { seed: 1 });
 * const w = fl.randn([4, 3], { seed: 2, requiresGrad: true });
 * await fl.scope(async () => {
 *   const loss = fl.F.crossEntropy(fl.F.linear(x, w), [0, 1, 2, 3, 0, 1, 2, 3]);
 *   loss.backward();
 *   console.log(await loss.item(), await w.grad!.toArray());
 * });
 * ```
 * @module
 */

export {
  type BackendInfo,
  backendInfo,
  type BackendName,
  finishProfile,
  init,
  type InitOptions,
} from "./src/backend/device.ts";
export {
  autocast,
  type BackwardOptions,
  type DType,
  liveTensorCount,
  noGrad,
  scope,
  Tensor,
  type TensorOptions,
} from "./src/autograd/tensor.ts";
export { cast, full, intTensor, ones, tensor, zeros } from "./src/kernels/basic.ts";
export {
  Generator,
  manualSeed,
  rand,
  randn,
  type RandomOptions,
  threefry2x32,
} from "./src/kernels/random.ts";
export { type PoolStats, poolStats, resetPoolPeak, syncDevice, trimPool } from "./src/backend/stats.ts";
export { type ProfileRow, startProfile, stopProfile } from "./src/backend/profile.ts";
/**
 * Functional ops by their PyTorch names (as torch.nn.functional and torch.*): element-wise and broadcasting
 * arithmetic, reductions, matmul/linear, conv2d, pooling, batch norm, softmax, dropout, cat, reshape and the
 * cross-entropy and focal losses. Every op records its gradient when an input requires one.
 */
export * as F from "./src/functional.ts";
/**
 * Layers as modules (torch.nn): Module with parameters, buffers and state dicts; Linear, Conv2d, BatchNorm2d,
 * the pooling layers, Dropout, Flatten, ReLU, Tanh and Sequential.
 */
export * as nn from "./src/nn/index.ts";
/** Optimizers (torch.optim): Adam and SGD, with device-side updates and state dicts for checkpoints. */
export * as optim from "./src/optim/optimizers.ts";
/** torchvision-exact CNNs: ResNet/ResNeXt, VGG, DenseNet and Inception v3, with tiny variants for tests. */
export * as models from "./src/models/index.ts";
/** safetensors weights, training checkpoints, image decoding and resizing, PNG output, atomic file writes. */
export * as io from "./src/io/index.ts";
/** Chest X-ray data sets (three layouts), patient-disjoint splits and batch preprocessing. */
export * as data from "./src/data/index.ts";
/**
 * Classification metrics following scikit-learn: per-class precision/recall/F1, ROC-AUC, average precision,
 * confusion matrices, and mean (std) over folds.
 */
export * as metrics from "./src/train/metrics.ts";
/**
 * Training helpers: the train step with its loss accumulated on the device, progress display, Grad-CAM and
 * PNG charts (`train.plots`).
 */
export * as train from "./src/train/index.ts";
/**
 * ONNX export by tracing (opset 17, dynamic batch): `onnx.exportModel` for one model, `onnx.Trace` for one
 * graph of several models; initializers inside the file or in an external data file beside it.
 */
export * as onnx from "./src/onnx/index.ts";
