// The per-element arithmetic of the element-wise kernels, stated once as expressions (src/backend/expr.ts):
// elementwise.ts and reduce.ts build their WGSL from these tables, and tools/build_wasm.ts writes the
// WebAssembly twins' maps (src/kernels/wasm/maps.ts) from the same ones. Adding a unary op is one line here
// (and its gradient rule and export in elementwise.ts).
import { E, type Expr } from "../backend/expr.ts";

/** The binary maps with a kernel. */
export type BinaryOp = "add" | "sub" | "mul" | "div";

const x = E.value("x"), y = E.value("y"), g = E.value("g"), alpha = E.uniform("alpha");

/**
 * The binary maps of x (from a) and y (from b), for WGSL and the WebAssembly twins alike (tools/build_wasm.ts
 * emits them from here); `scale` is expand's (reduce.ts) x times its uniform.
 */
export const BINARY_MAPS: Record<BinaryOp | "scale", Expr> = {
  add: E.add(x, y),
  sub: E.sub(x, y),
  mul: E.mul(x, y),
  div: E.div(x, y),
  scale: E.mul(x, E.uniform("scale")),
};

/** The element-wise maps with a kernel and a gradient rule (`scale` and `addScalar` take a scalar alpha). */
export type UnaryOp =
  | "neg"
  | "exp"
  | "log"
  | "relu"
  | "tanh"
  | "sigmoid"
  | "silu"
  | "sqrt"
  | "scale"
  | "addScalar"
  | "abs";

/**
 * The logistic of v in the two forms that are each exact on their side, through one exp(-|v|) (never of a
 * large positive value) and one division: r = 1 / (1 + e) for v >= 0, e r below.
 */
const logistic = (v: Expr): Expr => {
  const e = E.exp(E.neg(E.abs(v))), r = E.div(E.c(1), E.add(E.c(1), e));
  return E.select(E.mul(e, r), r, E.ge(v, E.c(0)));
};

/** max(v, 0): ReLU's forward, also where an op applies it in place (batchnorm.ts's epilogue). */
export const reluOf = (v: Expr): Expr => E.max(v, E.c(0));

/**
 * Each map's forward of x (and the uniform alpha) and its gradient of g, x, y = f(x) and alpha: the one
 * statement of them that the WGSL kernels and their WebAssembly twins are both made from.
 */
export const UNARY_MAPS: Record<UnaryOp, { fwd: Expr; grad: Expr }> = {
  neg: { fwd: E.neg(x), grad: E.neg(g) },
  exp: { fwd: E.exp(x), grad: E.mul(g, y) },
  log: { fwd: E.log(x), grad: E.div(g, x) },
  relu: { fwd: reluOf(x), grad: E.select(E.c(0), g, E.gt(x, E.c(0))) },
  // tanh through exp of -2|x| so large |x| saturates to +-1 instead of overflowing to NaN.
  tanh: {
    fwd: E.div(
      E.mul(E.sign(x), E.sub(E.c(1), E.exp(E.mul(E.c(-2), E.abs(x))))),
      E.add(E.c(1), E.exp(E.mul(E.c(-2), E.abs(x)))),
    ),
    grad: E.mul(g, E.sub(E.c(1), E.mul(y, y))),
  },
  sigmoid: { fwd: logistic(x), grad: E.mul(E.mul(g, y), E.sub(E.c(1), y)) },
  // x sigmoid(x); its gradient recomputes sigmoid(x) (y / x would fail at 0), as PyTorch's silu_backward.
  silu: {
    fwd: E.mul(x, logistic(x)),
    grad: E.mul(g, E.mul(logistic(x), E.add(E.c(1), E.mul(x, E.sub(E.c(1), logistic(x)))))),
  },
  sqrt: { fwd: E.sqrt(x), grad: E.div(E.mul(g, E.c(0.5)), y) },
  scale: { fwd: E.mul(x, alpha), grad: E.mul(g, alpha) },
  addScalar: { fwd: E.add(x, alpha), grad: g },
  // PyTorch's subgradient: sign(x), 0 at 0.
  abs: { fwd: E.abs(x), grad: E.mul(g, E.sign(x)) },
};
