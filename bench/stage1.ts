// Stage-1 training throughput (images/s) of FLANNEL's five base learners and the two baselines (COVID-Net,
// AI-Covid), measured with tinybench,
// with the same model's inference throughput (same process, same batch) as the peer that gives each a ratio.
//   deno task bench:stage1 [--full] [--profile] [--direct] [--batch N] [filter]   bun run bench/stage1.ts [...]
//   deno task bench:stage1 --memory [--full] [--batch N] [--accumulate N|auto] [--keep-activations]
//                                   [--precision f16] [filter]
//   --direct: no Winograd (every convolution a direct product on the WebAssembly backend), for before/after.
//   --profile: one more train step per learner under fl.startProfile, printed by phase and kernel.
//   --batch N: images per batch (default 16; 2 with --full).
//   --memory: the peak memory of a train step per learner instead of its speed, beside PyTorch's for the same
//   step (see "Memory" below); --accumulate N runs each batch as N micro-batches (auto, the default: whole
//   batches where they fit the backend's memory, else the fewest micro-batches that do, as trainStage1
//   chooses); --keep-activations keeps every forward activation to the step's end (backward without
//   freeActivations: the "before"); --precision f16 stores activations as float16 (fl.autocast, with
//   trainStepScaled's loss scaling; WebGPU with shader-f16), against the same step in float32 (the default).
//   On WebGPU with timestamp-query that step is always run: its kernels' device time is the "device ms"
//   column beside the wall-clock step (the rest of a step is the CPU recording and submitting the work).
//   The PyTorch CPU peer (bench/stage1_torch.py) runs after ours when python3-torch is installed (--no-torch
//   skips it), and the last table gives ours / PyTorch per learner and the geometric mean.
//   default: the tiny learners (`scale: "tiny"`) at crop 64, batch 16 (each learner takes a few seconds);
//   --full: the full-size, torchvision-sized learners at crop 224, batch 2, 1 warmup + 2 measured steps (tens
//   of seconds a step on lavapipe; every step's time is printed as it ends; about 10 minutes in all on 2 idle
//   cores, and steps were seen up to 10x slower while other processes used the cores); filter: a substring of
//   the learner names.
//
// What is measured
// - Learners: `flannel.createLearner(arch, { scale, seed, crop })` for every name in `flannel.LEARNER_ARCHS`
//   and `flannel.BASELINE_ARCHS`
//   (InceptionV3 without its aux head, as stage 1 trains it; 224 is above its 75x75 minimum).
// - Train step: what `trainStage1` (src/train/stage1.ts) does for one batch: `makeBatch` assembles a
//   [B, 3, crop, crop] batch with the training augmentation (random crop, flip, noise 0.01 from a
//   `fl.Generator`) from synthetic gray images of side crop + 8 held in memory, then `trainStep` uploads it
//   and runs the forward pass, cross-entropy, backward and Adam (lr 1e-3, weight decay 1e-4, as the
//   trainer), adding the loss into a device accumulator; then `fl.syncDevice()` waits for the device, so the
//   time is the device's. Train images/s = B / the median step time, batch assembly included.
// - Batch assembly: `makeBatch` alone (CPU, the training augmentation), ms per batch: the CPU-side share of
//   the step. (The trainer assembles batch b + 1 while the device runs batch b; this bench runs them one
//   after the other. On lavapipe the "device" is the same 2 CPU cores, so the overlap gains little there.)
// - Peer, inference: what `predictStage1` does for one batch: `makeBatch` with the centre crop (no
//   augmentation), then the forward pass in eval mode under `fl.noGrad`, then `fl.syncDevice()` (the softmax
//   and the read-back of [B, 4] left out). Inference images/s = B / the median time. The ratio train /
//   inference shows what backward and the optimizer add: about 1/3 would be the textbook cost (backward
//   about twice the forward), lower means the backward kernels or Adam are the slower part.
// - Every iteration runs inside `fl.scope`, so it frees what it made. Each task runs once as a warmup, timed
//   on its own and printed as "first" (the first train step also compiles the pipelines and makes Adam's
//   state), then tinybench runs at least 3 iterations and a small time budget (exactly 2 iterations with
//   --full); the median is reported, since the machine may be shared.
// - Memory (--memory): per learner, a model and Adam, one warmup step (Adam's state, the gradients), then
//   fl.resetPoolPeak() and a second step; "ours" is fl.poolStats().peakLiveBytes over that step: the bytes
//   live tensors held at the peak (bucket capacities: weights, gradients, Adam's state, the input, the
//   activations and the gradients in flight). PyTorch's is bench/stage1_torch.py --memory for the same
//   learner, batch and micro-batches, in a process of its own: its resident high-water mark over the
//   measured step less its size before the model was built (so its allocator's and kernels' own memory
//   count against it, as the pool's bucket rounding counts against ours). ratio = ours / PyTorch's.
// - After each learner: a check that the accumulated training loss and the inference logits are finite,
//   then model, optimizer and loss accumulator are disposed and `fl.trimPool()` gives the pool's buffers
//   back, so the full-size learners (VGG19-bn: 139.6 M parameters, a 411 MB classifier weight) do not pile
//   up; tensors still alive after that are reported.
import process from "node:process";
import { parseArgs } from "node:util";
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";
import { syntheticImages } from "./synthetic_images.ts";
import { LossScaler, trainStep, trainStepScaled } from "../src/train/step.ts";
import { setWasmConvAlgorithm } from "../src/kernels/conv.ts";
import { timeTasks } from "./timing.ts";
import { torchMemoryPeer, torchPeer } from "./torch_peer.ts";

const { values: flags, positionals } = parseArgs({
  args: process.argv.slice(2),
  options: {
    full: { type: "boolean", default: false },
    profile: { type: "boolean", default: false },
    direct: { type: "boolean", default: false },
    "no-torch": { type: "boolean", default: false },
    memory: { type: "boolean", default: false },
    batch: { type: "string" },
    accumulate: { type: "string", default: "auto" },
    "keep-activations": { type: "boolean", default: false },
    precision: { type: "string", default: "f32" },
  },
  allowPositionals: true,
});
const full = flags.full, profile = flags.profile;
// --direct: every convolution as a direct product (no Winograd on the WebAssembly backend): the "before".
if (flags.direct) setWasmConvAlgorithm("direct");
const filter = positionals[0] ?? "";
if (flags.precision !== "f32" && flags.precision !== "f16") {
  throw new Error(`--precision must be f32 or f16, got ${flags.precision}`);
}
// f16: activations stored as float16 under autocast, loss scaling (WebGPU with shader-f16; --memory only)
const half = flags.precision === "f16";

const scale = full ? "full" : "tiny";
const crop = full ? 224 : 64;
const B = flags.batch === undefined ? (full ? 2 : 16) : Number(flags.batch);
if (!Number.isInteger(B) || B < 2) throw new Error(`--batch must be an integer >= 2, got ${flags.batch}`);
const numClasses = 4;

const info = await fl.init();
const deviceTimed = info.backend === "webgpu" && info.features.includes("timestamp-query");
const runtime = `${info.runtime} ${
  info.runtime === "deno"
    ? (globalThis as unknown as { Deno: { version: { deno: string } } }).Deno.version.deno
    : process.versions.bun ?? ""
}`;
console.log(
  `${runtime} on ${info.adapter}; ${scale} learners, crop ${crop}, batch ${B}${
    filter ? `; filter "${filter}"` : ""
  }`,
);

const images = syntheticImages(Math.max(2 * B, 8), crop + 8, 1);
const labels = Int32Array.from({ length: B }, (_, i) => i % numClasses);
/** The indices of the k-th batch: consecutive images, wrapping around. */
const batchIndices = (k: number) => Int32Array.from({ length: B }, (_, i) => (k * B + i) % images.length);

// JIT warmup of the batch assembly, so the first learner's assembly time is not the compiler's
for (let k = 0; k < 20; k++) {
  fl.data.makeBatch(images, batchIndices(k), { crop, train: true, generator: new fl.Generator(k) });
}

const fmt = (v: number) => (Number.isFinite(v) ? v.toPrecision(3) : "-");
const seconds = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;

/** A profiled step: time per phase, then the kernels that take the most, with their share of the step. */
function printProfile(rows: fl.ProfileRow[], wallMs: number): void {
  const kernelMs = rows.reduce((t, r) => t + r.ms, 0);
  const byPhase = new Map<string, number>();
  for (const r of rows) byPhase.set(r.phase, (byPhase.get(r.phase) ?? 0) + r.ms);
  const pct = (ms: number) => `${(100 * ms / wallMs).toFixed(1)}%`;
  console.log(
    `  profile of one train step: ${seconds(wallMs)} wall, kernels ${seconds(kernelMs)} (${
      pct(kernelMs)
    }; the ` +
      `rest is batch assembly, upload and dispatch overhead); ${
        [...byPhase].map(([p, ms]) => `${p} ${seconds(ms)} (${pct(ms)})`).join(", ")
      }`,
  );
  for (const r of rows.slice(0, 14)) {
    console.log(
      `    ${pct(r.ms).padStart(6)}  ${r.phase.padEnd(9)} ${r.kernel} (${r.calls} calls, ${seconds(r.ms)})`,
    );
  }
}

const mib = (bytes: number) =>
  Number.isFinite(bytes) ? Math.round(bytes / 2 ** 20).toLocaleString("en-US") : "-";

/**
 * --memory: per learner, the peak live bytes of a train step (the second: Adam's state made by the first) at
 * batch B in the micro-batches --accumulate asks for, and PyTorch's for the same step.
 */
async function memoryTable(): Promise<never> {
  const table: string[] = [];
  for (const arch of [...flannel.LEARNER_ARCHS, ...flannel.BASELINE_ARCHS]) {
    if (!arch.includes(filter)) continue;
    const model = flannel.createLearner(arch, { scale, seed: 1, numClasses, crop });
    const optimizer = new fl.optim.Adam(model.parameters(), { lr: 1e-3, weightDecay: 1e-4 });
    const lossSum = fl.zeros([1]).keep();
    const gen = new fl.Generator(7);
    const scaler = new LossScaler();
    model.train();
    try {
      let parts = flags.accumulate === "auto" ? 1 : Number(flags.accumulate);
      if (flags.accumulate === "auto") {
        const plan = await fl.train.fitStepToMemory(model, optimizer, B, (n) => {
          const x = fl.data.makeBatch(images, batchIndices(0).subarray(0, n), { crop, train: false });
          return fl.F.crossEntropy(model.forward(fl.tensor(x, [n, 3, crop, crop])), labels.subarray(0, n));
        });
        if (plan) {
          parts = plan.parts;
          console.log(
            `${arch}: batch ${B}, predicted ${mib(plan.wholeBatchBytes)} MiB of ${
              mib(fl.poolStats().limitBytes)
            }: ` +
              `${parts} micro-batch(es) of up to ${plan.microBatch}, predicted ${
                mib(plan.predictedBytes)
              } MiB`,
          );
        }
      }
      const ranges = fl.train.microBatches(B, parts);
      const step = async () => {
        const x = fl.data.makeBatch(images, batchIndices(0), { crop, train: true, generator: gen });
        const partLoss = (part: number) => {
          const [start, end] = ranges[part];
          const input = fl.tensor(x.subarray(start * 3 * crop * crop, end * 3 * crop * crop), [
            end - start,
            3,
            crop,
            crop,
          ]);
          return fl.F.scale(
            fl.F.crossEntropy(model.forward(input), labels.subarray(start, end)),
            (end - start) / B,
          );
        };
        let stepped = true;
        if (half) {
          const forward = (part: number) => fl.autocast("float16", () => partLoss(part));
          ({ stepped } = await trainStepScaled(
            optimizer,
            forward,
            lossSum,
            1 / B,
            scaler,
            model.parameters(),
            parts,
          ));
        } else if (flags["keep-activations"]) {
          // the step before activations were freed during backward: every one lives to the scope's end
          fl.scope(() => {
            optimizer.zeroGrad();
            for (let part = 0; part < parts; part++) partLoss(part).backward();
            optimizer.step();
          });
        } else trainStep(optimizer, partLoss, lossSum, 1 / B, undefined, parts);
        await fl.syncDevice();
        return stepped;
      };
      // A float16 step skipped for an overflowing gradient makes no Adam state and no update: the warmup and
      // the measured step are steps taken (the scaler backs off until one is).
      const takenStep = async () => {
        for (let tries = 1; tries <= 20; tries++) {
          fl.resetPoolPeak();
          const t = performance.now();
          if (await step()) return performance.now() - t;
        }
        throw new Error(`20 float16 steps in a row overflowed (loss scale now ${scaler.scale})`);
      };
      const warmupMs = await takenStep();
      console.log(
        `  ${arch}: warmup step ${seconds(warmupMs)}, peak ${mib(fl.poolStats().peakLiveBytes)} MiB${
          half ? `, ${scaler.skippedSteps} overflowing step(s) skipped, loss scale ${scaler.scale}` : ""
        }`,
      );
      const stepMs = await takenStep();
      const ours = fl.poolStats().peakLiveBytes;
      const theirs = flags["no-torch"] ? null : torchMemoryPeer(arch, { scale, crop, batch: B, parts });
      if (theirs && "error" in theirs) problems.push(`${arch}: ${theirs.error}`);
      const torchBytes = theirs && !("error" in theirs) ? theirs.peak_bytes : NaN;
      const row = `| ${arch} | ${B} | ${parts} | ${mib(ours)} | ${
        mib(torchBytes)
      } | ${(Number.isFinite(torchBytes) ? (ours / torchBytes).toFixed(2) : "-")} | ${seconds(stepMs)} |`;
      console.log(row);
      table.push(row);
    } catch (err) {
      problems.push(`${arch}: ${(err as Error).message.split("\n")[0]}`);
      table.push(`| ${arch} | ${B} | - | does not fit: ${(err as Error).message.split("\n")[0]} | | | |`);
    } finally {
      lossSum.dispose();
      optimizer.dispose();
      model.dispose();
      fl.trimPool();
    }
  }
  console.log(
    `\n${runtime} on ${info.adapter}; ${scale} learners, crop ${crop}${
      flags["keep-activations"] ? "; activations kept to the step's end" : ""
    }${half ? "; float16 activations (autocast, loss scaling)" : ""}\n`,
  );
  console.log("| learner | batch | micro-batches | ours MiB | PyTorch MiB | ratio | our step |");
  console.log("|---|---|---|---|---|---|---|");
  for (const row of table) console.log(row);
  if (problems.length) console.log(`\nproblems:\n${problems.map((p) => `- ${p}`).join("\n")}`);
  process.exit(problems.length ? 1 : 0);
}
interface Row {
  arch: string;
  params: number;
  trainMs: number;
  /** The device time of one train step's kernels (WebGPU with timestamp-query), else NaN. */
  deviceMs: number;
  assemblyMs: number;
  inferenceMs: number;
}
const rows: Row[] = [];
const problems: string[] = [];
if (flags.memory) await memoryTable();

for (const arch of [...flannel.LEARNER_ARCHS, ...flannel.BASELINE_ARCHS]) {
  if (!arch.includes(filter)) continue;
  const t0 = performance.now();
  const liveBefore = fl.liveTensorCount();
  const model = flannel.createLearner(arch, { scale, seed: 1, numClasses, crop });
  const params = model.parameterCount();
  const optimizer = new fl.optim.Adam(model.parameters(), { lr: 1e-3, weightDecay: 1e-4 });
  const lossSum = fl.zeros([1]).keep();
  const gen = new fl.Generator(7);
  let batch = 0, trainSteps = 0;
  console.log(`${arch}: ${params.toLocaleString("en-US")} parameters`);

  /** Logs each call's time with --full, where a step takes long enough that progress matters. */
  const logged = (label: string, fn: () => Promise<void>) => {
    let calls = 0;
    return async () => {
      const s = performance.now();
      await fn();
      if (full) {
        console.log(
          `  ${label} ${calls++ === 0 ? "(warmup)" : calls - 1}: ${seconds(performance.now() - s)}`,
        );
      }
    };
  };

  const trainTask = logged("train step", async () => {
    model.train();
    const x = fl.data.makeBatch(images, batchIndices(batch++), { crop, train: true, generator: gen });
    trainStep(
      optimizer,
      () => fl.F.crossEntropy(model.forward(fl.tensor(x, [B, 3, crop, crop])), labels),
      lossSum,
      1 / B,
    );
    trainSteps++;
    await fl.syncDevice();
  });
  const inferenceTask = logged("inference", async () => {
    model.eval();
    const x = fl.data.makeBatch(images, batchIndices(batch++), { crop, train: false });
    fl.scope(() => void fl.noGrad(() => model.forward(fl.tensor(x, [B, 3, crop, crop]))));
    await fl.syncDevice();
  });
  const assemblyTask = () =>
    void fl.data.makeBatch(images, batchIndices(batch++), { crop, train: true, generator: gen });

  const t = await timeTasks({
    assembly: { fn: assemblyTask, time: 200, iterations: 5 },
    train: { fn: trainTask, time: full ? 0 : 1500, iterations: full ? 2 : 3 },
    inference: { fn: inferenceTask, time: full ? 0 : 800, iterations: full ? 2 : 3 },
  });

  let deviceMs = NaN;
  if (profile || deviceTimed) {
    // One more train step, profiled: where its time goes, by phase and kernel (exact on WebAssembly, the
    // device's on WebGPU with timestamps).
    fl.startProfile();
    const s = performance.now();
    await trainTask();
    const wall = performance.now() - s;
    const profiled = await fl.finishProfile();
    if (deviceTimed) deviceMs = profiled.reduce((t, r) => t + r.ms, 0);
    if (profile) printProfile(profiled, wall);
  }

  // Sanity: the mean training loss over the steps run (warmup included) and one batch's logits are finite.
  try {
    const loss = ((await lossSum.item()) * B) / Math.max(1, trainSteps); // each step added loss / B
    model.eval();
    const x = fl.data.makeBatch(images, batchIndices(0), { crop, train: false });
    const logits = await fl.scope(() =>
      fl.noGrad(() => model.forward(fl.tensor(x, [B, 3, crop, crop]))).toArray()
    );
    const finite = Number.isFinite(loss) && logits.every(Number.isFinite);
    console.log(`  mean training loss over ${trainSteps} steps ${loss.toFixed(4)}; logits finite: ${finite}`);
    if (!finite) problems.push(`${arch}: non-finite training loss (${loss}) or logits`);
  } catch (err) {
    problems.push(`${arch}: sanity check failed: ${(err as Error).message.split("\n")[0]}`);
  }

  lossSum.dispose();
  optimizer.dispose();
  model.dispose();
  fl.trimPool();
  await fl.syncDevice();
  const left = fl.liveTensorCount() - liveBefore;
  if (left !== 0) problems.push(`${arch}: ${left} tensors still alive after disposing model and optimizer`);
  const pool = fl.poolStats();
  console.log(
    `  train ${fmt(B / (t.train.median / 1000))} images/s (step ${seconds(t.train.median)}, first ${
      seconds(t.train.first)
    })${deviceTimed ? `, device ${seconds(deviceMs)} of a step's kernels` : ""}, assembly ${
      fmt(t.assembly.median)
    } ms, inference ${fmt(B / (t.inference.median / 1000))} images/s` +
      ` (first ${seconds(t.inference.first)}); ${
        seconds(performance.now() - t0)
      } in all; after disposal: ${left}` +
      ` tensors, ${(pool.liveBytes / 2 ** 20).toFixed(1)} MiB live, ${
        (pool.pooledBytes / 2 ** 20).toFixed(1)
      } MiB pooled`,
  );
  rows.push({
    arch,
    params,
    trainMs: t.train.median,
    deviceMs,
    assemblyMs: t.assembly.median,
    inferenceMs: t.inference.median,
  });
}

console.log(`\n${runtime} on ${info.adapter}\n`);
console.log(
  "| learner | scale | crop | batch | params | train images/s | step ms | device ms | batch assembly ms | inference images/s | train/inference |",
);
console.log("|---|---|---|---|---|---|---|---|---|---|---|");
for (const r of rows) {
  const train = B / (r.trainMs / 1000), inference = B / (r.inferenceMs / 1000);
  console.log(
    `| ${r.arch} | ${scale} | ${crop} | ${B} | ${r.params.toLocaleString("en-US")} | ${fmt(train)} | ${
      fmt(r.trainMs)
    } | ${fmt(r.deviceMs)} | ${fmt(r.assemblyMs)} | ${fmt(inference)} | ${
      Number.isFinite(train / inference) ? (train / inference).toFixed(2) : "-"
    } |`,
  );
}
console.log(
  "\ntrain: makeBatch (training augmentation) + forward + cross-entropy + backward + Adam, then a wait for the" +
    " device; inference (the peer): makeBatch (centre crop) + forward in eval mode under noGrad, then a wait.",
);
// The PyTorch CPU peer (bench/stage1_torch.py) in the same run, where Debian's python3-torch is installed.
const peer = flags["no-torch"]
  ? null
  : torchPeer(rows.map((r) => r.arch), { scale, crop, batch: B, steps: full ? 2 : 5 });
if (peer && "error" in peer) problems.push(peer.error);
const torch = peer && "error" in peer ? null : peer;
if (torch) {
  console.log(
    `\nPyTorch ${torch.version} CPU, ${torch.threads} threads, same learners, input and batch (the step without` +
      " batch assembly on both sides: ours is train minus assembly):\n",
  );
  console.log(
    "| learner | ours: train images/s | PyTorch: train images/s | ratio | ours: inference | PyTorch: inference | ratio |",
  );
  console.log("|---|---|---|---|---|---|---|");
  const ratios: number[] = [];
  for (const r of rows) {
    const peer = torch.rows.find((t) => t.arch === r.arch);
    if (!peer) continue;
    const ours = B / ((r.trainMs - r.assemblyMs) / 1000), theirs = B / (peer.train_ms! / 1000);
    const oursInf = B / (r.inferenceMs / 1000), theirsInf = B / (peer.inference_ms / 1000);
    ratios.push(ours / theirs);
    console.log(
      `| ${r.arch} | ${fmt(ours)} | ${fmt(theirs)} | ${(ours / theirs).toFixed(2)} | ${fmt(oursInf)} | ${
        fmt(theirsInf)
      } | ${(oursInf / theirsInf).toFixed(2)} |`,
    );
  }
  const geomean = Math.exp(ratios.reduce((t, v) => t + Math.log(v), 0) / ratios.length);
  console.log(
    `\ntraining, ours / PyTorch: geometric mean ${geomean.toFixed(2)} over ${ratios.length} learners`,
  );
}

if (problems.length) console.log(`\nproblems:\n${problems.map((p) => `- ${p}`).join("\n")}`);
process.exit(problems.length ? 1 : 0);
