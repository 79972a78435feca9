// Runs tests/*.test.ts (or those whose path contains one of the arguments) in this runtime, one after the
// other, and ends with the line `N passed, N failed, N skipped`. The same file runs under Deno and Bun.
//   --backend wasm|webgpu   the backend every test's `fl.init()` opens (default: FLANNEL_BACKEND, else auto)
// Each test has a time limit (its `timeoutS`, else FLANNEL_TEST_TIMEOUT_S, else 300 s); a test past it
// fails and the run goes on, until 3 tests in a row have timed out (a hung device): the rest then fail
// unrun. A file that fails to import is one failure (a FAIL line naming it), and the other files run.
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import process from "node:process";
import {
  afterAllHooks,
  defaultTimeoutS,
  describeError,
  loadTestFile,
  registry,
  runTest,
  selectTestFiles,
  writeArtifact,
} from "./harness.ts";
import { opRecords } from "./opcheck.ts";
import { backendInfo } from "../src/backend/device.ts";
import { poolStats } from "../src/backend/stats.ts";

const here = dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const backendAt = argv.indexOf("--backend");
if (backendAt >= 0) process.env.FLANNEL_BACKEND = argv.splice(backendAt, 2)[1];
const filters = argv.filter((a) => !a.startsWith("-"));
const files = selectTestFiles(readdirSync(here), filters);
const timeoutS = defaultTimeoutS(process.env);
const MAX_TIMEOUTS_IN_A_ROW = 3;

const runtime = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined" ? "bun" : "deno";
let passed = 0, failed = 0, skipped = 0;
const importFailed: string[] = [];
for (const f of files) {
  const err = await loadTestFile(f, pathToFileURL(join(here, f)).href);
  if (err === null) continue;
  failed++;
  importFailed.push(f);
  console.log(`FAIL  ${f} (import: none of its tests ran)`);
  console.log(describeError(err));
}

const started = performance.now();
let timeoutsInARow = 0, notRun = 0;
const order = [...new Set([...registry.map((t) => t.file), ...afterAllHooks.map((h) => h.file)])];
for (const file of order) {
  for (const t of registry.filter((t) => t.file === file)) {
    if (timeoutsInARow >= MAX_TIMEOUTS_IN_A_ROW) {
      notRun++;
      continue;
    }
    const label = `${t.file} > ${t.name}`;
    const r = await runTest(label, t.fn, t.timeoutS ?? timeoutS);
    const took = `(${r.seconds.toFixed(2)}s)`;
    if (r.status === "ok") {
      passed++;
      console.log(`ok    ${label} ${took}`);
    } else if (r.status === "skip") {
      skipped++;
      console.log(`skip  ${label}: ${r.error}`);
    } else {
      failed++;
      console.log(`FAIL  ${label} ${took}`);
      console.log(describeError(r.error));
    }
    timeoutsInARow = r.status === "FAIL" && (r.error as Error)?.name === "TestTimeout"
      ? timeoutsInARow + 1
      : 0;
  }
  // Clean-up steps: not tests (never a pass), but one that throws is a failure.
  for (const h of afterAllHooks.filter((h) => h.file === file)) {
    const r = await runTest(`${file} > afterAll`, h.fn, timeoutS);
    if (r.status !== "ok") {
      failed++;
      console.log(`FAIL  ${file} > afterAll`);
      console.log(describeError(r.error));
    }
  }
}
if (notRun > 0) {
  failed += notRun;
  console.log(
    `FAIL  ${notRun} tests not run: ${MAX_TIMEOUTS_IN_A_ROW} tests in a row timed out (a hung device?)`,
  );
}
// Every op's outputs and gradients, for tests/both.ts to compare between backends (non-finite values
// encoded); the count printed here is the one tests/both.ts expects in the file.
const opCount = Object.keys(opRecords).length;
if (opCount > 0) writeArtifact("ops", opRecords);
console.log(`op records: ${opCount}`);
const backend = backendInfo();
console.log(
  `${runtime} (${
    backend ? `${backend.backend}: ${backend.adapter}` : "no backend opened"
  }): ${registry.length} tests in ${((performance.now() - started) / 1000).toFixed(1)}s${
    backend?.backend === "webgpu" ? `, ${poolStats().pipelines} kernels compiled` : ""
  }${importFailed.length ? `; not imported: ${importFailed.join(", ")}` : ""}`,
);
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed > 0 ? 1 : 0);
