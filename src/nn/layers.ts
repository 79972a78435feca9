// Layers with PyTorch's names, shapes and default initialisations.
import type { Tensor } from "../autograd/tensor.ts";
import { linear } from "../kernels/matmul.ts";
import { relu, sigmoid, silu, tanh } from "../kernels/elementwise.ts";
import { dropout, type Generator, rand, stochasticDepth } from "../kernels/random.ts";
import { flatten } from "../kernels/view.ts";
import { forwardChain, Module } from "./module.ts";

/** Options shared by every layer with random initial weights. */
export interface InitOptions {
  /** Draws the initial weights; the global generator (fl.manualSeed) when omitted. */
  generator?: Generator;
}

/** U(-bound, bound), PyTorch's kaiming_uniform(a = sqrt 5) bound for a layer of `fanIn` inputs. */
export function uniformInit(shape: number[], fanIn: number, options: InitOptions): Tensor {
  const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
  return rand(shape, { low: -bound, high: bound, generator: options.generator });
}

/**
 * torch.nn.Linear: y = x W^T + b, [N, inFeatures] -> [N, outFeatures]. Weight and
 * bias are U(-1/sqrt(inFeatures), 1/sqrt(inFeatures)), PyTorch's default.
 */
export class Linear extends Module {
  /** Parameter `weight`, [outFeatures, inFeatures]. */
  readonly weight: Tensor;
  /** Parameter `bias`, [outFeatures]; null when built with `bias: false`. */
  readonly bias: Tensor | null;
  /**
   * Builds the layer; `bias` defaults to true.
   * @throws Error when `inFeatures` or `outFeatures` is not a positive integer.
   */
  constructor(
    /** Features of each input row. */
    readonly inFeatures: number,
    /** Features of each output row. */
    readonly outFeatures: number,
    options: InitOptions & { bias?: boolean } = {},
  ) {
    super();
    for (const [k, v] of [["inFeatures", inFeatures], ["outFeatures", outFeatures]] as const) {
      if (!Number.isInteger(v) || v <= 0) {
        throw new Error(`Linear: ${k} must be a positive integer, got ${v}`);
      }
    }
    this.weight = this.registerParameter(
      "weight",
      uniformInit([outFeatures, inFeatures], inFeatures, options),
    );
    this.bias = options.bias === false
      ? null
      : this.registerParameter("bias", uniformInit([outFeatures], inFeatures, options));
  }

  /** x W^T + b for x [N, inFeatures]: [N, outFeatures]. */
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

/** torch.nn.ReLU: max(x, 0) elementwise; no parameters. */
export class ReLU extends Module {
  /** max(x, 0), same shape as `x`. */
  forward(x: Tensor): Tensor {
    return relu(x);
  }
}

/** torch.nn.Tanh: tanh(x) elementwise; no parameters. */
export class Tanh extends Module {
  /** tanh(x), same shape as `x`. */
  forward(x: Tensor): Tensor {
    return tanh(x);
  }
}

/** torch.nn.SiLU: x sigmoid(x) elementwise (EfficientNet's activation); no parameters. */
export class SiLU extends Module {
  /** x sigmoid(x), same shape as `x`. */
  forward(x: Tensor): Tensor {
    return silu(x);
  }
}

/** torch.nn.Sigmoid: 1 / (1 + e^-x) elementwise; no parameters. */
export class Sigmoid extends Module {
  /** sigmoid(x), same shape as `x`. */
  forward(x: Tensor): Tensor {
    return sigmoid(x);
  }
}

/**
 * torchvision.ops.StochasticDepth (mode "row"): in training mode each sample's input is dropped whole with
 * probability p (the residual branch it feeds is skipped) and the rest scaled by 1 / (1 - p); identity in
 * eval mode. No parameters.
 */
export class StochasticDepth extends Module {
  /**
   * Builds the layer; it draws a fresh per-sample mask on every training-mode forward.
   * @throws Error when `p` is not in [0, 1).
   */
  constructor(
    /** Probability of dropping a sample's branch. */
    readonly p: number,
    /** `generator` draws the masks (the global one when omitted). */
    readonly options: InitOptions = {},
  ) {
    super();
    if (!(p >= 0 && p < 1)) throw new Error(`StochasticDepth: p must be in [0, 1), got ${p}`);
  }

  /** `x` with whole samples dropped (training mode), `x` itself in eval mode. */
  forward(x: Tensor): Tensor {
    return stochasticDepth(x, this.p, this.training, { generator: this.options.generator });
  }
}

/** torch.nn.Flatten: merges dimensions startDim..endDim (default 1..-1: [N, ...] -> [N, rest]). */
export class Flatten extends Module {
  /** Flattens `startDim` through `endDim` (inclusive; negative counts from the end). */
  constructor(
    /** First dimension merged (default 1, keeping the batch). */
    readonly startDim: number = 1,
    /** Last dimension merged (default -1, the last). */
    readonly endDim: number = -1,
  ) {
    super();
  }

  /** `x` with dimensions startDim..endDim merged into one. */
  forward(x: Tensor): Tensor {
    return flatten(x, this.startDim, this.endDim);
  }
}

/**
 * torch.nn.Dropout: in training mode zeroes each element with probability `p` and scales the rest by
 * 1 / (1 - p); the identity in eval mode.
 */
export class Dropout extends Module {
  /**
   * Builds the layer; it draws a fresh mask on every training-mode forward.
   * @throws Error when `p` is not in [0, 1).
   */
  constructor(
    /** Probability of zeroing an element (default 0.5). */
    readonly p = 0.5,
    /** `generator` draws the masks (the global one when omitted). */
    readonly options: InitOptions = {},
  ) {
    super();
    if (!(p >= 0 && p < 1)) throw new Error(`Dropout: p must be in [0, 1), got ${p}`);
  }

  /** `x` with dropout applied in training mode; `x` itself in eval mode. */
  forward(x: Tensor): Tensor {
    return dropout(x, this.p, this.training, { generator: this.options.generator });
  }
}

/** Children named "0", "1", ... as torch.nn.Sequential. */
export class Sequential extends Module {
  /** The children in order (child i is registered as "i"). */
  readonly layers: Module[];
  /** Registers `layers` as children "0", "1", ... */
  constructor(...layers: Module[]) {
    super();
    this.layers = layers;
    layers.forEach((m, i) => this.registerModule(String(i), m));
  }

  /** `x` passed through every layer in order (a Conv2d, BatchNorm2d, ReLU run fused in inference). */
  forward(x: Tensor): Tensor {
    return forwardChain(this.layers, x);
  }
}
