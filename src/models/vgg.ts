// torchvision's VGG with batch norm, with the same module tree, so `stateDict()` keys and shapes equal
// torchvision's `state_dict()`.
//
// Full size: vgg19_bn = torchvision cfg "E" [64,64,M,128,128,M,256x4,M,512x4,M,512x4,M], each number a
//   conv3x3 (pad 1, bias) + BatchNorm2d + ReLU (keys features.<i>, i counting every module as torchvision
//   does), each M a MaxPool2d(2, 2); avgpool AdaptiveAvgPool2d(7); classifier Linear(25088, 4096), ReLU,
//   Dropout(0.5), Linear(4096, 4096), ReLU, Dropout(0.5), Linear(4096, numClasses) (keys classifier.0, .3,
//   .6). 139,597,636 parameters with numClasses 4.
// Tiny (`scale: "tiny"`): cfg [4,M,8,M,16,M,32,M,32,M] (cfg E's channels / 16, one conv per stage),
//   AdaptiveAvgPool2d(2), classifier Linear(32*2*2, 128), ReLU, Dropout, Linear(128, 128), ReLU, Dropout,
//   Linear(128, numClasses) (same keys; 64x64 inputs reach the pool as 2x2).
import type { Tensor } from "../autograd/tensor.ts";
import { fillInPlace } from "../kernels/basic.ts";
import { kaimingNormal_, normal_ } from "../nn/init.ts";
import { flatten } from "../kernels/view.ts";
import { AdaptiveAvgPool2d, BatchNorm2d, Conv2d, MaxPool2d } from "../nn/cnn_layers.ts";
import { Dropout, Linear, ReLU, Sequential } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";
import { type ModelInit, type ModelOptions, type ModelScale, modelScale } from "./resnet.ts";

/**
 * VGG feature layers as torchvision's cfgs: a number is a 3x3 conv (+ BN + ReLU) to that many channels,
 * "M" a 2x2 max pool.
 */
export type VGGCfg = (number | "M")[];

/** A VGG architecture (torchvision's VGG arguments plus the head sizes it fixes). */
export interface VGGConfig {
  /** Conv output channels in order, "M" for a 2x2 max pool (torchvision's cfgs). */
  cfg: VGGCfg;
  /** AdaptiveAvgPool2d output side (torchvision: 7). */
  poolSize?: number;
  /** Width of the two hidden classifier layers (torchvision: 4096). */
  hidden?: number;
  /** Probability of both classifier Dropouts (default 0.5). */
  dropout?: number;
  /** Outputs of the last Linear (default 1000). */
  numClasses?: number;
}

/** torchvision's cfg "E" (VGG-19): 16 convs in five stages of 2, 2, 4, 4, 4, each ending in a max pool. */
export const VGG19_CFG: VGGCfg = [
  64,
  64,
  "M",
  128,
  128,
  "M",
  256,
  256,
  256,
  256,
  "M",
  512,
  512,
  512,
  512,
  "M",
  512,
  512,
  512,
  512,
  "M",
];

/**
 * torchvision.models.VGG (batch_norm = true): features, avgpool, classifier. Initialised as torchvision:
 * convs kaiming normal (fan_out, relu) with bias 0, BN weight 1 bias 0, Linear N(0, 0.01) with bias 0;
 * seeded by `generator` (else the global one).
 */
export class VGG extends Module {
  /** Conv, BatchNorm2d, ReLU per cfg number and MaxPool2d per "M" (keys `features.<i>`). */
  readonly features: Sequential;
  /** Adaptive average pool to poolSize x poolSize. */
  readonly avgpool: AdaptiveAvgPool2d;
  /** Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear (keys `classifier.0`, `.3`, `.6`). */
  readonly classifier: Sequential;
  /** The config with every default filled in. */
  readonly config: Required<VGGConfig>;
  /** Builds and initialises the network (see the class description). */
  constructor(config: VGGConfig, options: ModelInit = {}) {
    super();
    const c: Required<VGGConfig> = {
      cfg: config.cfg,
      poolSize: config.poolSize ?? 7,
      hidden: config.hidden ?? 4096,
      dropout: config.dropout ?? 0.5,
      numClasses: config.numClasses ?? 1000,
    };
    this.config = c;
    const generator = options.generator;
    const torchvisionInit = (options.init ?? "torchvision") === "torchvision";
    const layers: Module[] = [];
    let inC = 3;
    for (const v of c.cfg) {
      if (v === "M") {
        layers.push(new MaxPool2d(2, { stride: 2 }));
        continue;
      }
      const conv = new Conv2d(inC, v, 3, { padding: 1, generator });
      if (torchvisionInit) {
        kaimingNormal_(conv.weight, "fan_out", generator);
        fillInPlace(conv.bias!, 0);
      }
      layers.push(conv, new BatchNorm2d(v), new ReLU());
      inC = v;
    }
    this.features = this.registerModule("features", new Sequential(...layers));
    this.avgpool = this.registerModule("avgpool", new AdaptiveAvgPool2d(c.poolSize));
    const linear = (i: number, o: number) => {
      const l = new Linear(i, o, { generator });
      if (!torchvisionInit) return l;
      normal_(l.weight, 0.01, generator);
      fillInPlace(l.bias!, 0);
      return l;
    };
    this.classifier = this.registerModule(
      "classifier",
      new Sequential(
        linear(inC * c.poolSize * c.poolSize, c.hidden),
        new ReLU(),
        new Dropout(c.dropout),
        linear(c.hidden, c.hidden),
        new ReLU(),
        new Dropout(c.dropout),
        linear(c.hidden, c.numClasses),
      ),
    );
  }

  /**
   * The last conv block's feature map [B, C, h, w] (C = 512 at full size; what a class activation map
   * uses).
   */
  featureMaps(x: Tensor): Tensor {
    return this.features.forward(x);
  }

  /** Logits of feature maps: the head after `featureMaps`. */
  classify(maps: Tensor): Tensor {
    return this.classifier.forward(flatten(this.avgpool.forward(maps), 1));
  }

  /** Logits [N, numClasses] for images [N, 3, H, W]. */
  forward(x: Tensor): Tensor {
    return this.classify(this.featureMaps(x));
  }
}

const VGG_CONFIGS = {
  full: { cfg: VGG19_CFG },
  tiny: { cfg: [4, "M", 8, "M", 16, "M", 32, "M", 32, "M"], poolSize: 2, hidden: 128 },
} satisfies Record<ModelScale, VGGConfig>;

/**
 * torchvision.models.vgg19_bn (139,597,636 parameters with numClasses 4).
 * @throws Error when `scale` is neither "full" nor "tiny".
 */
export function vgg19_bn(options: ModelOptions = {}): VGG {
  const scale = modelScale("vgg19_bn", options.scale);
  return new VGG({ ...VGG_CONFIGS[scale], numClasses: options.numClasses ?? 1000 }, options);
}

/** Plain-text description of the tiny variant of each VGG factory (`scale: "tiny"`). */
export const VGG_TINY_CONFIGS = {
  vgg19_bn:
    "VGG-BN, cfg [4,M,8,M,16,M,32,M,32,M] (cfg E channels / 16, one conv per stage), AdaptiveAvgPool2d(2), classifier 128-128-numClasses",
} as const;
