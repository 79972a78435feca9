// Making tensors: from CPU data, constant fills, copies, and in-place accumulation of gradients.
import { getEngine } from "../backend/device.ts";
import { defineKernel, main1d, pointwiseKernel } from "../backend/kernel.ts";
import { E } from "../backend/expr.ts";
import type { KernelSpec } from "../backend/engine.ts";
import {
  checkShape,
  type DType,
  isFloat,
  noGrad,
  shapeSize,
  Tensor,
  type TensorOptions,
} from "../autograd/tensor.ts";
import { record } from "../autograd/tape.ts";
import { fmtShape } from "./shape.ts";

/** Sets out[i] = value for i < n (uniforms n, value); shared by {@link full} and {@link fillInPlace}. */
export const fillKernel = defineKernel({
  name: "fill",
  storage: [{ name: "out", access: "rw" }],
  uniforms: [{ name: "n", type: "u32" }, { name: "value", type: "f32" }],
  body: `${main1d("i", "u.n")}
  out[i] = u.value;
}`,
});

/** dst += alpha * src, in place: gradient accumulation and optimizer updates without a new buffer. */
const axpyKernel = defineKernel({
  name: "axpy",
  storage: [{ name: "dst", access: "rw" }, { name: "src", access: "read" }],
  uniforms: [{ name: "n", type: "u32" }, { name: "alpha", type: "f32" }],
  body: `${main1d("i", "u.n")}
  dst[i] = dst[i] + u.alpha * src[i];
}`,
});

/** x[i] *= alpha, in place (unscaling loss-scaled gradients without a copy as large as the largest). */
const scaleInPlaceKernel = defineKernel(pointwiseKernel({
  name: "scale_in_place",
  storage: [{ name: "x", access: "rw" }],
  uniforms: [{ name: "n", type: "u32" }, { name: "alpha", type: "f32" }],
  program: { count: "n", lets: [], stores: [["x", E.mul(E.value("x"), E.uniform("alpha"))]] },
}));

/** out[i] = src[i]: a copy that converts between float32 and float16 where one side is float16. */
const castKernel = defineKernel({
  name: "cast",
  wasm: null,
  storage: [{ name: "src", access: "read" }, { name: "out", access: "rw" }],
  uniforms: [{ name: "n", type: "u32" }],
  body: `${main1d("i", "u.n")}
  out[i] = src[i];
}`,
});

/**
 * Dispatches a kernel with one thread per element over `n` elements (its first uniform is `n`); the
 * backend handles its own binding limits (see `Engine.dispatchElements`).
 */
export function dispatch1d(
  spec: KernelSpec,
  tensors: Tensor[],
  params: number[],
  n: number,
  baseParam?: number,
): void {
  getEngine().dispatchElements(spec, tensors.map((t) => t.buffer), params, n, baseParam);
}

/**
 * A float32 tensor of `shape` filled with `value` (torch.full). Throws unless `shape` holds non-negative
 * integers. The tensor belongs to the enclosing scope, if any; otherwise dispose it.
 */
export function full(shape: number[], value: number, options: TensorOptions = {}): Tensor {
  const out = Tensor.empty(checkShape(shape), floatDtype(options));
  dispatch1d(fillKernel, [out], [out.size, value], out.size);
  out.requiresGrad = options.requiresGrad ?? false;
  return out;
}

/** A float32 tensor of zeros (torch.zeros); see {@link full}. */
export function zeros(shape: number[], options: TensorOptions = {}): Tensor {
  return full(shape, 0, options);
}

/** A float32 tensor of ones (torch.ones); see {@link full}. */
export function ones(shape: number[], options: TensorOptions = {}): Tensor {
  return full(shape, 1, options);
}

/** A tensor of zeros with `t`'s shape and float dtype, without requiresGrad (torch.zeros_like). */
export function zerosLike(t: Tensor): Tensor {
  return full(t.shape, 0, { dtype: t.dtype === "float16" ? "float16" : "float32" });
}

function floatDtype(options: TensorOptions): DType {
  const dtype = options.dtype ?? "float32";
  if (dtype !== "float32" && dtype !== "float16") {
    throw new Error(`dtype must be "float32" or "float16", got ${JSON.stringify(dtype)}`);
  }
  return dtype;
}

/**
 * `t`'s values as `dtype` (torch's `.to(dtype)`): float32 to float16 rounds to nearest, ties to even (out
 * of range: ±Infinity); float16 to float32 is exact. The gradient converts back. Returns `t` itself when it
 * already has that dtype; float16 needs WebGPU with shader-f16.
 */
export function cast(t: Tensor, dtype: "float32" | "float16"): Tensor {
  if (!isFloat(t.dtype)) throw new Error(`cast: needs a float tensor, got ${t.dtype}`);
  if (t.dtype === floatDtype({ dtype })) return t;
  const out = Tensor.empty([...t.shape], dtype);
  dispatch1d(castKernel, [t, out], [t.size], t.size);
  return record(out, "cast", [t], (g) => [cast(g, t.dtype as "float32" | "float16")]);
}

/** Uploads CPU values. `shape` defaults to 1-D; its product must equal the data's length. */
export function tensor(
  data: Float32Array | ArrayLike<number>,
  shape?: number[],
  options: TensorOptions = {},
): Tensor {
  const values = data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>);
  const s = checkShape(shape ?? [values.length]);
  if (shapeSize(s) !== values.length) {
    throw new Error(
      `tensor: shape ${fmtShape(s)} holds ${shapeSize(s)} values but the data has ${values.length}`,
    );
  }
  const dtype = floatDtype(options);
  let out = Tensor.empty(s);
  if (values.length > 0) getEngine().write(out.buffer, 0, values);
  if (dtype === "float16") {
    const wide = out;
    out = noGrad(() => cast(wide, dtype));
    wide.dispose();
  }
  out.requiresGrad = options.requiresGrad ?? false;
  return out;
}

/** Uploads integer values (class indices) as an int32 tensor. */
export function intTensor(data: Int32Array | ArrayLike<number>, shape?: number[]): Tensor {
  const values = data instanceof Int32Array ? data : Int32Array.from(data as ArrayLike<number>);
  const s = checkShape(shape ?? [values.length]);
  if (shapeSize(s) !== values.length) {
    throw new Error(
      `intTensor: shape ${fmtShape(s)} holds ${shapeSize(s)} values but the data has ${values.length}`,
    );
  }
  const out = Tensor.empty(s, "int32");
  if (values.length > 0) getEngine().write(out.buffer, 0, values);
  return out;
}

/** A new tensor with the same values (no gradient link). */
export function clone(t: Tensor): Tensor {
  const out = Tensor.empty([...t.shape], t.dtype);
  getEngine().copy(t.buffer, 0, out.buffer, 0, t.byteLength);
  return out;
}

/** Writes `src`'s values into `dst` (same size), in order with queued kernels. */
export function copyInto(dst: Tensor, src: Tensor): void {
  if (dst.size !== src.size) throw new Error(`copyInto: sizes ${dst.size} and ${src.size} differ`);
  if (dst.dtype !== src.dtype) throw new Error(`copyInto: dtypes ${dst.dtype} and ${src.dtype} differ`);
  getEngine().copy(src.buffer, 0, dst.buffer, 0, src.byteLength);
}

/** dst += alpha * src in place; shapes must match exactly. */
export function axpyInPlace(dst: Tensor, src: Tensor, alpha = 1): void {
  if (dst.size !== src.size) {
    throw new Error(`accumulate: shapes ${fmtShape(dst.shape)} and ${fmtShape(src.shape)} differ`);
  }
  dispatch1d(axpyKernel, [dst, src], [dst.size, alpha], dst.size);
}

/** Multiplies every element of `t` by `factor` in place. */
export function scaleInPlace(t: Tensor, factor: number): void {
  dispatch1d(scaleInPlaceKernel, [t], [t.size, factor], t.size);
}

/** Sets every element of `t` to `value` in place. */
export function fillInPlace(t: Tensor, value: number): void {
  dispatch1d(fillKernel, [t], [t.size, value], t.size);
}
