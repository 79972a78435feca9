// torchvision's EfficientNet (V1) with the same module tree, so `stateDict()` keys and shapes equal
// torchvision's `state_dict()`, and AI-Covid (Bai et al., Radiology 2020: its slice-level classifier,
// EfficientNet-B4 features flattened into a stack of dense layers) on top of it.
//
// EfficientNet: features.0 = Conv(3, c0, 3, stride 2) + BN + SiLU; features.1..7 = the seven MBConv stages
// of torchvision's table, channels scaled by widthMult (rounded to multiples of 8 as torchvision's
// _make_divisible) and block counts by depthMult (rounded up); features.8 = Conv 1x1 to 4x the last
// channels + BN + SiLU; avgpool AdaptiveAvgPool2d(1); classifier = Dropout, Linear. An MBConv block:
// block = [expand 1x1 Conv+BN+SiLU when the ratio is not 1] depthwise kxk Conv+BN+SiLU, SqueezeExcitation
// (avgpool, fc1 1x1 conv to max(1, in/4) with bias, SiLU, fc2 back, sigmoid, times the input), project 1x1
// Conv+BN; with stride 1 and equal channels the result goes through stochastic depth (probability 0.2 x the
// block's index / the number of blocks, per sample) and is added to the input. Batch norm eps 1e-5, momentum
// 0.1 (B0-B4). efficientnet_b4: width 1.4, depth 1.8, dropout 0.4; 19,341,616 parameters with 1000 classes.
// Tiny (`scale: "tiny"`): width 0.25, depth 0.25 (7 blocks, 8-80 channels, head 320).
//
// AI-Covid: `features` as EfficientNet-B4's (same keys: torchvision's ImageNet weights load into it), then
// `head`: Flatten (7x7x1792 = 87,808 features at 224x224, no global pooling) -> Linear 256 -> ReLU -> BN ->
// Dropout 0.5 -> Linear 128 -> BN -> Dropout 0.5 -> Linear 64 -> BN -> Dropout 0.5 -> Linear 32 -> BN ->
// Dropout 0.5 -> Linear 16 -> ReLU -> BN -> Linear numClasses (keys head.<i>, PyTorch's default Linear init;
// the original has a sigmoid for 2 classes, here softmax cross-entropy for numClasses). Tiny: the tiny
// EfficientNet's features, dense widths 32, 16, 16, 8, 8 and no dropout (TINY_HEAD_DROPOUT, 0).
import type { Tensor } from "../autograd/tensor.ts";
import { fillInPlace } from "../kernels/basic.ts";
import { add, mul, sigmoid, silu } from "../kernels/elementwise.ts";
import { flatten } from "../kernels/view.ts";
import { uniform_ } from "../nn/init.ts";
import { AdaptiveAvgPool2d, BatchNorm1d, BatchNorm2d, type Conv2d } from "../nn/cnn_layers.ts";
import { Dropout, Linear, ReLU, Sequential, SiLU, StochasticDepth } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";
import { type ModelInit, type ModelOptions, modelScale, torchvisionConv } from "./resnet.ts";

/** One row of torchvision's MBConv table before width and depth scaling. */
export interface MBConvStage {
  /** Expansion of the block's input channels (1 or 6). */
  expandRatio: number;
  /** Depthwise kernel side (3 or 5). */
  kernel: number;
  /** Stride of the stage's first block (its other blocks have stride 1). */
  stride: number;
  /** Input channels of the stage's first block. */
  inputChannels: number;
  /** Output channels of every block of the stage. */
  outChannels: number;
  /** Blocks in the stage. */
  numLayers: number;
}

/** torchvision's EfficientNet-B0 table, which every V1 variant scales. */
export const EFFICIENTNET_STAGES: readonly MBConvStage[] = [
  [1, 3, 1, 32, 16, 1],
  [6, 3, 2, 16, 24, 2],
  [6, 5, 2, 24, 40, 2],
  [6, 3, 2, 40, 80, 3],
  [6, 5, 1, 80, 112, 3],
  [6, 5, 2, 112, 192, 4],
  [6, 3, 1, 192, 320, 1],
].map(([expandRatio, kernel, stride, inputChannels, outChannels, numLayers]) => ({
  expandRatio,
  kernel,
  stride,
  inputChannels,
  outChannels,
  numLayers,
}));

/** An EfficientNet V1 architecture (torchvision's arguments). */
export interface EfficientNetConfig {
  /** Channel multiplier (B4: 1.4). */
  widthMult: number;
  /** Block-count multiplier (B4: 1.8). */
  depthMult: number;
  /** Probability of the classifier's Dropout (B4: 0.4). */
  dropout: number;
  /** Largest stochastic-depth probability, reached by the last block (default 0.2). */
  stochasticDepthProb?: number;
  /** Outputs of the classifier (default 1000). */
  numClasses?: number;
  /** The table to scale (default {@link EFFICIENTNET_STAGES}). */
  stages?: readonly MBConvStage[];
}

/** torchvision's _make_divisible: the nearest multiple of 8 (at least 8), never more than 10% below v. */
export function makeDivisible(v: number, divisor = 8): number {
  let rounded = Math.max(divisor, Math.floor((v + divisor / 2) / divisor) * divisor);
  if (rounded < 0.9 * v) rounded += divisor;
  return rounded;
}

/** A stage scaled as torchvision's MBConvConfig does. */
function scaleStage(s: MBConvStage, widthMult: number, depthMult: number): MBConvStage {
  return {
    ...s,
    inputChannels: makeDivisible(s.inputChannels * widthMult),
    outChannels: makeDivisible(s.outChannels * widthMult),
    numLayers: Math.ceil(s.numLayers * depthMult),
  };
}

/** torchvision's Conv2dNormActivation: conv (no bias), BatchNorm2d, then SiLU unless `activation` is false. */
function convBnAct(
  inC: number,
  outC: number,
  k: number,
  init: ModelInit,
  options: { stride?: number; groups?: number; activation?: boolean } = {},
): Sequential {
  const layers: Module[] = [
    torchvisionConv(inC, outC, k, options.stride ?? 1, options.groups ?? 1, init),
    new BatchNorm2d(outC),
  ];
  if (options.activation ?? true) layers.push(new SiLU());
  return new Sequential(...layers);
}

/** torchvision.ops.SqueezeExcitation with SiLU and sigmoid: x times a per-channel gate from its mean. */
export class SqueezeExcitation extends Module {
  /** Mean over the map, [N, C, 1, 1]. */
  readonly avgpool: AdaptiveAvgPool2d;
  /** 1x1 conv C -> squeeze, with bias. */
  readonly fc1: Conv2d;
  /** 1x1 conv squeeze -> C, with bias. */
  readonly fc2: Conv2d;
  /** Gates for `channels` channels through `squeeze` hidden ones. */
  constructor(channels: number, squeeze: number, init: ModelInit = {}) {
    super();
    this.avgpool = this.registerModule("avgpool", new AdaptiveAvgPool2d(1));
    this.fc1 = this.registerModule("fc1", torchvisionConv(channels, squeeze, 1, 1, 1, init, true));
    this.fc2 = this.registerModule("fc2", torchvisionConv(squeeze, channels, 1, 1, 1, init, true));
  }

  /** sigmoid(fc2(silu(fc1(mean(x))))) * x, same shape as x [N, C, H, W]. */
  forward(x: Tensor): Tensor {
    const gate = sigmoid(this.fc2.forward(silu(this.fc1.forward(this.avgpool.forward(x)))));
    return mul(gate, x);
  }
}

/** torchvision's MBConv (see the file's description). */
export class MBConv extends Module {
  /** Expand (when the ratio is not 1), depthwise, squeeze-excitation, project. */
  readonly block: Sequential;
  /** Drops the residual branch per sample in training (only used with the residual connection). */
  readonly stochasticDepth: StochasticDepth;
  /** Whether the input is added back (stride 1, same channels). */
  readonly residual: boolean;
  /** A block of `stage`'s shape from `inC` channels with `stride`, dropping its branch with `sdProb`. */
  constructor(stage: MBConvStage, inC: number, stride: number, sdProb: number, init: ModelInit = {}) {
    super();
    const expanded = makeDivisible(inC * stage.expandRatio);
    const layers: Module[] = [];
    if (expanded !== inC) layers.push(convBnAct(inC, expanded, 1, init));
    layers.push(
      convBnAct(expanded, expanded, stage.kernel, init, { stride, groups: expanded }),
      new SqueezeExcitation(expanded, Math.max(1, Math.floor(inC / 4)), init),
      convBnAct(expanded, stage.outChannels, 1, init, { activation: false }),
    );
    this.block = this.registerModule("block", new Sequential(...layers));
    this.stochasticDepth = this.registerModule("stochastic_depth", new StochasticDepth(sdProb));
    this.residual = stride === 1 && inC === stage.outChannels;
  }

  /** The block's output, plus the input (through stochastic depth) when residual. */
  forward(x: Tensor): Tensor {
    const y = this.block.forward(x);
    return this.residual ? add(this.stochasticDepth.forward(y), x) : y;
  }
}

/** The features of an EfficientNet: stem, the scaled MBConv stages, the 1x1 head conv; and their width. */
function efficientNetFeatures(c: Required<EfficientNetConfig>, init: ModelInit): [Sequential, number] {
  const stages = c.stages.map((s) => scaleStage(s, c.widthMult, c.depthMult));
  const total = stages.reduce((a, s) => a + s.numLayers, 0);
  const layers: Module[] = [convBnAct(3, stages[0].inputChannels, 3, init, { stride: 2 })];
  let index = 0;
  for (const s of stages) {
    const blocks: Module[] = [];
    for (let b = 0; b < s.numLayers; b++) {
      const sdProb = (c.stochasticDepthProb * index++) / total;
      blocks.push(
        new MBConv(s, b === 0 ? s.inputChannels : s.outChannels, b === 0 ? s.stride : 1, sdProb, init),
      );
    }
    layers.push(new Sequential(...blocks));
  }
  const last = stages[stages.length - 1].outChannels, width = 4 * last;
  layers.push(convBnAct(last, width, 1, init));
  return [new Sequential(...layers), width];
}

/** torchvision's init for a Linear of the head: U(-1/sqrt(out), 1/sqrt(out)), bias 0. */
function torchvisionLinear(inF: number, outF: number, init: ModelInit): Linear {
  const l = new Linear(inF, outF, { generator: init.generator });
  if ((init.init ?? "torchvision") === "torchvision") {
    const range = 1 / Math.sqrt(outF);
    uniform_(l.weight, -range, range, init.generator);
    fillInPlace(l.bias!, 0);
  }
  return l;
}

/** torchvision.models.EfficientNet (V1; see the file's description). */
export class EfficientNet extends Module {
  /** Stem, seven MBConv stages, head conv (keys `features.<i>`). */
  readonly features: Sequential;
  /** Global average pool. */
  readonly avgpool: AdaptiveAvgPool2d;
  /** Dropout, Linear (keys `classifier.1`). */
  readonly classifier: Sequential;
  /** The config with every default filled in. */
  readonly config: Required<EfficientNetConfig>;
  /** Builds and initialises the network as torchvision does, seeded by `init.generator`. */
  constructor(config: EfficientNetConfig, init: ModelInit = {}) {
    super();
    const c: Required<EfficientNetConfig> = {
      stochasticDepthProb: 0.2,
      numClasses: 1000,
      stages: EFFICIENTNET_STAGES,
      ...config,
    };
    this.config = c;
    const [features, width] = efficientNetFeatures(c, init);
    this.features = this.registerModule("features", features);
    this.avgpool = this.registerModule("avgpool", new AdaptiveAvgPool2d(1));
    this.classifier = this.registerModule(
      "classifier",
      new Sequential(new Dropout(c.dropout), torchvisionLinear(width, c.numClasses, init)),
    );
  }

  /** The head conv's map [B, 4 x last channels, H/32, W/32] (what a class activation map uses). */
  featureMaps(x: Tensor): Tensor {
    return this.features.forward(x);
  }

  /** Logits of feature maps: pool, flatten, classifier. */
  classify(maps: Tensor): Tensor {
    return this.classifier.forward(flatten(this.avgpool.forward(maps), 1));
  }

  /** Logits [N, numClasses] for images [N, 3, H, W]. */
  forward(x: Tensor): Tensor {
    return this.classify(this.featureMaps(x));
  }
}

const EFFICIENTNET_B4 = { widthMult: 1.4, depthMult: 1.8, dropout: 0.4 };
const EFFICIENTNET_TINY = { widthMult: 0.25, depthMult: 0.25, dropout: 0.4 };

/**
 * torchvision.models.efficientnet_b4 (19,341,616 parameters with 1000 classes); `scale: "tiny"` gives width
 * 0.25, depth 0.25.
 * @throws Error when `scale` is neither "full" nor "tiny".
 */
export function efficientnet_b4(options: ModelOptions = {}): EfficientNet {
  const scale = modelScale("efficientnet_b4", options.scale);
  return new EfficientNet({
    ...(scale === "full" ? EFFICIENTNET_B4 : EFFICIENTNET_TINY),
    numClasses: options.numClasses ?? 1000,
  }, options);
}

/** An AI-Covid architecture: the EfficientNet trunk and the dense head. */
export interface AICovidConfig {
  /** The trunk (its classifier and pooling are not built). */
  trunk: Omit<EfficientNetConfig, "numClasses" | "dropout">;
  /** Widths of the five hidden dense layers (full: 256, 128, 64, 32, 16). */
  hidden: number[];
  /** Side of the square input the head is sized for (224: the trunk's map is 7x7). */
  inputSize: number;
  /** Outputs of the last Linear. */
  numClasses: number;
  /** Probability of the four Dropouts (default 0.5). */
  dropout?: number;
}

/** The side of the trunk's map for an input side: five stride-2 convolutions, each ceil(side / 2). */
function trunkSide(inputSize: number): number {
  let side = inputSize;
  for (let i = 0; i < 5; i++) side = Math.ceil(side / 2);
  return side;
}

/** AI-Covid (see the file's description): EfficientNet features, flattened, into the dense head. */
export class AICovid extends Module {
  /** EfficientNet's features (keys as torchvision's `features.<i>`). */
  readonly features: Sequential;
  /** The dense head (keys `head.<i>`). */
  readonly head: Sequential;
  /** The config with every default filled in. */
  readonly config: Required<AICovidConfig>;
  /**
   * Builds the network: the trunk initialised as torchvision's, the head with PyTorch's defaults.
   * @throws Error when `hidden` does not list 5 widths or inputSize is not positive.
   */
  constructor(config: AICovidConfig, init: ModelInit = {}) {
    super();
    const c: Required<AICovidConfig> = { dropout: 0.5, ...config };
    if (c.hidden.length !== 5 || c.hidden.some((h) => !Number.isInteger(h) || h < 1)) {
      throw new Error(`AICovid: hidden must list 5 positive widths, got ${JSON.stringify(c.hidden)}`);
    }
    if (!Number.isInteger(c.inputSize) || c.inputSize < 1) {
      throw new Error(`AICovid: inputSize must be a positive integer, got ${c.inputSize}`);
    }
    this.config = c;
    const trunk: Required<EfficientNetConfig> = {
      stochasticDepthProb: 0.2,
      stages: EFFICIENTNET_STAGES,
      ...c.trunk,
      dropout: 0,
      numClasses: 0,
    };
    const [features, width] = efficientNetFeatures(trunk, init);
    this.features = this.registerModule("features", features);
    const side = trunkSide(c.inputSize);
    const [h1, h2, h3, h4, h5] = c.hidden;
    const g = { generator: init.generator };
    const dense = (i: number, o: number) => new Linear(i, o, g);
    this.head = this.registerModule(
      "head",
      new Sequential(
        dense(width * side * side, h1),
        new ReLU(),
        new BatchNorm1d(h1),
        new Dropout(c.dropout),
        dense(h1, h2),
        new BatchNorm1d(h2),
        new Dropout(c.dropout),
        dense(h2, h3),
        new BatchNorm1d(h3),
        new Dropout(c.dropout),
        dense(h3, h4),
        new BatchNorm1d(h4),
        new Dropout(c.dropout),
        dense(h4, h5),
        new ReLU(),
        new BatchNorm1d(h5),
        dense(h5, c.numClasses),
      ),
    );
  }

  /** The trunk's map [B, 4 x last channels, side, side] (what a class activation map uses). */
  featureMaps(x: Tensor): Tensor {
    return this.features.forward(x);
  }

  /** Logits of feature maps: flatten, the dense head. */
  classify(maps: Tensor): Tensor {
    return this.head.forward(flatten(maps, 1));
  }

  /** Logits [N, numClasses] for images [N, 3, inputSize, inputSize]. */
  forward(x: Tensor): Tensor {
    return this.classify(this.featureMaps(x));
  }
}

/** Options of {@link aicovid}: the learners' options plus the input size its head is built for. */
export interface AICovidOptions extends ModelOptions {
  /** Input side the head is sized for (default 224 full, 64 tiny). */
  inputSize?: number;
  /** Dropout between the dense layers (default 0.5 full, {@link TINY_HEAD_DROPOUT} tiny). */
  dropout?: number;
}

/**
 * The tiny AI-Covid's dropout between its dense layers: none (the original's 0.5 at full size). At 0.5 the
 * four dropouts of a head 8-16 units wide leave 4-8 units each and move the logits about as much as the
 * images do (`deno task health`); in the README's experiment the tiny AI-Covid stayed near chance. Chosen
 * on the held-out folds' macro-F1 (stage 1 alone, two seeds): 0.374 and 0.371 at 0.1, 0.455 and 0.504 at 0.
 */
export const TINY_HEAD_DROPOUT = 0;

/**
 * AI-Covid on EfficientNet-B4 (`scale: "tiny"`: on the tiny EfficientNet, dense widths 32, 16, 16, 8, 8,
 * dropout {@link TINY_HEAD_DROPOUT}).
 * @throws Error when `scale` is neither "full" nor "tiny".
 */
export function aicovid(options: AICovidOptions = {}): AICovid {
  const scale = modelScale("aicovid", options.scale);
  const full = scale === "full";
  return new AICovid({
    trunk: full ? EFFICIENTNET_B4 : EFFICIENTNET_TINY,
    hidden: full ? [256, 128, 64, 32, 16] : [32, 16, 16, 8, 8],
    dropout: options.dropout ?? (full ? 0.5 : TINY_HEAD_DROPOUT),
    inputSize: options.inputSize ?? (full ? 224 : 64),
    numClasses: options.numClasses ?? 1000,
  }, options);
}

/** Plain-text descriptions of the tiny EfficientNet and AI-Covid (`scale: "tiny"`). */
export const EFFICIENTNET_TINY_CONFIGS = {
  efficientnet_b4: "EfficientNet V1, width 0.25, depth 0.25 (7 MBConv blocks, 8-80 channels, head conv 320)",
  aicovid:
    "AI-Covid on the tiny EfficientNet, dense widths 32-16-16-8-8, no dropout, for 64x64 inputs (2x2x320 flattened)",
} as const;
