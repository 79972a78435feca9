// Inference of the stage-1 learners on the same weights in four engines, in one run, against the WebAssembly
// SIMD peak of the machine (bench/wasm_peak.ts):
//   deno task bench:peers [--batch B] [--steps S] [--no-torch] [filter]     bun run bench/peers.ts ...
//   FLANNEL_FAST_MATH=1 deno task bench:peers: ours with fastMath (the relaxed-SIMD kernels)
//
// - Ours: the WebAssembly backend on every core, each learner (full size, crop 224, random weights with a
//   seed, eval mode, under noGrad) in three configurations: "before" (conv, batch norm, add and ReLU one pass
//   each, direct convolutions), "fused" (src/nn/cnn_layers.ts convBatchNorm: batch norm, residual and ReLU in
//   the GEMM's epilogue) and "+ Winograd, depthwise" (fused, the 3x3 stride-1 convolutions by Winograd where
//   src/kernels/conv.ts winogradTile chooses it, and depthwise ones by src/kernels/depthwise.ts: the
//   library's default, "after").
// - GEMM: one fused forward with direct convolutions under fl.startProfile: the GEMM's FLOP (2 M N K per
//   product) over the GEMM's own time gives its GFLOP/s on these shapes, its share of the forward's wall time
//   how much else there is. The same FLOP (the direct convolutions' work, which Winograd does with fewer
//   multiplications) over the "after" time gives the effective GFLOP/s, set against the peak.
// - The same weights elsewhere: the learner exported with fl.onnx.exportModel and run in onnxruntime-web's
//   WebAssembly backend (SIMD; asked for as many threads as ours: the table says how many it got) and in
//   onnxruntime-node (native code: the ceiling of this CPU); the largest |logit| difference to ours, relative
//   to the largest |logit|, is shown (random weights give logits in the thousands).
// - PyTorch CPU (bench/stage1_torch.py --inference-only, torchvision's models: the same architectures and
//   shapes, its own random weights) on every core, where Debian's python3-torch is installed.
// - Timing: tinybench, 1 warmup, then R rounds (--rounds, default 3) of S measured calls (--steps, default 3)
//   of each configuration and engine in turn, so that each round times them all within seconds of each other;
//   a figure is the median over the rounds of each round's median, and "after / ort-web" is the median of the
//   rounds' own ratios, with their range: this VM's speed drifts by up to 2x over minutes (the peak too,
//   measured before every round), and only ratios taken within a round mean something. images/s = B / ms.
import process from "node:process";
import * as ortNode from "onnxruntime-node";
import * as ortWeb from "onnxruntime-web";
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";
import { setWasmConvAlgorithm, type WasmConvAlgorithm } from "../src/kernels/conv.ts";
import { medianOf, timeTasks } from "./timing.ts";
import { torchPeer } from "./torch_peer.ts";
import { wasmPeak } from "./wasm_peak.ts";

const args = process.argv.slice(2);
const option = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args.splice(i, 2)[1]) : fallback;
};
const B = option("--batch", 2), steps = option("--steps", 3), rounds = option("--rounds", 3);
const filter = args.find((a) => !a.startsWith("-")) ?? "";
const crop = 224;

const info = await fl.init({ backend: "wasm" });
const threads = info.limits.threads;
console.log(`${info.runtime}, ${info.adapter}; full-size learners, crop ${crop}, batch ${B}, ${steps} steps`);
console.log(`${new Date().toISOString()}; ${rounds} rounds of ${steps} steps`);
/** The peak (bench/wasm_peak.ts) on every thread, measured once per round, GFLOP/s. */
const peaks: number[] = [];
async function measurePeak(): Promise<void> {
  const peak = await wasmPeak(threads);
  peaks.push(peak.allThreads);
  console.log(
    `WebAssembly SIMD peak (kernel "${peak.kernel}"): ${peak.oneThread.toFixed(1)} GFLOP/s on 1 thread, ` +
      `${peak.allThreads.toFixed(1)} on ${threads}`,
  );
}

const problems: string[] = [];
ortWeb.env.wasm.numThreads = threads;
ortWeb.env.wasm.wasmPaths = new URL("../node_modules/onnxruntime-web/dist/", import.meta.url).href;

/** Median milliseconds of `fn` over `steps` calls after one warmup (bench/timing.ts); NaN if it failed. */
async function median(name: string, fn: () => Promise<unknown>): Promise<number> {
  const ms = (await timeTasks({ [name]: { fn, time: 0, iterations: steps } }))[name].median;
  if (Number.isNaN(ms)) problems.push(`${name} failed`);
  return ms;
}

interface Row {
  arch: string;
  /** Median ms of the three configurations over the rounds (see the header). */
  beforeMs: number;
  fusedMs: number;
  afterMs: number;
  /** The direct convolutions' FLOP and the GEMM's time on them, from a profiled fused forward. */
  flop: number;
  gemmMs: number;
  gemmWallMs: number;
  /** The peak on every thread, median of the rounds', GFLOP/s. */
  peak: number;
  ortWebMs: number;
  /** ort-web's time over ours ("after"), the median of the rounds' ratios, their least and largest. */
  afterPerOrtWeb: [number, number, number];
  ortNodeMs: number;
  maxDiff: number;
}
const rows: Row[] = [];
let ortWebThreads = 0;

/** Runs `fn` with fusion and the convolution algorithm set as given, restoring both after. */
async function configured<T>(fused: boolean, algorithm: WasmConvAlgorithm, fn: () => Promise<T>): Promise<T> {
  const wasFused = fl.nn.setFusedInference(fused), wasAlgorithm = setWasmConvAlgorithm(algorithm);
  try {
    return await fn();
  } finally {
    fl.nn.setFusedInference(wasFused);
    setWasmConvAlgorithm(wasAlgorithm);
  }
}

for (const arch of [...flannel.LEARNER_ARCHS, ...flannel.BASELINE_ARCHS]) {
  if (!arch.includes(filter)) continue;
  const model = flannel.createLearner(arch, { scale: "full", seed: 1, numClasses: 4, crop });
  model.eval();
  const data = fl.randn([B, 3, crop, crop], { seed: 2 });
  const pixels = await data.toArray() as Float32Array;
  const forward = () => fl.scope(() => fl.noGrad(() => model.forward(data)).toArray());
  const profile = await configured(true, "direct", async () => {
    fl.startProfile();
    const t0 = performance.now();
    await forward();
    const wallMs = performance.now() - t0;
    const gemm = fl.stopProfile().filter((r) => r.kernel.startsWith("gemm:"));
    return { wallMs, flop: gemm.reduce((s, r) => s + r.flop, 0), gemmMs: gemm.reduce((s, r) => s + r.ms, 0) };
  });
  const ours = await forward() as Float32Array;

  const onnx = await fl.onnx.exportModel(model, { input: [B, 3, crop, crop] });
  const feed = (ort: typeof ortNode | typeof ortWeb) => ({
    input: new ort.Tensor("float32", pixels, [B, 3, crop, crop]),
  });
  const node = await ortNode.InferenceSession.create(onnx, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
  });
  const web = await ortWeb.InferenceSession.create(onnx, { executionProviders: ["wasm"] });
  ortWebThreads = ortWeb.env.wasm.numThreads as number;
  const timed: Record<"before" | "fused" | "after" | "ortWeb" | "ortNode", number[]> = {
    before: [],
    fused: [],
    after: [],
    ortWeb: [],
    ortNode: [],
  };
  const peakFrom = peaks.length;
  for (let round = 0; round < rounds; round++) {
    await measurePeak();
    timed.before.push(await configured(false, "direct", () => median(`${arch} before`, forward)));
    timed.fused.push(await configured(true, "direct", () => median(`${arch} fused`, forward)));
    timed.after.push(await configured(true, "auto", () => median(`${arch} after`, forward)));
    timed.ortWeb.push(await median(`${arch} onnxruntime-web`, () => web.run(feed(ortWeb))));
    timed.ortNode.push(await median(`${arch} onnxruntime-node`, () => node.run(feed(ortNode))));
    console.log(
      `${arch}, round ${round + 1}: ms before ${timed.before[round].toFixed(0)}, fused ${
        timed.fused[round].toFixed(0)
      }, after ${timed.after[round].toFixed(0)}, onnxruntime-web ${timed.ortWeb[round].toFixed(0)}, -node ${
        timed.ortNode[round].toFixed(0)
      }`,
    );
  }
  const [beforeMs, fusedMs, afterMs, ortWebMs, ortNodeMs] = [
    timed.before,
    timed.fused,
    timed.after,
    timed.ortWeb,
    timed.ortNode,
  ].map(medianOf);
  const webRatios = timed.after.map((ms, i) => timed.ortWeb[i] / ms);
  let maxDiff = 0;
  const outputs = [(await node.run(feed(ortNode))).logits.data, (await web.run(feed(ortWeb))).logits.data];
  const scale = ours.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  for (const logits of outputs as Float32Array[]) {
    for (let i = 0; i < ours.length; i++) maxDiff = Math.max(maxDiff, Math.abs(logits[i] - ours[i]) / scale);
  }
  await node.release();
  await web.release();
  const row: Row = {
    arch,
    beforeMs,
    fusedMs,
    afterMs,
    flop: profile.flop,
    gemmMs: profile.gemmMs,
    gemmWallMs: profile.wallMs,
    peak: medianOf(peaks.slice(peakFrom)),
    ortWebMs,
    afterPerOrtWeb: [medianOf(webRatios), Math.min(...webRatios), Math.max(...webRatios)],
    ortNodeMs,
    maxDiff,
  };
  rows.push(row);
  console.log(
    `${arch}: before ${beforeMs.toFixed(0)} ms, fused ${fusedMs.toFixed(0)} ms, + Winograd, depthwise ${
      afterMs.toFixed(0)
    } ms; ` +
      `GEMM ${(row.flop / 1e6 / row.gemmMs).toFixed(1)} GFLOP/s, ${
        (row.gemmMs / row.gemmWallMs * 100).toFixed(0)
      }% ` +
      `of the fused forward; onnxruntime-web ${ortWebMs.toFixed(0)} ms, -node ${ortNodeMs.toFixed(0)} ms; ` +
      `max |logit diff| / max |logit| ${maxDiff.toExponential(1)}`,
  );
  if (maxDiff > 1e-4) {
    problems.push(`${arch}: onnxruntime's logits differ from ours by ${maxDiff} of the largest`);
  }
  data.dispose();
  model.dispose();
  fl.trimPool();
}

const peer = args.includes("--no-torch")
  ? null
  : torchPeer(rows.map((r) => r.arch), { scale: "full", crop, batch: B, steps, inferenceOnly: true });
if (peer && "error" in peer) problems.push(peer.error);
const torch = peer && !("error" in peer) ? peer : null;

const ips = (ms: number) => B / (ms / 1000);
const f = (v: number) => (v >= 10 ? v.toFixed(1) : v.toFixed(2));
const r2 = (v: number) => v.toFixed(2);
console.log(
  `\nInference, images/s (batch ${B}); ours on ${threads} threads (${info.adapter}); onnxruntime-web got ` +
    `${ortWebThreads} thread(s); ${torch ? `PyTorch ${torch.version} on ${torch.threads}` : "no PyTorch"}. ` +
    "GFLOP/s count the direct convolutions' work; GEMM: the GEMM alone on the learner's shapes (fused, direct):\n",
);
console.log(
  "| learner | before | fused | + Winograd, depthwise | after / before | GEMM GFLOP/s | GEMM share | after GFLOP/s | of peak | ort-web | after / ort-web (range) | ort-node | after / ort-node | PyTorch | after / PyTorch |",
);
console.log("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
for (const r of rows) {
  const pt = torch?.rows.find((t) => t.arch === r.arch);
  const after = ips(r.afterMs), gflops = r.flop / 1e6 / r.afterMs;
  console.log(
    `| ${r.arch} | ${f(ips(r.beforeMs))} | ${f(ips(r.fusedMs))} | ${f(after)} | ${
      r2(r.beforeMs / r.afterMs)
    } | ${(r.flop / 1e6 / r.gemmMs).toFixed(1)} | ${(r.gemmMs / r.gemmWallMs * 100).toFixed(0)}% | ${
      gflops.toFixed(1)
    } | ${(gflops / r.peak * 100).toFixed(0)}% | ${f(ips(r.ortWebMs))} | ${r2(r.afterPerOrtWeb[0])} (${
      r.afterPerOrtWeb.slice(1).map(r2).join("-")
    }) | ${f(ips(r.ortNodeMs))} | ${r2(after / ips(r.ortNodeMs))} | ${pt ? f(ips(pt.inference_ms)) : "-"} | ${
      pt ? r2(after / ips(pt.inference_ms)) : "-"
    } |`,
  );
}
if (problems.length) console.log(`\nproblems:\n${problems.map((p) => `- ${p}`).join("\n")}`);
process.exit(problems.length ? 1 : 0);
