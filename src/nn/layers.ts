// Layers with PyTorch's names, shapes and default initialisations.
import type { Tensor } from "../autograd/tensor.ts";
import { linear } from "../kernels/matmul.ts";
import { relu, tanh } from "../kernels/elementwise.ts";
import { dropout, type Generator, rand } from "../kernels/random.ts";
import { flatten } from "../kernels/view.ts";
import { Module } from "./module.ts";

export interface InitOptions {
  /** Draws the initial weights; the global generator (fl.manualSeed) when omitted. */
  generator?: Generator;
}

/** U(-bound, bound), PyTorch's kaiming_uniform(a = sqrt 5) bound for a layer of `fanIn` inputs. */
export function uniformInit(shape: number[], fanIn: number, options: InitOptions): Tensor {
  const bound = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0;
  return rand(shape, { low: -bound, high: bound, generator: options.generator });
}

export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias: Tensor | null;
  constructor(
    readonly inFeatures: number,
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

  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

export class ReLU extends Module {
  forward(x: Tensor): Tensor {
    return relu(x);
  }
}

export class Tanh extends Module {
  forward(x: Tensor): Tensor {
    return tanh(x);
  }
}

export class Flatten extends Module {
  constructor(readonly startDim: number = 1, readonly endDim: number = -1) {
    super();
  }

  forward(x: Tensor): Tensor {
    return flatten(x, this.startDim, this.endDim);
  }
}

export class Dropout extends Module {
  constructor(readonly p = 0.5, readonly options: InitOptions = {}) {
    super();
    if (!(p >= 0 && p < 1)) throw new Error(`Dropout: p must be in [0, 1), got ${p}`);
  }

  forward(x: Tensor): Tensor {
    return dropout(x, this.p, this.training, { generator: this.options.generator });
  }
}

/** Children named "0", "1", ... as torch.nn.Sequential. */
export class Sequential extends Module {
  readonly layers: Module[];
  constructor(...layers: Module[]) {
    super();
    this.layers = layers;
    layers.forEach((m, i) => this.registerModule(String(i), m));
  }

  forward(x: Tensor): Tensor {
    return this.layers.reduce((h, m) => m.forward(h), x);
  }
}
