// The kernel lab: every GEMM and convolution path, batch norm, pooling and softmax on the learners' own
// shapes, timed by the device, against the adapter's peak as two microkernels measure it:
//   deno task bench:kernels [--backend webgpu|wasm] [--reps R] [--json FILE] [--quick] [--variants FILE] [filter]
//   bun run bench/kernels.ts ...           (the same WGSL under Dawn instead of wgpu)
//
// - Time: the kernels' device time from the profile (src/backend/profile.ts: WebGPU's timestamp-query, one
//   timestamped pass per dispatch; on WebAssembly the kernels' own wall time), summed over every kernel the
//   op dispatches, per call: the median of R (default 5) calls after one warmup call that compiles.
// - Peak: "fma", a kernel of eight independent vec4 multiply-add chains per thread (no memory traffic), and
//   "copy", a vec4 copy of 64 MiB (or the largest binding, if smaller); each op's GFLOP/s and GB/s are set
//   against them. GB/s counts each input read once and the output written once: the least traffic the op
//   can have, so the fraction says how close to the memory's speed it comes.
// - Paths: the GEMM and the convolution run "streamed" (no workgroup memory: the tile chooseTile picks, the
//   kernel's name in the table says which) and "staged" (the workgroup-memory tile); ops with one kernel run
//   as they are. Where the adapter has shader-f16, each path runs again with its activation stored as
//   float16 (fl.autocast: the kernels' float16 variants, arithmetic in float32). Variants from bench/kernel_variants.ts run beside them (WebGPU only) after their outputs
//   are checked against the library's; a wrong one is reported and not timed. --variants FILE adds the
//   VARIANTS a module of your own exports (the same shape as bench/kernel_variants.ts's).
// - --quick: one small case per op and 2 calls (the gpu-check test's budget); filter: cases whose op or
//   shape contains it.
import process from "node:process";
import { writeFileSync } from "node:fs";
import * as fl from "../mod.ts";
import { getEngine } from "../src/backend/device.ts";
import { type GemmChoice, setGemmChoice } from "../src/kernels/gemm.ts";
import { dispatch, type KernelVariant, VARIANTS, wgslKernel } from "./kernel_variants.ts";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

const args = process.argv.slice(2);
const option = (name: string, fallback: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : fallback;
};
const backend = option("--backend", "webgpu") as fl.BackendName;
const quick = args.includes("--quick");
const reps = Number(option("--reps", quick ? "2" : "5"));
const jsonPath = option("--json", "");
const variantsFile = option("--variants", "");
const variants: KernelVariant[] = [
  ...VARIANTS,
  ...(variantsFile
    ? (await import(pathToFileURL(resolve(variantsFile)).href)).VARIANTS as KernelVariant[]
    : []),
];
const filter = args.find((a) => !a.startsWith("-")) ?? "";

const info = await fl.init({ backend });
const onGpu = info.backend === "webgpu";
const deviceTimed = !onGpu || info.features.includes("timestamp-query");
console.log(
  `${info.runtime}, ${info.backend}: ${info.adapter}; ${
    deviceTimed ? "device time" : "wall time (no timestamp-query)"
  }, median of ${reps} calls`,
);

/** Milliseconds a call of `fn` takes: the median over `reps` calls of its kernels' profiled time. */
async function timeOp(fn: () => fl.Tensor | void): Promise<{ ms: number; kernels: string[] }> {
  fl.scope(() => fn()?.dispose()); // compiles
  await fl.syncDevice();
  const times: number[] = [];
  let kernels: string[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    fl.startProfile();
    fl.scope(() => fn()?.dispose());
    const rows = await fl.finishProfile();
    const wall = performance.now() - t0;
    kernels = rows.map((row) => row.kernel);
    times.push(deviceTimed ? rows.reduce((t, row) => t + row.ms, 0) : wall);
  }
  times.sort((a, b) => a - b);
  return { ms: times[times.length >> 1], kernels };
}

// ---------------------------------------------------------------------------------------------------------
// Peaks (WebGPU): multiply-add throughput and memory bandwidth.

const FMA_ITERATIONS = 4096, FMA_THREADS = 64 * 1024;
const fmaKernel = wgslKernel(
  "lab_peak_fma",
  `@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = id.x + id.y * groups.x * 64u;
  let s = f32(i) * 1e-9;
  let m = vec4<f32>(0.9999, 0.9998, 0.9997, 0.9996);
  let c = vec4<f32>(1e-4);
  var a0 = vec4<f32>(s); var a1 = a0 + 1.0; var a2 = a0 + 2.0; var a3 = a0 + 3.0;
  var a4 = a0 + 4.0; var a5 = a0 + 5.0; var a6 = a0 + 6.0; var a7 = a0 + 7.0;
  for (var k = 0u; k < ${FMA_ITERATIONS}u; k++) {
    a0 = fma(a0, m, c); a1 = fma(a1, m, c); a2 = fma(a2, m, c); a3 = fma(a3, m, c);
    a4 = fma(a4, m, c); a5 = fma(a5, m, c); a6 = fma(a6, m, c); a7 = fma(a7, m, c);
  }
  out[i] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}`,
  ["rw"],
  [],
);
const copyKernel = wgslKernel(
  "lab_peak_copy",
  `@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = id.x + id.y * groups.x * 64u;
  if (i < arrayLength(&dst)) { dst[i] = src[i]; }
}`,
  ["read", "rw"],
  [],
);

async function measurePeaks(): Promise<NonNullable<LabReport["peak"]>> {
  const out = fl.zeros([FMA_THREADS * 4]);
  const fma = await timeOp(() => dispatch(fmaKernel, [out], [], FMA_THREADS / 64));
  out.dispose();
  const bytes = Math.min(64 << 20, getEngine().maxStorageBinding);
  const src = fl.ones([bytes / 4]), dst = fl.zeros([bytes / 4]);
  const copy = await timeOp(() => dispatch(copyKernel, [src, dst], [], bytes / 16 / 64));
  src.dispose();
  dst.dispose();
  return {
    gflops: FMA_THREADS * FMA_ITERATIONS * 8 * 4 * 2 / 1e6 / fma.ms,
    gbs: 2 * bytes / 1e6 / copy.ms,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Cases: the learners' shapes.

interface Case {
  op: string;
  /** The learner and layer it comes from, and its sizes. */
  shape: string;
  /** Floating-point operations and the least bytes moved per call. */
  flop: number;
  bytes: number;
  /** The inputs (made once) and the library's op on them. */
  inputs: () => fl.Tensor[];
  library: (inputs: fl.Tensor[]) => fl.Tensor;
  /** Whether the GEMM's streamed and staged paths both apply. */
  gemm: boolean;
}

const seeded = (shape: number[], seed: number, scale = 1) => fl.F.scale(fl.randn(shape, { seed }), scale);
const f32 = (...shapes: number[][]) => shapes.reduce((s, sh) => s + 4 * sh.reduce((a, b) => a * b, 1), 0);

function convCase(
  learner: string,
  n: number,
  c: number,
  hw: number,
  oc: number,
  k: number,
  stride = 1,
  groups = 1,
): Case {
  const padding = (k - 1) >> 1, ohw = Math.floor((hw + 2 * padding - k) / stride) + 1;
  return {
    op: "conv2d",
    shape: `${learner}: ${n}x${c}x${hw}x${hw} -> ${oc}, ${k}x${k}${stride > 1 ? `/${stride}` : ""}${
      groups > 1 ? ` g${groups}` : ""
    }`,
    flop: 2 * n * oc * ohw * ohw * (c / groups) * k * k,
    bytes: f32([n, c, hw, hw], [oc, c / groups, k, k], [n, oc, ohw, ohw]),
    inputs: () => [seeded([n, c, hw, hw], 1), seeded([oc, c / groups, k, k], 2, 0.05)],
    library: ([x, w]) => fl.F.conv2d(x, w, null, { stride, padding, groups }),
    gemm: true,
  };
}

function matmulCase(learner: string, m: number, k: number, n: number): Case {
  return {
    op: "matmul",
    shape: `${learner}: ${m}x${k} . ${k}x${n}`,
    flop: 2 * m * n * k,
    bytes: f32([m, k], [k, n], [m, n]),
    inputs: () => [seeded([m, k], 1), seeded([k, n], 2, 0.05)],
    library: ([a, b]) => fl.F.matmul(a, b),
    gemm: true,
  };
}

function batchNormCase(learner: string, n: number, c: number, hw: number): Case {
  const elements = n * c * hw * hw;
  return {
    op: "batchNorm2d",
    shape: `${learner}: ${n}x${c}x${hw}x${hw}, training`,
    flop: 8 * elements, // statistics (sum, squares) and the affine normalisation
    bytes: 2 * 4 * elements,
    inputs: () => [seeded([n, c, hw, hw], 1), fl.zeros([c]), fl.ones([c]), fl.ones([c]), fl.zeros([c])],
    library: ([x, mean, variance, weight, bias]) =>
      fl.F.batchNorm2d(x, mean, variance, weight, bias, { training: true }),
    gemm: false,
  };
}

function maxPoolCase(learner: string, n: number, c: number, hw: number): Case {
  const ohw = Math.floor((hw + 2 - 3) / 2) + 1;
  return {
    op: "maxPool2d",
    shape: `${learner}: ${n}x${c}x${hw}x${hw}, 3x3/2`,
    flop: 9 * n * c * ohw * ohw,
    bytes: f32([n, c, hw, hw], [n, c, ohw, ohw]),
    inputs: () => [seeded([n, c, hw, hw], 1)],
    library: ([x]) => fl.F.maxPool2d(x, { kernelSize: 3, stride: 2, padding: 1 }),
    gemm: false,
  };
}

function softmaxCase(what: string, rows: number, cols: number): Case {
  return {
    op: "softmax",
    shape: `${what}: ${rows}x${cols}`,
    flop: 4 * rows * cols,
    bytes: 2 * 4 * rows * cols,
    inputs: () => [seeded([rows, cols], 1)],
    library: ([x]) => fl.F.softmax(x, -1),
    gemm: false,
  };
}

const CASES: Case[] = quick
  ? [
    convCase("ResNet152 layer1 (batch 1, 28x28)", 1, 64, 28, 64, 3),
    matmulCase("square", 256, 256, 256),
    batchNormCase("ResNet152 layer1 (28x28)", 1, 64, 28),
    maxPoolCase("ResNet152 stem (56x56)", 1, 64, 56),
    softmaxCase("stage 2 logits", 256, 4),
  ]
  : [
    convCase("ResNet152 stem", 1, 3, 224, 64, 7, 2),
    convCase("ResNet152 layer1 3x3", 1, 64, 56, 64, 3),
    convCase("ResNet152 layer1 1x1", 1, 256, 56, 64, 1),
    convCase("ResNet152 layer3 3x3", 1, 256, 14, 256, 3),
    convCase("ResNeXt101 layer2 3x3", 1, 512, 28, 512, 3, 1, 32),
    convCase("VGG19-bn block2 3x3", 1, 128, 112, 128, 3),
    convCase("DenseNet161 1x1", 1, 528, 28, 192, 1),
    matmulCase("square", 1024, 1024, 1024),
    matmulCase("AI-Covid head", 2, 87808, 256),
    batchNormCase("ResNet152 layer1", 1, 256, 56),
    maxPoolCase("ResNet152 stem", 1, 64, 112),
    softmaxCase("ImageNet logits", 64, 1000),
  ];

// ---------------------------------------------------------------------------------------------------------

/** One timed (or refused) path of one case: the lab's table row and its JSON (bench/gpu_check.ts reads it). */
export interface LabRow {
  op: string;
  shape: string;
  path: string;
  kernels: string[];
  ms: number;
  gflops: number;
  gbs: number;
  /** The largest |difference| to the library's output over its largest |value| (variants only). */
  error?: number;
  wrong?: boolean;
}

/** What --json writes. */
export interface LabReport {
  runtime: string;
  backend: string;
  adapter: string;
  deviceTimed: boolean;
  peak: { gflops: number; gbs: number } | null;
  rows: LabRow[];
}

const peak = onGpu ? await measurePeaks() : null;
if (peak) {
  console.log(
    `peak: ${peak.gflops.toFixed(1)} GFLOP/s (fma: 8 vec4 multiply-add chains a thread), ${
      peak.gbs.toFixed(1)
    } GB/s (vec4 copy)`,
  );
}

/** A variant's outputs are checked before it is timed: within this of the largest |output|. */
const VARIANT_TOLERANCE = 1e-4;
const rows: LabRow[] = [];
for (const c of CASES) {
  if (!`${c.op} ${c.shape}`.includes(filter)) continue;
  const inputs = c.inputs();
  const row = (path: string, t: { ms: number; kernels: string[] }, extra: Partial<LabRow> = {}): LabRow => ({
    op: c.op,
    shape: c.shape,
    path,
    kernels: t.kernels,
    ms: t.ms,
    gflops: c.flop / 1e6 / t.ms,
    gbs: c.bytes / 1e6 / t.ms,
    ...extra,
  });
  const paths: [string, GemmChoice][] = c.gemm && onGpu
    ? [["streamed", "streamed"], ["staged", "staged"]]
    : [[
      "library",
      "auto",
    ]];
  // and again with the activation stored as float16 (fl.autocast; arithmetic in float32) where the adapter
  // has shader-f16: GB/s is left out of those rows, whose bytes the case counts as float32
  const halfInput = onGpu && info.features.includes("shader-f16") ? fl.cast(inputs[0], "float16") : null;
  for (const [path, choice] of paths) {
    const before = setGemmChoice(choice);
    try {
      rows.push(row(path, await timeOp(() => c.library(inputs))));
      if (halfInput) {
        const half = [halfInput, ...inputs.slice(1)];
        const t = await timeOp(() => fl.autocast("float16", () => c.library(half)));
        rows.push(row(`${path}, float16 activations`, t, { gbs: NaN }));
      }
    } finally {
      setGemmChoice(before);
    }
  }
  halfInput?.dispose();
  for (const v of onGpu ? variants.filter((v) => v.op === c.op) : []) {
    const [want, got] = await Promise.all([c.library(inputs), v.run(inputs)].map(async (t) => {
      const values = await t.toArray() as Float32Array;
      t.dispose();
      return values;
    }));
    const scale = want.reduce((m, x) => Math.max(m, Math.abs(x)), 0) || 1;
    let error = want.length === got.length ? 0 : Infinity;
    for (let i = 0; i < want.length && error < Infinity; i++) {
      error = Math.max(error, Math.abs(want[i] - got[i]) / scale);
    }
    if (!(error <= VARIANT_TOLERANCE)) {
      rows.push({ ...row(`variant: ${v.name}`, { ms: NaN, kernels: [] }), error, wrong: true });
      continue;
    }
    rows.push(row(`variant: ${v.name}`, await timeOp(() => v.run(inputs)), { error }));
  }
  inputs.forEach((t) => t.dispose());
  fl.trimPool();
}

const pct = (v: number) => (Number.isFinite(v) ? `${(v * 100).toFixed(0)}%` : "-");
const num = (v: number) => (Number.isFinite(v) ? (v >= 10 ? v.toFixed(1) : v.toFixed(2)) : "-");
console.log(
  `\n| op | shape | path | kernels | ms | GFLOP/s | of fma peak | GB/s | of copy peak |\n|---|---|---|---|---|---|---|---|---|`,
);
for (const r of rows) {
  const kernels = r.wrong ? `WRONG: off by ${r.error!.toExponential(1)} of the largest output, not timed` : [
    ...new Set(r.kernels),
  ].join(", ");
  console.log(
    `| ${r.op} | ${r.shape} | ${r.path} | ${kernels} | ${num(r.ms)} | ${num(r.gflops)} | ${
      peak ? pct(r.gflops / peak.gflops) : "-"
    } | ${num(r.gbs)} | ${peak ? pct(r.gbs / peak.gbs) : "-"} |`,
  );
}
if (jsonPath) {
  const report: LabReport = {
    runtime: info.runtime,
    backend: info.backend,
    adapter: info.adapter,
    deviceTimed,
    peak,
    rows,
  };
  writeFileSync(jsonPath, JSON.stringify(report));
}
const wrong = rows.filter((r) => r.wrong);
if (wrong.length) {
  console.log(`\n${wrong.length} variant(s) gave wrong outputs: ${wrong.map((r) => r.path).join(", ")}`);
}
process.exit(wrong.length ? 1 : 0);
