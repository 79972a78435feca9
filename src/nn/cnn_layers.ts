// Convolutional-network layers with PyTorch's names, state-dict keys and default initialisations.
import { isGradEnabled, type Tensor } from "../autograd/tensor.ts";
import { intTensor, ones, zeros } from "../kernels/basic.ts";
import { batchNorm2d, foldBatchNorm, incrementInPlace } from "../kernels/batchnorm.ts";
import { conv2d, conv2dFused, type Conv2dOptions as ConvOptions } from "../kernels/conv.ts";
import { tracer } from "../onnx/trace.ts";
import {
  adaptiveAvgPool2d,
  avgPool2d,
  type AvgPool2dOptions,
  maxPool2d,
  type Pair,
  toPair,
} from "../kernels/pool.ts";
import { fmtShape } from "../kernels/shape.ts";
import { reshape } from "../kernels/view.ts";
import { Module } from "./module.ts";
import { type InitOptions, ReLU, uniformInit } from "./layers.ts";

function positiveInt(op: string, name: string, v: number): number {
  if (!Number.isInteger(v) || v <= 0) throw new Error(`${op}: ${name} must be a positive integer, got ${v}`);
  return v;
}

/** conv2d's options plus the layer's: whether it has a bias, and the generator of its initial weights. */
export interface Conv2dOptions extends ConvOptions, InitOptions {
  /** Learn an additive bias per output channel (default true). */
  bias?: boolean;
}

/** torch.nn.Conv2d: weight [out, in / groups, kh, kw] and bias [out], both U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
export class Conv2d extends Module {
  /** Parameter `weight`, [outChannels, inChannels / groups, kh, kw]. */
  readonly weight: Tensor;
  /** Parameter `bias`, [outChannels]; null when built with `bias: false`. */
  readonly bias: Tensor | null;
  /** [kh, kw]. */
  readonly kernelSize: [number, number];
  /** [sh, sw] (default [1, 1]). */
  readonly stride: [number, number];
  /** Zero padding [ph, pw] added on both sides (default [0, 0]). */
  readonly padding: [number, number];
  /** Spacing between kernel taps [dh, dw] (default [1, 1]). */
  readonly dilation: [number, number];
  /** Channel groups (default 1; inChannels for a depthwise conv). */
  readonly groups: number;
  /**
   * Builds the layer; `kernelSize` is one side or [kh, kw].
   * @throws Error when a size is not a positive integer or a channel count is not divisible by `groups`.
   */
  constructor(
    /** Channels C of the input [N, C, H, W]. */
    readonly inChannels: number,
    /** Channels of the output. */
    readonly outChannels: number,
    kernelSize: Pair,
    options: Conv2dOptions = {},
  ) {
    super();
    const op = "Conv2d";
    positiveInt(op, "inChannels", inChannels);
    positiveInt(op, "outChannels", outChannels);
    this.groups = positiveInt(op, "groups", options.groups ?? 1);
    if (inChannels % this.groups !== 0) {
      throw new Error(`${op}: inChannels (${inChannels}) must be divisible by groups (${this.groups})`);
    }
    if (outChannels % this.groups !== 0) {
      throw new Error(`${op}: outChannels (${outChannels}) must be divisible by groups (${this.groups})`);
    }
    this.kernelSize = toPair(op, "kernelSize", kernelSize, 1);
    this.stride = toPair(op, "stride", options.stride ?? 1, 1);
    this.padding = toPair(op, "padding", options.padding ?? 0, 0);
    this.dilation = toPair(op, "dilation", options.dilation ?? 1, 1);
    const [kh, kw] = this.kernelSize;
    const fanIn = (inChannels / this.groups) * kh * kw;
    this.weight = this.registerParameter(
      "weight",
      uniformInit([outChannels, inChannels / this.groups, kh, kw], fanIn, options),
    );
    this.bias = options.bias === false
      ? null
      : this.registerParameter("bias", uniformInit([outChannels], fanIn, options));
  }

  /** The convolution of x [N, inChannels, H, W]: [N, outChannels, H', W']. */
  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias, this.options());
  }

  /** With a BatchNorm2d next (and a ReLU after it): {@link convBatchNorm}, fused in inference. */
  override forwardInChain(x: Tensor, next: readonly Module[]): [Tensor, number] {
    const [bn, act] = next;
    if (!(bn instanceof BatchNorm2d) || bn instanceof BatchNorm1d) return super.forwardInChain(x, next);
    const relu = act instanceof ReLU;
    return [convBatchNorm(this, bn, x, { relu }), relu ? 2 : 1];
  }

  /** The layer's stride, padding, dilation and groups, as conv2d takes them. */
  options(): ConvOptions {
    return { stride: this.stride, padding: this.padding, dilation: this.dilation, groups: this.groups };
  }
}

/** Options of `BatchNorm2d`, as torch.nn.BatchNorm2d's keyword arguments. */
export interface BatchNorm2dOptions {
  /** Added to the variance before the square root (default 1e-5). */
  eps?: number;
  /**
   * Weight of the batch statistic in each running-statistics update, in [0, 1] (default 0.1); null
   * (PyTorch's cumulative average) is rejected.
   */
  momentum?: number;
  /** Learn a per-channel scale and shift (default true). */
  affine?: boolean;
  /** Keep running mean and variance for eval mode (default true). */
  trackRunningStats?: boolean;
}

/**
 * torch.nn.BatchNorm2d: parameters weight (1) and bias (0) when affine; buffers running_mean (0),
 * running_var (1) and num_batches_tracked (int32 [1]) when tracking running statistics. Training mode
 * normalises with batch statistics and updates the buffers in place; eval mode uses the running ones.
 */
export class BatchNorm2d extends Module {
  /** Parameter `weight` (per-channel scale) [numFeatures]; null without affine. */
  readonly weight: Tensor | null;
  /** Parameter `bias` (per-channel shift) [numFeatures]; null without affine. */
  readonly bias: Tensor | null;
  /** Buffer `running_mean` [numFeatures]: moving average of batch means; null without trackRunningStats. */
  readonly runningMean: Tensor | null;
  /**
   * Buffer `running_var` [numFeatures]: moving average of unbiased batch variances; null without
   * trackRunningStats.
   */
  readonly runningVar: Tensor | null;
  /**
   * Buffer `num_batches_tracked`, int32 [1], counting training-mode forwards; null without
   * trackRunningStats.
   */
  readonly numBatchesTracked: Tensor | null;
  /** Added to the variance before the square root. */
  readonly eps: number;
  /** Weight of the batch statistic in each running-statistics update. */
  readonly momentum: number;
  /**
   * Builds the layer for `numFeatures` channels.
   * @throws Error when numFeatures is not a positive integer, eps is negative or not finite, or momentum is
   * null or outside [0, 1].
   */
  constructor(
    /** Channels C of the input [N, C, H, W]. */
    readonly numFeatures: number,
    options: BatchNorm2dOptions = {},
  ) {
    super();
    const layer = new.target.name;
    positiveInt(layer, "numFeatures", numFeatures);
    if ((options.momentum as unknown) === null) {
      throw new Error(
        `${layer}: momentum null (PyTorch's cumulative moving average) is not supported; give a number`,
      );
    }
    this.eps = options.eps ?? 1e-5;
    this.momentum = options.momentum ?? 0.1;
    if (!Number.isFinite(this.eps) || this.eps < 0) {
      throw new Error(`${layer}: eps must be finite and >= 0, got ${this.eps}`);
    }
    if (!(this.momentum >= 0 && this.momentum <= 1)) {
      throw new Error(`${layer}: momentum must be a number in [0, 1], got ${this.momentum}`);
    }
    const affine = options.affine ?? true;
    this.weight = affine ? this.registerParameter("weight", ones([numFeatures])) : null;
    this.bias = affine ? this.registerParameter("bias", zeros([numFeatures])) : null;
    const track = options.trackRunningStats ?? true;
    this.runningMean = track ? this.registerBuffer("running_mean", zeros([numFeatures])) : null;
    this.runningVar = track ? this.registerBuffer("running_var", ones([numFeatures])) : null;
    this.numBatchesTracked = track ? this.registerBuffer("num_batches_tracked", intTensor([0], [1])) : null;
  }

  /**
   * Normalised x [N, numFeatures, H, W], same shape; in training mode also updates the running buffers.
   * @throws Error when `x` is not 4-D or has another channel count.
   */
  forward(x: Tensor): Tensor {
    return this.forwardThen(x, {});
  }

  /** With a ReLU next (DenseNet's norm-relu-conv): {@link forwardThen} with the ReLU, one op. */
  override forwardInChain(x: Tensor, next: readonly Module[]): [Tensor, number] {
    return next[0] instanceof ReLU && !(this instanceof BatchNorm1d)
      ? [this.forwardThen(x, { relu: true }), 1]
      : super.forwardInChain(x, next);
  }

  /**
   * relu(this(x) + residual), each where asked for, as one op (batchNorm2d's epilogue: it keeps x and the
   * output only, the memory of PyTorch's in-place add and ReLU, with the same values as the three in turn).
   * @throws Error as `forward`, and when `residual` is not shaped as x.
   */
  forwardThen(x: Tensor, then: { residual?: Tensor | null; relu?: boolean }): Tensor {
    if (x.rank !== 4) {
      throw new Error(`BatchNorm2d: expected a 4-D [N, C, H, W] input, got shape ${fmtShape(x.shape)}`);
    }
    if (x.shape[1] !== this.numFeatures) {
      throw new Error(
        `BatchNorm2d: expected ${this.numFeatures} channels, got input of shape ${fmtShape(x.shape)}`,
      );
    }
    const out = batchNorm2d(x, this.runningMean, this.runningVar, this.weight, this.bias, {
      training: this.training,
      momentum: this.momentum,
      eps: this.eps,
      residual: then.residual,
      relu: then.relu,
    });
    if (this.training && this.numBatchesTracked) incrementInPlace(this.numBatchesTracked);
    return out;
  }
}

/**
 * torch.nn.BatchNorm1d: BatchNorm2d's parameters, buffers and state-dict keys over [N, C] (statistics per
 * feature over the batch) or [N, C, L] (over the batch and L), as a dense layer's normalisation.
 */
export class BatchNorm1d extends BatchNorm2d {
  /**
   * Normalised x [N, numFeatures] or [N, numFeatures, L], same shape; in training mode also updates the
   * running buffers. A training-mode batch needs more than one value per feature, as PyTorch's.
   * @throws Error when `x` is not 2-D or 3-D or has another feature count.
   */
  override forward(x: Tensor): Tensor {
    if (x.rank !== 2 && x.rank !== 3) {
      throw new Error(
        `BatchNorm1d: expected a 2-D [N, C] or 3-D [N, C, L] input, got shape ${fmtShape(x.shape)}`,
      );
    }
    if (x.shape[1] !== this.numFeatures) {
      throw new Error(
        `BatchNorm1d: expected ${this.numFeatures} features, got input of shape ${fmtShape(x.shape)}`,
      );
    }
    const perFeature = x.shape[0] * (x.shape[2] ?? 1);
    if (this.training && perFeature < 2) {
      throw new Error(
        `BatchNorm1d: training needs more than 1 value per feature, got input of shape ${fmtShape(x.shape)}`,
      );
    }
    return reshape(super.forward(reshape(x, [x.shape[0], x.shape[1], x.shape[2] ?? 1, 1])), [...x.shape]);
  }
}

let fusedInference = true;

/**
 * Whether {@link convBatchNorm} fuses in eval mode under noGrad (default true): false runs the layers one
 * after another everywhere, as in training (the unfused reference, for benchmarks and tests). Returns the
 * previous setting.
 */
export function setFusedInference(enabled: boolean): boolean {
  const previous = fusedInference;
  fusedInference = enabled;
  return previous;
}

/** What {@link convBatchNorm} applies after the batch norm. */
export interface ConvBatchNormOptions {
  /** Added after the batch norm (a residual connection), shaped as the output. */
  residual?: Tensor | null;
  /** A ReLU last (default false). */
  relu?: boolean;
}

/**
 * relu(bn(conv(x)) + residual), the ReLU and residual where asked for: the pattern of every convolution in
 * ResNet, VGG-bn, Inception and DenseNet. Otherwise (training) the batch norm applies the residual and the
 * ReLU to its own output (BatchNorm2d.forwardThen), which is all it keeps with the convolution's output. In eval mode under noGrad (inference: predict, Grad-CAM's maps, the
 * bundle, the browser) the batch norm is folded into a per-channel scale and shift that the convolution's
 * GEMM applies with the residual and the ReLU while its outputs are in registers: one pass over memory
 * instead of four, and no weights rewritten (the fold costs one dispatch over C values). Training, recorded
 * gradients, ONNX tracing, a batch norm without running statistics or affine parameters, and
 * `setFusedInference(false)` run the layers in turn; both give PyTorch's values within float rounding.
 */
export function convBatchNorm(
  conv: Conv2d,
  bn: BatchNorm2d,
  x: Tensor,
  options: ConvBatchNormOptions = {},
): Tensor {
  const residual = options.residual ?? null;
  const { runningMean, runningVar, weight, bias } = bn;
  if (
    fusedInference && !bn.training && !isGradEnabled() && !tracer && runningMean && runningVar && weight &&
    bias
  ) {
    const [scale, shift] = foldBatchNorm(runningMean, runningVar, weight, bias, bn.eps, conv.bias);
    const out = conv2dFused(
      x,
      conv.weight,
      { scale, bias: shift, residual, relu: options.relu },
      conv.options(),
    );
    scale.dispose();
    shift.dispose();
    return out;
  }
  return bn.forwardThen(conv.forward(x), { residual, relu: options.relu });
}

/** Options of `MaxPool2d`: torch.nn.MaxPool2d's keyword arguments after kernel_size. */
export interface MaxPool2dLayerOptions {
  /** Window step, one number or [sh, sw] (default: kernelSize). */
  stride?: Pair;
  /** Implicit -infinity padding on each side; at most half the kernel size (default 0). */
  padding?: Pair;
  /** Spacing between window taps (default 1). */
  dilation?: Pair;
  /** Round the output size up instead of down (default false). */
  ceilMode?: boolean;
}

/** torch.nn.MaxPool2d: the maximum of each window, per channel; no parameters. */
export class MaxPool2d extends Module {
  /**
   * Builds the layer; the options are checked on each forward.
   * @throws Error when `kernelSize` is not a positive integer or a pair of them.
   */
  constructor(
    /** Window size, one side or [kh, kw]. */
    readonly kernelSize: Pair,
    /** Stride, padding, dilation and ceilMode of every forward. */
    readonly options: MaxPool2dLayerOptions = {},
  ) {
    super();
    toPair("MaxPool2d", "kernelSize", kernelSize, 1);
  }

  /** Max-pooled x [N, C, H, W]: [N, C, H', W']. */
  forward(x: Tensor): Tensor {
    return maxPool2d(x, { kernelSize: this.kernelSize, ...this.options });
  }
}

/** torch.nn.AvgPool2d: the mean of each window, per channel; no parameters. */
export class AvgPool2d extends Module {
  /**
   * Builds the layer; the options are checked on each forward.
   * @throws Error when `kernelSize` is not a positive integer or a pair of them.
   */
  constructor(
    /** Window size, one side or [kh, kw]. */
    readonly kernelSize: Pair,
    /** Stride (default kernelSize), padding, ceilMode, countIncludePad, divisorOverride. */
    readonly options: Omit<AvgPool2dOptions, "kernelSize"> = {},
  ) {
    super();
    toPair("AvgPool2d", "kernelSize", kernelSize, 1);
  }

  /** Average-pooled x [N, C, H, W]: [N, C, H', W']. */
  forward(x: Tensor): Tensor {
    return avgPool2d(x, { kernelSize: this.kernelSize, ...this.options });
  }
}

/**
 * torch.nn.AdaptiveAvgPool2d: averages [N, C, H, W] down to a fixed [N, C, oh, ow] whatever H and W (1 gives
 * global average pooling); no parameters.
 */
export class AdaptiveAvgPool2d extends Module {
  /**
   * Builds the layer.
   * @throws Error when `outputSize` is not a positive integer or a pair of them.
   */
  constructor(
    /** Output side, or [oh, ow]. */
    readonly outputSize: Pair,
  ) {
    super();
    toPair("AdaptiveAvgPool2d", "outputSize", outputSize, 1);
  }

  /** x [N, C, H, W] averaged to [N, C, oh, ow]. */
  forward(x: Tensor): Tensor {
    return adaptiveAvgPool2d(x, this.outputSize);
  }
}
