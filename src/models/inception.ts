// torchvision 0.14's Inception3 (inception_v3) with the same module tree, so `stateDict()` keys and shapes
// equal torchvision's `state_dict()`: BasicConv2d = conv (no bias) + BN (eps 0.001) + ReLU with keys
// `<name>.conv.weight`, `<name>.bn.*`; Conv2d_1a_3x3 .. Conv2d_4a_3x3, Mixed_5b .. Mixed_7c (InceptionA-E with
// torchvision's branch names), AuxLogits (InceptionAux: conv0, conv1, fc), fc.
//
// Full size (inception_v3): 24,354,536 parameters with numClasses 4 and aux logits, 21,793,764 without.
// Tiny (`scale: "tiny"`): see INCEPTION_TINY_CONFIG: every channel count / 8, one Mixed module of each
// type (Mixed_5b A, Mixed_6a B, Mixed_6b C, AuxLogits, Mixed_7a D, Mixed_7b E), Conv2d_1a_3x3 with stride 1
// instead of 2 and AuxLogits.conv1 1x1 instead of 5x5, so that 64x64 images work in every mode.
//
// Outputs. torchvision's Inception3 returns (logits, aux) in training mode when aux_logits is set and logits
// otherwise. Here `forward(x)` always returns the logits alone (and skips the aux head), and
// `forwardWithAux(x)` returns `{ logits, aux }` in either mode (aux is null without aux logits), so a
// training loop that wants torchvision's loss `loss(logits) + 0.4 * loss(aux)` calls forwardWithAux.
//
// Smallest input (square, H = W; see `inceptionMinInputSize`):
//   full: 75x75 for forward (torchvision's min_size) and 299x299 for forwardWithAux (the aux head's 5x5 avg
//         pool with stride 3 followed by its 5x5 conv needs a 17x17 map after Mixed_6e);
//   tiny: 39x39 for forward, 55x55 for forwardWithAux.
import type { Tensor } from "../autograd/tensor.ts";
import { tensor } from "../kernels/basic.ts";
import { normal_ } from "../nn/init.ts";
import { cat } from "../kernels/concat.ts";
import { add, mul } from "../kernels/elementwise.ts";
import { adaptiveAvgPool2d, avgPool2d, maxPool2d } from "../kernels/pool.ts";
import { flatten } from "../kernels/view.ts";
import { AdaptiveAvgPool2d, BatchNorm2d, Conv2d, convBatchNorm, MaxPool2d } from "../nn/cnn_layers.ts";
import { Dropout, type InitOptions, Linear } from "../nn/layers.ts";
import { Module, type TensorRecord } from "../nn/module.ts";
import { modelScale } from "./resnet.ts";

/** Which Inception block a Mixed module is: InceptionA .. InceptionE. */
export type MixedKind = "A" | "B" | "C" | "D" | "E";
/** [name, kind, extra]: extra is pool_features for A, channels_7x7 for C (full-size values), else 0. */
export type MixedSpec = readonly [string, MixedKind, number];

/** An Inception3 architecture: torchvision's arguments plus the knobs the tiny variant changes. */
export interface InceptionConfig {
  /** Outputs of fc (and of AuxLogits.fc). */
  numClasses: number;
  /** Build the AuxLogits head. */
  auxLogits: boolean;
  /** torchvision's transform_input: rescale ImageNet-normalised inputs first (see `Inception3.transform`). */
  transformInput: boolean;
  /** Every channel count of torchvision's model is divided by this (1: full size). */
  divisor: number;
  /** The Mixed modules in order; AuxLogits reads the input of the first D (or the last output without D). */
  mixed: readonly MixedSpec[];
  /** Stride of Conv2d_1a_3x3 (2 in torchvision). */
  stemStride: number;
  /** Kernel of AuxLogits.conv1 (5 in torchvision). */
  auxKernel: number;
  /** Dropout before fc (0.5). */
  dropout: number;
}

/** Options of `inception_v3`. */
export interface InceptionOptions extends InitOptions {
  /** Outputs of fc and AuxLogits.fc (default 1000). */
  numClasses?: number;
  /** Build AuxLogits (default true, as torchvision). */
  auxLogits?: boolean;
  /** torchvision's transform_input: maps ImageNet-normalised inputs to the (x - 0.5) / 0.5 scale. */
  transformInput?: boolean;
  /** "full": torchvision's inception_v3; "tiny": INCEPTION_TINY_CONFIG. */
  scale?: "full" | "tiny";
}

/** torchvision's eleven Mixed modules, Mixed_5b .. Mixed_7c. */
export const INCEPTION_FULL_MIXED: readonly MixedSpec[] = [
  ["Mixed_5b", "A", 32],
  ["Mixed_5c", "A", 64],
  ["Mixed_5d", "A", 64],
  ["Mixed_6a", "B", 0],
  ["Mixed_6b", "C", 128],
  ["Mixed_6c", "C", 160],
  ["Mixed_6d", "C", 160],
  ["Mixed_6e", "C", 192],
  ["Mixed_7a", "D", 0],
  ["Mixed_7b", "E", 0],
  ["Mixed_7c", "E", 0],
];

/** The tiny variant's Mixed modules: one of each kind, under torchvision's names. */
export const INCEPTION_TINY_MIXED: readonly MixedSpec[] = [
  ["Mixed_5b", "A", 32],
  ["Mixed_6a", "B", 0],
  ["Mixed_6b", "C", 128],
  ["Mixed_7a", "D", 0],
  ["Mixed_7b", "E", 0],
];

/** The architecture of inception_v3 at each scale (numClasses, auxLogits, transformInput from the options). */
export const INCEPTION_V3_CONFIGS: Record<
  "full" | "tiny",
  Omit<InceptionConfig, "numClasses" | "auxLogits" | "transformInput">
> = {
  full: { divisor: 1, mixed: INCEPTION_FULL_MIXED, stemStride: 2, auxKernel: 5, dropout: 0.5 },
  tiny: { divisor: 8, mixed: INCEPTION_TINY_MIXED, stemStride: 1, auxKernel: 1, dropout: 0.5 },
};

/**
 * inception_v3({ scale: "tiny" }): channel counts / 8 (stem 4, 4, 8, 10, 24; Mixed outputs 32 (A), 92 (B),
 * 96 (C), 160 (D), 256 (E); aux head 16 -> 96 -> classes), one Mixed module per type, Conv2d_1a_3x3 stride 1,
 * AuxLogits.conv1 1x1; 154,732 parameters with numClasses 4 and aux logits (151,048 without). Smallest input 39x39 (forward),
 * 55x55 (forwardWithAux).
 */
export const INCEPTION_TINY_CONFIG =
  "Inception3 layout, channels / 8, Mixed_5b (A), Mixed_6a (B), Mixed_6b (C), AuxLogits, Mixed_7a (D), Mixed_7b (E), Conv2d_1a_3x3 stride 1, AuxLogits.conv1 1x1; 154,732 parameters with 4 classes; inputs >= 39x39 (>= 55x55 with aux)";

// torchvision's init_weights: trunc_normal_(std, a=-2, b=2) on conv and linear weights (a plain normal here:
// the bounds lie 20 or more standard deviations out); BN weight 1, bias 0.

/** Geometry and init of a `BasicConv2d`. */
export interface ConvSpec {
  /** One side or [kh, kw]. */
  kernelSize: number | [number, number];
  /** Default 1. */
  stride?: number;
  /** Zero padding, one number or [ph, pw] (default 0). */
  padding?: number | [number, number];
  /** Init std (0.1; 0.01 for AuxLogits.conv1). */
  std?: number;
}

/** torchvision.models.inception.BasicConv2d: conv (no bias) -> BN (eps 0.001) -> ReLU. */
export class BasicConv2d extends Module {
  /** The convolution, no bias, weight N(0, spec.std). */
  readonly conv: Conv2d;
  /** BatchNorm2d with eps 0.001. */
  readonly bn: BatchNorm2d;
  /** A conv `inChannels` -> `outChannels` shaped by `spec`, then its BN. */
  constructor(inChannels: number, outChannels: number, spec: ConvSpec, init: InitOptions = {}) {
    super();
    this.conv = this.registerModule(
      "conv",
      new Conv2d(inChannels, outChannels, spec.kernelSize, {
        stride: spec.stride ?? 1,
        padding: spec.padding ?? 0,
        bias: false,
        ...init,
      }),
    );
    normal_(this.conv.weight, spec.std ?? 0.1, init.generator);
    this.bn = this.registerModule("bn", new BatchNorm2d(outChannels, { eps: 0.001 }));
  }

  /** relu(bn(conv(x))) for x [N, inChannels, H, W]: [N, outChannels, H', W']. */
  forward(x: Tensor): Tensor {
    return convBatchNorm(this.conv, this.bn, x, { relu: true });
  }
}

type Width = (c: number) => number;

/** A module built of named BasicConv2d children (Inception3 and every Mixed block). */
export abstract class BasicConvOwner extends Module {
  /** `b(name, in, out, spec)`: a BasicConv2d registered under `name`. */
  protected convMaker(init: InitOptions): (name: string, i: number, o: number, s: ConvSpec) => BasicConv2d {
    return (name, i, o, s) => this.registerModule(name, new BasicConv2d(i, o, s, init));
  }
}

/** A Mixed module (InceptionA .. InceptionE): its output channel count is known at construction. */
export abstract class InceptionBlock extends BasicConvOwner {
  /** Channels of the block's output (the sum over its concatenated branches). */
  abstract readonly outChannels: number;
}

const chain = (x: Tensor, ...ms: Module[]): Tensor => ms.reduce((h, m) => m.forward(h), x);

/**
 * torchvision.models.inception.InceptionA (Mixed_5b .. 5d): 1x1, 5x5, double 3x3 and pooled 1x1 branches,
 * concatenated; keeps H and W. Channel counts below are full-size ones (divided by the divisor in tiny).
 */
export class InceptionA extends InceptionBlock {
  /** 64 + 64 + 96 + poolFeatures. */
  readonly outChannels: number;
  /** 1x1 conv cin -> 64. */
  readonly branch1x1: BasicConv2d;
  /** 1x1 conv cin -> 48. */
  readonly branch5x5_1: BasicConv2d;
  /** 5x5 conv (padding 2) 48 -> 64. */
  readonly branch5x5_2: BasicConv2d;
  /** 1x1 conv cin -> 64. */
  readonly branch3x3dbl_1: BasicConv2d;
  /** 3x3 conv (padding 1) 64 -> 96. */
  readonly branch3x3dbl_2: BasicConv2d;
  /** 3x3 conv (padding 1) 96 -> 96. */
  readonly branch3x3dbl_3: BasicConv2d;
  /** 1x1 conv cin -> poolFeatures after a 3x3 average pool (stride 1, padding 1). */
  readonly branch_pool: BasicConv2d;
  /** A block over `cin` channels; `w` maps a full-size channel count to this model's. */
  constructor(cin: number, poolFeatures: number, w: Width, init: InitOptions = {}) {
    super();
    const b = this.convMaker(init);
    this.branch1x1 = b("branch1x1", cin, w(64), { kernelSize: 1 });
    this.branch5x5_1 = b("branch5x5_1", cin, w(48), { kernelSize: 1 });
    this.branch5x5_2 = b("branch5x5_2", w(48), w(64), { kernelSize: 5, padding: 2 });
    this.branch3x3dbl_1 = b("branch3x3dbl_1", cin, w(64), { kernelSize: 1 });
    this.branch3x3dbl_2 = b("branch3x3dbl_2", w(64), w(96), { kernelSize: 3, padding: 1 });
    this.branch3x3dbl_3 = b("branch3x3dbl_3", w(96), w(96), { kernelSize: 3, padding: 1 });
    this.branch_pool = b("branch_pool", cin, poolFeatures, { kernelSize: 1 });
    this.outChannels = w(64) + w(64) + w(96) + poolFeatures;
  }

  /** The four branches of x [N, cin, H, W], concatenated: [N, outChannels, H, W]. */
  forward(x: Tensor): Tensor {
    return cat([
      this.branch1x1.forward(x),
      chain(x, this.branch5x5_1, this.branch5x5_2),
      chain(x, this.branch3x3dbl_1, this.branch3x3dbl_2, this.branch3x3dbl_3),
      this.branch_pool.forward(avgPool2d(x, { kernelSize: 3, stride: 1, padding: 1 })),
    ], 1);
  }
}

/**
 * torchvision.models.inception.InceptionB (Mixed_6a): a grid reduction, stride-2 3x3, double 3x3 and
 * max-pool branches concatenated. Channel counts below are full-size ones.
 */
export class InceptionB extends InceptionBlock {
  /** 384 + 96 + cin. */
  readonly outChannels: number;
  /** 3x3 conv stride 2 cin -> 384. */
  readonly branch3x3: BasicConv2d;
  /** 1x1 conv cin -> 64. */
  readonly branch3x3dbl_1: BasicConv2d;
  /** 3x3 conv (padding 1) 64 -> 96. */
  readonly branch3x3dbl_2: BasicConv2d;
  /** 3x3 conv stride 2 96 -> 96. */
  readonly branch3x3dbl_3: BasicConv2d;
  /** A block over `cin` channels; `w` maps a full-size channel count to this model's. */
  constructor(cin: number, w: Width, init: InitOptions = {}) {
    super();
    const b = this.convMaker(init);
    this.branch3x3 = b("branch3x3", cin, w(384), { kernelSize: 3, stride: 2 });
    this.branch3x3dbl_1 = b("branch3x3dbl_1", cin, w(64), { kernelSize: 1 });
    this.branch3x3dbl_2 = b("branch3x3dbl_2", w(64), w(96), { kernelSize: 3, padding: 1 });
    this.branch3x3dbl_3 = b("branch3x3dbl_3", w(96), w(96), { kernelSize: 3, stride: 2 });
    this.outChannels = w(384) + w(96) + cin;
  }

  /**
   * The branches of x [N, cin, H, W], concatenated: [N, outChannels, H', W'] with
   * H' = floor((H - 3) / 2) + 1.
   */
  forward(x: Tensor): Tensor {
    return cat([
      this.branch3x3.forward(x),
      chain(x, this.branch3x3dbl_1, this.branch3x3dbl_2, this.branch3x3dbl_3),
      maxPool2d(x, { kernelSize: 3, stride: 2 }),
    ], 1);
  }
}

/**
 * torchvision.models.inception.InceptionC (Mixed_6b .. 6e): 1x1, factorised 7x7, double factorised 7x7 and
 * pooled 1x1 branches, concatenated; keeps H and W. c7 is channels_7x7; counts below are full-size ones.
 */
export class InceptionC extends InceptionBlock {
  /** 4 * 192. */
  readonly outChannels: number;
  /** 1x1 conv cin -> 192. */
  readonly branch1x1: BasicConv2d;
  /** 1x1 conv cin -> c7. */
  readonly branch7x7_1: BasicConv2d;
  /** 1x7 conv c7 -> c7. */
  readonly branch7x7_2: BasicConv2d;
  /** 7x1 conv c7 -> 192. */
  readonly branch7x7_3: BasicConv2d;
  /** 1x1 conv cin -> c7. */
  readonly branch7x7dbl_1: BasicConv2d;
  /** 7x1 conv c7 -> c7. */
  readonly branch7x7dbl_2: BasicConv2d;
  /** 1x7 conv c7 -> c7. */
  readonly branch7x7dbl_3: BasicConv2d;
  /** 7x1 conv c7 -> c7. */
  readonly branch7x7dbl_4: BasicConv2d;
  /** 1x7 conv c7 -> 192. */
  readonly branch7x7dbl_5: BasicConv2d;
  /** 1x1 conv cin -> 192 after a 3x3 average pool (stride 1, padding 1). */
  readonly branch_pool: BasicConv2d;
  /** A block over `cin` channels with `c7` (already scaled) in the 7x7 branches; `w` scales the rest. */
  constructor(cin: number, c7: number, w: Width, init: InitOptions = {}) {
    super();
    const b = this.convMaker(init);
    const k17: ConvSpec = { kernelSize: [1, 7], padding: [0, 3] };
    const k71: ConvSpec = { kernelSize: [7, 1], padding: [3, 0] };
    this.branch1x1 = b("branch1x1", cin, w(192), { kernelSize: 1 });
    this.branch7x7_1 = b("branch7x7_1", cin, c7, { kernelSize: 1 });
    this.branch7x7_2 = b("branch7x7_2", c7, c7, k17);
    this.branch7x7_3 = b("branch7x7_3", c7, w(192), k71);
    this.branch7x7dbl_1 = b("branch7x7dbl_1", cin, c7, { kernelSize: 1 });
    this.branch7x7dbl_2 = b("branch7x7dbl_2", c7, c7, k71);
    this.branch7x7dbl_3 = b("branch7x7dbl_3", c7, c7, k17);
    this.branch7x7dbl_4 = b("branch7x7dbl_4", c7, c7, k71);
    this.branch7x7dbl_5 = b("branch7x7dbl_5", c7, w(192), k17);
    this.branch_pool = b("branch_pool", cin, w(192), { kernelSize: 1 });
    this.outChannels = 4 * w(192);
  }

  /** The four branches of x [N, cin, H, W], concatenated: [N, outChannels, H, W]. */
  forward(x: Tensor): Tensor {
    return cat([
      this.branch1x1.forward(x),
      chain(x, this.branch7x7_1, this.branch7x7_2, this.branch7x7_3),
      chain(
        x,
        this.branch7x7dbl_1,
        this.branch7x7dbl_2,
        this.branch7x7dbl_3,
        this.branch7x7dbl_4,
        this.branch7x7dbl_5,
      ),
      this.branch_pool.forward(avgPool2d(x, { kernelSize: 3, stride: 1, padding: 1 })),
    ], 1);
  }
}

/**
 * torchvision.models.inception.InceptionD (Mixed_7a): a grid reduction, 3x3, 7x7-then-3x3 (both stride 2)
 * and max-pool branches concatenated. Channel counts below are full-size ones.
 */
export class InceptionD extends InceptionBlock {
  /** 320 + 192 + cin. */
  readonly outChannels: number;
  /** 1x1 conv cin -> 192. */
  readonly branch3x3_1: BasicConv2d;
  /** 3x3 conv stride 2 192 -> 320. */
  readonly branch3x3_2: BasicConv2d;
  /** 1x1 conv cin -> 192. */
  readonly branch7x7x3_1: BasicConv2d;
  /** 1x7 conv 192 -> 192. */
  readonly branch7x7x3_2: BasicConv2d;
  /** 7x1 conv 192 -> 192. */
  readonly branch7x7x3_3: BasicConv2d;
  /** 3x3 conv stride 2 192 -> 192. */
  readonly branch7x7x3_4: BasicConv2d;
  /** A block over `cin` channels; `w` maps a full-size channel count to this model's. */
  constructor(cin: number, w: Width, init: InitOptions = {}) {
    super();
    const b = this.convMaker(init);
    this.branch3x3_1 = b("branch3x3_1", cin, w(192), { kernelSize: 1 });
    this.branch3x3_2 = b("branch3x3_2", w(192), w(320), { kernelSize: 3, stride: 2 });
    this.branch7x7x3_1 = b("branch7x7x3_1", cin, w(192), { kernelSize: 1 });
    this.branch7x7x3_2 = b("branch7x7x3_2", w(192), w(192), { kernelSize: [1, 7], padding: [0, 3] });
    this.branch7x7x3_3 = b("branch7x7x3_3", w(192), w(192), { kernelSize: [7, 1], padding: [3, 0] });
    this.branch7x7x3_4 = b("branch7x7x3_4", w(192), w(192), { kernelSize: 3, stride: 2 });
    this.outChannels = w(320) + w(192) + cin;
  }

  /**
   * The branches of x [N, cin, H, W], concatenated: [N, outChannels, H', W'] with
   * H' = floor((H - 3) / 2) + 1.
   */
  forward(x: Tensor): Tensor {
    return cat([
      chain(x, this.branch3x3_1, this.branch3x3_2),
      chain(x, this.branch7x7x3_1, this.branch7x7x3_2, this.branch7x7x3_3, this.branch7x7x3_4),
      maxPool2d(x, { kernelSize: 3, stride: 2 }),
    ], 1);
  }
}

/**
 * torchvision.models.inception.InceptionE (Mixed_7b, 7c): 1x1, split 3x3, double split 3x3 and pooled 1x1
 * branches, concatenated; keeps H and W. Channel counts below are full-size ones.
 */
export class InceptionE extends InceptionBlock {
  /** 320 + 2 * 384 + 2 * 384 + 192 = 2048. */
  readonly outChannels: number;
  /** 1x1 conv cin -> 320. */
  readonly branch1x1: BasicConv2d;
  /** 1x1 conv cin -> 384. */
  readonly branch3x3_1: BasicConv2d;
  /** 1x3 conv 384 -> 384 on branch3x3_1's output. */
  readonly branch3x3_2a: BasicConv2d;
  /** 3x1 conv 384 -> 384 on branch3x3_1's output. */
  readonly branch3x3_2b: BasicConv2d;
  /** 1x1 conv cin -> 448. */
  readonly branch3x3dbl_1: BasicConv2d;
  /** 3x3 conv (padding 1) 448 -> 384. */
  readonly branch3x3dbl_2: BasicConv2d;
  /** 1x3 conv 384 -> 384 on branch3x3dbl_2's output. */
  readonly branch3x3dbl_3a: BasicConv2d;
  /** 3x1 conv 384 -> 384 on branch3x3dbl_2's output. */
  readonly branch3x3dbl_3b: BasicConv2d;
  /** 1x1 conv cin -> 192 after a 3x3 average pool (stride 1, padding 1). */
  readonly branch_pool: BasicConv2d;
  /** A block over `cin` channels; `w` maps a full-size channel count to this model's. */
  constructor(cin: number, w: Width, init: InitOptions = {}) {
    super();
    const b = this.convMaker(init);
    const k13: ConvSpec = { kernelSize: [1, 3], padding: [0, 1] };
    const k31: ConvSpec = { kernelSize: [3, 1], padding: [1, 0] };
    this.branch1x1 = b("branch1x1", cin, w(320), { kernelSize: 1 });
    this.branch3x3_1 = b("branch3x3_1", cin, w(384), { kernelSize: 1 });
    this.branch3x3_2a = b("branch3x3_2a", w(384), w(384), k13);
    this.branch3x3_2b = b("branch3x3_2b", w(384), w(384), k31);
    this.branch3x3dbl_1 = b("branch3x3dbl_1", cin, w(448), { kernelSize: 1 });
    this.branch3x3dbl_2 = b("branch3x3dbl_2", w(448), w(384), { kernelSize: 3, padding: 1 });
    this.branch3x3dbl_3a = b("branch3x3dbl_3a", w(384), w(384), k13);
    this.branch3x3dbl_3b = b("branch3x3dbl_3b", w(384), w(384), k31);
    this.branch_pool = b("branch_pool", cin, w(192), { kernelSize: 1 });
    this.outChannels = w(320) + 4 * w(384) + w(192);
  }

  /** The branches of x [N, cin, H, W], concatenated: [N, outChannels, H, W]. */
  forward(x: Tensor): Tensor {
    const b3 = this.branch3x3_1.forward(x);
    const bd = chain(x, this.branch3x3dbl_1, this.branch3x3dbl_2);
    return cat([
      this.branch1x1.forward(x),
      cat([this.branch3x3_2a.forward(b3), this.branch3x3_2b.forward(b3)], 1),
      cat([this.branch3x3dbl_3a.forward(bd), this.branch3x3dbl_3b.forward(bd)], 1),
      this.branch_pool.forward(avgPool2d(x, { kernelSize: 3, stride: 1, padding: 1 })),
    ], 1);
  }
}

/** torchvision.models.inception.InceptionAux: avg pool 5/3 -> conv0 1x1 -> conv1 (5x5) -> global pool -> fc. */
export class InceptionAux extends Module {
  /** 1x1 conv cin -> 128 (full size). */
  readonly conv0: BasicConv2d;
  /** kernel x kernel conv 128 -> 768 (full size), init std 0.01. */
  readonly conv1: BasicConv2d;
  /** Linear 768 (full size) -> numClasses, weight N(0, 0.001). */
  readonly fc: Linear;
  /** A head over `cin` channels; `kernel` is conv1's size (5 in torchvision), `w` scales channel counts. */
  constructor(cin: number, numClasses: number, w: Width, kernel = 5, init: InitOptions = {}) {
    super();
    this.conv0 = this.registerModule("conv0", new BasicConv2d(cin, w(128), { kernelSize: 1 }, init));
    this.conv1 = this.registerModule(
      "conv1",
      new BasicConv2d(w(128), w(768), { kernelSize: kernel, std: 0.01 }, init),
    );
    this.fc = this.registerModule("fc", new Linear(w(768), numClasses, init));
    normal_(this.fc.weight, 0.001, init.generator);
  }

  /** Aux logits [N, numClasses] of the feature map [N, cin, H, W] it taps. */
  forward(x: Tensor): Tensor {
    const h = chain(avgPool2d(x, { kernelSize: 5, stride: 3 }), this.conv0, this.conv1);
    return this.fc.forward(flatten(adaptiveAvgPool2d(h, [1, 1]), 1));
  }
}

const down3 = (h: number, s = 2) => Math.floor((h - 3) / s) + 1;

/**
 * The smallest square input (H = W) a configuration accepts: for `forward`, or for `forwardWithAux` with
 * `withAux` (full: 75 and 299; tiny: 39 and 55).
 * @throws Error when no size below 4096 fits.
 */
export function inceptionMinInputSize(
  config: Pick<InceptionConfig, "mixed" | "stemStride" | "auxKernel">,
  withAux = false,
): number {
  for (let size = 3; size < 4096; size++) if (inputFits(config, size, withAux)) return size;
  throw new Error("inceptionMinInputSize: no input size below 4096 fits");
}

function inputFits(
  config: Pick<InceptionConfig, "mixed" | "stemStride" | "auxKernel">,
  size: number,
  withAux: boolean,
): boolean {
  let h = down3(size, config.stemStride); // Conv2d_1a_3x3
  if (h < 1) return false;
  h -= 2; // Conv2d_2a_3x3 (2b keeps the size)
  if (h < 3) return false;
  h = down3(h) - 2; // maxpool1, Conv2d_4a_3x3
  if (h < 3) return false;
  h = down3(h); // maxpool2
  const auxAt = auxPosition(config.mixed);
  for (let i = 0; i < config.mixed.length; i++) {
    if (withAux && i === auxAt && !auxFits(h, config.auxKernel)) return false;
    const kind = config.mixed[i][1];
    if (kind === "B" || kind === "D") {
      if (h < 3) return false;
      h = down3(h);
    }
  }
  if (withAux && auxAt === config.mixed.length && !auxFits(h, config.auxKernel)) return false;
  return h >= 1;
}

const auxFits = (h: number, kernel: number) => h >= 5 && Math.floor((h - 5) / 3) + 1 >= kernel;

/** Index of the Mixed module whose input AuxLogits reads: the first D, else the end. */
function auxPosition(mixed: readonly MixedSpec[]): number {
  const d = mixed.findIndex((m) => m[1] === "D");
  return d < 0 ? mixed.length : d;
}

function checkConfig(c: InceptionConfig): void {
  for (
    const [k, v] of [["numClasses", c.numClasses], ["divisor", c.divisor], ["stemStride", c.stemStride], [
      "auxKernel",
      c.auxKernel,
    ]] as const
  ) {
    if (!Number.isInteger(v) || v <= 0) {
      throw new Error(`Inception3: ${k} must be a positive integer, got ${v}`);
    }
  }
  if (!(c.dropout >= 0 && c.dropout < 1)) {
    throw new Error(`Inception3: dropout must be in [0, 1), got ${c.dropout}`);
  }
  if (!Array.isArray(c.mixed) || c.mixed.length === 0) {
    throw new Error("Inception3: mixed must list at least one module");
  }
  const names = new Set<string>();
  for (const [name, kind] of c.mixed) {
    if (!["A", "B", "C", "D", "E"].includes(kind)) {
      throw new Error(`Inception3: ${name} has unknown kind ${JSON.stringify(kind)}`);
    }
    if (names.has(name)) throw new Error(`Inception3: module name ${name} appears twice`);
    names.add(name);
  }
}

// Per-channel affine of transform_input: x_c * (std_c / 0.5) + (mean_c - 0.5) / 0.5.
const TRANSFORM_SCALE = [0.229 / 0.5, 0.224 / 0.5, 0.225 / 0.5];
const TRANSFORM_SHIFT = [(0.485 - 0.5) / 0.5, (0.456 - 0.5) / 0.5, (0.406 - 0.5) / 0.5];

/**
 * A state dict of an Inception3 that expects torchvision's transform_input (every torchvision ImageNet
 * checkpoint does: torchvision turns it on whenever it loads weights) rewritten for an Inception3 built
 * without it, as FLANNEL's learner is. Exact: the first convolution has no padding, so
 * conv(a x + s) = conv_{w a}(x) + sum(w s), and that per-channel constant is what the batch norm after it
 * removes (with the batch mean in training; subtracted from its running mean here for evaluation).
 *
 * @throws {Error} when the dict lacks `Conv2d_1a_3x3.conv.weight` [C, 3, k, k] or `Conv2d_1a_3x3.bn.running_mean` [C].
 */
export function foldTransformInput(dict: Record<string, TensorRecord>): Record<string, TensorRecord> {
  const wKey = "Conv2d_1a_3x3.conv.weight", mKey = "Conv2d_1a_3x3.bn.running_mean";
  const w = dict[wKey], mean = dict[mKey];
  if (!w || w.shape.length !== 4 || w.shape[1] !== 3 || !mean || mean.shape.join() !== String(w.shape[0])) {
    throw new Error(
      `foldTransformInput: an Inception3 state dict needs ${wKey} [C, 3, k, k] and ${mKey} [C]`,
    );
  }
  const [c, , kh, kw] = w.shape, window = kh * kw;
  const weight = Float32Array.from(w.data as ArrayLike<number>);
  const runningMean = Float32Array.from(mean.data as ArrayLike<number>);
  for (let o = 0; o < c; o++) {
    let shift = 0;
    for (let i = 0; i < 3; i++) {
      for (let k = 0; k < window; k++) {
        const at = (o * 3 + i) * window + k;
        shift += weight[at] * TRANSFORM_SHIFT[i];
        weight[at] *= TRANSFORM_SCALE[i];
      }
    }
    runningMean[o] -= shift;
  }
  return {
    ...dict,
    [wKey]: { dtype: "F32", shape: w.shape, data: weight },
    [mKey]: { dtype: "F32", shape: mean.shape, data: runningMean },
  };
}

/** torchvision.models.Inception3 (see the comment at the top of this file for outputs and input sizes). */
export class Inception3 extends BasicConvOwner {
  /** 3x3 conv 3 -> 32 with stride stemStride (channel counts here are full-size ones). */
  readonly Conv2d_1a_3x3: BasicConv2d;
  /** 3x3 conv 32 -> 32. */
  readonly Conv2d_2a_3x3: BasicConv2d;
  /** 3x3 conv (padding 1) 32 -> 64. */
  readonly Conv2d_2b_3x3: BasicConv2d;
  /** 3x3 max pool, stride 2. */
  readonly maxpool1: MaxPool2d;
  /** 1x1 conv 64 -> 80. */
  readonly Conv2d_3b_1x1: BasicConv2d;
  /** 3x3 conv 80 -> 192. */
  readonly Conv2d_4a_3x3: BasicConv2d;
  /** 3x3 max pool, stride 2. */
  readonly maxpool2: MaxPool2d;
  /** The Mixed modules as [name, block] in config.mixed's order, each registered under its name. */
  readonly mixed: [string, InceptionBlock][] = [];
  /** The auxiliary classifier; null when built with auxLogits false. */
  readonly AuxLogits: InceptionAux | null = null;
  /** Adaptive average pool to 1x1. */
  readonly avgpool: AdaptiveAvgPool2d;
  /** Dropout (config.dropout) before fc. */
  readonly dropout: Dropout;
  /** Linear last Mixed channels (2048 at full size) -> numClasses, weight N(0, 0.1). */
  readonly fc: Linear;
  /** Smallest square side `forward` and `featureMaps` accept (inceptionMinInputSize). */
  readonly minInputSize: number;
  /** Smallest square side `forwardWithAux` accepts when the model has AuxLogits. */
  readonly minInputSizeWithAux: number;
  private readonly auxAt: number;
  /**
   * Builds and initialises the network: conv and linear weights normal (std 0.1; 0.01 and 0.001 in the aux
   * head), BN weight 1 bias 0.
   * @throws Error when a size is not a positive integer, dropout is outside [0, 1), or `mixed` is empty,
   * names an unknown kind or repeats a name.
   */
  constructor(
    /** The architecture it was built from. */
    readonly config: InceptionConfig,
    init: InitOptions = {},
  ) {
    super();
    checkConfig(config);
    const d = config.divisor;
    const w: Width = (c) => Math.max(1, Math.floor(c / d));
    const b = this.convMaker(init);
    this.Conv2d_1a_3x3 = b("Conv2d_1a_3x3", 3, w(32), { kernelSize: 3, stride: config.stemStride });
    this.Conv2d_2a_3x3 = b("Conv2d_2a_3x3", w(32), w(32), { kernelSize: 3 });
    this.Conv2d_2b_3x3 = b("Conv2d_2b_3x3", w(32), w(64), { kernelSize: 3, padding: 1 });
    this.maxpool1 = this.registerModule("maxpool1", new MaxPool2d(3, { stride: 2 }));
    this.Conv2d_3b_1x1 = b("Conv2d_3b_1x1", w(64), w(80), { kernelSize: 1 });
    this.Conv2d_4a_3x3 = b("Conv2d_4a_3x3", w(80), w(192), { kernelSize: 3 });
    this.maxpool2 = this.registerModule("maxpool2", new MaxPool2d(3, { stride: 2 }));
    this.auxAt = auxPosition(config.mixed);
    let c = w(192);
    const addAux = () => {
      (this as { AuxLogits: InceptionAux | null }).AuxLogits = this.registerModule(
        "AuxLogits",
        new InceptionAux(c, config.numClasses, w, config.auxKernel, init),
      );
    };
    config.mixed.forEach(([name, kind, extra], i) => {
      if (config.auxLogits && i === this.auxAt) addAux();
      const m = kind === "A"
        ? new InceptionA(c, w(extra), w, init)
        : kind === "B"
        ? new InceptionB(c, w, init)
        : kind === "C"
        ? new InceptionC(c, w(extra), w, init)
        : kind === "D"
        ? new InceptionD(c, w, init)
        : new InceptionE(c, w, init);
      this.mixed.push([name, this.registerModule(name, m)]);
      c = m.outChannels;
    });
    if (config.auxLogits && this.auxAt === config.mixed.length) addAux();
    this.avgpool = this.registerModule("avgpool", new AdaptiveAvgPool2d([1, 1]));
    this.dropout = this.registerModule("dropout", new Dropout(config.dropout));
    this.fc = this.registerModule("fc", new Linear(c, config.numClasses, init));
    normal_(this.fc.weight, 0.1, init.generator);
    this.minInputSize = inceptionMinInputSize(config, false);
    this.minInputSizeWithAux = inceptionMinInputSize(config, true);
  }

  /** torchvision's _transform_input when transformInput is set (else x itself). */
  transform(x: Tensor): Tensor {
    if (!this.config.transformInput) return x;
    const a = tensor(new Float32Array(TRANSFORM_SCALE), [1, 3, 1, 1]);
    const s = tensor(new Float32Array(TRANSFORM_SHIFT), [1, 3, 1, 1]);
    return add(mul(x, a), s);
  }

  /** Throws unless `x` is images [N, 3, H, W] at least as large as the mode (`withAux` or not) needs. */
  private check(x: Tensor, withAux: boolean): void {
    if (x.rank !== 4 || x.shape[1] !== 3) {
      throw new Error(`Inception3: expected images [N, 3, H, W], got shape [${x.shape.join(", ")}]`);
    }
    const min = withAux ? this.minInputSizeWithAux : this.minInputSize;
    if (x.shape[2] < min || x.shape[3] < min) {
      throw new Error(
        `Inception3: ${withAux ? "forwardWithAux needs" : "needs"} images of at least ${min}x${min}, got ${
          x.shape[2]
        }x${x.shape[3]}`,
      );
    }
  }

  /** Everything before the head: the last Mixed block's output, and the aux logits when asked for. */
  private trunk(x: Tensor, withAux: boolean): { maps: Tensor; aux: Tensor | null } {
    let h = chain(
      this.transform(x),
      this.Conv2d_1a_3x3,
      this.Conv2d_2a_3x3,
      this.Conv2d_2b_3x3,
      this.maxpool1,
      this.Conv2d_3b_1x1,
      this.Conv2d_4a_3x3,
      this.maxpool2,
    );
    let aux: Tensor | null = null;
    const wantAux = withAux && this.AuxLogits !== null;
    this.mixed.forEach(([, m], i) => {
      if (wantAux && i === this.auxAt) aux = this.AuxLogits!.forward(h);
      h = m.forward(h);
    });
    if (wantAux && this.auxAt === this.mixed.length) aux = this.AuxLogits!.forward(h);
    return { maps: h, aux };
  }

  /**
   * Logits [N, numClasses] of images [N, 3, H, W]; never runs the aux head (torchvision's eval-mode output).
   * @throws Error for another shape or images smaller than minInputSize.
   */
  forward(x: Tensor): Tensor {
    this.check(x, false);
    return this.classify(this.trunk(x, false).maps);
  }

  /** The last Mixed block's feature map [B, C, h, w] (what a class activation map uses). */
  featureMaps(x: Tensor): Tensor {
    this.check(x, false);
    return this.trunk(x, false).maps;
  }

  /** Logits of feature maps: the head after `featureMaps`. */
  classify(maps: Tensor): Tensor {
    return this.fc.forward(flatten(this.dropout.forward(this.avgpool.forward(maps)), 1));
  }

  /**
   * `{ logits, aux }` in either mode (torchvision's training-mode InceptionOutputs); `aux` is null when the
   * model was built without aux logits.
   */
  forwardWithAux(x: Tensor): { logits: Tensor; aux: Tensor | null } {
    this.check(x, this.AuxLogits !== null);
    const { maps, aux } = this.trunk(x, true);
    return { logits: this.classify(maps), aux };
  }
}

/**
 * torchvision.models.inception_v3(num_classes, aux_logits, transform_input): 24,354,536 parameters with
 * numClasses 4 and aux logits, 21,793,764 without. `scale: "tiny"` is INCEPTION_TINY_CONFIG.
 * @throws Error when `scale` is neither "full" nor "tiny".
 */
export function inception_v3(options: InceptionOptions = {}): Inception3 {
  const scale = modelScale("inception_v3", options.scale);
  return new Inception3({
    ...INCEPTION_V3_CONFIGS[scale],
    numClasses: options.numClasses ?? 1000,
    auxLogits: options.auxLogits ?? true,
    transformInput: options.transformInput ?? false,
  }, options);
}
