// Element-wise ops: binary with NumPy broadcasting (add, sub, mul, div) and unary maps (relu, tanh,
// sigmoid, silu, abs, exp, log, neg, sqrt, scalar affine), each with its gradient rule.
import { kernelFamily, main1d } from "../backend/kernel.ts";
import { isFloat, resultDtype, Tensor } from "../autograd/tensor.ts";
import { record } from "../autograd/tape.ts";
import { broadcastDecode, broadcastParams, broadcastShapes, broadcastUniforms, sameShape } from "./shape.ts";
import { dispatch1d } from "./basic.ts";
import { toWgsl } from "../backend/expr.ts";
import { BINARY_MAPS, type BinaryOp, UNARY_MAPS, type UnaryOp } from "./maps.ts";
import { sumToShape } from "./reduce.ts";
import { tracer, type TraceRecorder } from "../onnx/trace.ts";

const binaryKernel = kernelFamily((op: BinaryOp) => ({
  name: `binary_${op}`,
  layout: "binary",
  storage: [{ name: "a", access: "read" }, { name: "b", access: "read" }, { name: "out", access: "rw" }],
  uniforms: broadcastUniforms(["a", "b"]),
  body: `${main1d("i", "u.n")}
  ${broadcastDecode(["a", "b"])}
  let x = a[oa]; let y = b[ob];
  out[i] = ${toWgsl(BINARY_MAPS[op])};
}`,
}), ["add", "sub", "mul", "div"]);

function checkFloat(op: string, ...ts: Tensor[]): void {
  for (const t of ts) {
    if (!(t instanceof Tensor)) throw new Error(`${op}: expected a Tensor, got ${typeof t}`);
    if (!isFloat(t.dtype)) throw new Error(`${op}: needs float tensors, got ${t.dtype}`);
  }
}

function binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  checkFloat(op, a, b);
  const shape = broadcastShapes(a.shape, b.shape, op);
  const out = Tensor.empty(shape, resultDtype(a, b));
  dispatch1d(binaryKernel(op), [a, b, out], broadcastParams(shape, [a.shape, b.shape]), out.size);
  return out;
}

/**
 * a + b with NumPy broadcasting (torch.add). Both float32; throws when the shapes do not broadcast. The
 * gradient to each input is summed back over its broadcast dims.
 */
export function add(a: Tensor, b: Tensor): Tensor {
  const out = binary("add", a, b);
  tracer?.node("Add", [a, b], out);
  return record(out, "add", [a, b], (g) => [
    a.requiresGrad ? sumToShape(g, a.shape) : null,
    b.requiresGrad ? sumToShape(g, b.shape) : null,
  ]);
}

/** a - b with NumPy broadcasting (torch.sub); float32, gradients as in {@link add}. */
export function sub(a: Tensor, b: Tensor): Tensor {
  const out = binary("sub", a, b);
  tracer?.node("Sub", [a, b], out);
  return record(out, "sub", [a, b], (g) => [
    a.requiresGrad ? sumToShape(g, a.shape) : null,
    b.requiresGrad ? reduceScaled(g, b.shape, -1) : null,
  ]);
}

/** The gradient of a binary op for one input: `g * factor` summed back to `shape`. */
function gradThrough(g: Tensor, factor: Tensor, op: BinaryOp, shape: number[]): Tensor {
  const full = binary(op, g, factor);
  if (sameShape(full.shape, shape)) return full;
  const reduced = sumToShape(full, shape);
  full.dispose();
  return reduced;
}

function reduceScaled(g: Tensor, shape: number[], scale: number): Tensor {
  const reduced = sumToShape(g, shape);
  const out = unaryRaw("scale", reduced, scale);
  reduced.dispose();
  return out;
}

/** Element-wise a * b with NumPy broadcasting (torch.mul); float32, gradients as in {@link add}. */
export function mul(a: Tensor, b: Tensor): Tensor {
  const out = binary("mul", a, b);
  tracer?.node("Mul", [a, b], out);
  return record(out, "mul", [a, b], (g) => [
    a.requiresGrad ? gradThrough(g, b, "mul", a.shape) : null,
    b.requiresGrad ? gradThrough(g, a, "mul", b.shape) : null,
  ]);
}

/** Element-wise a / b with NumPy broadcasting (torch.div; IEEE results for division by 0); float32. */
export function div(a: Tensor, b: Tensor): Tensor {
  const out = binary("div", a, b);
  tracer?.node("Div", [a, b], out);
  return record(out, "div", [a, b], (g) => {
    let gb: Tensor | null = null;
    if (b.requiresGrad) {
      // d(a/b)/db = -(a/b)/b = -out/b
      const q = binary("div", out, b);
      const t = binary("mul", g, q);
      q.dispose();
      gb = reduceScaled(t, b.shape, -1);
      t.dispose();
    }
    return [a.requiresGrad ? gradThrough(g, b, "div", a.shape) : null, gb];
  });
}

const UNARY_OPS = Object.keys(UNARY_MAPS) as UnaryOp[];

const unaryUniforms = [{ name: "n", type: "u32" as const }, { name: "alpha", type: "f32" as const }];
const unaryKernel = kernelFamily((op: UnaryOp) => ({
  name: `unary_${op}`,
  layout: "unary",
  storage: [{ name: "a", access: "read" }, { name: "out", access: "rw" }],
  uniforms: unaryUniforms,
  body: `${main1d("i", "u.n")}
  let x = a[i];
  out[i] = ${toWgsl(UNARY_MAPS[op].fwd)};
}`,
}), UNARY_OPS);

const unaryGradKernel = kernelFamily((op: UnaryOp) => ({
  name: `unary_grad_${op}`,
  layout: "unary_grad",
  storage: [{ name: "gy", access: "read" }, { name: "xs", access: "read" }, { name: "ys", access: "read" }, {
    name: "gx",
    access: "rw",
  }],
  uniforms: unaryUniforms,
  body: `${main1d("i", "u.n")}
  let g = gy[i]; let x = xs[i]; let y = ys[i];
  gx[i] = ${toWgsl(UNARY_MAPS[op].grad)};
}`,
}), UNARY_OPS);

/**
 * The gradient through a ReLU from its output alone: out > 0 exactly where its input was > 0, so the mask is
 * the same bits. For ops that apply a ReLU to their own output and keep nothing else (batch norm's epilogue).
 */
export function reluGradFromOutput(g: Tensor, out: Tensor): Tensor {
  const gx = Tensor.empty([...out.shape], out.dtype);
  dispatch1d(unaryGradKernel("relu"), [g, out, out, gx], [out.size, 0], out.size);
  return gx;
}

function unaryRaw(op: UnaryOp, x: Tensor, alpha = 0): Tensor {
  checkFloat(op, x);
  const out = Tensor.empty([...x.shape], x.dtype);
  dispatch1d(unaryKernel(op), [x, out], [x.size, alpha], x.size);
  return out;
}

/** The maps whose ONNX operator (opset 17) is the same function. */
const ONNX_UNARY: Record<Exclude<UnaryOp, "silu" | "scale" | "addScalar">, string> = {
  neg: "Neg",
  exp: "Exp",
  log: "Log",
  relu: "Relu",
  tanh: "Tanh",
  sigmoid: "Sigmoid",
  sqrt: "Sqrt",
  abs: "Abs",
};

/** A map's ONNX translation: opset 17 has no SiLU (x * Sigmoid(x)); the scalar maps take a constant. */
function traceUnary(t: TraceRecorder, op: UnaryOp, x: Tensor, out: Tensor, alpha: number): void {
  switch (op) {
    case "silu":
      t.node("Mul", [x, t.node("Sigmoid", [x])], out);
      return;
    case "scale":
      t.node("Mul", [x, t.constant([alpha], [])], out);
      return;
    case "addScalar":
      t.node("Add", [x, t.constant([alpha], [])], out);
      return;
    default:
      t.node(ONNX_UNARY[op], [x], out);
  }
}

function unary(op: UnaryOp, x: Tensor, alpha = 0): Tensor {
  const out = unaryRaw(op, x, alpha);
  if (tracer) traceUnary(tracer, op, x, out, alpha);
  return record(out, op, [x], (g) => {
    const gx = Tensor.empty([...x.shape], x.dtype);
    dispatch1d(unaryGradKernel(op), [g, x, out, gx], [x.size, alpha], x.size);
    return [gx];
  });
}

/** -x, element-wise (torch.neg); float32. */
export const neg = (x: Tensor): Tensor => unary("neg", x);
/** e^x, element-wise (torch.exp); float32. */
export const exp = (x: Tensor): Tensor => unary("exp", x);
/** Natural logarithm, element-wise (torch.log): -Infinity at 0, NaN below; float32. */
export const log = (x: Tensor): Tensor => unary("log", x);
/** max(x, 0), element-wise (torch.relu); the gradient is 0 at x = 0. */
export const relu = (x: Tensor): Tensor => unary("relu", x);
/** Hyperbolic tangent, element-wise (torch.tanh); saturates to +-1 for large |x| without NaN. */
export const tanh = (x: Tensor): Tensor => unary("tanh", x);
/** Logistic 1 / (1 + e^-x), element-wise (torch.sigmoid); stable for large |x|. */
export const sigmoid = (x: Tensor): Tensor => unary("sigmoid", x);
/** x sigmoid(x), element-wise (torch.nn.functional.silu, also called swish); stable for large |x|. */
export const silu = (x: Tensor): Tensor => unary("silu", x);
/** |x|, element-wise (torch.abs); the gradient is sign(x), 0 at 0. */
export const abs = (x: Tensor): Tensor => unary("abs", x);
/** Square root, element-wise (torch.sqrt); the gradient is infinite at 0. */
export const sqrt = (x: Tensor): Tensor => unary("sqrt", x);
/** x * alpha, element-wise, for a scalar alpha (torch.mul with a number). */
export const scale = (x: Tensor, alpha: number): Tensor => unary("scale", x, alpha);
/** x + alpha, element-wise, for a scalar alpha (torch.add with a number). */
export const addScalar = (x: Tensor, alpha: number): Tensor => unary("addScalar", x, alpha);
