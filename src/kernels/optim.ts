// Optimizer updates as device kernels, in place on the parameter and its state: PyTorch's Adam (L2 weight
// decay folded into the gradient) and SGD (momentum, dampening, Nesterov, weight decay).
import { defineKernel, kernelFamily, main1d } from "../backend/kernel.ts";
import type { Tensor } from "../autograd/tensor.ts";
import { dispatch1d } from "./basic.ts";

const adamKernel = defineKernel({
  name: "adam_step",
  storage: [
    { name: "p", access: "rw" },
    { name: "g", access: "read" },
    { name: "m", access: "rw" },
    { name: "v", access: "rw" },
  ],
  uniforms: [
    { name: "n", type: "u32" },
    { name: "lr", type: "f32" },
    { name: "beta1", type: "f32" },
    { name: "beta2", type: "f32" },
    { name: "eps", type: "f32" },
    { name: "weight_decay", type: "f32" },
    { name: "bias_correction1", type: "f32" },
    { name: "sqrt_bias_correction2", type: "f32" },
  ],
  body: `${main1d("i", "u.n")}
  let grad = g[i] + u.weight_decay * p[i];
  let mi = u.beta1 * m[i] + (1.0 - u.beta1) * grad;
  let vi = u.beta2 * v[i] + (1.0 - u.beta2) * grad * grad;
  m[i] = mi;
  v[i] = vi;
  let denom = sqrt(vi) / u.sqrt_bias_correction2 + u.eps;
  p[i] = p[i] - (u.lr / u.bias_correction1) * mi / denom;
}`,
});

/** Adam's hyper-parameters as the update kernel takes them (PyTorch's lr, betas, eps, weight_decay). */
export interface AdamHyper {
  /** Learning rate. */
  lr: number;
  /** Decay of the running mean of gradients (betas[0]). */
  beta1: number;
  /** Decay of the running mean of squared gradients (betas[1]). */
  beta2: number;
  /** Added to the bias-corrected sqrt of the second moment. */
  eps: number;
  /** L2 penalty added to the gradient (weight_decay * p), not decoupled as in AdamW. */
  weightDecay: number;
}

/**
 * One Adam update in place on the device: `m`, `v` (the moment estimates, shaped like `p`) and `p` move;
 * `step` counts from 1 and sets the bias corrections.
 */
export function adamStep(p: Tensor, g: Tensor, m: Tensor, v: Tensor, step: number, h: AdamHyper): void {
  dispatch1d(adamKernel, [p, g, m, v], [
    p.size,
    h.lr,
    h.beta1,
    h.beta2,
    h.eps,
    h.weightDecay,
    1 - h.beta1 ** step,
    Math.sqrt(1 - h.beta2 ** step),
  ], p.size);
}

// Without momentum there is no buffer to bind: a variant of the kernel without it.
const sgdKernel = kernelFamily((withMomentum: number) => ({
  name: withMomentum ? "sgd_step_momentum" : "sgd_step",
  storage: [
    { name: "p", access: "rw" as const },
    { name: "g", access: "read" as const },
    ...(withMomentum ? [{ name: "buf", access: "rw" as const }] : []),
  ],
  uniforms: [
    { name: "n", type: "u32" as const },
    { name: "lr", type: "f32" as const },
    { name: "momentum", type: "f32" as const },
    { name: "dampening", type: "f32" as const },
    { name: "weight_decay", type: "f32" as const },
    { name: "nesterov", type: "u32" as const },
    { name: "first", type: "u32" as const },
  ],
  body: `${main1d("i", "u.n")}
  var d = g[i] + u.weight_decay * p[i];
  ${
    withMomentum
      ? `var b = d;
  if (u.first == 0u) { b = u.momentum * buf[i] + (1.0 - u.dampening) * d; }
  buf[i] = b;
  d = select(b, d + u.momentum * b, u.nesterov == 1u);`
      : ""
  }
  p[i] = p[i] - u.lr * d;
}`,
}), [0, 1]);

/** SGD's hyper-parameters as the update kernel takes them (PyTorch's torch.optim.SGD names). */
export interface SgdHyper {
  /** Learning rate. */
  lr: number;
  /** Momentum factor (0: plain SGD, no buffer). */
  momentum: number;
  /** Dampening of the gradient's share in the momentum buffer. */
  dampening: number;
  /** L2 penalty added to the gradient (weight_decay * p). */
  weightDecay: number;
  /** Nesterov momentum (needs momentum > 0 and dampening 0). */
  nesterov: boolean;
}

/**
 * One SGD update in place on the device. `buf` is the momentum buffer, null without momentum; `first`
 * marks its first step, which sets the buffer to the gradient as PyTorch does.
 */
export function sgdStep(p: Tensor, g: Tensor, buf: Tensor | null, first: boolean, h: SgdHyper): void {
  dispatch1d(sgdKernel(buf ? 1 : 0), buf ? [p, g, buf] : [p, g], [
    p.size,
    h.lr,
    h.momentum,
    h.dampening,
    h.weightDecay,
    h.nesterov ? 1 : 0,
    first ? 1 : 0,
  ], p.size);
}
