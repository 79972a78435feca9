// A kernel-level profile: time and calls per kernel and phase (forward, backward, optimizer). On the
// WebAssembly backend a kernel runs inside its dispatch, so its wall time is exact. On WebGPU a dispatch only
// records work: where the device has `timestamp-query`, each profiled dispatch gets its own compute pass with
// timestamps at its start and end, and the device's time comes back after the batch has run (see
// finishProfile in device.ts); without it the profile counts calls and leaves the time NaN.

/** One row of a profile: a kernel (a GEMM named by its use, e.g. "gemm: conv2d weight grad") in one phase. */
export interface ProfileRow {
  /** "forward" (anything outside backward() and optimizer steps), "backward" or "optimizer". */
  phase: string;
  /** The kernel's name, or the use of the one WebAssembly GEMM. */
  kernel: string;
  /** Dispatches. */
  calls: number;
  /**
   * Milliseconds spent in them: wall time on WebAssembly, device time on WebGPU with `timestamp-query`
   * (complete after `finishProfile`), NaN on WebGPU without it.
   */
  ms: number;
  /** Floating-point operations they did, where the op counts them (the WebAssembly GEMM: 2 M N K), else 0. */
  flop: number;
}

let rows: Map<string, ProfileRow> | null = null;
let phase = "forward";

/** Starts collecting (and clears an earlier profile); see {@link stopProfile}. */
export function startProfile(): void {
  rows = new Map();
}

/**
 * Stops collecting and returns the rows, the most time first (on WebGPU without timestamps: the most calls
 * first). On WebGPU, device times of work not yet read back are missing: `finishProfile` (src/backend/device.ts) waits
 * for them.
 */
export function stopProfile(): ProfileRow[] {
  const out = [...(rows ?? new Map<string, ProfileRow>()).values()];
  rows = null;
  return out.sort((a, b) => (b.ms - a.ms) || (b.calls - a.calls));
}

/** Whether a profile is being collected (engines time kernels only then). */
export function profiling(): boolean {
  return rows !== null;
}

/** Runs `fn` with its kernels counted under `name` (the tape's backward and the optimizers use it). */
export function profilePhase<T>(name: string, fn: () => T): T {
  const outer = phase;
  phase = name;
  try {
    return fn();
  } finally {
    phase = outer;
  }
}

function row(kernel: string): ProfileRow {
  const key = `${phase}\u0000${kernel}`;
  let r = rows!.get(key);
  if (!r) rows!.set(key, r = { phase, kernel, calls: 0, ms: 0, flop: 0 });
  return r;
}

/**
 * Adds one dispatch of `kernel` taking `ms` to the profile being collected and returns its row, where a
 * device time that comes later is added (null when no profile is being collected).
 */
export function recordKernel(kernel: string, ms: number): ProfileRow | null {
  if (!rows) return null;
  const r = row(kernel);
  r.calls++;
  r.ms += ms;
  return r;
}

/** Adds `flop` operations to `kernel`'s row (before or after its dispatch is recorded). */
export function recordFlop(kernel: string, flop: number): void {
  if (rows) row(kernel).flop += flop;
}
