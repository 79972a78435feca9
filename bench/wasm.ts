// The WebAssembly backend against TensorFlow.js's (@tensorflow/tfjs-backend-wasm 4.22.0, XNNPACK, a dev
// dependency used here alone) on the same shapes in the same process, measured with tinybench.
//   deno task bench:wasm [--quick] [filter]      bun run bench/wasm.ts [--quick] [filter]
//
// - Ours: `fl.init({ backend: "wasm" })` with as many threads as the machine has cores. tfjs: asked for the
//   same number of threads (`setThreadsCount`); its multi-threaded binary needs a cross-origin-isolated
//   browser or Node's worker_threads, so under Deno and Bun it runs its single-threaded SIMD binary (the
//   table says how many threads it reports).
// - Matmul: square products, GFLOP/s = 2 n^3. Convolutions: the base learners' shapes at batch 8 (2 with
//   --quick), forward, GFLOP/s = 2 N Cout OH OW (Cin / groups) KH KW; tfjs in its NHWC layout. "train" is
//   ours alone: forward plus both gradients (x and w), counted as three passes of that work.
// - Each case runs its op inside `fl.scope` / `tf.tidy`; results are read back (`toArray` / `dataSync`) so
//   both libraries finish their work inside the timed call.
import process from "node:process";
import { Bench } from "tinybench";
import * as fl from "../mod.ts";

const args = process.argv.slice(2);
const quick = args.includes("--quick");
const filter = args.find((a) => !a.startsWith("-")) ?? "";
const N = quick ? 2 : 8;

const info = await fl.init({ backend: "wasm" });
const threads = info.limits.threads;

const tf = await import("@tensorflow/tfjs-core");
const tfw = await import("@tensorflow/tfjs-backend-wasm");
tfw.setWasmPaths(new URL("../node_modules/@tensorflow/tfjs-backend-wasm/dist/", import.meta.url).href);
tfw.setThreadsCount(threads);
await tf.setBackend("wasm");
await tf.ready();
const tfThreads = tfw.getThreadsCount();

const rand = (n: number, seed: number) => {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32) - 0.5);
};

interface Case {
  name: string;
  gflop: number;
  ours: () => Promise<void>;
  tfjs?: () => void;
}
const cases: Case[] = [];

for (const n of quick ? [256, 512] : [256, 512, 1024]) {
  const a = rand(n * n, 1), b = rand(n * n, 2);
  const A = fl.tensor(a, [n, n]), B = fl.tensor(b, [n, n]);
  const tA = tf.tensor2d(a, [n, n]), tB = tf.tensor2d(b, [n, n]);
  cases.push({
    name: `matmul ${n}^3`,
    gflop: (2 * n ** 3) / 1e9,
    ours: () => fl.scope(async () => void (await fl.F.matmul(A, B).toArray())),
    tfjs: () => tf.tidy(() => void tf.matMul(tA, tB).dataSync()),
  });
}

const CONVS: { name: string; c: number; o: number; k: number; hw: number; groups?: number }[] = [
  { name: "ResNet-152 3x3 64->64 @56", c: 64, o: 64, k: 3, hw: 56 },
  { name: "ResNet-152 1x1 64->256 @56", c: 64, o: 256, k: 1, hw: 56 },
  { name: "ResNet-152 1x1 256->64 @56", c: 256, o: 64, k: 1, hw: 56 },
  { name: "ResNet-152 3x3 128->128 @28", c: 128, o: 128, k: 3, hw: 28 },
  { name: "DenseNet-161 1x1 96->192 @56", c: 96, o: 192, k: 1, hw: 56 },
  { name: "DenseNet-161 3x3 192->48 @56", c: 192, o: 48, k: 3, hw: 56 },
  { name: "ResNeXt-101 3x3 256->256 g32 @56", c: 256, o: 256, k: 3, hw: 56, groups: 32 },
];
for (const conv of quick ? CONVS.slice(0, 3) : CONVS) {
  const { c, o, k, hw } = conv, groups = conv.groups ?? 1, pad = (k - 1) / 2;
  const xs = rand(N * c * hw * hw, 3), ws = rand(o * (c / groups) * k * k, 4);
  const x = fl.tensor(xs, [N, c, hw, hw]), w = fl.tensor(ws, [o, c / groups, k, k]);
  const xg = fl.tensor(xs, [N, c, hw, hw], { requiresGrad: true }),
    wg = fl.tensor(ws, [o, c / groups, k, k], { requiresGrad: true });
  const gflop = (2 * N * o * hw * hw * (c / groups) * k * k) / 1e9;
  // tfjs has no grouped convolution: only the ungrouped shapes get a peer.
  const tx = tf.tensor4d(rand(N * hw * hw * c, 3), [N, hw, hw, c]),
    tw = tf.tensor4d(rand(k * k * c * o, 4), [k, k, c, o]);
  cases.push({
    name: `conv ${conv.name} fwd`,
    gflop,
    ours: () =>
      fl.scope(async () => void (await fl.F.conv2d(x, w, null, { padding: pad, groups }).toArray())),
    tfjs: groups === 1 ? () => tf.tidy(() => void tf.conv2d(tx, tw, 1, "same").dataSync()) : undefined,
  });
  cases.push({
    name: `conv ${conv.name} train`,
    gflop: 3 * gflop,
    ours: () =>
      fl.scope(async () => {
        fl.F.sum(fl.F.conv2d(xg, wg, null, { padding: pad, groups })).backward();
        await wg.grad!.toArray();
        for (const t of [xg, wg]) t.grad?.dispose(), t.grad = null;
      }),
  });
}

const selected = cases.filter((c) => c.name.includes(filter));
console.log(
  `ours: ${info.adapter} (${info.runtime}); tfjs-backend-wasm 4.22.0: ${tfThreads} thread(s); batch ${N}`,
);
console.log("| case | ours | tfjs-backend-wasm | ratio |\n|---|---|---|---|");
const opts = { time: quick ? 200 : 600, iterations: 3, warmupIterations: 1 };
for (const c of selected) {
  const bench = new Bench(opts);
  bench.add("ours", c.ours);
  if (c.tfjs) bench.add("tfjs", c.tfjs);
  await bench.run();
  const median = (name: string) => {
    const r = bench.getTask(name)?.result as { latency?: { p50?: number } } | undefined;
    return r?.latency?.p50;
  };
  const rate = (ms?: number) => (ms ? c.gflop / (ms / 1000) : NaN);
  const ours = rate(median("ours")), theirs = c.tfjs ? rate(median("tfjs")) : NaN;
  const fmt = (v: number) => (Number.isFinite(v) ? `${v.toPrecision(3)} GFLOP/s` : "-");
  console.log(
    `| ${c.name} | ${fmt(ours)} | ${fmt(theirs)} | ${
      Number.isFinite(theirs) ? (ours / theirs).toFixed(2) : "-"
    } |`,
  );
}
process.exit(0);
