// Tensors on the device, their explicit lifetime (dispose, scopes), and the graph that backward walks.
import { getEngine } from "../backend/device.ts";
import type { PooledBuffer } from "../backend/engine.ts";

export type DType = "float32" | "int32";

/** A pooled device buffer shared by a tensor and its reshaped views; freed when the last one is disposed. */
interface Storage {
  pb: PooledBuffer;
  refs: number;
}

/** How a tensor was made: its inputs and the rule that maps the output's gradient to theirs. */
export interface GradNode {
  op: string;
  inputs: Tensor[];
  backward: (grad: Tensor) => (Tensor | null)[];
}

export interface TensorOptions {
  requiresGrad?: boolean;
}

let gradEnabled = true;
const scopes: Set<Tensor>[] = [];
let liveTensors = 0;

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

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

export class Tensor {
  readonly shape: number[];
  readonly size: number;
  readonly dtype: DType;
  requiresGrad: boolean;
  grad: Tensor | null = null;
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
    const bytes = Math.max(shapeSize(shape), 1) * 4;
    return new Tensor(shape, dtype, { pb: getEngine().pool.acquire(bytes), refs: 1 });
  }

  get rank(): number {
    return this.shape.length;
  }

  get disposed(): boolean {
    return this.storage === null;
  }

  /** The device buffer; throws if the tensor was disposed. */
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

  /** Downloads the values; the only call that waits for the device. */
  async toArray(): Promise<Float32Array> {
    if (this.dtype !== "float32") throw new Error("toArray() reads float32 tensors; use toInt32Array()");
    return new Float32Array(await getEngine().read(this.buffer, 0, this.size * 4));
  }

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
  backward(): void {
    runBackward(this);
  }

  /** Detaches this tensor from every scope: it lives until disposed by hand. */
  keep(): this {
    this.moveToScope(null);
    return this;
  }

  /** Internal (scopes): hands this tensor to another scope, or to none. */
  moveToScope(target: Set<Tensor> | null): void {
    this.scope?.delete(this);
    this.scope = target;
    target?.add(this);
  }

  toString(): string {
    return `Tensor([${this.shape.join(", ")}], ${this.dtype}${this.requiresGrad ? ", requiresGrad" : ""})`;
  }
}

let runBackward: (t: Tensor) => void = () => {
  throw new Error("autograd tape not loaded");
};
/** The tape (src/autograd/tape.ts) installs backward here, so this file needs no kernels. */
export function installBackward(fn: (t: Tensor) => void): void {
  runBackward = fn;
}

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

/**
 * Records how `out` was made when any input needs a gradient and recording is on; returns `out`.
 * Ops call this after dispatching their forward kernel.
 */
export function record(out: Tensor, op: string, inputs: Tensor[], backward: GradNode["backward"]): Tensor {
  if (gradEnabled && inputs.some((t) => t.requiresGrad)) {
    out.requiresGrad = true;
    out.isLeaf = false;
    out.node = { op, inputs, backward };
  }
  return out;
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
