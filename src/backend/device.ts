// The backend every tensor lives on: a WebGPU device for Deno (built-in navigator.gpu) and Bun (Dawn through
// bun-webgpu), or the WebAssembly backend (SIMD kernels on worker threads) where no adapter exists or the
// only adapter is a CPU implementation of WebGPU (lavapipe, SwiftShader, WARP), which trains 2-4x slower
// than the WebAssembly backend on the same cores.
import { env, PLATFORM } from "../platform/runtime.ts";
import { type Engine, WebGpuEngine } from "./engine.ts";
import { type ProfileRow, stopProfile } from "./profile.ts";
import { WasmEngine } from "./wasm/engine.ts";

/** The two backends: WebGPU (WGSL kernels) or WebAssembly (SIMD kernels on worker threads). */
export type BackendName = "webgpu" | "wasm";
/** Options of {@link init}. */
export interface InitOptions {
  /**
   * "auto" (the default) picks WebGPU on a GPU, and WebAssembly where no adapter exists or the adapter is a
   * CPU implementation of WebGPU (see {@link cpuAdapterReason}), saying which and why on stderr. "webgpu"
   * uses any adapter, a CPU one too. The environment variable FLANNEL_BACKEND sets the default
   * (`FLANNEL_BACKEND=wasm deno task test`).
   */
  backend?: "auto" | BackendName;
  /** Which adapter WebGPU asks for (default "high-performance"); ignored by the WebAssembly backend. */
  powerPreference?: GPUPowerPreference;
  /** Compute threads of the WebAssembly backend (default: FLANNEL_THREADS, else the machine's cores). */
  threads?: number;
  /**
   * The WebAssembly backend's kernels built with relaxed SIMD, where the engine validates it (default:
   * FLANNEL_FAST_MATH=1, else false): the GEMM's multiply and add may become one fused multiply-add, faster
   * where the CPU has it, but rounded once instead of twice, so results are no longer the same bits in every
   * runtime and on every CPU. Where the engine lacks relaxed SIMD the exact kernels run and
   * `BackendInfo.fastMath` is false. Ignored by WebGPU.
   */
  fastMath?: boolean;
  /**
   * WebGPU's workgroup sums (batch norm's per-channel sums, `sum` over many values) by subgroup operations,
   * where the device offers `subgroups` (default: FLANNEL_SUBGROUPS=1, else false): fewer barriers on a GPU,
   * but the values are added in another order than the kernels of a device without subgroups (Deno's wgpu on
   * the same machine has none), so results match those within float32 rounding, not bit for bit.
   * `BackendInfo.subgroupSums` says whether they run. Ignored by WebAssembly.
   */
  subgroups?: boolean;
  /**
   * The WebAssembly backend's 64-bit memory (16 GiB of tensors instead of 4), where the engine has memory64
   * (Deno; V8 in Node 24 and Chrome 133 on; not Bun): default true unless FLANNEL_WASM_MEMORY64=0. Results
   * are the same bits either way. `BackendInfo.limits.memoryBytes` says how much memory tensors have. Ignored
   * by WebGPU.
   */
  memory64?: boolean;
}
/** The open backend, as {@link init} and {@link backendInfo} report it. */
export interface BackendInfo {
  /** Which backend is in use. */
  backend: BackendName;
  /** Adapter description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)" or "WebAssembly SIMD, 2 threads". */
  adapter: string;
  /** The JavaScript runtime. */
  runtime: "deno" | "bun" | "node" | "browser" | "other";
  /** WebGPU's flag for a software or reduced adapter, where the runtime reports it; false on Wasm. */
  isFallbackAdapter: boolean;
  /** Whether the relaxed-SIMD kernels run (InitOptions.fastMath, on an engine that has relaxed SIMD). */
  fastMath: boolean;
  /** Whether workgroup sums use subgroup operations (InitOptions.subgroups, on a device with `subgroups`). */
  subgroupSums: boolean;
  /** Why this backend: "asked for", or what `auto` found (a GPU, a CPU adapter, no adapter). */
  reason: string;
  /**
   * The device's limits by WebGPU name (e.g. maxStorageBufferBindingSize); on WebAssembly the largest
   * binding, `threads` and `memoryBytes` (the most bytes tensors can hold: about 4 GiB on a 32-bit memory,
   * 16 GiB on a 64-bit one).
   */
  limits: Record<string, number>;
  /**
   * The optional WebGPU features the adapter offers that the library uses (requested with the device):
   * `timestamp-query` (device times in a profile), `shader-f16`, `subgroups`; empty on WebAssembly.
   */
  features: string[];
}

/** The optional features the library asks a WebGPU device for, where the adapter offers them. */
const OPTIONAL_FEATURES = ["timestamp-query", "shader-f16", "subgroups"] as const;

let engine: Engine | null = null;
let info: BackendInfo | null = null;

/** The JavaScript runtime this process runs on. */
export function runtimeName(): BackendInfo["runtime"] {
  const g = globalThis as { Deno?: unknown; Bun?: unknown };
  if (g.Bun !== undefined) return "bun";
  if (g.Deno !== undefined) return "deno";
  // Deno and Bun set process.versions.node too (their Node compatibility), hence last.
  const node = (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node;
  if (node !== undefined) return "node";
  return PLATFORM === "browser" ? "browser" : "other";
}

const INSTALL_HINT =
  "Install a WebGPU adapter: a GPU driver with Vulkan, Metal or D3D12, or on Linux without a GPU " +
  "Mesa's software Vulkan driver lavapipe (Debian: `apt-get install -t bookworm-backports mesa-vulkan-drivers`; " +
  "./setup.sh does it)";

async function gpuFor(runtime: BackendInfo["runtime"]): Promise<GPU> {
  if (runtime === "bun") {
    // A computed specifier keeps this Bun-only package out of what Deno resolves.
    const specifier = "bun-webgpu";
    let mod: { setupGlobals: () => void };
    try {
      mod = await import(specifier);
    } catch (err) {
      throw new Error(
        `Bun has no built-in WebGPU and the package bun-webgpu could not be loaded (${
          (err as Error).message
        }). ` +
          "Run `bun install` in the project (./setup.sh does it).",
      );
    }
    mod.setupGlobals();
  }
  const gpu = (globalThis.navigator as Navigator & { gpu?: GPU })?.gpu;
  if (!gpu) {
    throw new Error(
      `This runtime (${runtime}) exposes no navigator.gpu. Use Deno 2 or Bun with bun-webgpu (Node.js has no WebGPU: use the WebAssembly backend there).`,
    );
  }
  return gpu;
}

function limitsRecord(limits: GPUSupportedLimits): Record<string, number> {
  const out: Record<string, number> = {};
  // Limits are getters on the prototype in Deno and plain fields in Bun: for..in sees both.
  for (const key in limits) {
    const v = (limits as unknown as Record<string, unknown>)[key];
    if (typeof v === "number" && key !== "nextInChain") out[key] = v;
  }
  return out;
}

/**
 * Opens the backend; calling it again returns the same one (asking for another kind then is an error).
 * WebGPU opens the device with the adapter's maximum limits (storage bindings of 128 MiB and more instead
 * of the default 128 MiB / 8 buffers).
 */
export async function init(options: InitOptions = {}): Promise<BackendInfo> {
  const wanted = options.backend ?? (env("FLANNEL_BACKEND") || "auto");
  if (wanted !== "auto" && wanted !== "webgpu" && wanted !== "wasm") {
    throw new Error(`Unknown backend ${JSON.stringify(wanted)}: expected "auto", "webgpu" or "wasm".`);
  }
  if (info) {
    if (wanted !== "auto" && wanted !== info.backend) {
      throw new Error(`The ${info.backend} backend is already open; a process uses one backend.`);
    }
    return info;
  }
  const runtime = runtimeName();
  if (wanted === "wasm") return await initWasm(runtime, options, "asked for");
  let adapter: GPUAdapter;
  try {
    adapter = await requestAdapter(runtime, options);
  } catch (err) {
    if (wanted === "webgpu") throw err;
    const reason = `no WebGPU (${(err as Error).message.split(". ")[0]})`;
    console.error(`flannel: ${reason}; using the WebAssembly backend`);
    return await initWasm(runtime, options, reason);
  }
  const onCpu = cpuAdapterReason(adapter.info);
  if (wanted === "auto" && onCpu) {
    const reason = `the WebGPU adapter ${onCpu}: the WebAssembly backend is faster on CPUs`;
    console.error(
      `flannel: ${reason}; using it (--backend webgpu or FLANNEL_BACKEND=webgpu uses the adapter)`,
    );
    return await initWasm(runtime, options, reason);
  }
  const opened = await initWebGpu(
    runtime,
    adapter,
    wanted === "webgpu" ? "asked for" : "a GPU adapter",
    options.subgroups ?? env("FLANNEL_SUBGROUPS") === "1",
  );
  if (wanted === "auto") console.error(`flannel: using WebGPU on ${opened.adapter} (a GPU)`);
  return opened;
}

/** What WebGPU says of an adapter (GPUAdapterInfo, with the fallback flag where the runtime reports it). */
export interface AdapterDescription {
  /** Vendor, e.g. "mesa", "nvidia", "google". */
  vendor?: string;
  /** Architecture, e.g. "turing"; often empty. */
  architecture?: string;
  /** Device, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)" or "swiftshader". */
  device?: string;
  /** Free-form description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)" (Deno) or "llvmpipe: Mesa 25.0.7" (Bun). */
  description?: string;
  /** WebGPU's flag for an adapter with reduced performance, typically a software one. */
  isFallbackAdapter?: boolean;
}

/** Names of WebGPU implementations that run on the CPU: Mesa's llvmpipe/lavapipe and softpipe, Google's
 * SwiftShader, Microsoft's WARP ("Basic Render Driver"). */
const CPU_ADAPTER = /\b(llvmpipe|lavapipe|softpipe|swiftshader|basic render driver|warp)\b/i;

/** Every name an adapter reports, in one string (what the CPU and SwiftShader checks search). */
function adapterText(adapter: AdapterDescription): string {
  return [adapter.vendor, adapter.architecture, adapter.device, adapter.description].join(" ");
}

/**
 * Why an adapter computes on the CPU ("is llvmpipe, a CPU implementation", "is a fallback adapter"), or null
 * for a GPU. `init({ backend: "auto" })` passes over such an adapter for the WebAssembly backend.
 */
export function cpuAdapterReason(adapter: AdapterDescription): string | null {
  const name = CPU_ADAPTER.exec(adapterText(adapter));
  if (name) return `is ${name[1].toLowerCase()}, a CPU implementation`;
  // Dawn (Bun) reports lavapipe's architecture as "software".
  if (adapter.architecture === "software") return "is a software implementation";
  if (adapter.isFallbackAdapter) return "is a fallback adapter (software)";
  return null;
}

async function initWasm(
  runtime: BackendInfo["runtime"],
  options: InitOptions,
  reason: string,
): Promise<BackendInfo> {
  const fromEnv = (name: string) => {
    const v = env(name);
    if (v === undefined || v === "") return undefined;
    if (!/^\d+$/.test(v)) throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(v)}`);
    return Number(v);
  };
  const fastMath = options.fastMath ?? env("FLANNEL_FAST_MATH") === "1";
  const wasm = await WasmEngine.create({
    threads: options.threads ?? fromEnv("FLANNEL_THREADS"),
    // FLANNEL_WASM_SPLIT_BYTES=0 splits every kernel over all threads (tests/both.ts uses it).
    parallelMinBytes: fromEnv("FLANNEL_WASM_SPLIT_BYTES"),
    fastMath,
    memory64: options.memory64 ?? env("FLANNEL_WASM_MEMORY64") !== "0",
  });
  if (fastMath && !wasm.fastMath) {
    console.error("flannel: fastMath: this engine has no relaxed SIMD; running the exact kernels");
  }
  engine = wasm;
  info = {
    backend: "wasm",
    adapter: `WebAssembly ${wasm.fastMath ? "relaxed SIMD (fastMath)" : "SIMD"}, ${wasm.threads} thread${
      wasm.threads === 1 ? "" : "s"
    }${wasm.memoryBits === 64 ? ", 64-bit memory" : ""}`,
    runtime,
    isFallbackAdapter: false,
    fastMath: wasm.fastMath,
    subgroupSums: false,
    reason,
    limits: {
      maxStorageBufferBindingSize: wasm.maxStorageBinding,
      threads: wasm.threads,
      memoryBytes: wasm.pool.limitBytes,
    },
    features: [],
  };
  return info;
}

async function requestAdapter(runtime: BackendInfo["runtime"], options: InitOptions): Promise<GPUAdapter> {
  const gpu = await gpuFor(runtime);
  const adapter = await gpu.requestAdapter({
    powerPreference: options.powerPreference ?? "high-performance",
  });
  if (!adapter) throw new Error(`No WebGPU adapter was found. ${INSTALL_HINT}.`);
  const adapterInfo = adapter.info;
  // Dawn without any driver (no Vulkan ICD) offers its "null" backend, whose kernels never run: every
  // result would silently be zeros.
  if (adapterInfo.device === "null-backend" || adapterInfo.description === "null-backend") {
    throw new Error(
      `No WebGPU adapter was found (Dawn offered only its null backend, which computes nothing). ${INSTALL_HINT}.`,
    );
  }
  return adapter;
}

async function initWebGpu(
  runtime: BackendInfo["runtime"],
  adapter: GPUAdapter,
  reason: string,
  subgroupSums: boolean,
): Promise<BackendInfo> {
  const adapterInfo = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const limits = limitsRecord(adapter.limits);
  // Every limit is asked for explicitly: Dawn otherwise packs its defaults, some of which exceed what
  // lavapipe reports (e.g. storage buffers in fragment stages) and the request fails.
  const features = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f));
  const device = await adapter.requestDevice({ requiredLimits: limits, requiredFeatures: features });
  engine = new WebGpuEngine(
    device,
    cpuAdapterReason(adapterInfo) !== null,
    /swiftshader/i.test(adapterText(adapterInfo)),
    subgroupSums,
  );
  info = {
    backend: "webgpu",
    adapter: adapterInfo.description ||
      `${adapterInfo.vendor} ${adapterInfo.architecture} ${adapterInfo.device}`.trim(),
    runtime,
    isFallbackAdapter: Boolean(adapterInfo.isFallbackAdapter),
    fastMath: false,
    subgroupSums: engine.subgroupSums,
    reason,
    limits: limitsRecord(device.limits),
    features: OPTIONAL_FEATURES.filter((f) => device.features.has(f)),
  };
  return info;
}

/** The open backend's engine; throws before `init()`. */
export function getEngine(): Engine {
  if (!engine) throw new Error("No backend: call `await fl.init()` before creating tensors.");
  return engine;
}

/**
 * Waits until the device has run everything recorded and the device times of the profiled dispatches are
 * in (WebGPU with `timestamp-query`), then stops the profile and returns its rows (see `stopProfile`).
 */
export async function finishProfile(): Promise<ProfileRow[]> {
  await engine?.deviceTimes();
  return stopProfile();
}

/** What {@link init} opened, or null before it has. */
export function backendInfo(): BackendInfo | null {
  return info;
}
