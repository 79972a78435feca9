// Optimizers over parameter tensors; their state lives on the device next to the parameters.
import { Tensor } from "../autograd/tensor.ts";
import { profilePhase } from "../backend/profile.ts";
import { fillInPlace, tensor, zerosLike } from "../kernels/basic.ts";
import { type AdamHyper, adamStep, type SgdHyper, sgdStep } from "../kernels/optim.ts";

export type { AdamHyper, SgdHyper };

function checkParams(params: Tensor[], name: string): Tensor[] {
  if (!Array.isArray(params) || params.length === 0) throw new Error(`${name}: no parameters to optimize`);
  for (const p of params) {
    if (!(p instanceof Tensor) || p.dtype !== "float32") {
      throw new Error(`${name}: parameters must be float32 tensors`);
    }
  }
  return [...params];
}

function checkNumber(name: string, key: string, v: number, lo: number, hi = Infinity): void {
  if (!Number.isFinite(v) || v < lo || v > hi) {
    throw new Error(`${name}: ${key} must be in [${lo}, ${hi}], got ${v}`);
  }
}

/**
 * What Adam and SGD share: the parameter list, a step counter and zeroGrad. The optimizer owns its state
 * tensors (kept out of every scope) until `dispose()`; the parameters stay the caller's.
 */
export abstract class Optimizer {
  /** The optimized tensors (a copy of the list passed in; the tensors themselves are shared). */
  readonly params: Tensor[];
  /** Steps taken so far (restored by loadStateDict). */
  stepCount = 0;
  /** Checks that `params` is a non-empty list of float32 tensors; `name` prefixes the error. */
  constructor(params: Tensor[], name: string) {
    this.params = checkParams(params, name);
  }

  /** Zeroes the gradients in place (their buffers are reused by the next backward). */
  zeroGrad(): void {
    for (const p of this.params) if (p.grad) fillInPlace(p.grad, 0);
  }

  /** Frees the optimizer's state tensors. */
  abstract dispose(): void;
  /**
   * Bytes of state the optimizer will make on its next step (moment buffers not made yet); 0 unless a
   * subclass makes state lazily (Adam, SGD with momentum).
   */
  pendingStateBytes(): number {
    return 0;
  }

  /**
   * Makes now the state the next step would make for every parameter that has a gradient: the results are
   * the same, but these long-lived tensors then sit together, ahead of the next step's activations (in the
   * WebAssembly memory, which a pool cannot compact, that keeps large steps from fragmenting it). Nothing by
   * default.
   */
  prepareState(): void {}
  /** Updates every parameter that has a `.grad` in place; parameters without one are skipped. */
  abstract step(): void;
}

/** An optimizer state entry, as `fl.io.loadSafetensors` returns it and `saveSafetensors` takes it. */
export interface OptimizerStateRecord {
  /** safetensors dtype name: "F32" for tensors and hyper-parameters, "I64" for step counts. */
  dtype: string;
  /** Tensor shape; `[]` for a scalar. */
  shape: number[];
  /** The values, row-major; as many as the shape holds. */
  data: Float32Array | Int32Array | ArrayLike<number>;
}
/** An optimizer's state by key (`step_count`, `hyper.<name>`, `state.<i>.<slot>`), as stateDict returns it. */
export type OptimizerState = Record<string, OptimizerStateRecord>;

const scalarI64 = (v: number): OptimizerStateRecord => ({
  dtype: "I64",
  shape: [],
  data: new Int32Array([v]),
});
const scalarF32 = (v: number): OptimizerStateRecord => ({
  dtype: "F32",
  shape: [],
  data: new Float32Array([v]),
});

/**
 * Checks a state record against the optimizer's parameters: `step_count`, `hyper.<name>` scalars and
 * `state.<i>.<slot>` tensors (i = parameter index, slot one of `slots`) shaped like parameter i. All
 * problems are listed in one error; nothing is changed on error.
 */
function checkState(
  name: string,
  params: Tensor[],
  record: OptimizerState,
  hyperKeys: string[],
  slots: string[],
): void {
  const problems: string[] = [];
  if (typeof record !== "object" || record === null) {
    throw new Error(`${name}.loadStateDict: expected a record`);
  }
  for (const [k, e] of Object.entries(record)) {
    const count = Array.isArray(e?.shape) ? e.shape.reduce((a, b) => a * b, 1) : -1;
    if (!e || count < 0 || !e.data || e.data.length !== count) {
      problems.push(`${k}: not a { dtype, shape, data } record`);
      continue;
    }
    const m = /^state\.(\d+)\.(\w+)$/.exec(k);
    if (k === "step_count" || (k.startsWith("hyper.") && hyperKeys.includes(k.slice(6)))) {
      if (count !== 1) problems.push(`${k}: expected one value, got shape [${e.shape.join(", ")}]`);
    } else if (m && Number(m[1]) < params.length && (m[2] === "step" || slots.includes(m[2]))) {
      const want = m[2] === "step" ? [] : params[Number(m[1])].shape;
      if (count !== want.reduce((a, b) => a * b, 1)) {
        problems.push(
          `${k}: shape [${e.shape.join(", ")}] does not fit parameter ${m[1]} of shape [${want.join(", ")}]`,
        );
      }
    } else {
      problems.push(`unexpected key ${k}`);
    }
  }
  for (let i = 0; i < params.length; i++) {
    const present = [...slots, ...(name === "Adam" ? ["step"] : [])].filter((s) =>
      `state.${i}.${s}` in record
    );
    if (present.length > 0 && present.length < slots.length + (name === "Adam" ? 1 : 0)) {
      problems.push(`state.${i}: incomplete (has ${present.join(", ")})`);
    }
  }
  if (problems.length) throw new Error(`${name}.loadStateDict: ${problems.join("; ")}`);
}

/** Keeps an exact hyper-parameter unless the stored (possibly float32-rounded) value differs from it. */
function restoreHyper(own: number, stored: OptimizerStateRecord | undefined): number {
  if (!stored) return own;
  const v = Number(stored.data[0]);
  return Math.fround(v) === Math.fround(own) ? own : v;
}

const uploadState = (e: OptimizerStateRecord, shape: number[]): Tensor =>
  tensor(e.data instanceof Float32Array ? e.data : Float32Array.from(e.data as ArrayLike<number>, Number), [
    ...shape,
  ]).keep();

/** Options of {@link Adam}, with torch.optim.Adam's defaults. */
export interface AdamOptions {
  /** Learning rate, >= 0 (default 1e-3). */
  lr?: number;
  /** Decay rates of the first and second moment estimates, each in [0, 1) (default [0.9, 0.999]). */
  betas?: [number, number];
  /** Added to the denominator for stability, >= 0 (default 1e-8). */
  eps?: number;
  /** L2 penalty added to the gradient, >= 0 (default 0). */
  weightDecay?: number;
}

/** Adam as PyTorch's torch.optim.Adam (weight decay as L2 on the gradient). */
export class Adam extends Optimizer {
  /** The hyper-parameters in use; loadStateDict may replace them with stored ones. */
  readonly hyper: AdamHyper;
  private state = new Map<Tensor, { m: Tensor; v: Tensor; step: number }>();

  /** Throws when `params` is empty or not float32, or an option is out of range. */
  constructor(params: Tensor[], options: AdamOptions = {}) {
    super(params, "Adam");
    const [beta1, beta2] = options.betas ?? [0.9, 0.999];
    this.hyper = {
      lr: options.lr ?? 1e-3,
      beta1,
      beta2,
      eps: options.eps ?? 1e-8,
      weightDecay: options.weightDecay ?? 0,
    };
    checkNumber("Adam", "lr", this.hyper.lr, 0);
    checkNumber("Adam", "betas[0]", beta1, 0, 0.999999);
    checkNumber("Adam", "betas[1]", beta2, 0, 0.999999);
    checkNumber("Adam", "eps", this.hyper.eps, 0);
    checkNumber("Adam", "weightDecay", this.hyper.weightDecay, 0);
  }

  /**
   * One Adam update of every parameter with a `.grad`, in place on the device; the moment buffers are
   * created on a parameter's first step, with a per-parameter step count for the bias corrections.
   */
  step(): void {
    profilePhase("optimizer", () => this.update());
  }

  /** Two moment buffers per parameter that has none yet. */
  override pendingStateBytes(): number {
    return this.params.reduce((bytes, p) => bytes + (this.state.has(p) ? 0 : 8 * p.size), 0);
  }

  /** Makes the moment buffers (zeros, step 0) of every parameter with a gradient that has none yet. */
  override prepareState(): void {
    for (const p of this.params) if (p.grad) this.stateOf(p);
  }

  /** p's moment buffers and step count, made (zeros, step 0) on first use. */
  private stateOf(p: Tensor): { m: Tensor; v: Tensor; step: number } {
    let s = this.state.get(p);
    if (!s) this.state.set(p, s = { m: zerosLike(p).keep(), v: zerosLike(p).keep(), step: 0 });
    return s;
  }

  /** The update itself; `step` runs it as the "optimizer" phase of a profile. */
  private update(): void {
    this.stepCount++;
    for (const p of this.params) {
      if (!p.grad) continue;
      const s = this.stateOf(p);
      s.step++;
      adamStep(p, p.grad, s.m, s.v, s.step, this.hyper);
    }
  }

  /**
   * The optimizer's state, downloaded: `step_count`; per parameter index i with state `state.<i>.step`,
   * `state.<i>.exp_avg`, `state.<i>.exp_avg_sq`; `hyper.lr|beta1|beta2|eps|weightDecay` (float32).
   */
  async stateDict(): Promise<OptimizerState> {
    const out: OptimizerState = { step_count: scalarI64(this.stepCount) };
    for (const [k, v] of Object.entries(this.hyper)) out[`hyper.${k}`] = scalarF32(v);
    // Every read starts before any is awaited: one submit and one wait for the whole state.
    const reads: Promise<void>[] = [];
    for (let i = 0; i < this.params.length; i++) {
      const s = this.state.get(this.params[i]);
      if (!s) continue;
      const shape = [...this.params[i].shape];
      out[`state.${i}.step`] = scalarI64(s.step);
      reads.push(
        s.m.toArray().then((data) => void (out[`state.${i}.exp_avg`] = { dtype: "F32", shape, data })),
      );
      reads.push(
        s.v.toArray().then((data) => void (out[`state.${i}.exp_avg_sq`] = { dtype: "F32", shape, data })),
      );
    }
    await Promise.all(reads);
    return out;
  }

  /**
   * Restores `stateDict()`'s output (or the same keys read back from a file) for the same parameter
   * list. Hyper-parameters that equal the current ones in float32 keep their current (exact) values;
   * others take the stored value.
   */
  loadStateDict(record: OptimizerState): void {
    const hyperKeys = Object.keys(this.hyper);
    checkState("Adam", this.params, record, hyperKeys, ["exp_avg", "exp_avg_sq"]);
    this.dispose();
    const h = this.hyper as unknown as Record<string, number>;
    for (const k of hyperKeys) h[k] = restoreHyper(h[k], record[`hyper.${k}`]);
    if (record.step_count) this.stepCount = Number(record.step_count.data[0]);
    for (let i = 0; i < this.params.length; i++) {
      const m = record[`state.${i}.exp_avg`];
      if (!m) continue;
      const p = this.params[i];
      this.state.set(p, {
        m: uploadState(m, p.shape),
        v: uploadState(record[`state.${i}.exp_avg_sq`], p.shape),
        step: Number(record[`state.${i}.step`].data[0]),
      });
    }
  }

  /** Frees the moment buffers; a later step starts them (and their step counts) from zero again. */
  dispose(): void {
    for (const s of this.state.values()) {
      s.m.dispose();
      s.v.dispose();
    }
    this.state.clear();
  }
}

/** Options of {@link SGD}, with torch.optim.SGD's defaults (except lr, which PyTorch requires). */
export interface SgdOptions {
  /** Learning rate, >= 0 (default 1e-2). */
  lr?: number;
  /** Momentum factor, >= 0 (default 0: no momentum buffer). */
  momentum?: number;
  /** Dampening for momentum, in [0, 1] (default 0). */
  dampening?: number;
  /** L2 penalty added to the gradient, >= 0 (default 0). */
  weightDecay?: number;
  /** Nesterov momentum; needs momentum > 0 and dampening 0 (default false). */
  nesterov?: boolean;
}

/** SGD as PyTorch's torch.optim.SGD. */
export class SGD extends Optimizer {
  /** The hyper-parameters in use; loadStateDict may replace them with stored ones. */
  readonly hyper: SgdHyper;
  private buffers = new Map<Tensor, Tensor>();
  /** Buffers made by prepareState that no step has set yet (the first step sets a buffer to the gradient). */
  private unset = new Set<Tensor>();

  /** Throws when `params` is empty or not float32, an option is out of range, or Nesterov lacks momentum. */
  constructor(params: Tensor[], options: SgdOptions = {}) {
    super(params, "SGD");
    this.hyper = {
      lr: options.lr ?? 1e-2,
      momentum: options.momentum ?? 0,
      dampening: options.dampening ?? 0,
      weightDecay: options.weightDecay ?? 0,
      nesterov: options.nesterov ?? false,
    };
    checkNumber("SGD", "lr", this.hyper.lr, 0);
    checkNumber("SGD", "momentum", this.hyper.momentum, 0);
    checkNumber("SGD", "dampening", this.hyper.dampening, 0, 1);
    checkNumber("SGD", "weightDecay", this.hyper.weightDecay, 0);
    if (this.hyper.nesterov && (this.hyper.momentum <= 0 || this.hyper.dampening !== 0)) {
      throw new Error("SGD: Nesterov momentum needs momentum > 0 and dampening 0");
    }
  }

  /**
   * One SGD update of every parameter with a `.grad`, in place on the device; with momentum, the buffer is
   * created on a parameter's first step and set to its gradient, as PyTorch does.
   */
  step(): void {
    profilePhase("optimizer", () => this.update());
  }

  /** A momentum buffer per parameter that has none yet (none without momentum). */
  override pendingStateBytes(): number {
    if (this.hyper.momentum === 0) return 0;
    return this.params.reduce((bytes, p) => bytes + (this.buffers.has(p) ? 0 : 4 * p.size), 0);
  }

  /** Makes the momentum buffer of every parameter with a gradient that has none (the next step sets it). */
  override prepareState(): void {
    if (this.hyper.momentum === 0) return;
    for (const p of this.params) {
      if (p.grad && !this.buffers.has(p)) {
        this.buffers.set(p, zerosLike(p).keep());
        this.unset.add(p);
      }
    }
  }

  /** The update itself; `step` runs it as the "optimizer" phase of a profile. */
  private update(): void {
    this.stepCount++;
    for (const p of this.params) {
      if (!p.grad) continue;
      let buf = this.buffers.get(p);
      const first = !buf || this.unset.delete(p);
      if (!buf && this.hyper.momentum !== 0) this.buffers.set(p, buf = zerosLike(p).keep());
      sgdStep(p, p.grad, buf ?? null, first, this.hyper);
    }
  }

  /**
   * The optimizer's state, downloaded: `step_count`, `state.<i>.momentum_buffer` per parameter index i
   * that has one, `hyper.lr|momentum|dampening|weightDecay|nesterov` (float32; nesterov 0 or 1).
   */
  async stateDict(): Promise<OptimizerState> {
    const out: OptimizerState = { step_count: scalarI64(this.stepCount) };
    for (const [k, v] of Object.entries(this.hyper)) out[`hyper.${k}`] = scalarF32(Number(v));
    const reads: Promise<void>[] = [];
    for (let i = 0; i < this.params.length; i++) {
      const b = this.buffers.get(this.params[i]);
      const shape = [...this.params[i].shape];
      if (b && !this.unset.has(this.params[i])) {
        reads.push(
          b.toArray().then((data) =>
            void (out[`state.${i}.momentum_buffer`] = { dtype: "F32", shape, data })
          ),
        );
      }
    }
    await Promise.all(reads);
    return out;
  }

  /** Restores `stateDict()`'s output for the same parameter list (hyper-parameters as in Adam). */
  loadStateDict(record: OptimizerState): void {
    const hyperKeys = Object.keys(this.hyper);
    checkState("SGD", this.params, record, hyperKeys, ["momentum_buffer"]);
    this.dispose();
    const h = this.hyper as unknown as Record<string, number | boolean>;
    for (const k of hyperKeys) {
      h[k] = k === "nesterov"
        ? restoreHyper(h[k] ? 1 : 0, record[`hyper.${k}`]) !== 0
        : restoreHyper(h[k] as number, record[`hyper.${k}`]);
    }
    if (record.step_count) this.stepCount = Number(record.step_count.data[0]);
    for (let i = 0; i < this.params.length; i++) {
      const b = record[`state.${i}.momentum_buffer`];
      if (b) this.buffers.set(this.params[i], uploadState(b, this.params[i].shape));
    }
  }

  /** Frees the momentum buffers; a later step starts them afresh. */
  dispose(): void {
    for (const b of this.buffers.values()) b.dispose();
    this.buffers.clear();
    this.unset.clear();
  }
}
