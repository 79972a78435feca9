// Twins of src/kernels/optim.ts: Adam and SGD updates, in place on the parameter and its state. Pure
// element streams, so f32x4 lanes with a scalar tail, each line the WGSL's arithmetic in its order.
import { argF, argI, argP, at, shareBegin, shareEnd } from "./common";
import * as L from "./layout";

/**
 * adam_step: bindings p, g, m, v; uniforms n, lr, beta1, beta2, eps, weight_decay, bias_correction1,
 * sqrt_bias_correction2.
 */
export function adam_step(tid: i32, nth: i32, args: usize): void {
  const p = argP(args, L.adam_step.p), g = argP(args, L.adam_step.g), m = argP(args, L.adam_step.m), v = argP(args, L.adam_step.v);
  const n = argI(args, L.adam_step.n), lr = argF(args, L.adam_step.lr), beta1 = argF(args, L.adam_step.beta1), beta2 = argF(args, L.adam_step.beta2);
  const eps = argF(args, L.adam_step.eps), wd = argF(args, L.adam_step.weight_decay);
  const bc1 = argF(args, L.adam_step.bias_correction1), sqrtBc2 = argF(args, L.adam_step.sqrt_bias_correction2);
  const step = lr / bc1, keep1: f32 = 1 - beta1, keep2: f32 = 1 - beta2;
  const b = shareBegin(tid, nth, n, 4), e = shareEnd(tid, nth, n, 4);
  let i = b;
  const vb1 = f32x4.splat(beta1), vb2 = f32x4.splat(beta2);
  const vk1 = f32x4.splat(keep1), vk2 = f32x4.splat(keep2);
  const vwd = f32x4.splat(wd), veps = f32x4.splat(eps);
  const vbc2 = f32x4.splat(sqrtBc2), vstep = f32x4.splat(step);
  for (; i + 4 <= e; i += 4) {
    const pi = v128.load(at(p, i));
    const grad = f32x4.add(v128.load(at(g, i)), f32x4.mul(vwd, pi));
    const mi = f32x4.add(f32x4.mul(vb1, v128.load(at(m, i))), f32x4.mul(vk1, grad));
    const vi = f32x4.add(f32x4.mul(vb2, v128.load(at(v, i))), f32x4.mul(f32x4.mul(vk2, grad), grad));
    v128.store(at(m, i), mi);
    v128.store(at(v, i), vi);
    const denom = f32x4.add(f32x4.div(f32x4.sqrt(vi), vbc2), veps);
    v128.store(at(p, i), f32x4.sub(pi, f32x4.div(f32x4.mul(vstep, mi), denom)));
  }
  for (; i < e; i++) {
    const pi = load<f32>(at(p, i));
    const grad = load<f32>(at(g, i)) + wd * pi;
    const mi = beta1 * load<f32>(at(m, i)) + keep1 * grad;
    const vi = beta2 * load<f32>(at(v, i)) + keep2 * grad * grad;
    store<f32>(at(m, i), mi);
    store<f32>(at(v, i), vi);
    const denom = Mathf.sqrt(vi) / sqrtBc2 + eps;
    store<f32>(at(p, i), pi - step * mi / denom);
  }
}

/**
 * sgd_step: p -= lr (g + weight_decay p); bindings p, g; the uniforms of sgd_step_momentum, of which n, lr
 * and weight_decay apply without momentum.
 */
export function sgd_step(tid: i32, nth: i32, args: usize): void {
  const p = argP(args, L.sgd_step.p), g = argP(args, L.sgd_step.g), n = argI(args, L.sgd_step.n);
  const lr = argF(args, L.sgd_step.lr), wd = argF(args, L.sgd_step.weight_decay);
  const b = shareBegin(tid, nth, n, 4), e = shareEnd(tid, nth, n, 4);
  const vlr = f32x4.splat(lr), vwd = f32x4.splat(wd);
  let i = b;
  for (; i + 4 <= e; i += 4) {
    const pi = v128.load(at(p, i));
    const d = f32x4.add(v128.load(at(g, i)), f32x4.mul(vwd, pi));
    v128.store(at(p, i), f32x4.sub(pi, f32x4.mul(vlr, d)));
  }
  for (; i < e; i++) {
    const pi = load<f32>(at(p, i));
    store<f32>(at(p, i), pi - lr * (load<f32>(at(g, i)) + wd * pi));
  }
}

/**
 * sgd_step_momentum: bindings p, g, buf; uniforms n, lr, momentum, dampening, weight_decay, nesterov,
 * first. The buffer starts as the first gradient (first = 1), then buf = momentum buf + (1 - dampening) d.
 */
export function sgd_step_momentum(tid: i32, nth: i32, args: usize): void {
  const p = argP(args, L.sgd_step_momentum.p), g = argP(args, L.sgd_step_momentum.g), buf = argP(args, L.sgd_step_momentum.buf);
  const n = argI(args, L.sgd_step_momentum.n), lr = argF(args, L.sgd_step_momentum.lr);
  const momentum = argF(args, L.sgd_step_momentum.momentum), dampening = argF(args, L.sgd_step_momentum.dampening);
  const wd = argF(args, L.sgd_step_momentum.weight_decay), nesterov = argI(args, L.sgd_step_momentum.nesterov) == 1;
  const first = argI(args, L.sgd_step_momentum.first) != 0;
  const keep: f32 = 1 - dampening;
  const b = shareBegin(tid, nth, n, 4), e = shareEnd(tid, nth, n, 4);
  const vlr = f32x4.splat(lr), vwd = f32x4.splat(wd), vmom = f32x4.splat(momentum), vkeep = f32x4.splat(keep);
  let i = b;
  for (; i + 4 <= e; i += 4) {
    const pi = v128.load(at(p, i));
    const d = f32x4.add(v128.load(at(g, i)), f32x4.mul(vwd, pi));
    const bi = first ? d : f32x4.add(f32x4.mul(vmom, v128.load(at(buf, i))), f32x4.mul(vkeep, d));
    v128.store(at(buf, i), bi);
    const step = nesterov ? f32x4.add(d, f32x4.mul(vmom, bi)) : bi;
    v128.store(at(p, i), f32x4.sub(pi, f32x4.mul(vlr, step)));
  }
  for (; i < e; i++) {
    const pi = load<f32>(at(p, i));
    const d = load<f32>(at(g, i)) + wd * pi;
    const bi = first ? d : momentum * load<f32>(at(buf, i)) + keep * d;
    store<f32>(at(buf, i), bi);
    store<f32>(at(p, i), pi - lr * (nesterov ? d + momentum * bi : bi));
  }
}
