// torchvision's ResNet (v1.5: the stride sits on the 3x3 conv of a Bottleneck) and ResNeXt, with the same
// module tree, so `stateDict()` keys and shapes equal torchvision's `state_dict()`.
//
// Full size (torchvision):
//   resnet152          Bottleneck, layers [3, 8, 36, 3], groups 1, width_per_group 64, stem 64,
//                      planes [64, 128, 256, 512]; 58,152,004 parameters with numClasses 4.
//   resnext101_32x8d   Bottleneck, layers [3, 4, 23, 3], groups 32, width_per_group 8, stem 64,
//                      planes [64, 128, 256, 512]; 86,750,532 parameters with numClasses 4.
// Tiny (`scale: "tiny"`, for CPU runs; same block type and key names, everything 8x narrower):
//   resnet152 tiny        layers [1, 1, 1, 1], stem 8, planes [8, 16, 32, 64] (outputs 32 .. 256),
//                         groups 1, widthPerGroup 8 with baseWidth 8 (bottleneck width = planes).
//   resnext101_32x8d tiny layers [1, 1, 1, 1], stem 8, planes [8, 16, 32, 64], groups 4, widthPerGroup 4
//                         with baseWidth 8: bottleneck widths 16, 32, 64, 128 (4 groups of 4, 8, 16, 32).
// The bottleneck width is floor(planes * widthPerGroup / baseWidth) * groups, torchvision's formula with
// its constant 64 made the `baseWidth` option (64 at full size, 8 in the tiny configs).
import type { Tensor } from "../autograd/tensor.ts";
import { fillInPlace } from "../kernels/basic.ts";
import { kaimingNormal_ } from "../nn/init.ts";
import { flatten } from "../kernels/view.ts";
import { AdaptiveAvgPool2d, BatchNorm2d, Conv2d, convBatchNorm, MaxPool2d } from "../nn/cnn_layers.ts";
import { type InitOptions, Linear, ReLU, Sequential } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";

/** "full": torchvision's architecture; "tiny": the 8x narrower variant for CPU runs (same key names). */
export type ModelScale = "full" | "tiny";

/** The generator and which initialisation to apply. */
export interface ModelInit extends InitOptions {
  /**
   * "torchvision" (default): torchvision's init (kaiming normal fan_out convs, ...). "default": the layers'
   * own PyTorch defaults only (kaiming uniform), half the random draws: for a model that will load
   * pretrained weights right away.
   */
  init?: "torchvision" | "default";
}

/**
 * A kxk convolution padded to keep the size at stride 1, initialised as torchvision's ResNet and
 * EfficientNet do: kaiming normal (fan_out), bias (when `bias`) 0.
 */
export function torchvisionConv(
  inC: number,
  outC: number,
  k: number,
  stride: number,
  groups: number,
  init: ModelInit,
  bias = false,
): Conv2d {
  const c = new Conv2d(inC, outC, k, {
    stride,
    padding: (k - 1) >> 1,
    groups,
    bias,
    generator: init.generator,
  });
  if ((init.init ?? "torchvision") === "torchvision") {
    kaimingNormal_(c.weight, "fan_out", init.generator);
    if (c.bias) fillInPlace(c.bias, 0);
  }
  return c;
}

/**
 * The scale a factory was asked for (default "full").
 * @throws Error naming the factory when it is neither "full" nor "tiny".
 */
export function modelScale(factory: string, scale: unknown = "full"): ModelScale {
  if (scale !== "full" && scale !== "tiny") {
    throw new Error(`${factory}: scale must be "full" or "tiny", got ${JSON.stringify(scale)}`);
  }
  return scale;
}

/** Options of `Bottleneck` (torchvision's Bottleneck arguments after inplanes and planes). */
export interface BottleneckOptions extends ModelInit {
  /** Stride of the 3x3 conv (default 1; 2 in the first block of a downsampling stage). */
  stride?: number;
  /** Shortcut projection (1x1 conv + BN), registered as `downsample`; null or omitted: identity shortcut. */
  downsample?: Module | null;
  /** Groups of the 3x3 conv (default 1; ResNeXt's cardinality). */
  groups?: number;
  /** Channels per group at baseWidth planes (default 64). */
  widthPerGroup?: number;
  /** torchvision's constant 64 in width = floor(planes * widthPerGroup / 64) * groups. */
  baseWidth?: number;
}

/** torchvision.models.resnet.Bottleneck: 1x1 -> 3x3 (stride, groups) -> 1x1 (x4), plus the shortcut. */
export class Bottleneck extends Module {
  /** Output channels per planes: a block outputs planes * 4 channels. */
  static readonly expansion = 4;
  /** 1x1 conv inplanes -> width. */
  readonly conv1: Conv2d;
  /** BN after conv1. */
  readonly bn1: BatchNorm2d;
  /** 3x3 conv width -> width with the block's stride and groups. */
  readonly conv2: Conv2d;
  /** BN after conv2. */
  readonly bn2: BatchNorm2d;
  /** 1x1 conv width -> planes * 4. */
  readonly conv3: Conv2d;
  /** BN after conv3. */
  readonly bn3: BatchNorm2d;
  /** Registered for torchvision's module tree; forward applies relu functionally. */
  readonly relu: ReLU;
  /** The shortcut projection, or null for the identity. */
  readonly downsample: Module | null;
  /**
   * A block from `inplanes` input channels to planes * 4 outputs.
   * @throws Error when the bottleneck width floor(planes * widthPerGroup / baseWidth) * groups is not
   * positive.
   */
  constructor(inplanes: number, planes: number, options: BottleneckOptions = {}) {
    super();
    const groups = options.groups ?? 1;
    const width = Math.floor(planes * ((options.widthPerGroup ?? 64) / (options.baseWidth ?? 64))) * groups;
    if (width <= 0) throw new Error(`Bottleneck: width ${width} from planes ${planes} is not positive`);
    const init: ModelInit = { generator: options.generator, init: options.init };
    this.conv1 = this.registerModule("conv1", torchvisionConv(inplanes, width, 1, 1, 1, init));
    this.bn1 = this.registerModule("bn1", new BatchNorm2d(width));
    this.conv2 = this.registerModule(
      "conv2",
      torchvisionConv(width, width, 3, options.stride ?? 1, groups, init),
    );
    this.bn2 = this.registerModule("bn2", new BatchNorm2d(width));
    this.conv3 = this.registerModule(
      "conv3",
      torchvisionConv(width, planes * Bottleneck.expansion, 1, 1, 1, init),
    );
    this.bn3 = this.registerModule("bn3", new BatchNorm2d(planes * Bottleneck.expansion));
    this.relu = this.registerModule("relu", new ReLU());
    this.downsample = options.downsample ? this.registerModule("downsample", options.downsample) : null;
  }

  /**
   * relu(bn3(conv3(...)) + shortcut(x)) for x [N, inplanes, H, W]: [N, planes * 4, H', W'] with
   * H' = ceil(H / stride).
   */
  forward(x: Tensor): Tensor {
    let out = convBatchNorm(this.conv1, this.bn1, x, { relu: true });
    out = convBatchNorm(this.conv2, this.bn2, out, { relu: true });
    const identity = this.downsample ? this.downsample.forward(x) : x;
    return convBatchNorm(this.conv3, this.bn3, out, { residual: identity, relu: true });
  }
}

/** A ResNet architecture (torchvision's ResNet arguments, with Bottleneck blocks). */
export interface ResNetConfig {
  /** Bottleneck blocks per stage; 1 to 4 stages (torchvision always has 4: layer1..layer4). */
  layers: number[];
  /** Output channels of the stem conv (torchvision: 64). */
  stemWidth?: number;
  /** planes of each stage (torchvision: [64, 128, 256, 512]); stage i > 0 has stride 2. */
  planes?: number[];
  /** Groups of every 3x3 conv (default 1; ResNeXt's cardinality). */
  groups?: number;
  /** Channels per group at baseWidth planes (default 64). */
  widthPerGroup?: number;
  /** torchvision's constant 64 in the bottleneck width formula (default 64; 8 in the tiny configs). */
  baseWidth?: number;
  /** Outputs of fc (default 1000). */
  numClasses?: number;
}

/**
 * torchvision.models.ResNet with Bottleneck blocks: conv1 7x7/2 (no bias), bn1, relu, maxpool 3x3/2 pad 1,
 * layer1..layerN, avgpool (adaptive, 1x1), fc. Initialised as torchvision: convs kaiming normal (fan_out,
 * relu), BN weight 1 and bias 0, fc as nn.Linear's default (zero_init_residual false); seeded by
 * `generator` (else the global one).
 */
export class ResNet extends Module {
  /** Stem conv 7x7 stride 2, 3 -> stemWidth channels, no bias. */
  readonly conv1: Conv2d;
  /** BN after the stem conv. */
  readonly bn1: BatchNorm2d;
  /** Registered for torchvision's module tree; forward applies relu functionally. */
  readonly relu: ReLU;
  /** Max pool 3x3 stride 2 padding 1 after the stem. */
  readonly maxpool: MaxPool2d;
  /** The stages, registered as `layer1`..`layerN`, each a Sequential of Bottlenecks. */
  readonly stages: Sequential[];
  /** Adaptive average pool to 1x1. */
  readonly avgpool: AdaptiveAvgPool2d;
  /** Classifier, last stage's channels -> numClasses. */
  readonly fc: Linear;
  /** The config with every default filled in. */
  readonly config: Required<ResNetConfig>;
  /**
   * Builds and initialises the network (see the class description).
   * @throws Error when there are not 1 to 4 stages, `planes` does not match `layers`, or a block count is
   * not a positive integer.
   */
  constructor(config: ResNetConfig, options: ModelInit = {}) {
    super();
    const c: Required<ResNetConfig> = {
      layers: config.layers,
      stemWidth: config.stemWidth ?? 64,
      planes: config.planes ?? [64, 128, 256, 512].slice(0, config.layers.length),
      groups: config.groups ?? 1,
      widthPerGroup: config.widthPerGroup ?? 64,
      baseWidth: config.baseWidth ?? 64,
      numClasses: config.numClasses ?? 1000,
    };
    this.config = c;
    if (c.layers.length < 1 || c.layers.length > 4 || c.planes.length !== c.layers.length) {
      throw new Error(
        `ResNet: need 1 to 4 stages with one planes entry each, got layers [${c.layers}] planes [${c.planes}]`,
      );
    }
    if (!c.layers.every((n) => Number.isInteger(n) && n >= 1)) {
      throw new Error(`ResNet: bad layers [${c.layers}]`);
    }
    const init: ModelInit = { generator: options.generator, init: options.init };
    this.conv1 = this.registerModule("conv1", torchvisionConv(3, c.stemWidth, 7, 2, 1, init));
    this.bn1 = this.registerModule("bn1", new BatchNorm2d(c.stemWidth));
    this.relu = this.registerModule("relu", new ReLU());
    this.maxpool = this.registerModule("maxpool", new MaxPool2d(3, { stride: 2, padding: 1 }));
    let inplanes = c.stemWidth;
    this.stages = c.layers.map((blocks, i) => {
      const planes = c.planes[i], stride = i === 0 ? 1 : 2;
      const outC = planes * Bottleneck.expansion;
      const blockOpts: BottleneckOptions = {
        groups: c.groups,
        widthPerGroup: c.widthPerGroup,
        baseWidth: c.baseWidth,
        ...init,
      };
      const list: Module[] = [];
      const downsample = stride !== 1 || inplanes !== outC
        ? new Sequential(torchvisionConv(inplanes, outC, 1, stride, 1, init), new BatchNorm2d(outC))
        : null;
      list.push(new Bottleneck(inplanes, planes, { ...blockOpts, stride, downsample }));
      inplanes = outC;
      for (let b = 1; b < blocks; b++) list.push(new Bottleneck(inplanes, planes, blockOpts));
      return this.registerModule(`layer${i + 1}`, new Sequential(...list));
    });
    this.avgpool = this.registerModule("avgpool", new AdaptiveAvgPool2d(1));
    this.fc = this.registerModule("fc", new Linear(inplanes, c.numClasses, init));
  }

  /** The last stage's feature map [B, C, h, w] (before pooling; what a class activation map uses). */
  featureMaps(x: Tensor): Tensor {
    let h = this.maxpool.forward(convBatchNorm(this.conv1, this.bn1, x, { relu: true }));
    for (const s of this.stages) h = s.forward(h);
    return h;
  }

  /** Logits of feature maps: the head after `featureMaps`. */
  classify(maps: Tensor): Tensor {
    return this.fc.forward(flatten(this.avgpool.forward(maps), 1));
  }

  /** Logits [N, numClasses] for images [N, 3, H, W]. */
  forward(x: Tensor): Tensor {
    return this.classify(this.featureMaps(x));
  }
}

/** Options of the model factories `resnet152`, `resnext101_32x8d` and `vgg19_bn`. */
export interface ModelOptions extends ModelInit {
  /** Outputs of the last Linear (torchvision's default 1000). */
  numClasses?: number;
  /** "full": torchvision's architecture; "tiny": the small variant (RESNET_TINY_CONFIGS, VGG_TINY_CONFIGS). */
  scale?: ModelScale;
}

/** The ResNet configs behind each factory and scale (see the comment at the top of this file). */
const RESNET_CONFIGS = {
  resnet152: {
    full: { layers: [3, 8, 36, 3] },
    tiny: { layers: [1, 1, 1, 1], stemWidth: 8, planes: [8, 16, 32, 64], widthPerGroup: 8, baseWidth: 8 },
  },
  resnext101_32x8d: {
    full: { layers: [3, 4, 23, 3], groups: 32, widthPerGroup: 8 },
    tiny: {
      layers: [1, 1, 1, 1],
      stemWidth: 8,
      planes: [8, 16, 32, 64],
      groups: 4,
      widthPerGroup: 4,
      baseWidth: 8,
    },
  },
} satisfies Record<string, Record<ModelScale, ResNetConfig>>;

function build(name: keyof typeof RESNET_CONFIGS, options: ModelOptions): ResNet {
  const scale = modelScale(name, options.scale);
  return new ResNet({ ...RESNET_CONFIGS[name][scale], numClasses: options.numClasses ?? 1000 }, options);
}

/** torchvision.models.resnet152 (58,152,004 parameters with numClasses 4). */
export function resnet152(options: ModelOptions = {}): ResNet {
  return build("resnet152", options);
}

/** torchvision.models.resnext101_32x8d (86,750,532 parameters with numClasses 4). */
export function resnext101_32x8d(options: ModelOptions = {}): ResNet {
  return build("resnext101_32x8d", options);
}

/** Plain-text descriptions of the tiny variant of each ResNet factory (the configs: RESNET_CONFIGS). */
export const RESNET_TINY_CONFIGS = {
  resnet152:
    "Bottleneck ResNet, layers [1,1,1,1], stem 8, planes [8,16,32,64] (block outputs 32,64,128,256), groups 1, bottleneck width = planes",
  resnext101_32x8d:
    "Bottleneck ResNeXt, layers [1,1,1,1], stem 8, planes [8,16,32,64], groups 4, width per group 4 (baseWidth 8): bottleneck widths 16,32,64,128",
} as const;
export { RESNET_CONFIGS };
