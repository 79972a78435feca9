// Modules: parameters, buffers and children registered by name, so state dicts carry PyTorch's dotted keys.
import { getEngine } from "../backend/device.ts";
import { Tensor } from "../autograd/tensor.ts";
import { fmtShape } from "../kernels/shape.ts";

/** A state-dict entry as `fl.io.loadSafetensors` returns it. */
export interface TensorRecord {
  /** Safetensors dtype tag ("F32", "I32", "I64", ...). */
  dtype: string;
  /** Dimensions; [] for a 0-d tensor. */
  shape: number[];
  /** The values, row-major; `loadStateDict` converts them to the target tensor's dtype. */
  data: Float32Array | Int32Array | BigInt64Array | ArrayLike<number>;
}

/**
 * What `Module.loadStateDict` accepts: entries keyed by PyTorch's dotted names, as live tensors or CPU
 * records.
 */
export type StateDict = Record<string, Tensor | TensorRecord>;

/**
 * Whether a saved entry of `shape` can be loaded into `t`. PyTorch saves 0-d tensors (num_batches_tracked)
 * with shape []: they fit a one-element tensor.
 */
export function shapeFits(shape: readonly number[], t: Tensor): boolean {
  const count = shape.reduce((a, b) => a * b, 1);
  return count === t.size && (shape.length === 0 || fmtShape(shape) === fmtShape(t.shape));
}

/** x through `modules` in order (Sequential's forward), letting each fuse with those after it. */
export function forwardChain(modules: readonly Module[], x: Tensor): Tensor {
  let h = x;
  for (let i = 0; i < modules.length; i++) {
    const [out, skipped] = modules[i].forwardInChain(h, modules.slice(i + 1));
    h = out;
    i += skipped;
  }
  return h;
}

/**
 * Base class of every layer and model, as torch.nn.Module: parameters, buffers and child modules are
 * registered by name, so `stateDict()` keys are PyTorch's dotted paths (`layer1.0.conv1.weight`).
 */
export abstract class Module {
  /** Training mode (the default) or eval mode; set through `train()` / `eval()` so children follow. */
  training = true;
  private readonly ownParams = new Map<string, Tensor>();
  private readonly ownBuffers = new Map<string, Tensor>();
  private readonly ownChildren = new Map<string, Module>();

  /** The module's output for input `x`. */
  abstract forward(x: Tensor): Tensor;

  /**
   * This module's output on x where the modules `next` follow it in a chain ({@link forwardChain}), and how
   * many of them that output already went through. By default `forward` and none; a layer that fuses with
   * its successors overrides it (Conv2d with a BatchNorm2d and a ReLU after it: see nn's convBatchNorm).
   */
  forwardInChain(x: Tensor, _next: readonly Module[]): [Tensor, number] {
    return [this.forward(x), 0];
  }

  /** Registers a trainable tensor; it outlives every scope until the module is disposed. */
  protected registerParameter(name: string, t: Tensor): Tensor {
    t.requiresGrad = true;
    this.ownParams.set(name, t.keep());
    return t;
  }

  /** Registers state that is saved but not trained (BatchNorm's running statistics). */
  protected registerBuffer(name: string, t: Tensor): Tensor {
    this.ownBuffers.set(name, t.keep());
    return t;
  }

  /** Registers a child under `name` (its keys get the prefix `name.`); returns `m`. */
  protected registerModule<M extends Module>(name: string, m: M): M {
    this.ownChildren.set(name, m);
    return m;
  }

  /** The direct children as [name, module], in registration order. */
  namedChildren(): [string, Module][] {
    return [...this.ownChildren];
  }

  /** Every parameter of this subtree as [dotted name, tensor], each name prefixed with `prefix`. */
  namedParameters(prefix = ""): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [k, t] of this.ownParams) out.push([prefix + k, t]);
    for (const [k, m] of this.ownChildren) out.push(...m.namedParameters(`${prefix}${k}.`));
    return out;
  }

  /** Every buffer of this subtree (BatchNorm's running statistics) as [dotted name, tensor]. */
  namedBuffers(prefix = ""): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [k, t] of this.ownBuffers) out.push([prefix + k, t]);
    for (const [k, m] of this.ownChildren) out.push(...m.namedBuffers(`${prefix}${k}.`));
    return out;
  }

  /** Every parameter of this subtree, frozen ones included, in `namedParameters` order. */
  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  /** Parameters that currently require a gradient (what an optimizer should get after freezing). */
  trainableParameters(): Tensor[] {
    return this.parameters().filter((t) => t.requiresGrad);
  }

  /**
   * Parameters and buffers by PyTorch key, in PyTorch's order (each module's parameters, then its
   * buffers, then its children); the tensors are the module's own (not copies).
   */
  stateDict(prefix = ""): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const [k, t] of this.ownParams) out[prefix + k] = t;
    for (const [k, t] of this.ownBuffers) out[prefix + k] = t;
    for (const [k, m] of this.ownChildren) Object.assign(out, m.stateDict(`${prefix}${k}.`));
    return out;
  }

  /**
   * The state dict copied to the CPU, as records that `loadStateDict` takes back (a best-epoch snapshot).
   * Every read starts before any is awaited: one submit and one wait for the whole model.
   */
  async downloadStateDict(): Promise<Record<string, TensorRecord>> {
    const entries = Object.entries(this.stateDict());
    const records = await Promise.all(
      entries.map(async ([, t]): Promise<TensorRecord> =>
        t.dtype === "int32"
          ? { dtype: "I32", shape: [...t.shape], data: await t.toInt32Array() }
          : { dtype: "F32", shape: [...t.shape], data: await t.toArray() }
      ),
    );
    return Object.fromEntries(entries.map(([k], i) => [k, records[i]]));
  }

  /**
   * Copies values into the module's tensors. With `strict` (the default) every key must match and every
   * shape agree; all problems are listed in one error and nothing is written unless all entries fit. A
   * batch norm's `num_batches_tracked` may be absent (it keeps its value): checkpoints written before batch
   * norms counted their batches lack it, torchvision's published ImageNet weights among them, and PyTorch
   * loads those strictly too.
   */
  loadStateDict(
    dict: StateDict,
    { strict = true }: { strict?: boolean } = {},
  ): { missing: string[]; unexpected: string[] } {
    const own = this.stateDict();
    const missing = Object.keys(own).filter((k) => !(k in dict));
    const required = missing.filter((k) => !k.endsWith("num_batches_tracked"));
    const unexpected = Object.keys(dict).filter((k) => !(k in own));
    const mismatched: string[] = [];
    for (const [k, t] of Object.entries(own)) {
      const entry = dict[k];
      if (!entry) continue;
      if (!shapeFits(entry.shape, t)) {
        mismatched.push(`${k}: checkpoint ${fmtShape(entry.shape)}, model ${fmtShape(t.shape)}`);
      }
    }
    const problems = [
      ...(strict && required.length ? [`missing keys: ${required.join(", ")}`] : []),
      ...(strict && unexpected.length ? [`unexpected keys: ${unexpected.join(", ")}`] : []),
      ...(mismatched.length ? [`shape mismatches: ${mismatched.join("; ")}`] : []),
    ];
    if (problems.length) {
      throw new Error(`loadStateDict into ${this.constructor.name}: ${problems.join(" | ")}`);
    }
    const engine = getEngine();
    for (const [k, t] of Object.entries(own)) {
      const entry = dict[k];
      if (!entry) continue;
      if (entry instanceof Tensor) {
        engine.copy(entry.buffer, 0, t.buffer, 0, t.size * 4);
        continue;
      }
      const data = entry.data;
      const values = t.dtype === "int32"
        ? Int32Array.from(data as ArrayLike<number>, Number)
        : data instanceof Float32Array
        ? data
        : Float32Array.from(data as ArrayLike<number>, Number);
      engine.write(t.buffer, 0, values);
    }
    return { missing, unexpected };
  }

  /** Sets training mode here and in every child (dropout, batch statistics). */
  train(mode = true): this {
    this.training = mode;
    for (const m of this.ownChildren.values()) m.train(mode);
    return this;
  }

  /** Switches this subtree to eval mode: `train(false)`. */
  eval(): this {
    return this.train(false);
  }

  /** Freezes (false) or unfreezes (true) every parameter of this subtree. */
  requiresGrad(flag: boolean): this {
    for (const p of this.parameters()) p.requiresGrad = flag;
    return this;
  }

  /** Frees every parameter and buffer. */
  dispose(): void {
    for (const t of [...this.parameters(), ...this.namedBuffers().map(([, b]) => b)]) t.dispose();
  }

  /** Number of scalar parameters in this subtree (buffers not counted), as sum(p.numel()) in PyTorch. */
  parameterCount(): number {
    return this.parameters().reduce((a, t) => a + t.size, 0);
  }
}
