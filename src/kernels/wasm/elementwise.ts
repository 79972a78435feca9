// Twins of src/kernels/elementwise.ts (and reduce.ts's expand): binary ops with NumPy broadcasting and
// unary maps with their gradients. Broadcast indexing walks the output in runs of its innermost dim, so
// the per-element work is a load or two and the op, in f32x4 lanes where the inner strides allow.
import { argF, argI, argP, at, SCRATCH, shareBegin, shareEnd } from "./common";
import * as L from "./layout";

const RANK = 6;
const ADD = 0, SUB = 1, MUL = 2, DIV = 3, SCALE = 4;

@inline function op1(op: i32, x: f32, y: f32, s: f32): f32 {
  if (op == ADD) return x + y;
  if (op == SUB) return x - y;
  if (op == MUL) return x * y;
  if (op == DIV) return x / y;
  return x * s;
}

@inline function op4(op: i32, x: v128, y: v128, s: v128): v128 {
  if (op == ADD) return f32x4.add(x, y);
  if (op == SUB) return f32x4.sub(x, y);
  if (op == MUL) return f32x4.mul(x, y);
  if (op == DIV) return f32x4.div(x, y);
  return f32x4.mul(x, s);
}

/** out[i] = op(a[i], b[i]) over n contiguous elements, b read with stride ib (0 or 1), a with ia. */
@inline function run(op: i32, a: usize, ia: i32, b: usize, ib: i32, out: usize, n: i32, s: f32): void {
  const vs = f32x4.splat(s);
  let j = 0;
  if (ia == 1 && ib == 1) {
    for (; j + 4 <= n; j += 4) v128.store(at(out, j), op4(op, v128.load(at(a, j)), v128.load(at(b, j)), vs));
  } else if (ia == 1 && ib == 0) {
    const y = v128.load32_splat(b);
    for (; j + 4 <= n; j += 4) v128.store(at(out, j), op4(op, v128.load(at(a, j)), y, vs));
  } else if (ia == 0 && ib == 1) {
    const x = v128.load32_splat(a);
    for (; j + 4 <= n; j += 4) v128.store(at(out, j), op4(op, x, v128.load(at(b, j)), vs));
  }
  for (; j < n; j++) store<f32>(at(out, j), op1(op, load<f32>(at(a, j * ia)), load<f32>(at(b, j * ib)), s));
}

/**
 * The broadcast walk: shape at slots [shape, +6), a's strides at [aStr, +6), b's at [bStr, +6) (bStr < 0:
 * no b, op SCALE). Coordinates live in the thread's scratch.
 */
@inline function broadcast(
  tid: i32, nth: i32, args: usize, a: usize, b: usize, out: usize, n: i32,
  shape: i32, aStr: i32, bStr: i32, op: i32, s: f32, scratchSlot: i32,
): void {
  const begin = shareBegin(tid, nth, n, 4), end = shareEnd(tid, nth, n, 4);
  if (begin >= end) return;
  const c = argP(args, scratchSlot) + <usize>tid * SCRATCH;
  let rem = begin, oa = 0, ob = 0;
  for (let d = RANK - 1; d >= 0; d--) {
    const size = argI(args, shape + d);
    const cd = rem % size;
    rem /= size;
    store<i32>(at(c, d), cd);
    oa += cd * argI(args, aStr + d);
    if (bStr >= 0) ob += cd * argI(args, bStr + d);
  }
  const inner = argI(args, shape + RANK - 1);
  const ia = argI(args, aStr + RANK - 1), ib = bStr >= 0 ? argI(args, bStr + RANK - 1) : 0;
  let i = begin;
  while (i < end) {
    const c5 = load<i32>(at(c, RANK - 1));
    const len = min(end - i, inner - c5);
    run(op, at(a, oa), ia, bStr >= 0 ? at(b, ob) : a, ib, at(out, i), len, s);
    i += len;
    if (i >= end) break;
    // The row is done: back to its start, then carry into the outer dims.
    oa -= c5 * ia;
    ob -= c5 * ib;
    store<i32>(at(c, RANK - 1), 0);
    for (let d = RANK - 2; d >= 0; d--) {
      const cd = load<i32>(at(c, d)) + 1;
      const sa = argI(args, aStr + d), sb = bStr >= 0 ? argI(args, bStr + d) : 0;
      if (cd < argI(args, shape + d)) {
        store<i32>(at(c, d), cd);
        oa += sa;
        ob += sb;
        break;
      }
      store<i32>(at(c, d), 0);
      oa -= (cd - 1) * sa;
      ob -= (cd - 1) * sb;
    }
  }
}

// Binary: bindings a, b, out; uniforms n, s0..s5, at0..at5, bt0..bt5 (L.binary: every binary_* kernel's).
@inline function binary(op: i32, tid: i32, nth: i32, args: usize): void {
  broadcast(
    tid, nth, args, argP(args, L.binary.a), argP(args, L.binary.b), argP(args, L.binary.out), argI(args, L.binary.n),
    L.binary.s0, L.binary.at0, L.binary.bt0, op, 0, L.binary.SCRATCH_BASE,
  );
}
export function binary_add(tid: i32, nth: i32, args: usize): void { binary(ADD, tid, nth, args); }
export function binary_sub(tid: i32, nth: i32, args: usize): void { binary(SUB, tid, nth, args); }
export function binary_mul(tid: i32, nth: i32, args: usize): void { binary(MUL, tid, nth, args); }
export function binary_div(tid: i32, nth: i32, args: usize): void { binary(DIV, tid, nth, args); }

/** expand (reduce.ts): out[i] = a[broadcast i] * scale; bindings a, out; uniforms n, s0..s5, at0..at5, scale. */
export function expand(tid: i32, nth: i32, args: usize): void {
  broadcast(
    tid, nth, args, argP(args, L.expand.a), 0, argP(args, L.expand.out), argI(args, L.expand.n), L.expand.s0,
    L.expand.at0, -1, SCALE, argF(args, L.expand.scale), L.expand.SCRATCH_BASE,
  );
}

// Unary: bindings a, out; uniforms n, alpha (L.unary). Gradient: bindings gy, xs, ys, gx; same uniforms
// (L.unary_grad).
const NEG = 0, EXP = 1, LOG = 2, RELU = 3, TANH = 4, SIGMOID = 5, SQRT = 6, SCALE_BY = 7, ADD_SCALAR = 8;

@inline function unary1(op: i32, x: f32, alpha: f32): f32 {
  if (op == NEG) return -x;
  if (op == EXP) return Mathf.exp(x);
  if (op == LOG) return Mathf.log(x);
  if (op == RELU) return max(x, 0);
  if (op == TANH) {
    // As the WGSL: through exp(-2|x|), saturating to +-1.
    const e = Mathf.exp(-2 * Mathf.abs(x));
    return Mathf.sign(x) * (1 - e) / (1 + e);
  }
  if (op == SIGMOID) return x >= 0 ? 1 / (1 + Mathf.exp(-x)) : Mathf.exp(x) / (1 + Mathf.exp(x));
  if (op == SQRT) return Mathf.sqrt(x);
  if (op == SCALE_BY) return x * alpha;
  return x + alpha;
}

/** Ops that are a few lane instructions; the others go element by element through Mathf. */
@inline function unaryIsSimd(op: i32): bool {
  return op == NEG || op == RELU || op == SQRT || op == SCALE_BY || op == ADD_SCALAR;
}

@inline function unary4(op: i32, x: v128, alpha: v128): v128 {
  if (op == NEG) return f32x4.neg(x);
  if (op == RELU) return f32x4.max(x, f32x4.splat(0));
  if (op == SQRT) return f32x4.sqrt(x);
  if (op == SCALE_BY) return f32x4.mul(x, alpha);
  return f32x4.add(x, alpha);
}

@inline function unary(op: i32, tid: i32, nth: i32, args: usize): void {
  const a = argP(args, L.unary.a), out = argP(args, L.unary.out), n = argI(args, L.unary.n), alpha = argF(args, L.unary.alpha);
  const b = shareBegin(tid, nth, n, 4), e = shareEnd(tid, nth, n, 4);
  let i = b;
  if (unaryIsSimd(op)) {
    const va = f32x4.splat(alpha);
    for (; i + 4 <= e; i += 4) v128.store(at(out, i), unary4(op, v128.load(at(a, i)), va));
  }
  for (; i < e; i++) store<f32>(at(out, i), unary1(op, load<f32>(at(a, i)), alpha));
}
export function unary_neg(tid: i32, nth: i32, args: usize): void { unary(NEG, tid, nth, args); }
export function unary_exp(tid: i32, nth: i32, args: usize): void { unary(EXP, tid, nth, args); }
export function unary_log(tid: i32, nth: i32, args: usize): void { unary(LOG, tid, nth, args); }
export function unary_relu(tid: i32, nth: i32, args: usize): void { unary(RELU, tid, nth, args); }
export function unary_tanh(tid: i32, nth: i32, args: usize): void { unary(TANH, tid, nth, args); }
export function unary_sigmoid(tid: i32, nth: i32, args: usize): void { unary(SIGMOID, tid, nth, args); }
export function unary_sqrt(tid: i32, nth: i32, args: usize): void { unary(SQRT, tid, nth, args); }
export function unary_scale(tid: i32, nth: i32, args: usize): void { unary(SCALE_BY, tid, nth, args); }
export function unary_addScalar(tid: i32, nth: i32, args: usize): void { unary(ADD_SCALAR, tid, nth, args); }

@inline function grad1(op: i32, g: f32, x: f32, y: f32, alpha: f32): f32 {
  if (op == NEG) return -g;
  if (op == EXP) return g * y;
  if (op == LOG) return g / x;
  if (op == RELU) return x > 0 ? g : 0;
  if (op == TANH) return g * (1 - y * y);
  if (op == SIGMOID) return g * y * (1 - y);
  if (op == SQRT) return g * 0.5 / y;
  if (op == SCALE_BY) return g * alpha;
  return g;
}

@inline function unaryGrad(op: i32, tid: i32, nth: i32, args: usize): void {
  const gy = argP(args, L.unary_grad.gy), xs = argP(args, L.unary_grad.xs), ys = argP(args, L.unary_grad.ys), gx = argP(args, L.unary_grad.gx);
  const n = argI(args, L.unary_grad.n), alpha = argF(args, L.unary_grad.alpha);
  const b = shareBegin(tid, nth, n, 4), e = shareEnd(tid, nth, n, 4);
  let i = b;
  if (op == RELU) {
    const zero = f32x4.splat(0);
    for (; i + 4 <= e; i += 4) {
      const keep = f32x4.gt(v128.load(at(xs, i)), zero);
      v128.store(at(gx, i), v128.and(v128.load(at(gy, i)), keep));
    }
  }
  for (; i < e; i++) {
    store<f32>(at(gx, i), grad1(op, load<f32>(at(gy, i)), load<f32>(at(xs, i)), load<f32>(at(ys, i)), alpha));
  }
}
export function unary_grad_neg(tid: i32, nth: i32, args: usize): void { unaryGrad(NEG, tid, nth, args); }
export function unary_grad_exp(tid: i32, nth: i32, args: usize): void { unaryGrad(EXP, tid, nth, args); }
export function unary_grad_log(tid: i32, nth: i32, args: usize): void { unaryGrad(LOG, tid, nth, args); }
export function unary_grad_relu(tid: i32, nth: i32, args: usize): void { unaryGrad(RELU, tid, nth, args); }
export function unary_grad_tanh(tid: i32, nth: i32, args: usize): void { unaryGrad(TANH, tid, nth, args); }
export function unary_grad_sigmoid(tid: i32, nth: i32, args: usize): void { unaryGrad(SIGMOID, tid, nth, args); }
export function unary_grad_sqrt(tid: i32, nth: i32, args: usize): void { unaryGrad(SQRT, tid, nth, args); }
export function unary_grad_scale(tid: i32, nth: i32, args: usize): void { unaryGrad(SCALE_BY, tid, nth, args); }
export function unary_grad_addScalar(tid: i32, nth: i32, args: usize): void { unaryGrad(ADD_SCALAR, tid, nth, args); }
