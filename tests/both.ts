// The README's test command: the whole suite under Deno, then under Bun, and one closing line for both.
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import process from "node:process";
import { consumerChecks } from "./consumer.ts";
import { artifactDiff, readArtifact, relativeDiff, selectTestFiles } from "./harness.ts";

// The suite runs four times: Deno and Bun, each on WebGPU and on the WebAssembly backend. Tests leave
// results in runs/test-artifacts/<name>-<runtime>-<backend>.json (tests/harness.ts `artifactPath`):
// - a seeded stage-2 run, a short seeded stage-1 run and a seeded image experiment must agree between the
//   runtimes to 1e-6 on each backend, the paper augmentation's pixels to the bit;
// - the stage-2 and short stage-1 runs also between the backends, to 1e-4 (losses, metrics, probabilities).
//   The image experiment (two learners, two folds, three epochs each, then every stage-2 method) is not
//   compared across backends: float32 sums in another order differ in the last bits, and over hundreds of
//   training steps that grows until a few borderline test images change class;
// - every op's forward output and gradients (tests/opcheck.ts) between the backends to 1e-4 relative to the
//   tensor's largest magnitude, a magnitude under 1e-3 counting as 1e-3: a gradient that is exactly zero
//   in exact arithmetic (batch norm over two values) is float32 rounding noise on both backends.
// Every comparison whose test files ran is expected: a missing artifact fails, naming it; each group checks
// that it made as many comparisons as expected, and the op records as many as each run reported. A NaN or
// ±Infinity must be the same on both sides (artifacts keep them as strings, harness.ts `encodeArtifact`);
// a null (what JSON.stringify leaves of one) fails.
const RUNTIMES = ["deno", "bun"] as const;
const BACKENDS = ["webgpu", "wasm"] as const;
const artifact = (name: string, runtime: string, backend: string) =>
  `runs/test-artifacts/${name}-${runtime}-${backend}.json`;
const RESULTS: {
  name: string;
  file: string;
  what: string;
  acrossBackends: boolean;
  runtimeTolerance?: number;
  /** The backends whose runs write it (default both). */
  backends?: readonly (typeof BACKENDS)[number][];
}[] = [
  { name: "stage2", file: "stage2.test.ts", what: "one seeded stage-2 run", acrossBackends: true },
  // its op records are compared between the backends; between the runtimes it must agree to the bit
  {
    name: "augment",
    file: "augment.test.ts",
    what: "the paper augmentation's pixels",
    acrossBackends: false,
    runtimeTolerance: 0,
  },
  { name: "stage1", file: "stage1.test.ts", what: "a short seeded stage-1 run", acrossBackends: true },
  {
    name: "winograd",
    file: "winograd.test.ts",
    what: "a Winograd convolution's outputs",
    acrossBackends: false,
    runtimeTolerance: 0,
    backends: ["wasm"],
  },
  {
    name: "depthwise",
    file: "depthwise.test.ts",
    what: "a depthwise convolution's outputs",
    acrossBackends: false,
    runtimeTolerance: 0,
    backends: ["wasm"],
  },
  {
    name: "memory64",
    file: "memory64.test.ts",
    what: "ops and gradients on Deno's 64-bit memory and Bun's 32-bit one",
    acrossBackends: false,
    runtimeTolerance: 0,
    backends: ["wasm"],
  },
  {
    name: "experiment",
    file: "experiment.test.ts",
    what: "one seeded image experiment (stage 1 and stage 2)",
    acrossBackends: false,
  },
];
/** A run still going after this long is killed and fails (a test hung where its timeout cannot reach). */
const RUN_LIMIT_S = Number(process.env.FLANNEL_TEST_RUN_TIMEOUT_S || 1800);
if (!(RUN_LIMIT_S > 0)) throw new Error(`FLANNEL_TEST_RUN_TIMEOUT_S must be a positive number of seconds`);
rmSync("runs/test-artifacts", { recursive: true, force: true });

const args = process.argv.slice(2);
const filters = args.filter((a) => !a.startsWith("-"));
const selected = selectTestFiles(readdirSync("tests"), filters);
/** The selected files whose tests fill tests/opcheck.ts `opRecords` (those importing checkOp or opRecords). */
const opFiles = selected.filter((f) =>
  /import\s*\{[^}]*\b(checkOp|opRecords)\b[^}]*\}\s*from "\.\/opcheck\.ts"/.test(
    readFileSync(`tests/${f}`, "utf8"),
  )
);
const runs: [string, string[]][] = BACKENDS.flatMap((backend) => [
  ["deno", ["run", "-A", "tests/run.ts", "--backend", backend, ...args]] as [string, string[]],
  ["bun", ["run", "tests/run.ts", "--backend", backend, ...args]] as [string, string[]],
]);
// Bun's WebAssembly run splits every kernel over three threads (Deno's: two, small jobs unsplit), so the
// bit-for-bit comparison of the two runs also shows that no kernel's result depends on how it is split.
const RUN_ENV: Record<string, Record<string, string>> = {
  "bun wasm": { FLANNEL_THREADS: "3", FLANNEL_WASM_SPLIT_BYTES: "0" },
};

interface RunResult {
  passed: number;
  failed: number;
  skipped: number;
  /** The run's `op records: N` line: how many op records it wrote to its artifact. */
  opRecords: number | null;
}

function runOne(cmd: string, cmdArgs: string[]): Promise<RunResult> {
  return new Promise((resolve) => {
    const backend = cmdArgs[cmdArgs.indexOf("--backend") + 1];
    const extra = RUN_ENV[`${cmd} ${backend}`] ?? {};
    console.log(
      `\n=== ${Object.entries(extra).map(([k, v]) => `${k}=${v} `).join("")}${cmd} ${cmdArgs.join(" ")}`,
    );
    const env = { ...process.env, ...extra };
    const child = spawn(cmd, cmdArgs, { stdio: ["ignore", "pipe", "inherit"], env });
    let last: RunResult | null = null, opRecords: number | null = null, killed = false;
    const timer = setTimeout(() => {
      killed = true;
      child.kill("SIGKILL");
    }, RUN_LIMIT_S * 1000);
    let pending = "";
    child.stdout.on("data", (chunk: Uint8Array) => {
      const text = pending + new TextDecoder().decode(chunk);
      const lines = text.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        const m = /^(\d+) passed, (\d+) failed, (\d+) skipped$/.exec(line);
        const ops = /^op records: (\d+)$/.exec(line);
        if (ops) opRecords = +ops[1];
        // Each runtime's own closing line is shown prefixed so that only the combined one stands alone.
        if (m) last = { passed: +m[1], failed: +m[2], skipped: +m[3], opRecords };
        console.log(m ? `${cmd} ${backend}: ${line}` : line);
      }
    });
    const done = (r: RunResult) => {
      clearTimeout(timer);
      resolve(r);
    };
    child.on("error", (err) => {
      console.log(`FAIL  ${cmd} could not start (${err.message}); run ./setup.sh first`);
      done({ passed: 0, failed: 1, skipped: 0, opRecords: null });
    });
    child.on("close", (code, signal) => {
      if (pending) console.log(pending);
      if (killed) {
        console.log(`FAIL  ${cmd} ${backend}: killed after ${RUN_LIMIT_S} s (FLANNEL_TEST_RUN_TIMEOUT_S)`);
      } else if (last === null) {
        console.log(
          `FAIL  ${cmd} ${backend}: ended (${
            signal ? `signal ${signal}` : `exit status ${code}`
          }) before its ` +
            "closing line: the tests after the last one above never ran",
        );
      }
      // A runtime that crashed or was killed before its summary counts as one failure more.
      const r = last ?? { passed: 0, failed: 0, skipped: 0, opRecords };
      done(code !== 0 && (r.failed === 0 || last === null) ? { ...r, failed: r.failed + 1 } : r);
    });
  });
}

let passed = 0, failed = 0, skipped = 0;
const runResults: Record<string, RunResult> = {};
for (const [cmd, cmdArgs] of runs) {
  const r = await runOne(cmd, cmdArgs);
  runResults[`${cmd} ${cmdArgs[cmdArgs.indexOf("--backend") + 1]}`] = r;
  passed += r.passed;
  failed += r.failed;
  skipped += r.skipped;
}
const tests = { passed, failed, skipped };

function check(ok: boolean, line: string): void {
  console.log(`${ok ? "ok  " : "FAIL"}  ${line}`);
  if (ok) passed++;
  else failed++;
}

/** The artifacts, read; a missing one is a failure naming it (and null is returned). */
function readAll(files: string[], what: string): unknown[] | null {
  const missing = files.filter((f) => !existsSync(f));
  if (missing.length) {
    check(false, `${what}: missing ${missing.join(", ")}`);
    return null;
  }
  return files.map(readArtifact);
}

console.log("\n=== comparisons of the runs' artifacts (runs/test-artifacts)");
const groups: { name: string; expected: number; made: number }[] = [];
function group(name: string, expected: number, body: (made: () => void) => void): void {
  let made = 0;
  body(() => made++);
  groups.push({ name, expected, made });
  // A guard, not a test: a shortfall fails, the expected count is only reported.
  const line = `${name}: ${made} of ${expected} expected comparisons made`;
  if (made === expected) console.log(`      ${line}`);
  else check(false, line);
}
const results = RESULTS.filter((r) => selected.includes(r.file));
for (const r of RESULTS) {
  if (!results.includes(r)) console.log(`      not compared: ${r.name} (${r.file} not selected)`);
}
/** Two artifacts compared to `tol`; a missing one fails, naming it, and is no comparison made. */
function compare(what: string, files: string[], tol: number, made: () => void): void {
  const both = readAll(files, what);
  if (!both) return;
  const { diff, at } = artifactDiff(both[0], both[1]);
  made();
  check(diff <= tol, `${what}, largest difference ${diff}${diff > 0 ? ` at ${at}` : ""}`);
}
const backendsOf = (r: (typeof RESULTS)[number]) => r.backends ?? BACKENDS;
group("deno vs bun", results.reduce((n, r) => n + backendsOf(r).length, 0), (made) => {
  for (const r of results) {
    for (const be of backendsOf(r)) {
      const tol = r.runtimeTolerance ?? 1e-6;
      compare(`deno vs bun on ${be}: ${r.what}`, RUNTIMES.map((rt) => artifact(r.name, rt, be)), tol, made);
    }
  }
});
const across = results.filter((r) => r.acrossBackends);
group("webgpu vs wasm", across.length * RUNTIMES.length, (made) => {
  for (const r of across) {
    for (const rt of RUNTIMES) {
      compare(
        `webgpu vs wasm in ${rt}: ${r.what}`,
        BACKENDS.map((be) => artifact(r.name, rt, be)),
        1e-4,
        made,
      );
    }
  }
});
const opsExpected = opFiles.length > 0;
if (!opsExpected) {
  console.log("      not compared: op records (no selected test file imports tests/opcheck.ts)");
}
group("op records, webgpu vs wasm", opsExpected ? RUNTIMES.length : 0, (made) => {
  for (const runtime of opsExpected ? RUNTIMES : []) {
    const what = `webgpu vs wasm in ${runtime}: op records`;
    const reported = BACKENDS.map((be) => runResults[`${runtime} ${be}`]?.opRecords ?? null);
    const both = readAll(BACKENDS.map((be) => artifact("ops", runtime, be)), what) as
      | Record<string, number[][]>[]
      | null;
    if (!both) continue;
    const [g, w] = both;
    // Each file holds as many records as its run reported, and the two backends the same cases.
    const counts = both.map((r) => Object.keys(r).length);
    const countsOk = counts.every((n, i) => n > 0 && n === reported[i]);
    const names = Object.keys(g);
    const missing = names.filter((n) => !(n in w)), extra = Object.keys(w).filter((n) => !(n in g));
    let worst = { name: "", diff: 0 }, tensors = 0;
    for (const n of names) {
      if (!(n in w)) continue;
      tensors += g[n].length;
      const diff = w[n].length === g[n].length
        ? Math.max(0, ...g[n].map((t, i) => relativeDiff(t, w[n][i])))
        : Infinity;
      if (!(diff <= worst.diff)) worst = { name: n, diff };
    }
    made();
    check(
      countsOk && missing.length === 0 && extra.length === 0 && worst.diff <= 1e-4,
      `${what}: forward and gradients of ${names.length} op cases (${tensors} tensors; records in the files ` +
        `${counts.join(" and ")}, reported by the runs ${reported.map((n) => n ?? "none").join(" and ")}), ` +
        `largest relative difference ${worst.diff.toExponential(2)} (${worst.name})${
          missing.length ? `; missing on wasm: ${missing.join(", ")}` : ""
        }${extra.length ? `; only on wasm: ${extra.join(", ")}` : ""}`,
    );
  }
});
const comparisons = groups.reduce((n, g) => n + g.made, 0),
  expected = groups.reduce((n, g) => n + g.expected, 0);
const beforeConsumer = passed + failed;
// The packed package installed and used from other folders (tests/consumer.ts): with the whole suite, or
// when asked for by name (`deno task test consumer`).
if (args.filter((a) => !a.startsWith("-")).length === 0 || args.includes("consumer")) {
  console.log("\n=== the package as a user installs it (tests/consumer.ts)");
  consumerChecks(check);
}
const packageChecks = passed + failed - beforeConsumer;
console.log(
  `\n${passed} passed, ${failed} failed, ${skipped} skipped (tests of 4 runs: ${tests.passed} passed, ` +
    `${tests.failed} failed, ${tests.skipped} skipped; ${comparisons} of ${expected} comparisons made; ` +
    `${packageChecks} package checks)`,
);
process.exit(failed > 0 ? 1 : 0);
