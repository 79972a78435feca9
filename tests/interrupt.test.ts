// Interruptions of a whole `flannel experiment` run as a user or a scheduler causes them: kill -9 at seeded
// moments (then --resume), SIGTERM and SIGINT (a clean stop at the next training step, exit 128 + signal,
// every file whole). Each interrupted and resumed run must give the uninterrupted run's results.json.
// The CLI children run on the WebAssembly backend (no kernel compiles per child), so the WebGPU runs of the
// suite skip these tests: the WebAssembly run of the same runtime (Deno, Bun) makes them.
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import process from "node:process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as fl from "../mod.ts";
import { assert, assertEquals, AssertionError, test } from "./harness.ts";
import { chestxray64, resultsOf, smallRunOptions, startCli, until } from "./cli_children.ts";

await fl.init();
const data = chestxray64;
const tmp = mkdtempSync(join(tmpdir(), "fl-interrupt-"));
const OPTIONS = [...smallRunOptions(40), "--backend", "wasm"];

/** An `experiment` process writing to `out`; `lines()` counts the lines of its output so far. */
function experiment(out: string, resume = false) {
  const run = startCli(["experiment", ...OPTIONS, "--out", out, ...(resume ? ["--resume"] : [])]);
  return { ...run, lines: () => run.output().split("\n").length - 1 };
}

/** Every file under `dir` (relative paths). */
function files(dir: string, prefix = ""): string[] {
  return readdirSync(join(dir, prefix), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(dir, join(prefix, e.name)) : [join(prefix, e.name)]
  );
}

async function resumeToTheEnd(out: string) {
  const r = await experiment(out, true).done;
  assertEquals(r.code, 0, `--resume after the interruption failed:\n${r.output.slice(-2000)}`);
  assertEquals(files(out).filter((f) => f.endsWith(".tmp")), [], "temporary files left after the resume");
}

let reference: { results: unknown; lines: number } | null = null;
async function uninterrupted() {
  if (reference) return reference;
  if (!existsSync(join(data, "labels.csv"))) throw new AssertionError(`test data missing: ${data}`);
  const run = experiment(join(tmp, "reference"));
  const r = await run.done;
  assertEquals(r.code, 0, r.output.slice(-2000));
  return reference = { results: resultsOf(join(tmp, "reference")), lines: run.lines() };
}

// Its CLI children run on WebAssembly: in the WebGPU runs they would repeat the WebAssembly run's work.
const wasmTest = test.when(
  fl.backendInfo()?.backend === "wasm",
  "its CLI children run on WebAssembly: this runtime's WebAssembly run makes it",
);

wasmTest(
  "kill -9 at 4 seeded moments of `experiment`, then --resume: the uninterrupted run's results.json",
  async () => {
    const ref = await uninterrupted();
    let interrupted = 0;
    for (let i = 0; i < 4; i++) {
      // The moment: after a seeded number of output lines (decoding, each stage-1 epoch, stage 2, the report)
      // and a seeded delay of up to 0.3 s, so that kills land inside steps and file writes too.
      const [a, b] = fl.threefry2x32(18, 0, i, 0);
      const line = 1 + (a % (ref.lines - 2)), delayMs = (b / 2 ** 32) * 300;
      const out = join(tmp, `kill${i}`);
      const run = experiment(out);
      await until(() => run.lines() >= line || run.child.exitCode !== null, `line ${line} of run ${i}`);
      await new Promise((r) => setTimeout(r, delayMs));
      run.child.kill("SIGKILL");
      const r = await run.done;
      if (r.signal === "SIGKILL") interrupted++;
      const last = run.output().trimEnd().split("\n").at(-1);
      console.log(
        `      kill ${i}: after line ${line} + ${delayMs.toFixed(0)} ms (${
          r.signal ?? `exit ${r.code}`
        }): ${last}`,
      );
      await resumeToTheEnd(out);
      assertEquals(resultsOf(out), ref.results, `run ${i}: results.json after kill -9 and --resume`);
      rmSync(out, { recursive: true, force: true });
    }
    assert(interrupted >= 3, `only ${interrupted} of 4 runs were killed before they ended`);
  },
);

for (const [sig, code] of [["SIGTERM", 143], ["SIGINT", 130]] as const) {
  wasmTest(
    `${sig} during stage 1: stops at the next step, exit ${code}, every file whole; --resume gives the same results`,
    async () => {
      const ref = await uninterrupted();
      const out = join(tmp, sig);
      const run = experiment(out);
      // the second learner's first epoch: the first learner's folds are done, its checkpoints on disk
      await until(() => /vgg19_bn fold 0 epoch 1:/.test(run.output()), "vgg19_bn's first epoch");
      // process.kill, not child.kill: Deno's ChildProcess reports a child it signalled as killed by that
      // signal whatever its exit status; this way the status the child chose is seen
      process.kill(run.child.pid!, sig);
      const r = await run.done;
      assertEquals(
        r.code,
        code,
        `exit status after ${sig} (signal ${r.signal}), the output ends: ${r.output.slice(-600)}`,
      );
      assert(
        new RegExp(
          `flannel: ${sig}: stopping at the next training step[^\\n]*\\n(.*\\n)*` +
            `flannel: vgg19_bn fold 0: stage 1: stopped \\(${sig}\\) before step \\d+ of epoch [23]; .*vgg19_bn/fold0/` +
            `checkpoint\\.safetensors holds epoch [12], whole: --resume continues from it`,
        ).test(r.output),
        `the stop message:\n${r.output.slice(-1500)}`,
      );
      assertEquals(
        files(out).filter((f) => f.endsWith(".tmp")),
        [],
        "temporary files left by the clean stop",
      );
      // every safetensors file the run left is whole: its header parses and its tensors load
      for (const f of files(out).filter((f) => f.includes(".safetensors"))) {
        await fl.io.loadSafetensors(join(out, f));
      }
      await resumeToTheEnd(out);
      assertEquals(resultsOf(out), ref.results, `results.json after ${sig} and --resume`);
    },
  );
}

test.afterAll(() => rmSync(tmp, { recursive: true, force: true }));
