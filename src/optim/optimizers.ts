// Optimizers over parameter tensors; their state lives on the device next to the parameters.
import { Tensor } from "../autograd/tensor.ts";
import { fillInPlace, zerosLike } from "../kernels/basic.ts";
import { adamStep, type AdamHyper, sgdStep, type SgdHyper } from "../kernels/optim.ts";

function checkParams(params: Tensor[], name: string): Tensor[] {
  if (!Array.isArray(params) || params.length === 0) throw new Error(`${name}: no parameters to optimize`);
  for (const p of params) {
    if (!(p instanceof Tensor) || p.dtype !== "float32") throw new Error(`${name}: parameters must be float32 tensors`);
  }
  return [...params];
}

function checkNumber(name: string, key: string, v: number, lo: number, hi = Infinity): void {
  if (!Number.isFinite(v) || v < lo || v > hi) throw new Error(`${name}: ${key} must be in [${lo}, ${hi}], got ${v}`);
}

abstract class Optimizer {
  readonly params: Tensor[];
  stepCount = 0;
  constructor(params: Tensor[], name: string) {
    this.params = checkParams(params, name);
  }

  /** Zeroes the gradients in place (their buffers are reused by the next backward). */
  zeroGrad(): void {
    for (const p of this.params) if (p.grad) fillInPlace(p.grad, 0);
  }

  /** Frees the optimizer's state tensors. */
  abstract dispose(): void;
  abstract step(): void;
}

export interface AdamOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/** Adam as PyTorch's torch.optim.Adam (weight decay as L2 on the gradient). */
export class Adam extends Optimizer {
  readonly hyper: AdamHyper;
  private state = new Map<Tensor, { m: Tensor; v: Tensor; step: number }>();

  constructor(params: Tensor[], options: AdamOptions = {}) {
    super(params, "Adam");
    const [beta1, beta2] = options.betas ?? [0.9, 0.999];
    this.hyper = { lr: options.lr ?? 1e-3, beta1, beta2, eps: options.eps ?? 1e-8, weightDecay: options.weightDecay ?? 0 };
    checkNumber("Adam", "lr", this.hyper.lr, 0);
    checkNumber("Adam", "betas[0]", beta1, 0, 0.999999);
    checkNumber("Adam", "betas[1]", beta2, 0, 0.999999);
    checkNumber("Adam", "eps", this.hyper.eps, 0);
    checkNumber("Adam", "weightDecay", this.hyper.weightDecay, 0);
  }

  step(): void {
    this.stepCount++;
    for (const p of this.params) {
      if (!p.grad) continue;
      let s = this.state.get(p);
      if (!s) this.state.set(p, s = { m: zerosLike(p).keep(), v: zerosLike(p).keep(), step: 0 });
      s.step++;
      adamStep(p, p.grad, s.m, s.v, s.step, this.hyper);
    }
  }

  dispose(): void {
    for (const s of this.state.values()) {
      s.m.dispose();
      s.v.dispose();
    }
    this.state.clear();
  }
}

export interface SgdOptions {
  lr?: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

/** SGD as PyTorch's torch.optim.SGD. */
export class SGD extends Optimizer {
  readonly hyper: SgdHyper;
  private buffers = new Map<Tensor, Tensor>();

  constructor(params: Tensor[], options: SgdOptions = {}) {
    super(params, "SGD");
    this.hyper = {
      lr: options.lr ?? 1e-2,
      momentum: options.momentum ?? 0,
      dampening: options.dampening ?? 0,
      weightDecay: options.weightDecay ?? 0,
      nesterov: options.nesterov ?? false,
    };
    checkNumber("SGD", "lr", this.hyper.lr, 0);
    checkNumber("SGD", "momentum", this.hyper.momentum, 0);
    checkNumber("SGD", "dampening", this.hyper.dampening, 0, 1);
    checkNumber("SGD", "weightDecay", this.hyper.weightDecay, 0);
    if (this.hyper.nesterov && (this.hyper.momentum <= 0 || this.hyper.dampening !== 0)) {
      throw new Error("SGD: Nesterov momentum needs momentum > 0 and dampening 0");
    }
  }

  step(): void {
    this.stepCount++;
    for (const p of this.params) {
      if (!p.grad) continue;
      let buf = this.buffers.get(p);
      const first = !buf;
      if (!buf && this.hyper.momentum !== 0) this.buffers.set(p, buf = zerosLike(p).keep());
      sgdStep(p, p.grad, buf ?? null, first, this.hyper);
    }
  }

  dispose(): void {
    for (const b of this.buffers.values()) b.dispose();
    this.buffers.clear();
  }
}
