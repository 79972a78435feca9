// The WebAssembly backend: tensors live in one shared Wasm memory, kernels are the AssemblyScript twins of
// the WGSL ones (src/kernels/wasm, compiled with SIMD), and a job runs on the main thread plus one worker
// per further core, all calling the same export with their thread index. Kernels run when dispatched
// (there is no queue to batch), so a read-back needs no wait.
import {
  type Binding,
  BucketPool,
  bucketSize,
  type Engine,
  type KernelSpec,
  type PooledBuffer,
  splitGrid,
} from "../engine.ts";
import {
  KERNELS_WASM64_BASE64,
  KERNELS_WASM64_FAST_BASE64,
  KERNELS_WASM_BASE64,
  KERNELS_WASM_FAST_BASE64,
} from "./kernels_wasm.ts";
import { CTL, MEMORY64_PAGES } from "./protocol.ts";
import { profiling, recordKernel } from "../profile.ts";
import { computeWorkerMain, type WorkerStart } from "./worker.ts";
import { decodeBase64, startThread, type WorkerThread } from "../../platform/runtime.ts";

const PAGE = 65536;
/** A Wasm32 memory addresses 4 GiB; the pool stops short of it with a clear error. */
export const WASM_MEMORY_LIMIT = 65536 * PAGE;
/** The 64-bit build's memory (memory64, where the engine has it: Deno; V8 in Node 24, Chrome 133 on): 16 GiB. */
export const WASM64_MEMORY_LIMIT = MEMORY64_PAGES * PAGE;
/** Per-thread scratch that kernels may use (GEMM packing panels); src/kernels/wasm/common.ts relies on it. */
export const SCRATCH_PER_THREAD = 1 << 20;
const ARGS_BYTES = 1024;
/** Jobs touching fewer bytes run on the main thread alone: waking a worker costs more than they do. */
export const PARALLEL_MIN_BYTES = 1 << 16;
const ALIGN = 64;

/** A kernel twin: `args` is a number for the 32-bit build, a BigInt (an i64 address) for the 64-bit one. */
type KernelFn = (tid: number, nth: number, args: number | bigint) => void;

/**
 * The linear memory of both builds: 32-bit (every engine) or 64-bit, whose sizes and addresses the JavaScript
 * API takes as BigInts.
 */
class LinearMemory {
  readonly limit: number;
  private constructor(readonly memory: WebAssembly.Memory, readonly bits: 32 | 64) {
    this.limit = bits === 64 ? WASM64_MEMORY_LIMIT : WASM_MEMORY_LIMIT;
  }

  private static create(bits: 32 | 64): LinearMemory {
    const memory = bits === 64
      ? new WebAssembly.Memory(
        {
          initial: 1n,
          maximum: BigInt(MEMORY64_PAGES),
          shared: true,
          address: "i64",
        } as unknown as WebAssembly.MemoryDescriptor,
      )
      : new WebAssembly.Memory({ initial: 1, maximum: 65536, shared: true });
    return new LinearMemory(memory, bits);
  }

  /**
   * The 64-bit memory where it is wanted and this engine has memory64 (it validates the 64-bit build and makes
   * the memory), else the 32-bit one.
   */
  static open(want64: boolean, build64: Uint8Array<ArrayBuffer>): LinearMemory {
    if (want64 && WebAssembly.validate(build64)) {
      try {
        return LinearMemory.create(64);
      } catch {
        // an engine without memory64 refuses the BigInt sizes or the "address" field
      }
    }
    return LinearMemory.create(32);
  }

  get bytes(): number {
    return this.memory.buffer.byteLength;
  }

  grow(pages: number): void {
    this.memory.grow((this.bits === 64 ? BigInt(pages) : pages) as number);
  }

  /** An address as a kernel's `usize` argument. */
  pointer(address: number): number | bigint {
    return this.bits === 64 ? BigInt(address) : address;
  }
}

/** The byte address behind a buffer of the Wasm pool (ops hand the engine neutral handles). */
function address(pb: PooledBuffer): number {
  return pb.handle as number;
}

/**
 * Blocks of the linear memory: exact-size free lists per pool bucket (a training loop asks for the same
 * sizes every step, so it stops growing after the first), then first fit from coalesced spare blocks,
 * then the top of the heap, growing the memory; at the 4 GiB limit, the free lists merged into spare blocks.
 */
class WasmPool extends BucketPool<number> {
  /** Address-ordered free blocks that no bucket list holds (after trim). */
  private spare: { ptr: number; size: number }[] = [];

  /** Where the pool's blocks begin: below lie the scratch and argument areas. */
  private readonly base: number;

  /** `onGrow` runs after the memory grew (views over the old buffer end short of the new space). */
  constructor(private memory: LinearMemory, private top: number, private onGrow: () => void) {
    super();
    this.base = top;
  }

  override get limitBytes(): number {
    return this.memory.limit - this.base;
  }

  protected capacityFor(bytes: number): number {
    return Math.ceil(bucketSize(bytes) / ALIGN) * ALIGN;
  }

  protected create(capacity: number): number {
    return this.carve(capacity);
  }

  private carve(size: number): number {
    const spare = this.takeSpare(size);
    if (spare !== null) return spare;
    if (this.top + size > this.memory.limit) {
      // The free lists may hold blocks of other sizes (another model's, run before this one): merged, they
      // may hold this one. Only then is the memory full.
      this.trim();
      const merged = this.takeSpare(size);
      if (merged !== null) return merged;
    }
    const ptr = this.top;
    if (ptr + size > this.memory.limit) {
      throw new Error(
        `WebAssembly backend: a tensor of ${size} bytes does not fit: ${this.liveBytes} bytes are live and ` +
          (this.memory.bits === 64
            ? "the 64-bit memory holds at most 16 GiB. "
            : "a Wasm32 memory addresses at most 4 GiB (a 64-bit one is off, or not in this engine). ") +
          "Use a smaller batch or model, accumulate gradients over micro-batches, or the WebGPU backend.",
      );
    }
    const have = this.memory.bytes;
    if (ptr + size > have) {
      this.memory.grow(Math.ceil((ptr + size - have) / PAGE));
      this.onGrow();
    }
    this.top = ptr + size;
    return ptr;
  }

  /** First fit of `size` bytes among the spare blocks, or null. */
  private takeSpare(size: number): number | null {
    const i = this.spare.findIndex((b) => b.size >= size);
    if (i < 0) return null;
    const b = this.spare[i];
    const ptr = b.ptr;
    if (b.size === size) this.spare.splice(i, 1);
    else (b.ptr += size, b.size -= size);
    return ptr;
  }

  /**
   * Merges every free block with its free neighbours (a Wasm memory cannot shrink, but merged space can
   * hold tensors of other sizes) and lowers the top over free space at the end.
   */
  trim(): void {
    const blocks = [...this.spare, ...this.drainFree().map((pb) => ({ ptr: pb.handle, size: pb.capacity }))];
    blocks.sort((a, b) => a.ptr - b.ptr);
    const merged: { ptr: number; size: number }[] = [];
    for (const b of blocks) {
      const last = merged[merged.length - 1];
      if (last && last.ptr + last.size === b.ptr) last.size += b.size;
      else merged.push({ ...b });
    }
    const last = merged[merged.length - 1];
    if (last && last.ptr + last.size === this.top) {
      this.top = last.ptr;
      merged.pop();
    }
    this.spare = merged;
  }
}

export interface WasmEngineOptions {
  /** Compute threads including the main thread; defaults to the machine's cores. */
  threads?: number;
  /**
   * Jobs binding fewer bytes run on the main thread alone (default PARALLEL_MIN_BYTES); 0 splits every
   * job over all threads, which the test suite uses to check that results do not depend on the split.
   */
  parallelMinBytes?: number;
  /**
   * Run the relaxed-SIMD build of the kernels (the GEMM's multiply-adds may be fused) where the engine
   * validates it; `fastMath` on the engine says whether it does.
   */
  fastMath?: boolean;
  /**
   * A 64-bit memory (16 GiB instead of 4) where the engine has memory64 (default true: it is used where
   * available); false keeps the 32-bit build everywhere. `memoryBits` on the engine says which runs.
   */
  memory64?: boolean;
}

export class WasmEngine implements Engine {
  readonly kind = "wasm" as const;
  /** Always true: the kernels are the CPU's. */
  readonly onCpu = true;
  /** WebAssembly has no subgroups: its twins sum in order. */
  readonly subgroups = false;
  /** The twins are written for float32: no float16 tensors here. */
  readonly halfStorage = false;
  readonly subgroupSums = false;
  readonly narrowTiles = false;
  readonly pool: WasmPool;
  // Twins index with 32-bit integers: one binding stays under 2 GiB (larger tensors go element-wise in chunks).
  readonly maxStorageBinding = 2 ** 31 - 64;
  readonly minStorageOffsetAlignment = ALIGN;
  readonly maxWorkgroupsPerDim = 65535;
  readonly pipelineCount = 0;
  submits = 0;
  dispatches = 0;
  private views: { u8: Uint8Array; i32: Int32Array; u32: Uint32Array; f32: Float32Array } | null = null;
  private ctl: Int32Array;
  private fnIndex: Map<string, number>;
  private fns: KernelFn[];

  /** The argument block's address as the kernels take it. */
  private argsArg: number | bigint;

  /** The linear memory all tensors live in (it grows, never shrinks). */
  get memory(): WebAssembly.Memory {
    return this.linear.memory;
  }

  /** 64 where the 64-bit build runs (16 GiB of memory), else 32 (4 GiB). */
  get memoryBits(): 32 | 64 {
    return this.linear.bits;
  }

  private constructor(
    private linear: LinearMemory,
    names: string[],
    exports: WebAssembly.Exports,
    private workers: WorkerThread[],
    readonly threads: number,
    /** Whether the relaxed-SIMD build runs (asked for with fastMath, and validated by this engine). */
    readonly fastMath: boolean,
    private ctlPtr: number,
    private argsPtr: number,
    private scratchPtr: number,
    heapStart: number,
    private parallelMinBytes: number,
  ) {
    this.pool = new WasmPool(linear, heapStart, () => (this.views = null));
    this.ctl = new Int32Array(linear.memory.buffer, ctlPtr, CTL.SLOTS);
    this.argsArg = linear.pointer(argsPtr);
    this.fnIndex = new Map(names.map((n, i) => [n, i]));
    this.fns = names.map((n) => exports[n] as KernelFn);
  }

  /**
   * Compiles the kernels (shipped in kernels_wasm.ts) and starts the worker threads. Where memory cannot be
   * shared with threads (a page that is not cross-origin isolated has no SharedArrayBuffer) it runs on one.
   */
  static async create(options: WasmEngineOptions = {}): Promise<WasmEngine> {
    if (typeof WebAssembly === "undefined") {
      throw new Error("The WebAssembly backend needs WebAssembly in this runtime.");
    }
    const exact64 = decodeBase64(KERNELS_WASM64_BASE64);
    const linear = LinearMemory.open(options.memory64 !== false, exact64);
    const bits = linear.bits;
    const fastBytes = options.fastMath
      ? decodeBase64(bits === 64 ? KERNELS_WASM64_FAST_BASE64 : KERNELS_WASM_FAST_BASE64)
      : null;
    const fastMath = fastBytes !== null && WebAssembly.validate(fastBytes);
    const exact = bits === 64 ? exact64 : decodeBase64(KERNELS_WASM_BASE64);
    const module = new WebAssembly.Module(fastMath ? fastBytes : exact);
    const cores =
      (globalThis.navigator as { hardwareConcurrency?: number } | undefined)?.hardwareConcurrency ?? 1;
    const threads = typeof SharedArrayBuffer === "undefined"
      ? 1
      : Math.max(1, Math.floor(options.threads ?? cores));
    const memory = linear.memory;
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    const heapBase = Number((instance.exports.heap_base as () => number | bigint)());
    const ctlPtr = Math.ceil(heapBase / ALIGN) * ALIGN;
    const argsPtr = ctlPtr + ALIGN;
    const scratchPtr = argsPtr + ARGS_BYTES;
    const heapStart = scratchPtr + threads * SCRATCH_PER_THREAD;
    linear.grow(Math.ceil(heapStart / PAGE) - linear.bytes / PAGE);
    const names = WebAssembly.Module.exports(module).filter((e) => e.kind === "function").map((e) => e.name);
    const workers: WorkerThread[] = [];
    try {
      for (let tid = 1; tid < threads; tid++) {
        const worker = startThread(computeWorkerMain);
        workers.push(worker);
        await new Promise<void>((resolve, reject) => {
          worker.once("message", () => resolve());
          worker.once("error", (message) => {
            reject(new Error(`WebAssembly backend: compute worker ${tid} failed to start: ${message}`));
          });
          worker.post(
            { module, memory, memoryBits: bits, names, tid, ctlPtr, ctl: CTL } satisfies WorkerStart,
          );
        });
        worker.unref();
      }
    } catch (err) {
      for (const w of workers) w.terminate();
      throw err;
    }
    return new WasmEngine(
      linear,
      names,
      instance.exports,
      workers,
      threads,
      fastMath,
      ctlPtr,
      argsPtr,
      scratchPtr,
      heapStart,
      options.parallelMinBytes ?? PARALLEL_MIN_BYTES,
    );
  }

  /** Views over the whole memory, remade only after the pool grew it. */
  private get mem() {
    if (!this.views) {
      const buf = this.linear.memory.buffer;
      this.views = {
        u8: new Uint8Array(buf),
        i32: new Int32Array(buf),
        u32: new Uint32Array(buf),
        f32: new Float32Array(buf),
      };
    }
    return this.views;
  }

  dispatch(
    spec: KernelSpec,
    buffers: Binding[],
    params: number[],
    workgroups: [number, number?, number?],
    label?: string,
  ): void {
    const name = spec.name;
    if (buffers.length !== spec.storage.length) {
      throw new Error(`kernel ${name}: ${buffers.length} buffers bound, ${spec.storage.length} declared`);
    }
    if (params.length !== spec.uniforms.length) {
      throw new Error(`kernel ${name}: ${params.length} uniforms given, ${spec.uniforms.length} declared`);
    }
    const index = spec.wasm === undefined ? undefined : this.fnIndex.get(spec.wasm);
    if (index === undefined) {
      throw new Error(`kernel ${name} has no WebAssembly twin (export "${spec.wasm}")`);
    }
    const [x, y = 1, z = 1] = workgroups;
    if (x === 0 || y === 0 || z === 0) return;
    // The argument block: binding addresses / 4, uniforms, the WGSL grid, the scratch base / 4 (common.ts).
    const { i32, u32, f32 } = this.mem;
    let slot = this.argsPtr >> 2;
    let bytes = 0;
    for (const b of buffers) {
      const pb = "pb" in b ? b.pb : b;
      if (!("pb" in b) && pb.bytes > this.maxStorageBinding) {
        throw new Error(
          `${name}: a tensor of ${pb.bytes} bytes exceeds one binding; this op does not split such tensors`,
        );
      }
      u32[slot++] = (address(pb) + ("pb" in b ? b.offset : 0)) / 4;
      bytes += "pb" in b ? b.size : pb.bytes;
    }
    spec.uniforms.forEach((t, i) => {
      if (t === "f32") f32[slot++] = params[i];
      else i32[slot++] = params[i] | 0;
    });
    i32[slot++] = x;
    i32[slot++] = y;
    i32[slot++] = z;
    u32[slot++] = this.scratchPtr / 4;
    const nth = bytes >= this.parallelMinBytes ? this.threads : 1;
    if (profiling()) {
      const t0 = performance.now();
      this.run(index, nth, spec);
      recordKernel(label ?? name, performance.now() - t0);
    } else this.run(index, nth, spec);
    this.dispatches++;
  }

  private run(index: number, nth: number, spec: KernelSpec): void {
    const fn = this.fns[index];
    if (nth === 1 || this.workers.length === 0) {
      fn(0, 1, this.argsArg);
      return;
    }
    const ctl = this.ctl;
    ctl[CTL.FN] = index;
    ctl[CTL.ARGS] = this.argsPtr;
    ctl[CTL.NTH] = nth;
    ctl[CTL.ERROR] = 0;
    Atomics.store(ctl, CTL.DONE, 0);
    Atomics.add(ctl, CTL.GEN, 1);
    Atomics.notify(ctl, CTL.GEN);
    let failure: unknown = null;
    try {
      fn(0, nth, this.argsArg);
    } catch (err) {
      failure = err;
    }
    // Every worker acknowledges every job, so none can mistake the next job's fields for this one's.
    for (
      let done = Atomics.load(ctl, CTL.DONE);
      done < this.workers.length;
      done = Atomics.load(ctl, CTL.DONE)
    ) {
      Atomics.wait(ctl, CTL.DONE, done);
    }
    if (failure) throw failure;
    if (ctl[CTL.ERROR]) {
      throw new Error(`WebAssembly kernel ${spec.name} trapped in compute thread ${ctl[CTL.ERROR]}`);
    }
  }

  /** One dispatch: a binding covers up to 2 GiB here (a larger tensor is refused by dispatch). */
  dispatchElements(spec: KernelSpec, buffers: PooledBuffer[], params: number[], n: number): void {
    this.dispatch(spec, buffers, params, this.grid(Math.ceil(n / 256)));
  }

  copy(src: PooledBuffer, srcOffset: number, dst: PooledBuffer, dstOffset: number, bytes: number): void {
    if (bytes === 0) return;
    const at = address(src) + srcOffset;
    this.mem.u8.copyWithin(address(dst) + dstOffset, at, at + bytes);
  }

  write(pb: PooledBuffer, byteOffset: number, data: ArrayBufferView): void {
    this.mem.u8.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), address(pb) + byteOffset);
  }

  read(pb: PooledBuffer, byteOffset: number, bytes: number): Promise<ArrayBuffer> {
    const at = address(pb) + byteOffset;
    return Promise.resolve(this.mem.u8.slice(at, at + bytes).buffer);
  }

  flush(): void {}

  sync(): Promise<void> {
    return Promise.resolve();
  }

  /** Kernels are timed as they run here: nothing to wait for. */
  deviceTimes(): Promise<void> {
    return Promise.resolve();
  }

  trimPool(): void {
    this.pool.trim();
  }

  grid(workgroups: number): [number, number] {
    return splitGrid(workgroups, this.maxWorkgroupsPerDim);
  }
}
