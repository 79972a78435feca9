// Soak: several thousand stage-1 training steps on one backend, with device memory, live tensors and the JS
// heap sampled every K steps; they must stay flat after a warm-up. The bench is a check: it exits 1 when a
// quantity grows beyond its tolerance (no timing is asserted).
//   deno task bench:soak [--backend wasm|webgpu] [--steps N] [--every K] [--warmup W] [--arch A] [--crop C]
//   bun run bench/soak.ts --backend webgpu --steps 3000
//   defaults: --backend auto (FLANNEL_BACKEND), --steps 3000, --every 50, --warmup max(2 epochs, steps / 3),
//   --arch resnet152 (any of flannel.LEARNER_ARCHS), --crop 32, --batch 8, --per-epoch 25 (training steps of
//   one epoch); --verbose prints every sample as it is taken.
//
// What runs
// - `flannel.trainStage1` itself, the code a stage-1 run executes: a tiny learner (`createLearner(arch,
//   { scale: "tiny" })`) trained for ceil(N / per-epoch) epochs on an in-memory set of per-epoch x batch
//   synthetic gray images (side crop + 8, so the random crops move), with Adam, the "basic" augmentation
//   (CPU crops, flips, noise), `fl.train.trainStep`, `fl.syncDevice()` per batch with the next batch
//   assembled meanwhile, and after every epoch what a real run does too: the loss read back, the weights'
//   finiteness check, validation (`predictStage1` on 16 images), the best weights downloaded when the
//   macro-F1 improves, and a checkpoint (model + Adam state, history) plus the ".best" file written into a
//   temporary folder (removed at the end).
// - Samples are taken in trainStage1's `onBatch` callback (after a batch is submitted and the one before
//   it has run), so every sample sees the loop in the same state: the step's scope closed, no batch tensor
//   alive, one step possibly in flight.
//
// What is sampled, and how
// - live tensors: `fl.liveTensorCount()`, the autograd's count of tensors created and not yet disposed.
// - device pool (`fl.poolStats()`, the engine's BucketPool accounting): liveBytes (bucket bytes held by live
//   tensors), pooledBytes (free buffers kept for reuse), created (device buffers ever made: a flat count
//   means the steady state allocates nothing new on the device).
// - wasm memory: the byte length of the WebAssembly backend's linear memory (it never shrinks; WebAssembly
//   only). WebGPU: pipelines compiled (`poolStats().pipelines`) and the engine's bind-group cache (its
//   private `bindGroups` map, read here for the soak alone: bind groups are freed only when they leave
//   that cache, and their unbounded growth once crashed lavapipe after ~60k dispatches).
// - JS heap: `process.memoryUsage().heapUsed` after a forced full garbage collection (Deno: V8's gc exposed
//   through node:v8 and node:vm; Bun: `Bun.gc(true)`), so that the figure is what is retained, not how far
//   the collector lags; rss (`process.memoryUsage().rss`) as well: native memory too (lavapipe, Dawn, the
//   Wasm memory, worker threads).
//
// Report: per quantity the first sample after the warm-up, the last, the max after the warm-up, and the
// least-squares slope per 1000 steps over the samples after the warm-up; then a verdict per quantity:
// - live tensors, pool live/pooled bytes, buffers created, pipelines, wasm memory: exactly equal at every
//   sample after the warm-up (tolerance 0): the same step in the same state holds the same tensors and
//   buffers, so any difference is a leak, however small.
// - heapUsed: growth at most 2 MiB, growth being the larger of (median of the last five samples - median
//   of the first five) and the fitted line's rise over the span. The run legitimately keeps a little per
//   epoch: trainStage1's history (one small object per epoch, also serialised into every checkpoint's
//   metadata), ~0.2 KB an epoch; the rest is engine noise after a full GC: up to ~0.5 MiB in V8 (Deno);
//   in Bun (JavaScriptCore, a conservative GC) one-off steps of up to ~5 MiB were seen as late as step
//   ~550, hence the warm-up of a third of the run, then flat within ~0.1 MiB. A leak of one small typed
//   array or tensor wrapper per step would pass 2 MiB within a few thousand steps.
// - rss: growth (as for the heap) at most 32 MiB: the allocators of V8, JSC, Mesa and Dawn hold on to freed
//   pages and map arenas in steps of several MiB, so rss moved by up to ~17 MiB (last - first) and peaked
//   ~21 MiB above the first sample in 3000-step runs without any leak; 32 MiB leaves room for that. A
//   native leak of 10 KB a step (a device buffer's or bind group's bookkeeping) would pass it within the
//   run; the exact counts above catch the device-side ones at their first occurrence.
// - bind groups cached (WebGPU): at most 8192 (MAX_BIND_GROUPS of src/backend/engine.ts), and never flat:
//   new (pipeline, buffers) keys keep arriving step after step (most likely because the pool's LIFO free
//   lists hand a step's tensors other buffers than the step before, in the order the previous scope freed
//   them), so the cache fills and is emptied (its groups released) when full, every hundred-odd steps
//   here. Bounded by design, so the check is the bound.
import process from "node:process";
import v8 from "node:v8";
import vm from "node:vm";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";
import { syntheticImages } from "./synthetic_images.ts";
import { medianOf } from "./timing.ts";
import { getEngine } from "../src/backend/device.ts";

// --- command line ------------------------------------------------------------------------------------------
const argv = process.argv.slice(2);
const USAGE = `deno task bench:soak [--backend wasm|webgpu] [--steps N] [--every K] [--warmup W] [--arch A]
  [--crop C] [--batch B] [--per-epoch E] [--verbose]   (bun run bench/soak.ts ... the same)
Trains a tiny learner with flannel.trainStage1 for N steps and checks that live tensors, the device pool,
the JS heap and rss stay flat after the warm-up; exits 1 when one grows (the file's header says how).`;
if (argv.includes("--help")) {
  console.log(USAGE);
  process.exit(0);
}
const VALUED = ["backend", "steps", "every", "warmup", "arch", "crop", "batch", "per-epoch"];
for (const [i, a] of argv.entries()) {
  const known = a === "--verbose" || VALUED.includes(a.slice(2)) || VALUED.includes(argv[i - 1]?.slice(2));
  if (!known) throw new Error(`unknown argument ${a}\n${USAGE}`);
}
function option(name: string): string | undefined {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return undefined;
  const v = argv[i + 1];
  if (v === undefined || v.startsWith("--")) throw new Error(`--${name} needs a value`);
  return v;
}
function intOption(name: string, fallback: number, min = 1): number {
  const v = option(name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got ${v}`);
  return n;
}
const backend = (option("backend") ?? (process.env.FLANNEL_BACKEND || "auto")) as fl.BackendName | "auto";
const steps = intOption("steps", 3000);
const every = intOption("every", 50);
const crop = intOption("crop", 32, 8);
const batchSize = intOption("batch", 8, 2);
const perEpoch = intOption("per-epoch", 25);
const arch = option("arch") ?? "resnet152";
const verbose = argv.includes("--verbose");
const epochs = Math.ceil(steps / perEpoch);
const warmup = intOption("warmup", Math.max(2 * perEpoch, Math.round(steps / 3)), 0);
if (warmup >= steps) throw new Error(`--warmup (${warmup}) must be below --steps (${steps})`);
if (!flannel.isStage1Arch(arch)) throw new Error(`--arch: unknown learner ${arch}`);

// --- forced garbage collection -----------------------------------------------------------------------------
/** A full, synchronous GC: Bun.gc(true) in Bun; V8's gc (exposed at run time via node:v8) in Deno. */
function gcFunction(): () => void {
  const bun = (globalThis as { Bun?: { gc: (sync: boolean) => void } }).Bun;
  if (bun) return () => bun.gc(true);
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (typeof exposed === "function") return exposed;
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc") as unknown;
  if (typeof gc !== "function") throw new Error("soak: no way to force a garbage collection here");
  return gc as () => void;
}
const gc = gcFunction();

// --- setup -------------------------------------------------------------------------------------------------
const info = await fl.init({ backend });
const runtime = `${info.runtime} ${
  info.runtime === "deno"
    ? (globalThis as unknown as { Deno: { version: { deno: string } } }).Deno.version.deno
    : process.versions.bun ?? ""
}`;
const engine = getEngine();
const wasmMemory = engine.kind === "wasm"
  ? (engine as unknown as { memory: WebAssembly.Memory }).memory
  : null;

const trainCount = perEpoch * batchSize, valCount = 16;
const trainImages = syntheticImages(trainCount, crop + 8, 1);
const valImages = syntheticImages(valCount, crop + 8, 2);
const trainLabels = Int32Array.from({ length: trainCount }, (_, i) => i % 4);
const valLabels = Int32Array.from({ length: valCount }, (_, i) => i % 4);
const dir = mkdtempSync(join(tmpdir(), "flannel-soak-"));
const checkpointPath = join(dir, "stage1.safetensors");

console.log(
  `${runtime} on ${info.backend} (${info.adapter}); stage 1 of tiny ${arch} at crop ${crop}, ` +
    `batch ${batchSize}: ` +
    `${epochs} epochs of ${perEpoch} steps (${
      epochs * perEpoch
    } steps), validation and checkpoint after each; ` +
    `a sample every ${every} steps, warm-up ${warmup} steps`,
);
/** Entries of the WebGPU engine's bind-group cache (a private field, read for this soak alone). */
function bindGroupCount(): number {
  const groups = (engine as unknown as { bindGroups?: Map<string, unknown> }).bindGroups;
  if (!(groups instanceof Map)) throw new Error("soak: the WebGPU engine has no bindGroups cache to sample");
  return groups.size;
}

// --- sampling ----------------------------------------------------------------------------------------------
interface Quantity {
  name: string;
  unit: "count" | "bytes";
  /** Allowed growth after the warm-up; 0: every sample after it must equal the first. */
  tolerance: number;
  /** Instead of a tolerance: an upper bound every sample after the warm-up must respect (a bounded cache). */
  bound?: number;
  read: () => number;
}
const MiB = 2 ** 20;
const quantities: Quantity[] = [
  { name: "live tensors", unit: "count", tolerance: 0, read: () => fl.liveTensorCount() },
  { name: "pool live bytes", unit: "bytes", tolerance: 0, read: () => fl.poolStats().liveBytes },
  { name: "pool pooled bytes", unit: "bytes", tolerance: 0, read: () => fl.poolStats().pooledBytes },
  { name: "device buffers created", unit: "count", tolerance: 0, read: () => fl.poolStats().created },
  ...(wasmMemory
    ? [
      { name: "wasm memory", unit: "bytes", tolerance: 0, read: () => wasmMemory.buffer.byteLength } as const,
    ]
    : [
      { name: "pipelines", unit: "count", tolerance: 0, read: () => fl.poolStats().pipelines } as const,
      { name: "bind groups cached", unit: "count", tolerance: 0, bound: 8192, read: bindGroupCount } as const,
    ]),
  { name: "JS heapUsed", unit: "bytes", tolerance: 2 * MiB, read: () => process.memoryUsage().heapUsed },
  { name: "rss", unit: "bytes", tolerance: 32 * MiB, read: () => process.memoryUsage().rss },
];
const samples: { step: number; seconds: number; values: number[] }[] = [];
const fmtValue = (q: Quantity, v: number) =>
  q.unit === "bytes" ? `${(v / MiB).toFixed(2)} MiB` : Math.round(v).toLocaleString("en-US");

let step = 0;
let gcMs = 0;
const t0 = performance.now();
function sample() {
  const g = performance.now();
  gc();
  gcMs += performance.now() - g;
  const values = quantities.map((q) => q.read());
  samples.push({ step, seconds: (performance.now() - t0) / 1000, values });
  if (verbose) {
    console.log(
      `  step ${step}: ${quantities.map((q, i) => `${q.name} ${fmtValue(q, values[i])}`).join(", ")}`,
    );
  }
}

// --- the run -----------------------------------------------------------------------------------------------
const liveBefore = fl.liveTensorCount();
const model = flannel.createLearner(arch, { scale: "tiny", seed: 1, numClasses: 4, crop });
let lastEpochLog: flannel.Stage1EpochLog | null = null;
let lastProgress = performance.now();
const result = await flannel.trainStage1({
  model,
  train: { images: trainImages, labels: trainLabels },
  val: { images: valImages, labels: valLabels },
  epochs,
  batchSize,
  crop,
  seed: 1,
  checkpointPath,
  onBatch: () => {
    step++;
    if (step % every === 0) sample();
  },
  onProgress: (log) => {
    lastEpochLog = log;
    if (performance.now() - lastProgress > 30_000 || log.epoch === epochs) {
      lastProgress = performance.now();
      const s = samples.at(-1);
      console.log(
        `  epoch ${log.epoch}/${epochs}: step ${step}, ${
          ((performance.now() - t0) / 1000).toFixed(0)
        } s, loss ${log.trainLoss.toFixed(3)}${
          s ? `; ${quantities.map((q, i) => `${q.name} ${fmtValue(q, s.values[i])}`).join(", ")}` : ""
        }`,
      );
    }
  },
});
const seconds = (performance.now() - t0) / 1000;
result.model.dispose();
fl.trimPool();
await fl.syncDevice();
const leftAfter = fl.liveTensorCount() - liveBefore;
rmSync(dir, { recursive: true, force: true });

// --- report ------------------------------------------------------------------------------------------------
/** Least-squares slope of ys over xs. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n, my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0, sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i] - mx) * (ys[i] - my);
    sxx += (xs[i] - mx) ** 2;
  }
  return sxx > 0 ? sxy / sxx : 0;
}

const after = samples.filter((s) => s.step >= warmup);
console.log(
  `\n${runtime}, ${info.backend} (${info.adapter}): ${step} steps (${epochs} epochs) in ${
    seconds.toFixed(0)
  } s ` +
    `(${(1000 * seconds / step).toFixed(0)} ms a step, forced GCs ${(gcMs / 1000).toFixed(1)} s of it); ` +
    `${samples.length} samples, ${after.length} after the warm-up (step ${after[0]?.step ?? "-"} on); ` +
    `last epoch's loss ${(lastEpochLog as flannel.Stage1EpochLog | null)?.trainLoss.toFixed(3) ?? "-"}`,
);
const failures: string[] = [];
if (after.length < 2) failures.push(`only ${after.length} samples after the warm-up: use more --steps`);
console.log(
  "\n| quantity | first after warm-up | last | max after warm-up | slope per 1000 steps | tolerance " +
    "| verdict |",
);
console.log("|---|---|---|---|---|---|---|");
quantities.forEach((q, i) => {
  if (after.length < 2) return;
  const xs = after.map((s) => s.step), ys = after.map((s) => s.values[i]);
  const first = ys[0], last = ys.at(-1)!, max = Math.max(...ys), min = Math.min(...ys);
  const perK = slope(xs, ys) * 1000;
  const fitted = perK * (xs.at(-1)! - xs[0]) / 1000; // growth over the span along the fitted line
  let ok: boolean, why: string;
  if (q.bound !== undefined) {
    ok = max <= q.bound;
    why = `${ok ? "bounded" : "EXCEEDS its bound"} (min ${fmtValue(q, min)}, max ${fmtValue(q, max)})`;
  } else if (q.tolerance === 0) {
    ok = max === first && min === first;
    why = ok ? "flat" : `changed after the warm-up (min ${fmtValue(q, min)}, max ${fmtValue(q, max)})`;
  } else {
    // medians of the first and last five samples: one GC that happened to keep a little more is not growth
    const ends = medianOf(ys.slice(-5)) - medianOf(ys.slice(0, 5));
    const growth = Math.max(ends, fitted);
    ok = growth <= q.tolerance;
    why = `${ok ? "flat" : "GROWS"}: +${fmtValue(q, Math.max(0, growth))} (median of last 5 - first 5 ${
      fmtValue(q, ends)
    }, fitted ${fmtValue(q, fitted)})`;
  }
  if (!ok) failures.push(`${q.name} ${why}`);
  const sign = (v: number) => (v >= 0 ? "+" : "-") + fmtValue(q, Math.abs(v));
  console.log(
    `| ${q.name} | ${fmtValue(q, first)} | ${fmtValue(q, last)} | ${fmtValue(q, max)} | ${sign(perK)} | ${
      q.bound !== undefined
        ? `<= ${fmtValue(q, q.bound)}`
        : q.tolerance === 0
        ? "exact"
        : `+${fmtValue(q, q.tolerance)}`
    } | ${ok ? "ok" : "FAIL"}: ${why} |`,
  );
});
if (leftAfter !== 0) failures.push(`${leftAfter} tensors still alive after the model was disposed`);
console.log(`\nafter the run and model.dispose(): ${leftAfter} tensors left beyond those before it`);
if (failures.length) {
  console.log(`\nFAIL:\n${failures.map((f) => `- ${f}`).join("\n")}`);
  process.exit(1);
}
console.log("\nok: every quantity flat after the warm-up");
process.exit(0);
