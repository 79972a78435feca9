// The README's test command: the whole suite under Deno, then under Bun, and one closing line for both.
import { spawn } from "node:child_process";
import process from "node:process";

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
console.log(`\n${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
