// Speed of the core ops and of stage-2 training, measured with tinybench. Every device case records its
// op several times and then waits for the device, so the time is the device's, not the recording's.
// A CPU peer (plain TypeScript on Float32Array, same process) gives each case a ratio.
//   deno task bench [filter]      bun run bench [filter]
import process from "node:process";
import { Bench } from "tinybench";
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";

const info = await fl.init();
const filter = process.argv.slice(2).find((a) => !a.startsWith("-")) ?? "";

interface Case {
  name: string;
  unit: "GFLOP/s" | "GB/s" | "samples/s";
  /** Work of one call of `device` (and of `peer`) in the unit's numerator (GFLOP, GB, samples). */
  work: number;
  peerWork?: number;
  device: () => Promise<void>;
  peer?: () => void;
  setup?: () => void;
  teardown?: () => void;
}

const rand = (n: number, seed: number) => {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32) - 0.5);
};

function cpuMatmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number): Float32Array {
  const c = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const av = a[i * k + p];
      for (let j = 0; j < n; j++) c[i * n + j] += av * b[p * n + j];
    }
  }
  return c;
}

function cpuSoftmaxRows(x: Float32Array, rows: number, n: number): Float32Array {
  const y = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) {
    let mx = -Infinity, s = 0;
    for (let j = 0; j < n; j++) mx = Math.max(mx, x[r * n + j]);
    for (let j = 0; j < n; j++) s += y[r * n + j] = Math.exp(x[r * n + j] - mx);
    for (let j = 0; j < n; j++) y[r * n + j] /= s;
  }
  return y;
}

/** `reps` recordings of `op` in one scope, then a wait for the device. */
const onDevice = (reps: number, op: () => void) => async () => {
  fl.scope(() => {
    for (let i = 0; i < reps; i++) op();
  });
  await fl.syncDevice();
};

const cases: Case[] = [];

for (const size of [256, 512, 1024]) {
  const a = fl.tensor(rand(size * size, 1), [size, size]).keep(),
    b = fl.tensor(rand(size * size, 2), [size, size]).keep();
  const ah = rand(size * size, 1), bh = rand(size * size, 2);
  const reps = size >= 1024 ? 2 : 8;
  cases.push({
    name: `matmul ${size}x${size}x${size}`,
    unit: "GFLOP/s",
    work: (reps * 2 * size ** 3) / 1e9,
    device: onDevice(reps, () => fl.F.matmul(a, b)),
    ...(size <= 512
      ? { peer: () => void cpuMatmul(ah, bh, size, size, size), peerWork: (2 * size ** 3) / 1e9 }
      : {}),
    teardown: () => (a.dispose(), b.dispose()),
  });
}

{
  // The Neural Weight Module's dense layer at batch 64: [64, 400] x [5, 400]^T, forward and backward.
  const x = fl.tensor(rand(64 * 400, 3), [64, 400]).keep();
  const w = fl.tensor(rand(5 * 400, 4), [5, 400], { requiresGrad: true }).keep();
  const reps = 32;
  cases.push({
    name: "linear [64,400]x[5,400]^T fwd+bwd",
    unit: "GFLOP/s",
    work: (reps * 3 * 2 * 64 * 400 * 5) / 1e9,
    device: onDevice(reps, () => fl.F.sum(fl.F.linear(x, w)).backward()),
    teardown: () => (x.dispose(), w.dispose()),
  });
}

{
  const f = fl.tensor(rand(1024 * 20, 5), [1024, 20], { requiresGrad: true }).keep();
  const reps = 16;
  cases.push({
    name: "outer [1024,20] -> [1024,400] fwd+bwd",
    unit: "GB/s",
    // forward writes B*K*K, backward reads it (plus f twice)
    work: (reps * 4 * (2 * 1024 * 400 + 3 * 1024 * 20)) / 1e9,
    device: onDevice(reps, () => fl.F.sum(fl.F.outer(f)).backward()),
    teardown: () => f.dispose(),
  });
}

{
  const rows = 4096, n = 1000;
  const xh = rand(rows * n, 6);
  const x = fl.tensor(xh, [rows, n]).keep();
  const xg = fl.tensor(xh, [rows, n], { requiresGrad: true }).keep();
  const r = fl.tensor(rand(rows * n, 8), [rows, n]).keep();
  const reps = 4;
  cases.push({
    name: `softmax [${rows},${n}] dim -1`,
    unit: "GB/s",
    work: (reps * 2 * 4 * rows * n) / 1e9,
    device: onDevice(reps, () => fl.F.softmax(x, -1)),
    peer: () => void cpuSoftmaxRows(xh, rows, n),
    peerWork: (2 * 4 * rows * n) / 1e9,
    teardown: () => x.dispose(),
  });
  cases.push({
    name: `softmax [${rows},${n}] dim -1 fwd+bwd`,
    unit: "GB/s",
    // forward reads x and writes y; backward reads g and y and writes dx (the mul and sum around it excluded)
    work: (reps * 5 * 4 * rows * n) / 1e9,
    device: onDevice(reps, () => fl.F.sum(fl.F.mul(fl.F.softmax(xg, -1), r)).backward()),
    teardown: () => (xg.dispose(), r.dispose()),
  });
}

{
  const b = 65536, m = 4;
  const logits = fl.tensor(rand(b * m, 7), [b, m], { requiresGrad: true }).keep();
  const target = fl.intTensor(Int32Array.from({ length: b }, (_, i) => i % m)).keep();
  const reps = 8;
  cases.push({
    name: `focal loss [${b},${m}] fwd+bwd`,
    unit: "GB/s",
    work: (reps * 4 * (3 * b * m + 2 * b)) / 1e9,
    device: onDevice(
      reps,
      () => fl.F.focalLoss(logits, target, { gamma: 3, alpha: [3.4, 0.23, 0.12, 0.22] }).backward(),
    ),
    teardown: () => (logits.dispose(), target.dispose()),
  });
}

{
  // One epoch of FLANNEL's stage 2 on a fold-sized training set (the paper's 5508 images, 4/5 x 4/5).
  const train = flannel.syntheticLearnerOutputs({ samples: 3525, seed: 1 });
  const val = flannel.syntheticLearnerOutputs({ samples: 64, seed: 2 });
  for (const method of ["flannel", "mlp2"] as const) {
    cases.push({
      name: `stage 2 training, ${method}, 1 epoch of 3525 (batch 64)`,
      unit: "samples/s",
      work: 3525,
      device: async () => {
        const run = await flannel.trainStage2(train, val, {
          method,
          loss: method === "flannel" ? "focal" : "ce",
          epochs: 1,
          seed: 1,
        });
        run.model.dispose();
      },
    });
  }
}

const selected = cases.filter((c) => c.name.includes(filter));
const rows: string[][] = [];
for (const c of selected) {
  const bench = new Bench({ time: 1500, iterations: 3, warmupIterations: 1 });
  bench.add("device", c.device);
  if (c.peer) bench.add("peer", c.peer);
  await bench.run();
  const rate = (name: string, work: number) => {
    const r = bench.getTask(name)?.result as { state: string; latency?: { mean: number } } | undefined;
    if (!r || r.state !== "completed" || !r.latency) throw new Error(`bench ${c.name}/${name}: ${r?.state}`);
    return work / (r.latency.mean / 1000);
  };
  const ours = rate("device", c.work);
  const peer = c.peer ? rate("peer", c.peerWork ?? c.work) : NaN;
  rows.push([
    c.name,
    `${ours.toPrecision(4)} ${c.unit}`,
    c.peer ? `${peer.toPrecision(4)} ${c.unit}` : "-",
    c.peer ? (ours / peer).toFixed(2) : "-",
  ]);
  console.log(
    `${c.name}: ${ours.toPrecision(4)} ${c.unit}${
      c.peer ? ` (CPU TypeScript peer ${peer.toPrecision(4)}, ratio ${(ours / peer).toFixed(2)})` : ""
    }`,
  );
  c.teardown?.();
}
console.log(`\n${info.runtime} on ${info.adapter}\n`);
console.log(
  `| case | this library (${
    info.backend === "wasm" ? "WebAssembly" : "WebGPU"
  }) | peer: plain TypeScript, same process | ratio |`,
);
console.log("|---|---|---|---|");
for (const r of rows) console.log(`| ${r.join(" | ")} |`);
process.exit(0);
