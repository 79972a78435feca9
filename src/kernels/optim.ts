// Optimizer updates as device kernels, in place on the parameter and its state: PyTorch's Adam (L2 weight
// decay folded into the gradient) and SGD (momentum, dampening, Nesterov, weight decay).
import { defineKernel, kernelFamily, pointwiseKernel } from "../backend/kernel.ts";
import { E } from "../backend/expr.ts";
import type { Tensor } from "../autograd/tensor.ts";
import { dispatch1d } from "./basic.ts";

const one = E.c(1);

// The update as expressions: the WGSL body and the whole WebAssembly twin are generated from them.
const adamKernel = defineKernel(pointwiseKernel({
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
  program: (() => {
    const [p, g, m, v, grad, mi, vi] = ["p", "g", "m", "v", "grad", "mi", "vi"].map(E.value);
    const [lr, beta1, beta2, eps, wd, bc1, sqrtBc2] = [
      "lr",
      "beta1",
      "beta2",
      "eps",
      "weight_decay",
      "bias_correction1",
      "sqrt_bias_correction2",
    ].map(E.uniform);
    return {
      count: "n",
      lets: [
        ["grad", E.add(g, E.mul(wd, p))],
        ["mi", E.add(E.mul(beta1, m), E.mul(E.sub(one, beta1), grad))],
        ["vi", E.add(E.mul(beta2, v), E.mul(E.mul(E.sub(one, beta2), grad), grad))],
        ["denom", E.add(E.div(E.sqrt(vi), sqrtBc2), eps)],
      ],
      stores: [
        ["m", mi],
        ["v", vi],
        ["p", E.sub(p, E.div(E.mul(E.div(lr, bc1), mi), E.value("denom")))],
      ],
    };
  })(),
}));

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

// Without momentum there is no buffer to bind: a variant of the kernel without it. The momentum buffer
// starts as the first gradient (flag first), as PyTorch's.
const sgdKernel = kernelFamily((withMomentum: number) => {
  const [p, g, buf, d, b] = ["p", "g", "buf", "d", "b"].map(E.value);
  const [lr, momentum, dampening, wd] = ["lr", "momentum", "dampening", "weight_decay"].map(E.uniform);
  return pointwiseKernel({
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
    program: withMomentum
      ? {
        count: "n",
        lets: [
          ["d", E.add(g, E.mul(wd, p))],
          ["b", E.select(E.add(E.mul(momentum, buf), E.mul(E.sub(one, dampening), d)), d, E.flag("first"))],
          ["step", E.select(b, E.add(d, E.mul(momentum, b)), E.flag("nesterov"))],
        ],
        stores: [["buf", b], ["p", E.sub(p, E.mul(lr, E.value("step")))]],
      }
      : { count: "n", lets: [], stores: [["p", E.sub(p, E.mul(lr, E.add(g, E.mul(wd, p))))]] },
  });
}, [0, 1]);

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
