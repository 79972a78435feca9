// The WebAssembly backend's own machinery, whichever backend the suite runs on: the fallback of "auto"
// where no WebGPU adapter exists, the kernels' reproducible build, and the pool over the Wasm memory (a
// private engine, so these checks run in the WebGPU runs too).
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import process from "node:process";
import { compileKernels, KERNELS_MODULE, kernelsModuleSource } from "../tools/build_wasm.ts";
import { WASM_MEMORY_LIMIT, WasmEngine } from "../src/backend/wasm/engine.ts";
import { defineKernel } from "../src/backend/kernel.ts";
import { fillKernel } from "../src/kernels/basic.ts";
import { assert, assertEquals, assertThrows, test } from "./harness.ts";

const here = dirname(fileURLToPath(import.meta.url));
const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";

/** Runs tests/fixtures/init_auto.ts in this runtime with an environment that hides every WebGPU adapter. */
function runWithoutAdapter(backend: "auto" | "webgpu") {
  // Deno (wgpu) offers no adapter for a backend this OS lacks; Bun (Dawn) finds no Vulkan driver and offers
  // only its null backend, which the library refuses.
  const hide = isBun ? { VK_ICD_FILENAMES: "/nonexistent/icd.json" } : { DENO_WEBGPU_BACKEND: "dx12" };
  const args = [...(isBun ? ["run"] : ["run", "-A"]), "fixtures/init_auto.ts", backend];
  const env = { ...process.env, ...hide };
  return spawnSync(process.execPath, args, { cwd: here, env, encoding: "utf8", timeout: 120_000 });
}

test("auto falls back to WebAssembly where no WebGPU adapter exists, and says so; webgpu then fails clearly", () => {
  const auto = runWithoutAdapter("auto");
  assertEquals(auto.status, 0, `exit status (stderr: ${auto.stderr})`);
  assert(auto.stdout.includes("backend wasm; dot 32"), `stdout: ${auto.stdout}`);
  assert(
    /flannel: no WebGPU \(No WebGPU adapter was found.*\); using the WebAssembly backend/.test(auto.stderr),
    `stderr: ${auto.stderr}`,
  );
  const gpu = runWithoutAdapter("webgpu");
  assert(gpu.status !== 0, "asking for webgpu without an adapter must fail");
  assert(
    /No WebGPU adapter was found/.test(gpu.stderr) && /lavapipe/.test(gpu.stderr),
    `stderr: ${gpu.stderr}`,
  );
});

test("the shipped kernels (kernels_wasm.ts) are what their sources build to, byte for byte", async () => {
  const fresh = await compileKernels();
  const shipped = readFileSync(KERNELS_MODULE, "utf8");
  const expected = kernelsModuleSource(fresh);
  assertEquals(shipped.length, expected.length, "size of kernels_wasm.ts (run `deno task build:wasm`)");
  assert(
    shipped === expected,
    "kernels_wasm.ts differs from a fresh build of src/kernels/wasm: run `deno task build:wasm` and commit it",
  );
});

test("Wasm pool: exact-size reuse without growth, merging on trim, a clear error before the 4 GiB limit", async () => {
  const engine = await WasmEngine.create({ threads: 2, parallelMinBytes: 0 });
  const pool = engine.pool;
  // A training loop's pattern: the same sizes every step. After the first step nothing new is carved.
  const step = () => [1000, 4096, 70_000, 1 << 19, 1 << 20].map((n) => pool.acquire(n * 4));
  for (const pb of step()) pool.release(pb);
  const created = pool.snapshot().created, memory = engine.memory.buffer.byteLength;
  for (let i = 0; i < 50; i++) for (const pb of step()) pool.release(pb);
  assertEquals(pool.snapshot().created, created, "buffers carved after the first step");
  assertEquals(engine.memory.buffer.byteLength, memory, "memory grown after the first step");
  assertEquals(pool.snapshot().liveBytes, 0);
  // trim merges the free blocks: a tensor larger than any of them fits without growing the memory.
  engine.trimPool();
  const big = pool.acquire(1_200_000 * 4);
  assertEquals(engine.memory.buffer.byteLength, memory, "a merged block served the larger tensor");
  // A kernel through this engine, split over both threads: every element written.
  engine.dispatch(fillKernel, [big], [1_200_000, 2.5], [1]);
  const back = new Float32Array(await engine.read(big, 0, 1_200_000 * 4));
  assert(back.every((v) => v === 2.5), "fill over two threads");
  pool.release(big);
  assertThrows(
    () => pool.acquire(WASM_MEMORY_LIMIT),
    /does not fit: \d+ bytes are live and a Wasm32 memory addresses at most 4 GiB/,
  );
  const noTwin = defineKernel({ name: "not_a_kernel", storage: [{ name: "out", access: "rw" }], body: "" });
  const pb = pool.acquire(16);
  assertThrows(() => engine.dispatch(noTwin, [pb], [], [1]), /not_a_kernel has no WebAssembly twin/);
});
