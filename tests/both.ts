// The README's test command: the whole suite under Deno, then under Bun, and one closing line for both.
import { spawn } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import process from "node:process";

// tests/stage2.test.ts and tests/experiment.test.ts write one seeded run per runtime here; the two runtimes
// must agree to 1e-6.
const ARTIFACTS = [
  { name: "stage2", what: "one seeded stage-2 run" },
  { name: "experiment", what: "one seeded image experiment (stage 1 and stage 2)" },
].map((a) => ({
  ...a,
  deno: `runs/test-artifacts/${a.name}-deno.json`,
  bun: `runs/test-artifacts/${a.name}-bun.json`,
}));
for (const a of ARTIFACTS) for (const f of [a.deno, a.bun]) rmSync(f, { force: true });

const args = process.argv.slice(2);
const runs: [string, string[]][] = [
  ["deno", ["run", "-A", "tests/run.ts", ...args]],
  ["bun", ["run", "tests/run.ts", ...args]],
];

function runOne(cmd: string, cmdArgs: string[]): Promise<{ passed: number; failed: number }> {
  return new Promise((resolve) => {
    console.log(`\n=== ${cmd} ${cmdArgs.join(" ")}`);
    const child = spawn(cmd, cmdArgs, { stdio: ["ignore", "pipe", "inherit"] });
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
        console.log(m ? `${cmd}: ${line}` : line);
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

for (const a of ARTIFACTS) {
  if (!existsSync(a.deno) || !existsSync(a.bun)) continue;
  const diff = maxDiff(JSON.parse(readFileSync(a.deno, "utf8")), JSON.parse(readFileSync(a.bun, "utf8")));
  const ok = diff <= 1e-6;
  console.log(`${ok ? "ok  " : "FAIL"}  deno vs bun: ${a.what}, largest difference ${diff}`);
  if (ok) passed++;
  else failed++;
}
console.log(`\n${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
