// The WebAssembly backend's 64-bit memory (memory64): chosen by detection where the engine has it (Deno; not
// Bun), and the kernels' results the same bits at any address: ops on tensors placed past 4 GiB and on
// tensors low in memory, bit for bit (tests/fixtures/memory64_ops.ts, in a fresh process). That the 32-bit
// and the 64-bit builds agree is checked across runtimes: Deno's wasm run has the 64-bit memory and Bun's the
// 32-bit one, and tests/both.ts compares their artifacts of the same ops bit for bit.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import process from "node:process";
import * as fl from "../mod.ts";
import { WASM64_MEMORY_LIMIT, WasmEngine } from "../src/backend/wasm/engine.ts";
import { assert, assertEquals, assertThrows, skip, test, writeArtifact } from "./harness.ts";
import { opResults } from "./fixtures/memory64_ops.ts";

const info = await fl.init();
const onWasm = info.backend === "wasm";
const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const GIB4 = 2 ** 32;

test("memory64 by detection: Deno's wasm backend has 16 GiB for tensors, Bun's the 32-bit 4 GiB", () => {
  if (!onWasm) skip("the WebAssembly backend's memory");
  const bytes = info.limits.memoryBytes;
  if (isBun) {
    assert(bytes < GIB4, `Bun (no memory64): ${bytes} bytes`);
    assert(!info.adapter.includes("64-bit"), info.adapter);
  } else {
    assert(bytes > 15.9 * 2 ** 30 && bytes < 16 * 2 ** 30, `Deno (memory64): ${bytes} bytes`);
    assert(info.adapter.endsWith("64-bit memory"), info.adapter);
  }
  assertEquals(fl.poolStats().limitBytes, bytes);
});

test("memory64: the ops' results, for tests/both.ts to compare between the 64-bit and the 32-bit memory", async () => {
  if (!onWasm) skip("the WebAssembly backend's memory");
  writeArtifact("memory64", (await opResults()).results.map((values) => Array.from(values)));
});

test("memory64: tensors past 4 GiB give the same bits as tensors low in memory (a fresh process)", () => {
  if (!onWasm || info.limits.memoryBytes < GIB4) {
    skip(`no 64-bit memory here (${info.runtime} ${info.backend})`);
  }
  const script = fileURLToPath(new URL("./fixtures/memory64_ops.ts", import.meta.url));
  const r = spawnSync(process.execPath, isBun ? ["run", script] : ["run", "-A", script], {
    encoding: "utf8",
    timeout: 300_000,
  });
  assertEquals(r.status, 0, `the child failed: ${r.stderr.slice(-400)}`);
  const out = JSON.parse(r.stdout.trim().split("\n").pop()!) as {
    memoryBytes: number;
    high: number[];
    low: number[];
    differing: number;
  };
  assert(out.memoryBytes > GIB4, `the child's memory: ${out.memoryBytes} bytes`);
  assert(out.high.every((a) => a > GIB4), `placed past 4 GiB: ${out.high.join(", ")}`);
  assert(out.low.every((a) => a < GIB4), `placed low: ${out.low.join(", ")}`);
  assertEquals(out.differing, -1, "the first result that differs between the two placements");
});

test("memory64: a private 64-bit engine refuses past 16 GiB with a clear error", async () => {
  if (!onWasm) skip("the WebAssembly backend's memory");
  const engine = await WasmEngine.create({ threads: 1 });
  if (engine.memoryBits !== 64) skip(`this engine has no 64-bit memory (${info.runtime})`);
  assertThrows(
    () => engine.pool.acquire(WASM64_MEMORY_LIMIT),
    /does not fit: \d+ bytes are live and the 64-bit memory holds at most 16 GiB/,
  );
});
