// Tensors on the device, their explicit lifetime (dispose, scopes), and the graph that backward walks.
import { getEngine } from "../backend/device.ts";
import type { PooledBuffer } from "../backend/engine.ts";
import { halfsToFloats } from "../backend/half.ts";

/**
 * Element types: float32 for values and gradients, int32 for class indices and counters (4 bytes each), and
 * float16 (2 bytes; WebGPU with `shader-f16` only) for activations under {@link autocast}.
 */
export type DType = "float32" | "float16" | "int32";

/** Whether tensors of `dtype` hold floating-point values (float32 or float16). */
export function isFloat(dtype: DType): boolean {
  return dtype !== "int32";
}

/** Bytes a tensor of `dtype` and `size` elements takes on the device (float16 pairs share 4-byte words). */
export function byteLength(dtype: DType, size: number): number {
  return dtype === "float16" ? Math.ceil(size / 2) * 4 : size * 4;
}

let autocastDtype: "float16" | null = null;

/**
 * Runs `fn` with matrix products (convolutions, linear layers, matmul) writing float16 results: the
 * activations that follow them (batch norm, ReLU, pooling, additions, concatenation) stay float16, halving
 * their memory, while every kernel computes in float32 and parameters stay float32 (PyTorch's autocast).
 * Gradients take the dtype of their tensor. Needs WebGPU with `shader-f16` (`fl.backendInfo().features`);
 * elsewhere the first float16 tensor throws. `"float32"` turns it off inside an autocast. Synchronous, as
 * {@link noGrad}.
 */
export function autocast<T>(dtype: "float16" | "float32", fn: () => T): T {
  if (dtype !== "float16" && dtype !== "float32") {
    throw new Error(`autocast: dtype must be "float16" or "float32", got ${JSON.stringify(dtype)}`);
  }
  const prev = autocastDtype;
  autocastDtype = dtype === "float16" ? dtype : null;
  try {
    const out = fn();
    if (out instanceof Promise) {
      throw new Error("autocast takes a synchronous function: an async one would leave it on across awaits");
    }
    return out;
  } finally {
    autocastDtype = prev;
  }
}

/**
 * The dtype a matrix product (convolution, linear, matmul) writes for the activation `x`: float16 under
 * {@link autocast}, else `x`'s own.
 */
export function productDtype(x: Tensor): DType {
  return autocastDtype ?? x.dtype;
}

/** The dtype of an op's float result from float inputs: float16 when all are float16, else float32. */
export function resultDtype(...inputs: Tensor[]): DType {
  return inputs.every((t) => t.dtype === "float16") ? "float16" : "float32";
}

/** A pooled device buffer shared by a tensor and its reshaped views; freed when the last one is disposed. */
interface Storage {
  pb: PooledBuffer;
  refs: number;
}

/** How a tensor was made: its inputs and the rule that maps the output's gradient to theirs. */
export interface GradNode {
  /** The op's name, for messages. */
  op: string;
  /** The tensors the op read, in the order `backward` returns their gradients. */
  inputs: Tensor[];
  /** Maps the output's gradient to one gradient per input (null where none is needed). */
  backward: (grad: Tensor) => (Tensor | null)[];
}

/** Options of {@link Tensor.backward}. */
export interface BackwardOptions {
  /**
   * Dispose every intermediate tensor of the graph (not the root, nor leaves, nor tensors detached with
   * `keep()`) as soon as its own gradient rule has run, which is after the rules of all its consumers: the
   * forward activations go one by one as the backward pass walks down the network, instead of all at the
   * scope's end. Only for callers that read nothing but the root and the leaves' gradients afterwards
   * (the training step does this). Default false.
   */
  freeActivations?: boolean;
}

/** Options of the tensor factories (`fl.tensor`, `fl.zeros`, `fl.randn`, ...). */
export interface TensorOptions {
  /** Make the tensor a leaf that collects a gradient in `.grad` on backward (default false). */
  requiresGrad?: boolean;
  /** "float32" (default) or "float16" (WebGPU with shader-f16; values rounded to nearest, ties to even). */
  dtype?: "float32" | "float16";
}

let gradEnabled = true;
const scopes: Set<Tensor>[] = [];
let liveTensors = 0;

/** Number of elements of a shape (1 for `[]`). */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** A copy of `shape`; throws naming `what` unless it is an array of non-negative integers. */
export function checkShape(shape: readonly number[], what = "shape"): number[] {
  if (!Array.isArray(shape)) {
    throw new Error(`${what} must be an array of non-negative integers, got ${String(shape)}`);
  }
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new Error(`${what} must hold non-negative integers, got [${shape.join(", ")}]`);
    }
  }
  return [...shape];
}

/**
 * An n-dimensional array in device memory (a WebGPU buffer or WebAssembly memory), row-major, float32 or
 * int32. Ops queue kernels and return at once; only `toArray`, `toInt32Array` and `item` wait for the
 * device.
 *
 * Memory is explicit: a tensor holds its buffer until `dispose()`, or until the {@link scope} that created
 * it ends (unless returned from it or `keep()`-ed). Views from `view`/reshape share the buffer, which is
 * freed with the last of them.
 */
export class Tensor {
  /** Dims, outermost first; `[]` for a scalar. Do not mutate. */
  readonly shape: number[];
  /** Number of elements (product of the shape). */
  readonly size: number;
  /** Element type. */
  readonly dtype: DType;
  /**
   * Whether backward computes a gradient for this tensor: set on leaves by the caller, and on op results
   * when an input requires one and recording is on (see {@link noGrad}).
   */
  requiresGrad: boolean;
  /**
   * The gradient accumulated by backward into a leaf that requires one (same shape and dtype); null until
   * then. Outlives scopes and is disposed with the tensor; zero it between steps (optimizer.zeroGrad).
   */
  grad: Tensor | null = null;
  /**
   * The op that made this tensor, while the graph is recorded; null for leaves and after backward.
   * @ignore
   */
  node: GradNode | null = null;
  /** False once backward has consumed the graph that made this tensor (it is then neither leaf nor node). */
  isLeaf = true;
  private storage: Storage | null;
  private scope: Set<Tensor> | null = null;

  /** Internal: use `fl.tensor`, `fl.zeros`, ... or an op. */
  constructor(shape: number[], dtype: DType, storage: Storage, requiresGrad = false) {
    this.shape = shape;
    this.size = shapeSize(shape);
    this.dtype = dtype;
    this.storage = storage;
    this.requiresGrad = requiresGrad;
    liveTensors++;
    const top = scopes[scopes.length - 1];
    if (top) {
      top.add(this);
      this.scope = top;
    }
  }

  /** Allocates an uninitialised tensor from the pool. */
  static empty(shape: number[], dtype: DType = "float32"): Tensor {
    const engine = getEngine();
    if (dtype === "float16" && !engine.halfStorage) {
      throw new Error(
        "float16 tensors need the WebGPU backend on an adapter with shader-f16 (fl.backendInfo().features); " +
          `this one is ${
            engine.kind === "webgpu" ? "a WebGPU adapter without it" : "the WebAssembly backend"
          }`,
      );
    }
    const pb = engine.pool.acquire(byteLength(dtype, Math.max(shapeSize(shape), 1)));
    pb.half = dtype === "float16";
    return new Tensor(shape, dtype, { pb, refs: 1 });
  }

  /** Bytes its elements take on the device. */
  get byteLength(): number {
    return byteLength(this.dtype, this.size);
  }

  /** Number of dims (shape.length). */
  get rank(): number {
    return this.shape.length;
  }

  /** True once `dispose()` has freed this tensor (using it then throws). */
  get disposed(): boolean {
    return this.storage === null;
  }

  /**
   * The device buffer; throws if the tensor was disposed.
   * @ignore
   */
  get buffer(): PooledBuffer {
    if (!this.storage) throw new Error(`A disposed tensor of shape [${this.shape.join(", ")}] was used.`);
    return this.storage.pb;
  }

  /** A tensor of another shape over the same device memory. */
  view(shape: number[]): Tensor {
    if (!this.storage) throw new Error(`A disposed tensor of shape [${this.shape.join(", ")}] was used.`);
    this.storage.refs++;
    return new Tensor(shape, this.dtype, this.storage);
  }

  /** Frees the device memory now. Safe to call twice. */
  dispose(): void {
    if (!this.storage) return;
    if (--this.storage.refs === 0) getEngine().pool.release(this.storage.pb);
    this.storage = null;
    this.node = null;
    liveTensors--;
    this.scope?.delete(this);
    this.scope = null;
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  /** Downloads the values of a float tensor (float16 widened to float32; throws for int32); waits for the device. */
  async toArray(): Promise<Float32Array> {
    if (this.dtype === "int32") throw new Error("toArray() reads float tensors; use toInt32Array()");
    const bytes = await getEngine().read(this.buffer, 0, this.byteLength);
    return this.dtype === "float16" ? halfsToFloats(bytes, this.size) : new Float32Array(bytes);
  }

  /** Downloads the values of an int32 tensor (throws for float32); waits for the device. */
  async toInt32Array(): Promise<Int32Array> {
    if (this.dtype !== "int32") throw new Error("toInt32Array() reads int32 tensors; use toArray()");
    return new Int32Array(await getEngine().read(this.buffer, 0, this.size * 4));
  }

  /** The value of a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) {
      throw new Error(`item() needs a tensor of one element, got shape [${this.shape.join(", ")}]`);
    }
    return (await this.toArray())[0];
  }

  /** Reverse-mode differentiation from this one-element tensor into every leaf's `.grad`. */
  backward(options: BackwardOptions = {}): void {
    runBackward(this, options);
  }

  /**
   * Internal (the tape): whether a scope owns this tensor (false once `keep()`-ed).
   * @ignore
   */
  get scoped(): boolean {
    return this.scope !== null;
  }

  /** Detaches this tensor from every scope: it lives until disposed by hand. */
  keep(): this {
    this.moveToScope(null);
    return this;
  }

  /**
   * Internal (scopes): hands this tensor to another scope, or to none.
   * @ignore
   */
  moveToScope(target: Set<Tensor> | null): void {
    this.scope?.delete(this);
    this.scope = target;
    target?.add(this);
  }

  /** Shape, dtype and requiresGrad, e.g. `Tensor([2, 3], float32, requiresGrad)`; reads no values. */
  toString(): string {
    return `Tensor([${this.shape.join(", ")}], ${this.dtype}${this.requiresGrad ? ", requiresGrad" : ""})`;
  }
}

let runBackward: (t: Tensor, options: BackwardOptions) => void = () => {
  throw new Error("autograd tape not loaded");
};
/**
 * The tape (src/autograd/tape.ts) installs backward here, so this file needs no kernels. Every op records its
 * node with the tape's `record`, so any graph to walk comes with the tape loaded.
 */
export function installBackward(fn: (t: Tensor, options: BackwardOptions) => void): void {
  runBackward = fn;
}

/** Whether ops record the graph now (false inside {@link noGrad}). */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` without recording anything on the tape. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    const out = fn();
    if (out instanceof Promise) {
      throw new Error(
        "noGrad takes a synchronous function: an async one would leave recording off across awaits",
      );
    }
    return out;
  } finally {
    gradEnabled = prev;
  }
}

function collectTensors(value: unknown, into: Set<Tensor>, seen = new Set<unknown>()): void {
  if (value instanceof Tensor) {
    into.add(value);
    return;
  }
  if (value === null || typeof value !== "object" || seen.has(value)) return;
  seen.add(value);
  if (Array.isArray(value)) { for (const v of value) collectTensors(v, into, seen); }
  else if (value instanceof Map) { for (const v of value.values()) collectTensors(v, into, seen); }
  else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collectTensors(v, into, seen);
  }
}

function closeScope(own: Set<Tensor>, result: unknown): void {
  scopes.pop();
  const keep = new Set<Tensor>();
  collectTensors(result, keep);
  const parent = scopes[scopes.length - 1] ?? null;
  for (const t of [...own]) {
    if (keep.has(t)) t.moveToScope(parent);
    else t.dispose();
  }
}

/**
 * Disposes every tensor created inside `fn` that `fn` does not return (in an array or plain object too).
 * Tensors kept with `.keep()` and gradients written into `.grad` survive. Scopes nest; an async `fn`
 * must not interleave with another scope.
 */
export function scope<T>(fn: () => T): T {
  const own = new Set<Tensor>();
  scopes.push(own);
  let out: T;
  try {
    out = fn();
  } catch (err) {
    closeScope(own, undefined);
    throw err;
  }
  if (out instanceof Promise) {
    return out.then(
      (v) => (closeScope(own, v), v),
      (err) => {
        closeScope(own, undefined);
        throw err;
      },
    ) as T;
  }
  closeScope(own, out);
  return out;
}

/** Number of tensors not yet disposed (for leak tests). */
export function liveTensorCount(): number {
  return liveTensors;
}
