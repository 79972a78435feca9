// COVID-Net "small" (Wang, Lin, Wong 2020, arXiv:2003.09871) as the FLANNEL authors ran it: the PyTorch
// reimplementation of April 2020 (iliasprc/COVIDNet), with the same module names, so `stateDict()` keys and
// shapes equal that code's `state_dict()`.
//
// Full size, 224x224 inputs: conv1 Conv2d(3, 64, 7, stride 2, pad 3, bias) -> ReLU -> max_pool2d(2); four
// stages of 3, 4, 6, 3 PEPX blocks (pexp<stage>_<block>) of widths 256, 512, 1024, 2048; within a stage a
// block takes the sum of all earlier outputs of that stage, the first block of a stage the sum of the 2x2
// max-pooled outputs of the previous one (the stem's output for stage 1); the head flattens the sum of stage
// 4's outputs (7x7x2048) into classifier Linear(100352, numClasses). PEPX(n, o), network.0..4: five
// convolutions with bias, no batch norm or activation: 1x1 n -> n/2, 1x1 n/2 -> 3n/4, depthwise 3x3 (pad
// 1), 1x1 3n/4 -> n/2, 1x1 n/2 -> o. 29,117,972 parameters with numClasses 4.
//
// Initialisation. The reference keeps PyTorch's layer defaults (`init: "default"`): kaiming uniform with
// a = sqrt 5, which scales a signal's variance by 1/3 per convolution, and uniform biases. With no
// normalisation or activation between the 91 convolutions of the trunk, the image-dependent part of the
// activations falls by about 1/sqrt 3 per layer while the biases are added afresh: at 64x64 the logits of
// different images agree to 6 digits at initialisation (between-image rms 5e-7 against rms 9e-2; `deno task
// bench:health`), every image gets the same class and training cannot get out. The default here, `init:
// "signal"`, keeps the signal instead: every convolution N(0, 1/fan_in) (the stem, followed by ReLU, 2/fan_in),
// the last projection of each PEPX block at half that variance (a block's output then adds to the stage's
// running sum about what the sum already holds, so the sums do not double the variance block after block),
// biases 0; the classifier keeps PyTorch's default.
//
// The reference feeds block 4_1 with the pooled p31 + p32 + p32 + p34 + p35 + p36: p32 twice, p33 not at
// all. `wiring: "corrected"` (the default) sums every output of stage 3 once; `wiring: "reference"` gives
// that code's sum. The reference also builds an unused Linear(100352, 1024); it is left out here.
//
// Tiny (`scale: "tiny"`): stem 8, widths 16, 32, 64, 128 with the same 3, 4, 6, 3 blocks, for 64x64 inputs
// (stage 4 at 2x2: classifier Linear(512, numClasses)).
import type { Tensor } from "../autograd/tensor.ts";
import { fillInPlace } from "../kernels/basic.ts";
import { add, relu } from "../kernels/elementwise.ts";
import { maxPool2d } from "../kernels/pool.ts";
import { flatten } from "../kernels/view.ts";
import { Conv2d } from "../nn/cnn_layers.ts";
import { fan, kaimingNormal_, normal_ } from "../nn/init.ts";
import { type InitOptions, Linear, Sequential } from "../nn/layers.ts";
import { Module } from "../nn/module.ts";
import { type ModelOptions, type ModelScale, modelScale } from "./resnet.ts";

/** A COVID-Net architecture. */
export interface CovidNetConfig {
  /** Output channels of the stem convolution (64). */
  stemWidth: number;
  /** Output channels of each stage's blocks (256, 512, 1024, 2048). */
  widths: number[];
  /** PEPX blocks per stage (3, 4, 6, 3). */
  blocks: number[];
  /** Side of the square input the head is sized for (224: stage 4 at 7x7; at least 32). */
  inputSize: number;
  /** Outputs of the classifier (the reference: the number of classes). */
  numClasses: number;
  /**
   * "corrected" (default): block 4_1 takes every pooled output of stage 3 once; "reference": the reference
   * code's sum, p32 twice and p33 left out (needs 6 blocks in stage 3).
   */
  wiring?: "corrected" | "reference";
}

/**
 * PEPX (projection, expansion, depthwise, projection, extension): five convolutions with bias in
 * `network` (keys network.0 .. network.4), no normalisation or activation between them.
 */
export class PEPX extends Module {
  /** 1x1 n -> n/2, 1x1 n/2 -> 3n/4, depthwise 3x3, 1x1 3n/4 -> n/2, 1x1 n/2 -> out. */
  readonly network: Sequential;
  /**
   * A block from `n` to `out` channels.
   * @throws Error when n is not a multiple of 4 (n/2 and 3n/4 must be whole).
   */
  constructor(n: number, out: number, options: InitOptions = {}) {
    super();
    if (!Number.isInteger(n / 4) || n <= 0) {
      throw new Error(`PEPX: input channels must be a multiple of 4, got ${n}`);
    }
    const half = n / 2, threeQuarters = (3 * n) / 4;
    const g = options.generator;
    this.network = this.registerModule(
      "network",
      new Sequential(
        new Conv2d(n, half, 1, { generator: g }),
        new Conv2d(half, threeQuarters, 1, { generator: g }),
        new Conv2d(threeQuarters, threeQuarters, 3, { padding: 1, groups: threeQuarters, generator: g }),
        new Conv2d(threeQuarters, half, 1, { generator: g }),
        new Conv2d(half, out, 1, { generator: g }),
      ),
    );
  }

  /** [N, n, H, W] -> [N, out, H, W]. */
  forward(x: Tensor): Tensor {
    return this.network.forward(x);
  }
}

/** ((a + b) + c) + ...: the sums of the reference's `+` chains (in index order; it varies the order). */
function sumAll(xs: Tensor[]): Tensor {
  return xs.slice(1).reduce((acc, x) => add(acc, x), xs[0]);
}

const pool2 = (x: Tensor) => maxPool2d(x, { kernelSize: 2 });

/** COVID-Net small (see the file's description); `featureMaps` is the summed stage-4 output. */
export class CovidNet extends Module {
  /** The stem convolution, 7x7 stride 2 with bias. */
  readonly conv1: Conv2d;
  /** The PEPX blocks by stage: blocks[s][b] is pexp<s+1>_<b+1>. */
  readonly pepx: PEPX[][];
  /** Linear(width4 * side^2, numClasses) on the flattened stage-4 sum (side 7 at 224x224). */
  readonly classifier: Linear;
  /** The config with every default filled in. */
  readonly config: Required<CovidNetConfig>;

  /**
   * Builds the network, its weights seeded by `options.generator`: with the signal-preserving init
   * (`options.init` "signal", the default; see the file's description) or the reference's PyTorch layer
   * defaults ("default").
   * @throws Error when the config is inconsistent (stage count, input size not a multiple of 32, the
   *   reference wiring without 6 blocks in stage 3) or `init` is neither "signal" nor "default".
   */
  constructor(config: CovidNetConfig, options: CovidNetInit = {}) {
    super();
    const c: Required<CovidNetConfig> = { wiring: "corrected", ...config };
    if (
      c.widths.length !== 4 || c.blocks.length !== 4 || c.blocks.some((b) => !Number.isInteger(b) || b < 1)
    ) {
      throw new Error("CovidNet: widths and blocks must list 4 stages of at least one block each");
    }
    if (!Number.isInteger(c.inputSize) || c.inputSize < 32) {
      throw new Error(`CovidNet: inputSize must be an integer of at least 32, got ${c.inputSize}`);
    }
    if (c.wiring !== "corrected" && c.wiring !== "reference") {
      throw new Error(`CovidNet: wiring must be "corrected" or "reference", got ${JSON.stringify(c.wiring)}`);
    }
    if (c.wiring === "reference" && c.blocks[2] !== 6) {
      throw new Error("CovidNet: the reference wiring needs 6 blocks in stage 3");
    }
    const init = options.init ?? "signal";
    if (init !== "signal" && init !== "default") {
      throw new Error(`CovidNet: init must be "signal" or "default", got ${JSON.stringify(init)}`);
    }
    this.config = c;
    const g = options.generator;
    this.conv1 = this.registerModule(
      "conv1",
      new Conv2d(3, c.stemWidth, 7, { stride: 2, padding: 3, generator: g }),
    );
    let inC = c.stemWidth;
    this.pepx = c.widths.map((w, s) =>
      Array.from({ length: c.blocks[s] }, (_, b) => {
        const block = this.registerModule(
          `pexp${s + 1}_${b + 1}`,
          new PEPX(b === 0 ? inC : w, w, { generator: g }),
        );
        if (b === c.blocks[s] - 1) inC = w;
        return block;
      })
    );
    // The stem halves the side rounding up (7x7, stride 2, pad 3), each 2x2 max pool rounding down.
    let side = Math.ceil(c.inputSize / 2);
    for (let i = 0; i < 4; i++) side = Math.floor(side / 2);
    this.classifier = this.registerModule(
      "classifier",
      new Linear(c.widths[3] * side * side, c.numClasses, { generator: g }),
    );
    if (init === "signal") this.keepSignal(g);
  }

  /** The "signal" init (see the file's description), drawn in module order after the layers' defaults. */
  private keepSignal(g: InitOptions["generator"]): void {
    kaimingNormal_(this.conv1.weight, "fan_in", g);
    fillInPlace(this.conv1.bias!, 0);
    for (const block of this.pepx.flat()) {
      block.network.layers.forEach((layer, i) => {
        const conv = layer as Conv2d;
        normal_(conv.weight, Math.sqrt((i === 4 ? 0.5 : 1) / fan(conv.weight, "fan_in")), g);
        fillInPlace(conv.bias!, 0);
      });
    }
  }

  /** The sum of stage 4's outputs [N, width4, H/32, W/32] (what a class activation map uses). */
  featureMaps(x: Tensor): Tensor {
    let input = pool2(relu(this.conv1.forward(x)));
    let outputs: Tensor[] = [];
    for (let s = 0; s < 4; s++) {
      if (s > 0) {
        // The reference's block 4_1 input: p32 twice, p33 left out.
        const which = s === 3 && this.config.wiring === "reference"
          ? [0, 1, 1, 3, 4, 5]
          : [...outputs.keys()];
        input = sumAll(which.map((i) => pool2(outputs[i])));
      }
      outputs = [];
      for (const block of this.pepx[s]) {
        outputs.push(block.forward(outputs.length === 0 ? input : sumAll(outputs)));
      }
    }
    return sumAll(outputs);
  }

  /** Logits of feature maps: the classifier on the flattened maps. */
  classify(maps: Tensor): Tensor {
    return this.classifier.forward(flatten(maps, 1));
  }

  /** Logits [N, numClasses] for images [N, 3, inputSize, inputSize]. */
  forward(x: Tensor): Tensor {
    return this.classify(this.featureMaps(x));
  }
}

const COVIDNET_CONFIGS = {
  full: { stemWidth: 64, widths: [256, 512, 1024, 2048], blocks: [3, 4, 6, 3], inputSize: 224 },
  tiny: { stemWidth: 8, widths: [16, 32, 64, 128], blocks: [3, 4, 6, 3], inputSize: 64 },
} satisfies Record<ModelScale, Omit<CovidNetConfig, "numClasses">>;

/** The generator of COVID-Net's initial weights and which initialisation to draw them with. */
export interface CovidNetInit extends InitOptions {
  /**
   * "signal" (default): the init that keeps the image's signal through the 91 linear convolutions (see
   * {@link CovidNet}); "default": PyTorch's layer defaults, as the reference code (every image gets the same
   * logits at initialisation).
   */
  init?: "signal" | "default";
}

/** Options of {@link covidnet}: the learners' options plus COVID-Net's own. */
export interface CovidNetOptions extends Omit<ModelOptions, "init">, CovidNetInit {
  /** See {@link CovidNetConfig.wiring} (default "corrected"). */
  wiring?: "corrected" | "reference";
  /** Input side the head is sized for (default 224 full, 64 tiny). */
  inputSize?: number;
}

/**
 * COVID-Net small as the FLANNEL authors ran it (29,117,972 parameters with numClasses 4 at 224x224), with
 * the signal-preserving init (`options.init` "signal", the default) or the reference's PyTorch layer
 * defaults (`init: "default"`).
 * @throws Error when `scale` is neither "full" nor "tiny", or the options are inconsistent.
 */
export function covidnet(options: CovidNetOptions = {}): CovidNet {
  const scale = modelScale("covidnet", options.scale);
  const base = COVIDNET_CONFIGS[scale];
  return new CovidNet({
    ...base,
    inputSize: options.inputSize ?? base.inputSize,
    numClasses: options.numClasses ?? 1000,
    wiring: options.wiring ?? "corrected",
  }, { generator: options.generator, init: options.init });
}

/** Plain-text description of the tiny COVID-Net (`scale: "tiny"`). */
export const COVIDNET_TINY_CONFIG =
  "COVID-Net small, stem 8, stage widths 16/32/64/128 with 3/4/6/3 PEPX blocks, for 64x64 inputs (classifier Linear(512, numClasses))";
