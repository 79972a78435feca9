// One command that measures a GPU machine in about five minutes, with no network (this checkout, its
// node_modules and the Deno and Bun binaries): deno task gpu-check [--allow-cpu] [--quick] [--out DIR]
//
// 1. The adapter: what WebGPU offers (name, limits, the optional features the library uses). A CPU adapter
//    (lavapipe, SwiftShader) is refused unless --allow-cpu: its figures say nothing of a GPU.
// 2. The tests that matter on a GPU, on the WebGPU backend: the kernel goldens, every convolution path, one
//    learner's model gradients against PyTorch's (tests/run.ts; pass / fail / skip counts).
// 3. The kernel lab (bench/kernels.ts) under Deno (wgpu) and, where `bun` runs, Bun (Dawn): device time,
//    GFLOP/s and GB/s against the adapter's measured peaks.
// 4. A stage-1 training step per learner (forward, cross-entropy, backward, Adam) at full size, crop 224,
//    batch 8 on a GPU; on a CPU adapter the tiny learners at crop 64, batch 4 (full size takes minutes a step
//    there). Time per step by the wall clock and by the device (timestamp-query), and the buffer pool's high
//    water mark, in float32 and in float16 (fl.autocast with loss scaling; where the adapter has shader-f16).
// 5. PyTorch on CUDA as the peer, where `python3 -c "import torch"` finds CUDA (bench/stage1_torch.py
//    --device cuda, the same learners and batch); otherwise the report says why not.
// Writes DIR/gpu-check.json and DIR/gpu-check.md (DIR defaults to runs/gpu-check), each file whole or not
// at all. --quick: one test file, the lab's quick cases, two learners (the suite's check of this command).
import process from "node:process";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";
import { getEngine } from "../src/backend/device.ts";
import { LossScaler, trainStep, trainStepScaled } from "../src/train/step.ts";
import type { LabReport } from "./kernels.ts";

const args = process.argv.slice(2);
const option = (name: string, fallback: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : fallback;
};
const allowCpu = args.includes("--allow-cpu"), quick = args.includes("--quick");
const outDir = option("--out", "runs/gpu-check");
const started = performance.now();
const elapsed = () => ((performance.now() - started) / 1000).toFixed(0) + " s";

const info = await fl.init({ backend: "webgpu" });
const onCpu = getEngine().onCpu;
if (onCpu && !allowCpu) {
  console.error(
    `gpu-check: the WebGPU adapter "${info.adapter}" is a CPU implementation, not a GPU: its figures would ` +
      "measure the CPU. Run it on a machine with a GPU (and its Vulkan, Metal or D3D12 driver), or pass " +
      "--allow-cpu to run it here anyway.",
  );
  process.exit(2);
}
console.log(
  `gpu-check: ${info.runtime}, ${info.adapter} [${info.features.join(", ")}]${onCpu ? " (CPU)" : ""}`,
);

// ---------------------------------------------------------------------------------------------------------
// Children: the tests and the lab, each with a time limit so the whole stays within its budget.

interface ChildResult {
  command: string;
  status: number | null;
  seconds: number;
  tail: string;
}

function child(command: string, argv: string[], limitS: number): ChildResult {
  const t0 = performance.now();
  const r = spawnSync(command, argv, { encoding: "utf8", timeout: limitS * 1000, maxBuffer: 64 << 20 });
  const output = `${r.stdout ?? ""}${r.stderr ?? ""}`;
  return {
    command: [command, ...argv].join(" "),
    status: r.error ? null : r.status,
    seconds: (performance.now() - t0) / 1000,
    tail: output.split("\n").slice(-40).join("\n"),
  };
}

const TEST_FILES = quick
  ? ["conv_paths"]
  : ["goldens", "cnn_ops", "conv_paths", "gemm_staged", "model_grads"];
console.log(`tests: ${TEST_FILES.join(", ")} on WebGPU ...`);
const tests = child("deno", ["run", "-A", "tests/run.ts", "--backend", "webgpu", ...TEST_FILES], 150);
const counts = /(\d+) passed, (\d+) failed, (\d+) skipped/.exec(tests.tail);
const testSummary = {
  files: TEST_FILES,
  passed: counts ? Number(counts[1]) : 0,
  failed: counts ? Number(counts[2]) : 0,
  skipped: counts ? Number(counts[3]) : 0,
  seconds: tests.seconds,
  complete: counts !== null && tests.status !== null,
  tail: counts && tests.status === 0 ? "" : tests.tail,
};
console.log(
  `  ${testSummary.passed} passed, ${testSummary.failed} failed, ${testSummary.skipped} skipped` +
    `${testSummary.complete ? "" : " (did not finish)"} in ${tests.seconds.toFixed(0)} s`,
);

const labs: LabReport[] = [], labProblems: string[] = [];
mkdirSync(outDir, { recursive: true });
for (const runtime of ["deno", "bun"]) {
  const json = join(outDir, `.lab-${runtime}.json`);
  const argv = runtime === "deno" ? ["run", "-A", "bench/kernels.ts"] : ["run", "bench/kernels.ts"];
  console.log(`kernel lab under ${runtime} ...`);
  const r = child(runtime, [...argv, "--json", json, ...(quick ? ["--quick"] : [])], quick ? 90 : 120);
  try {
    labs.push(JSON.parse(readFileSync(json, "utf8")));
    console.log(`  ${labs.at(-1)!.rows.length} rows in ${r.seconds.toFixed(0)} s`);
  } catch {
    labProblems.push(`${runtime}: the lab wrote no results (exit ${r.status}):\n${r.tail}`);
    console.log(`  no results (exit ${r.status})`);
  } finally {
    rmSync(json, { force: true });
  }
}

// ---------------------------------------------------------------------------------------------------------
// A stage-1 step per learner, in this process.

const [scale, crop, batch] = onCpu ? ["tiny", 64, 4] as const : ["full", 224, 8] as const;
const ARCHS = quick ? ["resnet152", "aicovid"] : [...flannel.LEARNER_ARCHS, ...flannel.BASELINE_ARCHS];
interface StepRow {
  arch: string;
  precision: "f32" | "f16";
  /** Wall ms of a step (the faster of 2 after a warmup), device ms of its kernels, the pool's bytes after it. */
  wallMs: number;
  deviceMs: number;
  poolBytes: number;
  /** The most bytes live tensors held during the measured steps. */
  peakBytes: number;
  note?: string;
}
const steps: StepRow[] = [];
const halfStorage = info.features.includes("shader-f16");
console.log(`stage-1 steps: ${scale} learners, crop ${crop}, batch ${batch}, float32 and float16 ...`);
for (const arch of ARCHS) {
  for (const precision of ["f32", "f16"] as const) {
    if (precision === "f16" && !halfStorage) {
      steps.push({
        arch,
        precision,
        wallMs: NaN,
        deviceMs: NaN,
        poolBytes: NaN,
        peakBytes: NaN,
        note: "the adapter has no shader-f16",
      });
      continue;
    }
    const model = flannel.createLearner(arch as flannel.LearnerArch, { scale, seed: 1, numClasses: 4, crop });
    model.train();
    const optimizer = new fl.optim.Adam(model.parameters(), { lr: 1e-3, weightDecay: 1e-4 });
    const lossSum = fl.zeros([1]).keep();
    const x = fl.randn([batch, 3, crop, crop], { seed: 2 }).keep();
    const labels = Array.from({ length: batch }, (_, i) => i % 4);
    const loss = () => fl.F.crossEntropy(model.forward(x), labels);
    const scaler = new LossScaler();
    const step = () =>
      precision === "f16"
        ? trainStepScaled(
          optimizer,
          () => fl.autocast("float16", loss),
          lossSum,
          1 / batch,
          scaler,
          model.parameters(),
        )
        : trainStep(optimizer, loss, lossSum, 1 / batch);
    // warm up to a step taken: a float16 step skipped for an overflow makes no Adam state
    for (let tries = 0; tries < 10; tries++) {
      const skippedBefore = scaler.skippedSteps;
      await step();
      if (scaler.skippedSteps === skippedBefore) break;
    }
    await fl.syncDevice();
    fl.resetPoolPeak();
    const walls: number[] = [], devices: number[] = [];
    for (let i = 0; i < 2; i++) {
      const t0 = performance.now();
      fl.startProfile();
      await step();
      const rows = await fl.finishProfile();
      walls.push(performance.now() - t0);
      devices.push(rows.reduce((t, r) => t + r.ms, 0));
    }
    const pool = fl.poolStats();
    steps.push({
      arch,
      precision,
      wallMs: Math.min(...walls),
      deviceMs: Math.min(...devices),
      poolBytes: pool.liveBytes + pool.pooledBytes,
      peakBytes: pool.peakLiveBytes,
      ...(precision === "f16" && scaler.skippedSteps > 0
        ? { note: `${scaler.skippedSteps} step(s) skipped by the loss scaler` }
        : {}),
    });
    console.log(
      `  ${arch} ${precision}: ${Math.min(...walls).toFixed(0)} ms a step (${
        Math.min(...devices).toFixed(0)
      } ms device), peak ${(pool.peakLiveBytes / 2 ** 20).toFixed(0)} MiB`,
    );
    x.dispose();
    lossSum.dispose();
    model.dispose();
    optimizer.dispose();
    fl.trimPool();
  }
}

// ---------------------------------------------------------------------------------------------------------
// PyTorch on CUDA.

// The first Python that imports torch: the one on the PATH, else Debian's (python3-torch).
const [python, probe] = ["python3", "/usr/bin/python3"].map((py) =>
  [
    py,
    spawnSync(py, ["-c", "import torch; print(torch.__version__, torch.cuda.is_available())"], {
      encoding: "utf8",
      timeout: 60_000,
    }),
  ] as const
).find(([, r]) => r.status === 0) ?? [null, null];
const [torchVersion, cuda] = (probe?.stdout ?? "").trim().split(" ");
let torchPeer: { version: string; rows: unknown[] } | { unavailable: string };
if (!python) torchPeer = { unavailable: "no python3 here imports torch" };
else if (cuda !== "True") torchPeer = { unavailable: `PyTorch ${torchVersion} sees no CUDA device` };
else {
  const r = spawnSync(
    python,
    [
      "bench/stage1_torch.py",
      "--device",
      "cuda",
      "--scale",
      scale,
      "--crop",
      String(crop),
      "--batch",
      String(batch),
      "--steps",
      "2",
      ...ARCHS,
    ],
    { encoding: "utf8", timeout: 120_000 },
  );
  try {
    // one JSON line per learner
    const rows = (r.stdout ?? "").trim().split("\n").filter((l) => l.startsWith("{")).map((l) =>
      JSON.parse(l)
    );
    if (rows.length === 0) throw new Error("no rows");
    torchPeer = { version: torchVersion, rows };
  } catch {
    torchPeer = {
      unavailable: `bench/stage1_torch.py failed: ${(r.stderr ?? "").split("\n").slice(-5).join(" ")}`,
    };
  }
}

// ---------------------------------------------------------------------------------------------------------
// The report.

const report = {
  date: new Date().toISOString(),
  runtime: info.runtime,
  adapter: info.adapter,
  onCpu,
  features: info.features,
  limits: info.limits,
  tests: testSummary,
  labs,
  labProblems,
  stage1: { scale, crop, batch, steps },
  torch: torchPeer,
  seconds: (performance.now() - started) / 1000,
};
const num = (v: number) => (Number.isFinite(v) ? (v >= 10 ? v.toFixed(1) : v.toFixed(2)) : "-");
const md = [
  `# gpu-check: ${info.adapter}${onCpu ? " (a CPU adapter: --allow-cpu)" : ""}`,
  "",
  `${report.date}, ${info.runtime}; features: ${info.features.join(", ") || "none"}; ${
    report.seconds.toFixed(0)
  } s.`,
  "",
  `## Tests (WebGPU): ${testSummary.passed} passed, ${testSummary.failed} failed, ${testSummary.skipped} skipped${
    testSummary.complete ? "" : " - did not finish"
  }`,
  "",
  `Files: ${TEST_FILES.join(", ")}.${testSummary.tail ? `\n\n\`\`\`\n${testSummary.tail}\n\`\`\`` : ""}`,
  "",
  "## Kernel lab",
  ...labs.flatMap((lab) => [
    "",
    `${lab.runtime}: ${lab.deviceTimed ? "device time" : "wall time"}; peak ${
      lab.peak ? `${num(lab.peak.gflops)} GFLOP/s, ${num(lab.peak.gbs)} GB/s` : "not measured"
    }.`,
    "",
    "| op | shape | path | ms | GFLOP/s | of peak | GB/s | of peak |",
    "|---|---|---|---|---|---|---|---|",
    ...lab.rows.map((r) =>
      `| ${r.op} | ${r.shape} | ${r.path}${r.wrong ? " (WRONG)" : ""} | ${num(r.ms)} | ${num(r.gflops)} | ${
        lab.peak ? `${(100 * r.gflops / lab.peak.gflops).toFixed(0)}%` : "-"
      } | ${num(r.gbs)} | ${lab.peak ? `${(100 * r.gbs / lab.peak.gbs).toFixed(0)}%` : "-"} |`
    ),
  ]),
  ...labProblems.map((p) => `\n${p}`),
  "",
  `## Stage-1 step: ${scale} learners, crop ${crop}, batch ${batch}`,
  "",
  "| learner | precision | ms a step | device ms | images/s | peak MiB | pool MiB | note |",
  "|---|---|---|---|---|---|---|---|",
  ...steps.map((s) =>
    `| ${s.arch} | ${s.precision} | ${num(s.wallMs)} | ${num(s.deviceMs)} | ${
      num(batch / (s.wallMs / 1000))
    } | ${num(s.peakBytes / 2 ** 20)} | ${num(s.poolBytes / 2 ** 20)} | ${s.note ?? ""} |`
  ),
  "",
  `## PyTorch: ${"unavailable" in torchPeer ? torchPeer.unavailable : `${torchPeer.version} on CUDA`}`,
  ...("rows" in torchPeer ? ["", "```", JSON.stringify(torchPeer.rows, null, 1), "```"] : []),
  "",
].join("\n");
fl.io.writeFileAtomic(join(outDir, "gpu-check.json"), JSON.stringify(report, null, 1));
fl.io.writeFileAtomic(join(outDir, "gpu-check.md"), md);
console.log(`wrote ${join(outDir, "gpu-check.json")} and gpu-check.md in ${elapsed()}`);
process.exit(testSummary.failed > 0 || !testSummary.complete || labProblems.length > 0 ? 1 : 0);
