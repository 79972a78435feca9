// Inference of the stage-1 learners on the same weights in four engines, in one run, against the WebAssembly
// SIMD peak of the machine (bench/wasm_peak.ts):
//   deno task bench:peers [--batch B] [--steps S] [--no-torch] [filter]     bun run bench/peers.ts ...
//
// - Ours: the WebAssembly backend on every core, each learner (full size, crop 224, random weights with a
//   seed, eval mode, under noGrad) with inference fusion off ("unfused": conv, batch norm, add, ReLU one
//   pass each, as before fusion) and on ("fused": src/nn/cnn_layers.ts convBatchNorm).
// - GEMM share: one fused forward under fl.startProfile: the GEMM's FLOP (2 M N K per product) over the
//   GEMM's own time gives its GFLOP/s on these shapes; the same FLOP over the forward's wall time gives the
//   end-to-end GFLOP/s; their ratio is the fraction of the GEMM's speed the whole forward keeps.
// - The same weights elsewhere: the learner exported with fl.onnx.exportModel and run in onnxruntime-web's
//   WebAssembly backend (SIMD; asked for as many threads as ours: the table says how many it got) and in
//   onnxruntime-node (native code: the ceiling of this CPU); the largest |logit| difference to ours, relative
//   to the largest |logit|, is shown (random weights give logits in the thousands).
// - PyTorch CPU (bench/stage1_torch.py --inference-only, torchvision's models: the same architectures and
//   shapes, its own random weights) on every core, where Debian's python3-torch is installed.
// - Timing: tinybench, 1 warmup and S (default 3) measured calls each; medians; images/s = B / median.
import process from "node:process";
import * as ortNode from "onnxruntime-node";
import * as ortWeb from "onnxruntime-web";
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";
import { timeTasks } from "./timing.ts";
import { torchPeer } from "./torch_peer.ts";
import { wasmPeak } from "./wasm_peak.ts";

const args = process.argv.slice(2);
const option = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args.splice(i, 2)[1]) : fallback;
};
const B = option("--batch", 2), steps = option("--steps", 3);
const filter = args.find((a) => !a.startsWith("-")) ?? "";
const crop = 224;

const info = await fl.init({ backend: "wasm" });
const threads = info.limits.threads;
console.log(`${info.runtime}, ${info.adapter}; full-size learners, crop ${crop}, batch ${B}, ${steps} steps`);
const peak = await wasmPeak(threads);
console.log(
  `WebAssembly SIMD peak (bench/wasm_peak.ts, kernel "${peak.kernel}"): ${
    peak.oneThread.toFixed(1)
  } GFLOP/s ` +
    `on 1 thread, ${peak.allThreads.toFixed(1)} on ${threads}`,
);

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
  unfusedMs: number;
  fusedMs: number;
  gemmGflops: number;
  e2eGflops: number;
  ortWebMs: number;
  ortNodeMs: number;
  maxDiff: number;
}
const rows: Row[] = [];
let ortWebThreads = 0;

for (const arch of [...flannel.LEARNER_ARCHS, ...flannel.BASELINE_ARCHS]) {
  if (!arch.includes(filter)) continue;
  const model = flannel.createLearner(arch, { scale: "full", seed: 1, numClasses: 4, crop });
  model.eval();
  const data = fl.randn([B, 3, crop, crop], { seed: 2 });
  const pixels = await data.toArray() as Float32Array;
  const forward = () => fl.scope(() => fl.noGrad(() => model.forward(data)).toArray());
  const unfusedMs = await (async () => {
    const previous = fl.nn.setFusedInference(false);
    try {
      return await median(`${arch} unfused`, forward);
    } finally {
      fl.nn.setFusedInference(previous);
    }
  })();
  const fusedMs = await median(`${arch} fused`, forward);
  fl.startProfile();
  const t0 = performance.now();
  const ours = await forward() as Float32Array;
  const wallMs = performance.now() - t0;
  const gemm = fl.stopProfile().filter((r) => r.kernel.startsWith("gemm:"));
  const flop = gemm.reduce((s, r) => s + r.flop, 0), gemmMs = gemm.reduce((s, r) => s + r.ms, 0);

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
  const ortNodeMs = await median(`${arch} onnxruntime-node`, () => node.run(feed(ortNode)));
  const ortWebMs = await median(`${arch} onnxruntime-web`, () => web.run(feed(ortWeb)));
  let maxDiff = 0;
  const outputs = [(await node.run(feed(ortNode))).logits.data, (await web.run(feed(ortWeb))).logits.data];
  const scale = Math.max(...Array.from(ours, Math.abs));
  for (const logits of outputs as Float32Array[]) {
    for (let i = 0; i < ours.length; i++) maxDiff = Math.max(maxDiff, Math.abs(logits[i] - ours[i]) / scale);
  }
  await node.release();
  await web.release();
  const row: Row = {
    arch,
    unfusedMs,
    fusedMs,
    gemmGflops: flop / 1e6 / gemmMs,
    e2eGflops: flop / 1e6 / wallMs,
    ortWebMs,
    ortNodeMs,
    maxDiff,
  };
  rows.push(row);
  console.log(
    `${arch}: unfused ${unfusedMs.toFixed(0)} ms, fused ${fusedMs.toFixed(0)} ms; GEMM ${
      row.gemmGflops.toFixed(1)
    } GFLOP/s, end to end ${row.e2eGflops.toFixed(1)} (${
      (row.e2eGflops / row.gemmGflops * 100).toFixed(0)
    }%); ` +
      `onnxruntime-web ${ortWebMs.toFixed(0)} ms, -node ${
        ortNodeMs.toFixed(0)
      } ms; max |logit diff| / max |logit| ${maxDiff.toExponential(1)}`,
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
console.log(
  `\nInference, images/s (batch ${B}); ours on ${threads} threads; onnxruntime-web got ${ortWebThreads} ` +
    `thread(s); ${torch ? `PyTorch ${torch.version} on ${torch.threads}` : "no PyTorch"}:\n`,
);
console.log(
  "| learner | ours unfused | ours fused | speed-up | GEMM GFLOP/s | end to end | share of GEMM | share of peak | ort-web | fused / ort-web | ort-node | fused / ort-node | PyTorch | fused / PyTorch |",
);
console.log("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
for (const r of rows) {
  const pt = torch?.rows.find((t) => t.arch === r.arch);
  const fused = ips(r.fusedMs);
  console.log(
    `| ${r.arch} | ${f(ips(r.unfusedMs))} | ${f(fused)} | ${(r.unfusedMs / r.fusedMs).toFixed(2)} | ${
      r.gemmGflops.toFixed(1)
    } | ${r.e2eGflops.toFixed(1)} | ${(r.e2eGflops / r.gemmGflops * 100).toFixed(0)}% | ${
      (r.e2eGflops / peak.allThreads * 100).toFixed(0)
    }% | ${f(ips(r.ortWebMs))} | ${(fused / ips(r.ortWebMs)).toFixed(2)} | ${f(ips(r.ortNodeMs))} | ${
      (fused / ips(r.ortNodeMs)).toFixed(2)
    } | ${pt ? f(ips(pt.inference_ms)) : "-"} | ${pt ? (fused / ips(pt.inference_ms)).toFixed(2) : "-"} |`,
  );
}
if (problems.length) console.log(`\nproblems:\n${problems.map((p) => `- ${p}`).join("\n")}`);
process.exit(problems.length ? 1 : 0);
