// Runs tests/*.test.ts (or those whose path contains one of the arguments) in this runtime, one after the
// other, and ends with the line `N passed, N failed`. The same file runs under Deno and Bun.
//   --backend wasm|webgpu   the backend every test's `fl.init()` opens (default: FLANNEL_BACKEND, else auto)
import { readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import process from "node:process";
import { artifactPath, registry, setCurrentFile } from "./harness.ts";
import { opRecords } from "./opcheck.ts";
import { backendInfo } from "../src/backend/device.ts";
import { poolStats } from "../src/backend/stats.ts";

const here = dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const backendAt = argv.indexOf("--backend");
if (backendAt >= 0) process.env.FLANNEL_BACKEND = argv.splice(backendAt, 2)[1];
const filters = argv.filter((a) => !a.startsWith("-"));
const files = readdirSync(here)
  .filter((f) => f.endsWith(".test.ts"))
  .filter((f) => filters.length === 0 || filters.some((p) => f.includes(p)))
  .sort();

const runtime = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined" ? "bun" : "deno";
for (const f of files) {
  setCurrentFile(f);
  await import(pathToFileURL(join(here, f)).href);
}

let passed = 0, failed = 0;
const started = performance.now();
for (const t of registry) {
  const t0 = performance.now();
  try {
    await t.fn();
    passed++;
    console.log(`ok    ${t.file} > ${t.name} (${((performance.now() - t0) / 1000).toFixed(2)}s)`);
  } catch (err) {
    failed++;
    console.log(`FAIL  ${t.file} > ${t.name}`);
    console.log("      " + String((err as Error)?.stack ?? err).split("\n").slice(0, 6).join("\n      "));
  }
}
// Every op's outputs and gradients, for tests/both.ts to compare between backends.
if (Object.keys(opRecords).length > 0) writeFileSync(artifactPath("ops"), JSON.stringify(opRecords));
const backend = backendInfo();
console.log(
  `${runtime} (${
    backend ? `${backend.backend}: ${backend.adapter}` : "no backend opened"
  }): ${registry.length} tests in ${((performance.now() - started) / 1000).toFixed(1)}s${
    backend?.backend === "webgpu" ? `, ${poolStats().pipelines} kernels compiled` : ""
  }`,
);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
