// Convolutional-network layers with PyTorch's names, state-dict keys and default initialisations.
import type { Tensor } from "../autograd/tensor.ts";
import { intTensor, ones, zeros } from "../kernels/basic.ts";
import { batchNorm2d, incrementInPlace } from "../kernels/batchnorm.ts";
import { conv2d, type Conv2dOptions as ConvOptions } from "../kernels/conv.ts";
import {
  adaptiveAvgPool2d,
  avgPool2d,
  type AvgPool2dOptions,
  maxPool2d,
  type Pair,
  toPair,
} from "../kernels/pool.ts";
import { fmtShape } from "../kernels/shape.ts";
import { Module } from "./module.ts";
import { type InitOptions, uniformInit } from "./layers.ts";

function positiveInt(op: string, name: string, v: number): number {
  if (!Number.isInteger(v) || v <= 0) throw new Error(`${op}: ${name} must be a positive integer, got ${v}`);
  return v;
}

/** conv2d's options plus the layer's: whether it has a bias, and the generator of its initial weights. */
export interface Conv2dOptions extends ConvOptions, InitOptions {
  bias?: boolean;
}

/** torch.nn.Conv2d: weight [out, in / groups, kh, kw] and bias [out], both U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
export class Conv2d extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  readonly kernelSize: [number, number];
  readonly stride: [number, number];
  readonly padding: [number, number];
  readonly dilation: [number, number];
  readonly groups: number;
  constructor(
    readonly inChannels: number,
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

  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias, {
      stride: this.stride,
      padding: this.padding,
      dilation: this.dilation,
      groups: this.groups,
    });
  }
}

export interface BatchNorm2dOptions {
  eps?: number;
  momentum?: number;
  affine?: boolean;
  trackRunningStats?: boolean;
}

/**
 * torch.nn.BatchNorm2d: parameters weight (1) and bias (0) when affine; buffers running_mean (0),
 * running_var (1) and num_batches_tracked (int32 [1]) when tracking running statistics. Training mode
 * normalises with batch statistics and updates the buffers in place; eval mode uses the running ones.
 */
export class BatchNorm2d extends Module {
  readonly weight: Tensor | null;
  readonly bias: Tensor | null;
  readonly runningMean: Tensor | null;
  readonly runningVar: Tensor | null;
  readonly numBatchesTracked: Tensor | null;
  readonly eps: number;
  readonly momentum: number;
  constructor(readonly numFeatures: number, options: BatchNorm2dOptions = {}) {
    super();
    positiveInt("BatchNorm2d", "numFeatures", numFeatures);
    if ((options.momentum as unknown) === null) {
      throw new Error(
        "BatchNorm2d: momentum null (PyTorch's cumulative moving average) is not supported; give a number",
      );
    }
    this.eps = options.eps ?? 1e-5;
    this.momentum = options.momentum ?? 0.1;
    if (!Number.isFinite(this.eps) || this.eps < 0) {
      throw new Error(`BatchNorm2d: eps must be finite and >= 0, got ${this.eps}`);
    }
    if (!(this.momentum >= 0 && this.momentum <= 1)) {
      throw new Error(`BatchNorm2d: momentum must be a number in [0, 1], got ${this.momentum}`);
    }
    const affine = options.affine ?? true;
    this.weight = affine ? this.registerParameter("weight", ones([numFeatures])) : null;
    this.bias = affine ? this.registerParameter("bias", zeros([numFeatures])) : null;
    const track = options.trackRunningStats ?? true;
    this.runningMean = track ? this.registerBuffer("running_mean", zeros([numFeatures])) : null;
    this.runningVar = track ? this.registerBuffer("running_var", ones([numFeatures])) : null;
    this.numBatchesTracked = track ? this.registerBuffer("num_batches_tracked", intTensor([0], [1])) : null;
  }

  forward(x: Tensor): Tensor {
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
    });
    if (this.training && this.numBatchesTracked) incrementInPlace(this.numBatchesTracked);
    return out;
  }
}

export interface MaxPool2dLayerOptions {
  stride?: Pair;
  padding?: Pair;
  dilation?: Pair;
  ceilMode?: boolean;
}

export class MaxPool2d extends Module {
  constructor(readonly kernelSize: Pair, readonly options: MaxPool2dLayerOptions = {}) {
    super();
    toPair("MaxPool2d", "kernelSize", kernelSize, 1);
  }

  forward(x: Tensor): Tensor {
    return maxPool2d(x, { kernelSize: this.kernelSize, ...this.options });
  }
}

export class AvgPool2d extends Module {
  constructor(readonly kernelSize: Pair, readonly options: Omit<AvgPool2dOptions, "kernelSize"> = {}) {
    super();
    toPair("AvgPool2d", "kernelSize", kernelSize, 1);
  }

  forward(x: Tensor): Tensor {
    return avgPool2d(x, { kernelSize: this.kernelSize, ...this.options });
  }
}

export class AdaptiveAvgPool2d extends Module {
  constructor(readonly outputSize: Pair) {
    super();
    toPair("AdaptiveAvgPool2d", "outputSize", outputSize, 1);
  }

  forward(x: Tensor): Tensor {
    return adaptiveAvgPool2d(x, this.outputSize);
  }
}
