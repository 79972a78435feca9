// Making tensors: from CPU data, constant fills, copies, and in-place accumulation of gradients.
import { getEngine } from "../backend/device.ts";
import { defineKernel, main1d } from "../backend/kernel.ts";
import type { KernelSpec } from "../backend/engine.ts";
import { checkShape, shapeSize, Tensor, type TensorOptions } from "../autograd/tensor.ts";
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
  const out = Tensor.empty(checkShape(shape));
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

/** A float32 tensor of zeros with `t`'s shape, without requiresGrad (torch.zeros_like). */
export function zerosLike(t: Tensor): Tensor {
  return full(t.shape, 0);
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
  const out = Tensor.empty(s);
  if (values.length > 0) getEngine().write(out.buffer, 0, values);
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
  getEngine().copy(t.buffer, 0, out.buffer, 0, t.size * 4);
  return out;
}

/** Writes `src`'s values into `dst` (same size), in order with queued kernels. */
export function copyInto(dst: Tensor, src: Tensor): void {
  if (dst.size !== src.size) throw new Error(`copyInto: sizes ${dst.size} and ${src.size} differ`);
  getEngine().copy(src.buffer, 0, dst.buffer, 0, src.size * 4);
}

/** dst += alpha * src in place; shapes must match exactly. */
export function axpyInPlace(dst: Tensor, src: Tensor, alpha = 1): void {
  if (dst.size !== src.size) {
    throw new Error(`accumulate: shapes ${fmtShape(dst.shape)} and ${fmtShape(src.shape)} differ`);
  }
  dispatch1d(axpyKernel, [dst, src], [dst.size, alpha], dst.size);
}

/** Sets every element of `t` to `value` in place. */
export function fillInPlace(t: Tensor, value: number): void {
  dispatch1d(fillKernel, [t], [t.size, value], t.size);
}
