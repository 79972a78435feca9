// The WebAssembly backend's own machinery, whichever backend the suite runs on: the fallback of "auto"
// where no WebGPU adapter exists, the kernels' reproducible build, and the pool over the Wasm memory (a
// private engine, so these checks run in the WebGPU runs too).
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { Buffer } from "node:buffer";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import process from "node:process";
import {
  checkExports,
  compileKernels,
  generatedModules,
  KERNELS_MODULE,
  kernelsModuleSource,
  pointwiseTwin,
  twinDeclarations,
} from "../tools/build_wasm.ts";
import { E, hoistUniform, repeatedSubexpressions } from "../src/backend/expr.ts";
import { pointwiseKernel } from "../src/backend/kernel.ts";
import { WASM_MEMORY_LIMIT, WasmEngine } from "../src/backend/wasm/engine.ts";
import { KERNELS_WASM_BASE64 } from "../src/backend/wasm/kernels_wasm.ts";
import { cpuAdapterReason } from "../src/backend/device.ts";
import type { KernelSpec } from "../src/backend/engine.ts";
import { fillKernel } from "../src/kernels/basic.ts";
import { assert, assertEquals, assertThrows, test } from "./harness.ts";

const here = dirname(fileURLToPath(import.meta.url));
const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
/** Adapter names of CPU implementations, as this suite's machine (lavapipe) reports them. */
const CPU_ADAPTER_NAMES = /llvmpipe|lavapipe|swiftshader/i;

/** Runs tests/fixtures/init_auto.ts in this runtime (FLANNEL_BACKEND unset), with extra environment. */
function runInitAuto(backend: "auto" | "webgpu", extraEnv: Record<string, string> = {}) {
  const args = [...(isBun ? ["run"] : ["run", "-A"]), "fixtures/init_auto.ts", backend];
  const env: Record<string, string | undefined> = { ...process.env, ...extraEnv };
  delete env.FLANNEL_BACKEND;
  return spawnSync(process.execPath, args, { cwd: here, env, encoding: "utf8", timeout: 120_000 });
}

/** The same with every WebGPU adapter hidden. */
function runWithoutAdapter(backend: "auto" | "webgpu") {
  // Deno (wgpu) offers no adapter for a backend this OS lacks; Bun (Dawn) finds no Vulkan driver and offers
  // only its null backend, which the library refuses.
  return runInitAuto(
    backend,
    isBun ? { VK_ICD_FILENAMES: "/nonexistent/icd.json" } : { DENO_WEBGPU_BACKEND: "dx12" },
  );
}

test("cpuAdapterReason: lavapipe as Deno and Bun report it, SwiftShader and WARP are CPUs; GPUs are not", () => {
  // What Deno (wgpu) and Bun (Dawn) report for lavapipe on this machine, and other adapters' reports.
  const cpus = [
    { vendor: "65541", architecture: "", device: "0", description: "llvmpipe (LLVM 15.0.6, 256 bits)" },
    {
      vendor: "mesa",
      architecture: "software",
      device: "llvmpipe-llvm-15-0-6-256-bits",
      description: "llvmpipe: Mesa 25.0.7-2~bpo12+1 (LLVM 15.0.6) 0.0.1",
    },
    {
      vendor: "google",
      architecture: "",
      device: "swiftshader",
      description: "SwiftShader Device (Subzero)",
    },
    { vendor: "microsoft", architecture: "", device: "", description: "Microsoft Basic Render Driver" },
    { vendor: "", architecture: "", device: "", description: "some adapter", isFallbackAdapter: true },
  ];
  assertEquals(cpus.map((a) => cpuAdapterReason(a)), [
    "is llvmpipe, a CPU implementation",
    "is llvmpipe, a CPU implementation",
    "is swiftshader, a CPU implementation",
    "is basic render driver, a CPU implementation",
    "is a fallback adapter (software)",
  ]);
  const gpus = [
    { vendor: "nvidia", architecture: "hopper", device: "0x2335", description: "NVIDIA H200" },
    {
      vendor: "amd",
      architecture: "rdna-3",
      device: "",
      description: "AMD Radeon RX 7900 XTX (RADV NAVI31)",
    },
    { vendor: "apple", architecture: "metal-3", device: "", description: "Apple M2" },
    {
      vendor: "intel",
      architecture: "gen-12lp",
      device: "",
      description: "Intel(R) UHD Graphics 770 (ADL-S GT1)",
    },
  ];
  assertEquals(gpus.map((a) => cpuAdapterReason(a)), [null, null, null, null]);
});

test("auto passes over a CPU WebGPU adapter for WebAssembly and says why; webgpu still opens it", () => {
  const gpu = runInitAuto("webgpu");
  assertEquals(gpu.status, 0, `webgpu: exit status (stderr: ${gpu.stderr})`);
  const opened = JSON.parse(gpu.stdout.trim().split("\n").pop()!) as { adapter: string; reason: string };
  assertEquals(opened.reason, "asked for");
  const auto = runInitAuto("auto");
  assertEquals(auto.status, 0, `auto: exit status (stderr: ${auto.stderr})`);
  const chosen = JSON.parse(auto.stdout.trim().split("\n").pop()!) as { adapter: string; reason: string };
  // This machine's adapter decides what auto must pick: lavapipe here, a GPU elsewhere.
  const cpu = CPU_ADAPTER_NAMES.test(opened.adapter);
  if (cpu) {
    assert(auto.stdout.startsWith("backend wasm; dot 32"), `auto on ${opened.adapter}: ${auto.stdout}`);
    assert(
      /a CPU implementation: the WebAssembly backend is faster on CPUs/.test(chosen.reason),
      chosen.reason,
    );
    assert(
      /flannel: the WebGPU adapter is (llvmpipe|lavapipe|swiftshader).*using it \(--backend webgpu/.test(
        auto.stderr,
      ),
      `stderr: ${auto.stderr}`,
    );
  } else {
    assert(auto.stdout.startsWith("backend webgpu; dot 32"), `auto on ${opened.adapter}: ${auto.stdout}`);
    assertEquals(chosen.reason, "a GPU adapter");
  }
});

test("auto falls back to WebAssembly where no WebGPU adapter exists, and says so; webgpu then fails clearly", () => {
  const auto = runWithoutAdapter("auto");
  assertEquals(auto.status, 0, `exit status (stderr: ${auto.stderr})`);
  assert(auto.stdout.includes("backend wasm; dot 32"), `stdout: ${auto.stdout}`);
  assert(
    /flannel: no WebGPU \(No WebGPU adapter was found.*\); using the WebAssembly backend/.test(auto.stderr),
    `stderr: ${auto.stderr}`,
  );
  const gpu = runWithoutAdapter("webgpu");
  assertEquals(gpu.status, 1, "asking for webgpu without an adapter must fail (an uncaught error: status 1)");
  assert(
    /No WebGPU adapter was found/.test(gpu.stderr) && /lavapipe/.test(gpu.stderr),
    `stderr: ${gpu.stderr}`,
  );
});

test("the generated twin sources are current, and no twin types a slot number", async () => {
  const declarations = await twinDeclarations();
  assert(declarations.twins.size >= 60, `${declarations.twins.size} twins declared`);
  for (const [file, source] of await generatedModules()) {
    const committed = readFileSync(file, "utf8").split("\n");
    const generated = source.split("\n");
    const first = generated.findIndex((line, i) => line !== committed[i]);
    assert(
      first < 0 && committed.length === generated.length,
      `${file} differs from what the declarations generate at line ${first + 1} (${
        JSON.stringify(generated[first])
      }): run \`deno task build:wasm\` and commit it`,
    );
  }
  const dir = join(here, "../src/kernels/wasm");
  const typed = readdirSync(dir).filter((f) => f.endsWith(".ts") && f !== "layout.ts").flatMap((f) =>
    readFileSync(join(dir, f), "utf8").split("\n").map((line, i) => ({ f, i, line }))
      .filter(({ line }) => /\barg[IFP]\(args, (\w+ \+ )?\d+\)/.test(line))
      .map(({ f, i, line }) => `${f}:${i + 1}: ${line.trim()}`)
  );
  assertEquals(typed, [], "argument slots typed by hand");
});

test("the build refuses kernels without their twin, and twins without their kernel", async () => {
  const { twins } = await twinDeclarations();
  const wasm = Uint8Array.from(Buffer.from(KERNELS_WASM_BASE64, "base64"));
  checkExports(wasm, twins); // what is shipped matches
  const extra = new Map([...twins, ["conv_transpose", ["conv_transpose"]]]);
  assertThrows(() => checkExports(wasm, extra), /no twin for conv_transpose \(export conv_transpose\)/);
  const fewer = new Map([...twins].filter(([twin]) => twin !== "fill"));
  assertThrows(() => checkExports(wasm, fewer), /Exports without a declared kernel: fill/);
});

test("pointwise twins: uniform-only subexpressions once per dispatch; the generator refuses bad programs", () => {
  const [x, a, b] = [E.value("x"), E.uniform("a"), E.uniform("b")];
  // 1 - a and a / b are the same for every element; x * a is not.
  const hoisted = hoistUniform([E.add(E.mul(E.sub(E.c(1), a), x), E.div(a, b)), E.mul(x, a)]);
  assertEquals([...hoisted.keys()], ["(1.0 - u.a)", "(u.a / u.b)"]);
  const def = (program: Parameters<typeof pointwiseKernel>[0]["program"]) =>
    pointwiseKernel({
      name: "axpb",
      storage: [{ name: "x", access: "read" }, { name: "y", access: "rw" }],
      uniforms: [{ name: "n", type: "u32" }, { name: "a", type: "f32" }],
      program,
    });
  const twin = pointwiseTwin(def({ count: "n", lets: [], stores: [["y", E.add(E.mul(a, x), E.c(2))]] })).join(
    "\n",
  );
  assert(twin.includes("f32x4.add(f32x4.mul(a_x4, x_in), f32x4.splat(<f32>2.0))"), "lane form of a x + 2");
  assert(twin.includes("store<f32>(at(y_ptr, i), ((a * x_in) + <f32>2.0));"), "scalar form of a x + 2");
  assertThrows(
    () => pointwiseTwin(def({ count: "n", lets: [], stores: [["x", a]] })),
    /axpb: it stores to x, which is not a writable binding/,
  );
  assertThrows(
    () => pointwiseTwin(def({ count: "n", lets: [], stores: [["y", E.value("z")]] })),
    /axpb: z is neither a binding nor a let/,
  );
  assertThrows(
    () => pointwiseTwin(def({ count: "a", lets: [], stores: [["y", x]] })),
    /axpb: its count a is not a u32 uniform/,
  );
  assertThrows(() => E.c(0.1), /0.1 is not an exact f32/);
});

test("element-wise twins compute a repeated subexpression once: sigmoid's and silu's one exp per element", async () => {
  const x = E.value("x"), e = E.exp(E.neg(x));
  assertEquals([...repeatedSubexpressions(E.div(e, E.add(E.c(1), e))).keys()], ["(-x)", "exp((-x))"]);
  const maps = (await generatedModules()).find(([file]) =>
    file.endsWith("maps.ts") && !file.endsWith("_kernels.ts")
  );
  const lines = maps![1].split("\n");
  // forward, its lanes, gradient, its lanes: sigmoid's gradient reads y alone, silu's recomputes the logistic
  const exps = (op: string) =>
    lines.filter((line) => line.includes(`if (op == ${op})`)).map((line) =>
      line.match(/expf4?\(/g)?.length ?? 0
    );
  assertEquals(exps("UNARY_SIGMOID"), [1, 1, 0, 0]);
  assertEquals(exps("UNARY_SILU"), [1, 1, 1, 1]);
});

test("the shipped kernels (kernels_wasm.ts) are what their sources build to, byte for byte", async () => {
  const shipped = readFileSync(KERNELS_MODULE, "utf8");
  const expected = kernelsModuleSource(await compileKernels());
  assertEquals(shipped.length, expected.length, "size of kernels_wasm.ts (run `deno task build:wasm`)");
  assert(
    shipped === expected,
    "kernels_wasm.ts differs from a fresh build of src/kernels/wasm: run `deno task build:wasm` and commit it",
  );
});

test("Wasm pool: exact-size reuse without growth, merging on trim, a clear error before the 4 GiB limit", async () => {
  // the 32-bit memory, whose 4 GiB a test can fill (tests/memory64.test.ts has the 64-bit one)
  const engine = await WasmEngine.create({ threads: 2, parallelMinBytes: 0, memory64: false });
  assertEquals(engine.memoryBits, 32);
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
  // One model's buffers, freed, fill the memory to near its limit; another model's sizes then come from
  // their merged space (predicting with several full-size learners in turn), not an error.
  const firstModel = Array.from({ length: 15 }, () => pool.acquire(250 * 2 ** 20));
  for (const pb of firstModel) pool.release(pb);
  const grown = engine.memory.buffer.byteLength;
  const secondModel = Array.from({ length: 5 }, () => pool.acquire(700 * 2 ** 20));
  assertEquals(engine.memory.buffer.byteLength, grown, "the second model's buffers fit in the first's space");
  assertEquals(pool.snapshot().liveBytes, secondModel.reduce((n, pb) => n + pb.capacity, 0));
  for (const pb of secondModel) pool.release(pb);
  // A spec made by hand, not declared: declarations are what the build generates the twins' layouts from.
  const noTwin: KernelSpec = {
    name: "not_a_kernel",
    key: "not_a_kernel",
    code: "",
    wasm: "not_a_kernel",
    storage: ["rw"],
    uniforms: [],
  };
  const pb = pool.acquire(16);
  assertThrows(() => engine.dispatch(noTwin, [pb], [], [1]), /not_a_kernel has no WebAssembly twin/);
});
