// The README's test command: the whole suite under Deno, then under Bun, and one closing line for both.
import { spawn } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import process from "node:process";
import { consumerChecks } from "./consumer.ts";

// The suite runs four times: Deno and Bun, each on WebGPU and on the WebAssembly backend. Tests leave
// results in runs/test-artifacts/<name>-<runtime>-<backend>.json (tests/harness.ts `artifactPath`):
// - a seeded stage-2 run, a short seeded stage-1 run and a seeded image experiment must agree between the
//   runtimes to 1e-6 on each backend;
// - the stage-2 and short stage-1 runs also between the backends, to 1e-4 (losses, metrics, probabilities).
//   The image experiment (two learners, two folds, three epochs each, then every stage-2 method) is not
//   compared across backends: float32 sums in another order differ in the last bits, and over hundreds of
//   training steps that grows until a few borderline test images change class;
// - every op's forward output and gradients (tests/opcheck.ts) between the backends to 1e-4 relative to the
//   tensor's largest magnitude, a magnitude under 1e-3 counting as 1e-3: a gradient that is exactly zero
//   in exact arithmetic (batch norm over two values) is float32 rounding noise on both backends.
const RUNTIMES = ["deno", "bun"] as const;
const BACKENDS = ["webgpu", "wasm"] as const;
const artifact = (name: string, runtime: string, backend: string) =>
  `runs/test-artifacts/${name}-${runtime}-${backend}.json`;
const RESULTS = [
  { name: "stage2", what: "one seeded stage-2 run", acrossBackends: true },
  { name: "stage1", what: "a short seeded stage-1 run", acrossBackends: true },
  { name: "experiment", what: "one seeded image experiment (stage 1 and stage 2)", acrossBackends: false },
];
rmSync("runs/test-artifacts", { recursive: true, force: true });

const args = process.argv.slice(2);
const runs: [string, string[]][] = BACKENDS.flatMap((backend) => [
  ["deno", ["run", "-A", "tests/run.ts", "--backend", backend, ...args]] as [string, string[]],
  ["bun", ["run", "tests/run.ts", "--backend", backend, ...args]] as [string, string[]],
]);
// Bun's WebAssembly run splits every kernel over three threads (Deno's: two, small jobs unsplit), so the
// bit-for-bit comparison of the two runs also shows that no kernel's result depends on how it is split.
const RUN_ENV: Record<string, Record<string, string>> = {
  "bun wasm": { FLANNEL_THREADS: "3", FLANNEL_WASM_SPLIT_BYTES: "0" },
};

function runOne(cmd: string, cmdArgs: string[]): Promise<{ passed: number; failed: number }> {
  return new Promise((resolve) => {
    const extra = RUN_ENV[`${cmd} ${cmdArgs[cmdArgs.indexOf("--backend") + 1]}`] ?? {};
    console.log(
      `\n=== ${Object.entries(extra).map(([k, v]) => `${k}=${v} `).join("")}${cmd} ${cmdArgs.join(" ")}`,
    );
    const env = { ...process.env, ...extra };
    const child = spawn(cmd, cmdArgs, { stdio: ["ignore", "pipe", "inherit"], env });
    let last = { passed: 0, failed: 1 };
    let pending = "";
    child.stdout.on("data", (chunk: Uint8Array) => {
      const text = pending + new TextDecoder().decode(chunk);
      const lines = text.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        const m = /^(\d+) passed, (\d+) failed$/.exec(line);
        // Each runtime's own closing line is shown prefixed so that only the combined one stands alone.
        if (m) last = { passed: +m[1], failed: +m[2] };
        console.log(m ? `${cmd} ${cmdArgs[cmdArgs.indexOf("--backend") + 1]}: ${line}` : line);
      }
    });
    child.on("error", (err) => {
      console.log(`${cmd} could not start (${err.message}); run ./setup.sh first`);
      resolve({ passed: 0, failed: 1 });
    });
    child.on("close", (code) => {
      if (pending) console.log(pending);
      // A runtime that crashed before its summary counts as one failure.
      resolve(code !== 0 && last.failed === 0 ? { passed: last.passed, failed: 1 } : last);
    });
  });
}

let passed = 0, failed = 0;
for (const [cmd, cmdArgs] of runs) {
  const r = await runOne(cmd, cmdArgs);
  passed += r.passed;
  failed += r.failed;
}
/** Largest difference between two JSON values of the same structure (Infinity if the structure differs). */
function maxDiff(a: unknown, b: unknown): number {
  if (typeof a === "number" && typeof b === "number") return Math.abs(a - b);
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length ? a.reduce((m: number, v, i) => Math.max(m, maxDiff(v, b[i])), 0) : Infinity;
  }
  if (a && b && typeof a === "object" && typeof b === "object") {
    const ka = Object.keys(a).sort(), kb = Object.keys(b).sort();
    if (ka.join() !== kb.join()) return Infinity;
    return ka.reduce(
      (m, k) => Math.max(m, maxDiff((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])),
      0,
    );
  }
  return a === b ? 0 : Infinity;
}

/** Largest difference between two tensors' values relative to their largest magnitude (at least 1e-3). */
function relativeDiff(a: number[], b: number[]): number {
  if (a.length !== b.length) return Infinity;
  let diff = 0, scale = 1e-3;
  a.forEach((v, i) => {
    diff = Math.max(diff, Math.abs(v - b[i]));
    scale = Math.max(scale, Math.abs(v), Math.abs(b[i]));
  });
  return diff / scale;
}

function check(ok: boolean, line: string): void {
  console.log(`${ok ? "ok  " : "FAIL"}  ${line}`);
  if (ok) passed++;
  else failed++;
}

const readJson = (f: string) => existsSync(f) ? JSON.parse(readFileSync(f, "utf8")) : null;
for (const r of RESULTS) {
  for (const backend of BACKENDS) {
    const [d, b] = RUNTIMES.map((rt) => readJson(artifact(r.name, rt, backend)));
    if (!d || !b) continue;
    const diff = maxDiff(d, b);
    check(diff <= 1e-6, `deno vs bun on ${backend}: ${r.what}, largest difference ${diff}`);
  }
  for (const runtime of r.acrossBackends ? RUNTIMES : []) {
    const [g, w] = BACKENDS.map((be) => readJson(artifact(r.name, runtime, be)));
    if (!g || !w) continue;
    const diff = maxDiff(g, w);
    check(diff <= 1e-4, `webgpu vs wasm in ${runtime}: ${r.what}, largest difference ${diff}`);
  }
}
for (const runtime of RUNTIMES) {
  const [g, w] = BACKENDS.map((be) =>
    readJson(artifact("ops", runtime, be)) as Record<string, number[][]> | null
  );
  if (!g || !w) continue;
  const names = Object.keys(g);
  let worst = { name: "", diff: 0 };
  const missing = names.filter((n) => !w[n]);
  for (const n of names) {
    if (!w[n]) continue;
    const diff = w[n].length === g[n].length
      ? Math.max(...g[n].map((t, i) => relativeDiff(t, w[n][i])))
      : Infinity;
    if (!(diff <= worst.diff)) worst = { name: n, diff };
  }
  check(
    missing.length === 0 && worst.diff <= 1e-4,
    `webgpu vs wasm in ${runtime}: forward and gradients of ${names.length} op cases, largest relative difference ` +
      `${worst.diff.toExponential(2)} (${worst.name})${
        missing.length ? `; missing on wasm: ${missing.join(", ")}` : ""
      }`,
  );
}
// The packed package installed and used from other folders (tests/consumer.ts): with the whole suite, or
// when asked for by name (`deno task test consumer`).
if (args.filter((a) => !a.startsWith("-")).length === 0 || args.includes("consumer")) {
  console.log("\n=== the package as a user installs it (tests/consumer.ts)");
  consumerChecks(check);
}
console.log(`\n${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
