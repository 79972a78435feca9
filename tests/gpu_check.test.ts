// `deno task gpu-check` (bench/gpu_check.ts) and the kernel lab it runs (bench/kernels.ts), here on
// lavapipe: the refusal of a CPU adapter without --allow-cpu, and with it (--quick) the report it writes:
// the WebGPU tests' counts, the lab under Deno and Bun with device times, peaks and the example variant
// checked and timed, a stage-1 step per learner; and the lab's refusal to time a wrong variant. These spawn
// Deno children on the WebGPU backend, so they run once, in the suite's Deno WebGPU run.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as fl from "../mod.ts";
import { assert, assertEquals, skip, test } from "./harness.ts";

await fl.init();
const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";
const needs = () => {
  if (!isDeno || fl.backendInfo()?.backend !== "webgpu") {
    skip("gpu-check spawns Deno on WebGPU: checked once, in the Deno WebGPU run");
  }
};

test("gpu-check refuses a CPU adapter unless --allow-cpu, saying why", () => {
  needs();
  const r = spawnSync("deno", ["run", "-A", "bench/gpu_check.ts"], { encoding: "utf8", timeout: 120_000 });
  assertEquals(r.status, 2, r.stderr);
  assert(/is a CPU implementation, not a GPU.*--allow-cpu/s.test(r.stderr), r.stderr);
});

test("gpu-check --allow-cpu --quick: the report (tests, the lab under Deno and Bun, stage-1 steps) in JSON and Markdown", () => {
  needs();
  const out = mkdtempSync(join(tmpdir(), "gpu-check-"));
  try {
    const r = spawnSync("deno", ["run", "-A", "bench/gpu_check.ts", "--allow-cpu", "--quick", "--out", out], {
      encoding: "utf8",
      timeout: 600_000,
    });
    assertEquals(r.status, 0, `${r.stdout}\n${r.stderr}`);
    const report = JSON.parse(readFileSync(join(out, "gpu-check.json"), "utf8"));
    assert(report.onCpu && /llvmpipe/.test(report.adapter), report.adapter);
    assert(report.features.includes("timestamp-query"), `features ${report.features}`);
    assert(
      report.tests.complete && report.tests.passed > 0 && report.tests.failed === 0,
      JSON.stringify(report.tests),
    );
    assertEquals(report.labs.map((l: { runtime: string }) => l.runtime), ["deno", "bun"]);
    for (const lab of report.labs) {
      assert(lab.deviceTimed && lab.peak.gflops > 0 && lab.peak.gbs > 0, JSON.stringify(lab.peak));
      const paths = lab.rows.map((r: { op: string; path: string }) => `${r.op} ${r.path}`);
      for (const want of ["conv2d streamed", "conv2d staged", "matmul staged", "softmax library"]) {
        assert(paths.includes(want), `${lab.runtime}: ${want} in ${paths}`);
      }
      const variant = lab.rows.find((r: { path: string }) => r.path.startsWith("variant: naive"));
      assert(variant && !variant.wrong && variant.ms > 0, JSON.stringify(variant));
      for (const row of lab.rows) assert(row.ms > 0 && row.gflops > 0, JSON.stringify(row));
    }
    const steps = report.stage1.steps;
    assertEquals(steps.map((s: { arch: string; precision: string }) => `${s.arch} ${s.precision}`), [
      "resnet152 f32",
      "resnet152 f16",
      "aicovid f32",
      "aicovid f16",
    ]);
    // lavapipe offers shader-f16 under Deno: the float16 steps run too (fl.autocast, loss scaling)
    for (const s of steps) {
      assert(
        s.wallMs > 0 && s.deviceMs > 0 && s.deviceMs < s.wallMs && s.poolBytes > 0 && s.peakBytes > 0,
        JSON.stringify(s),
      );
    }
    const md = readFileSync(join(out, "gpu-check.md"), "utf8");
    for (
      const heading of ["# gpu-check: llvmpipe", "## Tests (WebGPU)", "## Kernel lab", "## Stage-1 step"]
    ) {
      assert(md.includes(heading), `${heading} in gpu-check.md`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test("kernel lab: a variant whose outputs differ from the library's is reported and not timed (exit 1)", () => {
  needs();
  const dir = mkdtempSync(join(tmpdir(), "lab-"));
  try {
    const variants = join(dir, "variants.ts"), json = join(dir, "lab.json");
    const helpers = new URL("../bench/kernel_variants.ts", import.meta.url).href;
    const tensor = new URL("../src/autograd/tensor.ts", import.meta.url).href;
    // The lab's own example with its product scaled by 1.01: a plausible slip, one percent off.
    writeFileSync(
      variants,
      `import { VARIANTS as LIBRARY_VARIANTS } from "${helpers}";
import { scale } from "${new URL("../src/kernels/elementwise.ts", import.meta.url).href}";
import type { Tensor } from "${tensor}";
const naive = LIBRARY_VARIANTS.find((v) => v.op === "matmul")!;
export const VARIANTS = [{ op: "matmul", name: "one percent off", run: (t: Tensor[]) => scale(naive.run(t), 1.01) }];
`,
    );
    const r = spawnSync("deno", [
      "run",
      "-A",
      "bench/kernels.ts",
      "--quick",
      "--variants",
      variants,
      "--json",
      json,
      "matmul",
    ], {
      encoding: "utf8",
      timeout: 300_000,
    });
    assertEquals(r.status, 1, `${r.stdout}\n${r.stderr}`);
    const rows = JSON.parse(readFileSync(json, "utf8")).rows as {
      path: string;
      ms: number | null;
      wrong?: boolean;
      error?: number;
    }[];
    const wrong = rows.find((row) => row.path === "variant: one percent off")!;
    assert(wrong.wrong && wrong.ms === null && Math.abs(wrong.error! - 0.01) < 1e-3, JSON.stringify(wrong));
    const example = rows.find((row) => row.path.startsWith("variant: naive"))!;
    assert(!example.wrong && example.ms! > 0, JSON.stringify(example));
    assert(r.stdout.includes("WRONG: off by 1.0e-2 of the largest output, not timed"), r.stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
