// torchvision's DenseNet-BC with the same module tree, so `stateDict()` keys and shapes equal torchvision's
// `state_dict()` (keys `features.conv0/norm0/pool0`, `features.denseblockI.denselayerJ.norm1/conv1/norm2/conv2`,
// `features.transitionI.norm/conv`, `features.norm5`, `classifier`).
//
// Full size (torchvision.models.densenet161): growth 48, blocks (6, 12, 36, 24), 96 initial features,
// bn_size 4; 26,480,836 parameters with numClasses 4 (28,681,000 with 1000).
// Tiny (`scale: "tiny"`, for CPU runs; same layer types and key names): see DENSENET_TINY_CONFIG.
// Any input of at least 29x29 works at either scale (the four 2x downsamplings after the stem must leave
// one pixel: conv0 s2 -> pool0 s2 -> three transitions); images are usually 224x224 (full) or 64x64 (tiny).
import type { Tensor } from "../autograd/tensor.ts";
import { noGrad } from "../autograd/tensor.ts";
import { fillInPlace } from "../kernels/basic.ts";
import { kaimingNormal_ } from "../nn/init.ts";
import { cat } from "../kernels/concat.ts";
import { relu } from "../kernels/elementwise.ts";
import { adaptiveAvgPool2d } from "../kernels/pool.ts";
import { flatten } from "../kernels/view.ts";
import { AvgPool2d, BatchNorm2d, Conv2d, convBatchNorm, MaxPool2d } from "../nn/cnn_layers.ts";
import { type InitOptions, Linear, ReLU } from "../nn/layers.ts";
import { modelScale } from "./resnet.ts";
import { forwardChain, Module } from "../nn/module.ts";

/** A DenseNet-BC architecture (torchvision's DenseNet arguments). */
export interface DenseNetConfig {
  /** k: feature maps each dense layer adds. */
  growthRate: number;
  /** Dense layers per block (torchvision uses four blocks). */
  blockConfig: number[];
  /** Channels of the stem convolution. */
  numInitFeatures: number;
  /** Bottleneck width = bnSize * growthRate. */
  bnSize: number;
  /** Outputs of the classifier. */
  numClasses: number;
}

/** Options of `densenet161`. */
export interface DenseNetOptions extends InitOptions {
  /** Outputs of the classifier (default 1000). */
  numClasses?: number;
  /** "full": torchvision's densenet161; "tiny": DENSENET_TINY_CONFIG. */
  scale?: "full" | "tiny";
}

/** The architecture of densenet161 at each scale (numClasses comes from the options). */
export const DENSENET161_CONFIGS: Record<"full" | "tiny", Omit<DenseNetConfig, "numClasses">> = {
  full: { growthRate: 48, blockConfig: [6, 12, 36, 24], numInitFeatures: 96, bnSize: 4 },
  tiny: { growthRate: 16, blockConfig: [2, 4, 6, 4], numInitFeatures: 32, bnSize: 2 },
};

/**
 * densenet161({ scale: "tiny" }): growth 16, blocks (2, 4, 6, 4), 32 initial features, bn_size 2 (bottleneck
 * 32 channels). Channels: stem 32 -> block1 64 -> transition1 32 -> block2 96 -> 48 -> block3 144 -> 72 ->
 * block4 136 -> norm5, classifier 136 -> classes; 139,316 parameters with numClasses 4. Same layer types and
 * key names as the full model; forward + backward of 16 images of 64x64 takes about 0.7 s on lavapipe
 * (2 CPU cores).
 */
export const DENSENET_TINY_CONFIG =
  "DenseNet-BC, growth 16, blocks (2,4,6,4), 32 initial features, bn_size 2 (bottleneck 32), classifier over 136 features; 139,316 parameters with 4 classes";

/**
 * Children registered under the given names, applied in order (torch.nn.Sequential with an OrderedDict):
 * DenseNet's `features` and the base of `Transition`.
 */
export class NamedSequential extends Module {
  private readonly order: Module[] = [];
  /** Appends `m` as the child `name` (its keys become `name.*`); returns `m`. */
  add<M extends Module>(name: string, m: M): M {
    this.order.push(m);
    return this.registerModule(name, m);
  }

  /** `x` passed through every child in the order they were added. */
  forward(x: Tensor): Tensor {
    return forwardChain(this.order, x);
  }
}

/** torchvision.models.densenet._DenseLayer: BN-ReLU-1x1 conv (bnSize*k) - BN-ReLU-3x3 conv (k). */
export class DenseLayer extends Module {
  /** BN over the numInputFeatures concatenated input channels. */
  readonly norm1: BatchNorm2d;
  /** ReLU after norm1. */
  readonly relu1: ReLU;
  /** 1x1 bottleneck conv numInputFeatures -> bnSize * growthRate, no bias. */
  readonly conv1: Conv2d;
  /** BN after conv1. */
  readonly norm2: BatchNorm2d;
  /** ReLU after norm2. */
  readonly relu2: ReLU;
  /** 3x3 conv (padding 1) bnSize * growthRate -> growthRate, no bias. */
  readonly conv2: Conv2d;
  /** Builds the layer; both convs are kaiming normal (fan_in), as torchvision. */
  constructor(numInputFeatures: number, growthRate: number, bnSize: number, init: InitOptions = {}) {
    super();
    this.norm1 = this.registerModule("norm1", new BatchNorm2d(numInputFeatures));
    this.relu1 = this.registerModule("relu1", new ReLU());
    this.conv1 = this.registerModule(
      "conv1",
      new Conv2d(numInputFeatures, bnSize * growthRate, 1, { bias: false, ...init }),
    );
    this.norm2 = this.registerModule("norm2", new BatchNorm2d(bnSize * growthRate));
    this.relu2 = this.registerModule("relu2", new ReLU());
    this.conv2 = this.registerModule(
      "conv2",
      new Conv2d(bnSize * growthRate, growthRate, 3, { padding: 1, bias: false, ...init }),
    );
    kaimingNormal_(this.conv1.weight, "fan_in", init.generator);
    kaimingNormal_(this.conv2.weight, "fan_in", init.generator);
  }

  /** The new k feature maps from all previous ones (concatenated along channels first). */
  forwardFeatures(features: Tensor[]): Tensor {
    const x = features.length === 1 ? features[0] : cat(features, 1);
    // norm1 and relu1 as one op (the batch norm's epilogue): the concatenation's normalised copy is not kept
    const bottleneck = convBatchNorm(this.conv1, this.norm2, this.norm1.forwardThen(x, { relu: true }), {
      relu: true,
    });
    return this.conv2.forward(bottleneck);
  }

  /** The growthRate new maps [N, growthRate, H, W] of x [N, numInputFeatures, H, W]. */
  forward(x: Tensor): Tensor {
    return this.forwardFeatures([x]);
  }
}

/** torchvision.models.densenet._DenseBlock: layers `denselayer1..n`; output = cat(input, every new map). */
export class DenseBlock extends Module {
  /**
   * The dense layers in order (`denselayer1..n`); layer i reads numInputFeatures + (i - 1) * growthRate
   * maps.
   */
  readonly layers: DenseLayer[] = [];
  /** Builds `numLayers` dense layers over `numInputFeatures` input channels. */
  constructor(
    numLayers: number,
    numInputFeatures: number,
    bnSize: number,
    growthRate: number,
    init: InitOptions = {},
  ) {
    super();
    for (let i = 0; i < numLayers; i++) {
      this.layers.push(
        this.registerModule(
          `denselayer${i + 1}`,
          new DenseLayer(numInputFeatures + i * growthRate, growthRate, bnSize, init),
        ),
      );
    }
  }

  /** x [N, C, H, W] with every layer's maps appended: [N, C + numLayers * growthRate, H, W]. */
  forward(x: Tensor): Tensor {
    const features = [x];
    for (const layer of this.layers) features.push(layer.forwardFeatures(features));
    return features.length === 1 ? x : cat(features, 1);
  }
}

/** torchvision.models.densenet._Transition: BN-ReLU-1x1 conv-2x2 average pool. */
export class Transition extends NamedSequential {
  /** Children `norm`, `relu`, `conv` (1x1, no bias, kaiming normal fan_in) and `pool` (2x2, stride 2). */
  constructor(numInputFeatures: number, numOutputFeatures: number, init: InitOptions = {}) {
    super();
    this.add("norm", new BatchNorm2d(numInputFeatures));
    this.add("relu", new ReLU());
    const conv = this.add(
      "conv",
      new Conv2d(numInputFeatures, numOutputFeatures, 1, { bias: false, ...init }),
    );
    kaimingNormal_(conv.weight, "fan_in", init.generator);
    this.add("pool", new AvgPool2d(2, { stride: 2 }));
  }
}

function checkConfig(c: DenseNetConfig): void {
  const ints: [string, number][] = [
    ["growthRate", c.growthRate],
    ["numInitFeatures", c.numInitFeatures],
    ["bnSize", c.bnSize],
    ["numClasses", c.numClasses],
  ];
  for (const [k, v] of ints) {
    if (!Number.isInteger(v) || v <= 0) {
      throw new Error(`DenseNet: ${k} must be a positive integer, got ${v}`);
    }
  }
  if (
    !Array.isArray(c.blockConfig) || c.blockConfig.length === 0 ||
    !c.blockConfig.every((n) => Number.isInteger(n) && n >= 0)
  ) {
    throw new Error(
      `DenseNet: blockConfig must be a non-empty list of layer counts, got ${JSON.stringify(c.blockConfig)}`,
    );
  }
}

/**
 * torchvision.models.DenseNet (drop_rate 0, not memory-efficient): `features` (conv0, norm0, relu0, pool0,
 * denseblock1, transition1, ..., denseblockN, norm5) then ReLU, global average pool, flatten, `classifier`.
 */
export class DenseNet extends Module {
  /** The convolutional trunk, a NamedSequential from conv0 to norm5 (no final ReLU). */
  readonly features: Module;
  /** Linear numFeatures -> numClasses, bias 0. */
  readonly classifier: Linear;
  /** Channels after norm5 (2208 for densenet161, 136 tiny): the classifier's input size. */
  readonly numFeatures: number;
  /**
   * Builds and initialises the network: convs kaiming normal (fan_in), BN weight 1 bias 0, classifier
   * weight nn.Linear's default and bias 0, as torchvision.
   * @throws Error when a size is not a positive integer or blockConfig is not a non-empty list of
   * counts >= 0.
   */
  constructor(
    /** The architecture it was built from. */
    readonly config: DenseNetConfig,
    init: InitOptions = {},
  ) {
    super();
    checkConfig(config);
    const { growthRate, blockConfig, numInitFeatures, bnSize, numClasses } = config;
    const features = new NamedSequential();
    const conv0 = features.add(
      "conv0",
      new Conv2d(3, numInitFeatures, 7, { stride: 2, padding: 3, bias: false, ...init }),
    );
    kaimingNormal_(conv0.weight, "fan_in", init.generator);
    features.add("norm0", new BatchNorm2d(numInitFeatures));
    features.add("relu0", new ReLU());
    features.add("pool0", new MaxPool2d(3, { stride: 2, padding: 1 }));
    let n = numInitFeatures;
    blockConfig.forEach((numLayers, i) => {
      features.add(`denseblock${i + 1}`, new DenseBlock(numLayers, n, bnSize, growthRate, init));
      n += numLayers * growthRate;
      if (i !== blockConfig.length - 1) {
        features.add(`transition${i + 1}`, new Transition(n, Math.floor(n / 2), init));
        n = Math.floor(n / 2);
      }
    });
    features.add("norm5", new BatchNorm2d(n));
    this.features = this.registerModule("features", features);
    this.numFeatures = n;
    this.classifier = this.registerModule("classifier", new Linear(n, numClasses, init));
    noGrad(() => fillInPlace(this.classifier.bias!, 0));
  }

  /**
   * Logits [N, numClasses] of images [N, 3, H, W] (H, W >= 29).
   * @throws Error for another shape or smaller images.
   */
  forward(x: Tensor): Tensor {
    if (x.rank !== 4 || x.shape[1] !== 3) {
      throw new Error(`DenseNet: expected images [N, 3, H, W], got shape [${x.shape.join(", ")}]`);
    }
    if (x.shape[2] < 29 || x.shape[3] < 29) {
      throw new Error(`DenseNet: images must be at least 29x29, got ${x.shape[2]}x${x.shape[3]}`);
    }
    return this.classify(this.featureMaps(x));
  }

  /** The final feature map after norm5 and ReLU [B, C, h, w] (what a class activation map uses). */
  featureMaps(x: Tensor): Tensor {
    return relu(this.features.forward(x));
  }

  /** Logits of feature maps: the head after `featureMaps`. */
  classify(maps: Tensor): Tensor {
    return this.classifier.forward(flatten(adaptiveAvgPool2d(maps, [1, 1]), 1));
  }
}

/**
 * torchvision.models.densenet161: 26,480,836 parameters with numClasses 4; `scale: "tiny"` is
 * DENSENET_TINY_CONFIG.
 * @throws Error when `scale` is neither "full" nor "tiny".
 */
export function densenet161(options: DenseNetOptions = {}): DenseNet {
  const scale = modelScale("densenet161", options.scale);
  return new DenseNet({ ...DENSENET161_CONFIGS[scale], numClasses: options.numClasses ?? 1000 }, options);
}

// torchvision's DenseNet checkpoints predate a rename of the dense layers' children (`norm.1` became `norm1`);
// torchvision rewrites the old keys with this pattern when it loads them (densenet.py, _load_state_dict).
const LEGACY_DENSE_LAYER_KEY =
  /^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$/;

/**
 * A DenseNet state dict with torchvision's old dense-layer keys (`features.denseblock1.denselayer1.norm.1.weight`,
 * as in its published densenet161-8d451a50.pth) renamed to the ones its DenseNet and {@link DenseNet} use
 * (`...denselayer1.norm1.weight`), as torchvision does when it loads such a file. Other keys are kept.
 *
 * @returns the renamed record and how many keys were renamed.
 */
export function renameLegacyDenseNetKeys<T>(
  dict: Record<string, T>,
): { dict: Record<string, T>; renamed: number } {
  let renamed = 0;
  const out: Record<string, T> = {};
  for (const [key, value] of Object.entries(dict)) {
    const m = LEGACY_DENSE_LAYER_KEY.exec(key);
    if (m) renamed++;
    out[m ? m[1] + m[2] : key] = value;
  }
  return { dict: out, renamed };
}
