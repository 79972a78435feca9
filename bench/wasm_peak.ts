// The WebAssembly SIMD peak of this machine: a microkernel of 12 independent f32x4 multiply-add chains
// (acc = acc * a + b, the GEMM's own instruction mix: no fused multiply-add in plain SIMD) on registers
// alone, no memory traffic (12: enough to hide the latency, few enough to stay in 16 vector registers; 16
// chains spilled in V8 and measured half the rate). What no WebAssembly engine's f32 arithmetic can beat on these cores: the ceiling
// the learners' GFLOP/s are read against (bench/peers.ts). Compiled here from AssemblyScript with the
// project's pinned compiler (a dev dependency), run on 1 thread and on `threads` Web Workers at once.

const CHAINS = 12;
// Two kernels; the peak is the faster. "chains": CHAINS independent acc = acc * a + b on registers alone.
// "tile": the GEMM's own 4 x 8 register tile (src/kernels/wasm/gemm.ts micro: two vector loads of B, four
// splat loads of A, eight multiply-adds a step) over packed panels of 64 steps that stay in L1.
const SOURCE = `
export function chains(iterations: i32): f32 {
  const a = f32x4.splat(0.999), b = f32x4.splat(0.001);
  ${Array.from({ length: CHAINS }, (_, j) => `let c${j} = f32x4.splat(${j + 1});`).join(" ")}
  for (let i = 0; i < iterations; i++) {
    ${Array.from({ length: CHAINS }, (_, j) => `c${j} = f32x4.add(f32x4.mul(c${j}, a), b);`).join(" ")}
  }
  let s = c0;
  ${Array.from({ length: CHAINS - 1 }, (_, j) => `s = f32x4.add(s, c${j + 1});`).join(" ")}
  return f32x4.extract_lane(s, 0);
}
const STEPS = 64;
const PA: usize = 1024, PB: usize = PA + STEPS * 16;
export function tile(iterations: i32): f32 {
  for (let k = 0; k < STEPS * 12; k++) store<f32>(PA + <usize>k * 4, <f32>(k % 7) * 0.01);
  let c00 = f32x4.splat(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
  for (let i = 0; i < iterations; i += STEPS) {
    let pa = PA, pb = PB;
    for (let k = 0; k < STEPS; k++) {
      const b0 = v128.load(pb), b1 = v128.load(pb, 16);
      const a0 = v128.load32_splat(pa), a1 = v128.load32_splat(pa, 4);
      const a2 = v128.load32_splat(pa, 8), a3 = v128.load32_splat(pa, 12);
      c00 = f32x4.add(c00, f32x4.mul(a0, b0)); c01 = f32x4.add(c01, f32x4.mul(a0, b1));
      c10 = f32x4.add(c10, f32x4.mul(a1, b0)); c11 = f32x4.add(c11, f32x4.mul(a1, b1));
      c20 = f32x4.add(c20, f32x4.mul(a2, b0)); c21 = f32x4.add(c21, f32x4.mul(a2, b1));
      c30 = f32x4.add(c30, f32x4.mul(a3, b0)); c31 = f32x4.add(c31, f32x4.mul(a3, b1));
      pa += 16;
      pb += 32;
    }
  }
  const s = f32x4.add(f32x4.add(f32x4.add(c00, c01), f32x4.add(c10, c11)), f32x4.add(f32x4.add(c20, c21), f32x4.add(c30, c31)));
  return f32x4.extract_lane(s, 0);
}`;
/** Floating-point operations per iteration of each kernel: vectors x 4 lanes x (multiply + add). */
const FLOP_PER_ITERATION = { chains: CHAINS * 4 * 2, tile: 8 * 4 * 2 };
type Kernel = keyof typeof FLOP_PER_ITERATION;

// Calls of CALL_ITERATIONS each, after a warmup of many calls: V8 runs a WebAssembly function in its baseline
// compiler (Liftoff) until it has tiered up, and a call already running never switches (Deno measured half
// Bun's rate with one long call).
const CALL_ITERATIONS = 10_000;
const WORKER = `onmessage = async ({ data }) => {
  const memory = new WebAssembly.Memory({ initial: 1 });
  const { exports } = (await WebAssembly.instantiate(data.bytes, { env: { memory } })).instance;
  const t = performance.now();
  while (performance.now() - t < 500) (exports.chains(${CALL_ITERATIONS}), exports.tile(${CALL_ITERATIONS}));
  postMessage("ready");
  onmessage = ({ data: { kernel, calls } }) => {
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) exports[kernel](${CALL_ITERATIONS});
    postMessage(performance.now() - t0);
  };
};`;

async function compile(): Promise<Uint8Array> {
  const asc = await import("assemblyscript/asc") as unknown as {
    compileString(
      source: string,
      options: object,
    ): Promise<{ binary: Uint8Array | null; stderr: { toString(): string } }>;
  };
  const { binary, stderr } = await asc.compileString(SOURCE, {
    optimizeLevel: 3,
    runtime: "stub",
    noAssert: true,
    enable: ["simd"],
    importMemory: true,
  });
  if (!binary) throw new Error(`the peak microkernel did not compile: ${stderr.toString().slice(0, 500)}`);
  return binary;
}

/** Measured GFLOP/s of the faster kernel: one thread, and `threads` threads at once (the slowest's time). */
export interface WasmPeak {
  kernel: Kernel;
  oneThread: number;
  threads: number;
  allThreads: number;
}

/**
 * The runtime's Web Worker, taken when this module loads: onnxruntime-web, once it runs threaded in the same
 * process, puts node:worker_threads' Worker in its place (bench/peers.ts measures the peak between its runs).
 */
const WebWorker = globalThis.Worker;

/** Runs the microkernel for about `seconds` per measurement. */
export async function wasmPeak(threads: number, seconds = 1): Promise<WasmPeak> {
  const bytes = await compile();
  const url = URL.createObjectURL(new Blob([WORKER], { type: "text/javascript" }));
  const workers = Array.from({ length: threads }, () => new WebWorker(url, { type: "module" }));
  const next = (w: Worker) => new Promise<unknown>((resolve) => (w.onmessage = ({ data }) => resolve(data)));
  try {
    await Promise.all(workers.map((w) => {
      const ready = next(w);
      w.postMessage({ bytes });
      return ready;
    }));
    // Calibrate on one thread, then time one thread alone and all of them together.
    const timed = async (ws: Worker[], kernel: Kernel, calls: number) => {
      const done = ws.map(next);
      ws.forEach((w) => w.postMessage({ kernel, calls }));
      return Math.max(...(await Promise.all(done)) as number[]);
    };
    const measure = async (kernel: Kernel): Promise<WasmPeak> => {
      const probe = 200;
      const calls = Math.round(probe * seconds * 1000 / await timed(workers.slice(0, 1), kernel, probe));
      const one = await timed(workers.slice(0, 1), kernel, calls);
      const all = await timed(workers, kernel, calls);
      const gflop = (n: number) => (FLOP_PER_ITERATION[kernel] * CALL_ITERATIONS * calls * n) / 1e9;
      return {
        kernel,
        oneThread: gflop(1) / (one / 1000),
        threads,
        allThreads: gflop(threads) / (all / 1000),
      };
    };
    const results = [await measure("chains"), await measure("tile")];
    return results.reduce((best, r) => (r.allThreads > best.allThreads ? r : best));
  } finally {
    workers.forEach((w) => w.terminate());
    URL.revokeObjectURL(url);
  }
}

if (import.meta.main) {
  const threads = Number(globalThis.navigator?.hardwareConcurrency ?? 2);
  const p = await wasmPeak(threads);
  console.log(
    `WebAssembly SIMD peak (${p.kernel}): ${p.oneThread.toFixed(1)} GFLOP/s on 1 thread, ${
      p.allThreads.toFixed(1)
    } on ${p.threads}`,
  );
}
