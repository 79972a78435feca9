// The device side of every tensor: a size-bucketed buffer pool, a pipeline cache, and dispatches recorded
// into one compute pass and submitted together (a submit is paid once per batch, not per op).

import { type ProfileRow, profiling, recordKernel } from "./profile.ts";
import { halfPrecisionWgsl } from "./half.ts";

/** How a kernel reads a storage binding. */
export type Access = "read" | "rw";
/** The WGSL type of one 4-byte uniform field. */
export type ScalarType = "f32" | "u32" | "i32";

/** A compiled-once kernel as engines dispatch it: WGSL source, its WebAssembly twin and its bindings. */
export interface KernelSpec {
  /** The kernel's name, for messages. */
  name: string;
  /** Unique per WGSL source: the pipeline cache key. */
  key: string;
  /** WGSL source; empty for a kernel that exists only on the WebAssembly backend. */
  code: string;
  /**
   * The WebAssembly export that computes the same thing from the same bindings and uniforms (see
   * src/kernels/wasm/common.ts); absent for a kernel that exists only on WebGPU.
   */
  wasm?: string;
  /** Access of each storage binding, in @binding order. */
  storage: Access[];
  /** Uniform fields in declaration order; every field is one 4-byte scalar, so no WGSL padding applies. */
  uniforms: ScalarType[];
}

/**
 * A device buffer and the bookkeeping that makes reuse safe. Ops and tensors see it as a neutral handle;
 * only its backend reads `handle` (a GPUBuffer on WebGPU, a byte address in the memory on WebAssembly).
 */
export interface PooledBuffer<H = unknown> {
  /** Unique per device buffer: part of the bind-group cache key. */
  id: number;
  /** The backend's storage: a GPUBuffer (WebGPU) or a byte address in the Wasm memory (WebAssembly). */
  handle: H;
  /** Bytes allocated: the pool bucket of the first request. */
  capacity: number;
  /** Bytes the current owner asked for (<= capacity). */
  bytes: number;
  /** WebGPU: the batch that last recorded a command on it; a CPU write must wait until it is submitted. */
  lastBatch: number;
  /**
   * Whether its owner holds float16 elements (two bytes each): kernels bound to it then run their half
   * precision variant (src/backend/half.ts). Reset to false by every acquire; set by the tensor.
   */
  half?: boolean;
}

const UNIFORM_SLOT = 256; // >= minUniformBufferOffsetAlignment on every adapter
const UNIFORM_SLOTS = 1024;
const MAX_PENDING_DISPATCHES = 1024;
const STORAGE_USAGE = 0x80 /* STORAGE */ | 0x04 /* COPY_SRC */ | 0x08; /* COPY_DST */
const MAP_READ_USAGE = 0x01 /* MAP_READ */ | 0x08; /* COPY_DST */
const UNIFORM_USAGE = 0x40 /* UNIFORM */ | 0x08; /* COPY_DST */
const QUERY_RESOLVE_USAGE = 0x200 /* QUERY_RESOLVE */ | 0x04; /* COPY_SRC */
/** Batches of timestamps kept for {@link WebGpuEngine.deviceTimes} before the oldest go. */
const MAX_UNREAD_TIME_BATCHES = 256;

/** One query set's timestamps: the rows they belong to, and where they wait to be read. */
interface UnreadTimes {
  rows: ProfileRow[];
  readback: GPUBuffer;
  querySet: GPUQuerySet;
}

/** Rounds a request up to its pool bucket, so freed buffers fit later requests of about the same size. */
export function bucketSize(bytes: number): number {
  const min = 256;
  if (bytes <= min) return min;
  if (bytes <= 1 << 20) return 2 ** Math.ceil(Math.log2(bytes));
  // Powers of two up to 1 MiB; above, steps of an eighth of the power of two below (waste under 12.5%).
  const step = 2 ** (Math.floor(Math.log2(bytes)) - 3);
  return Math.ceil(bytes / step) * step;
}

/**
 * The device buffer pool's accounting, as `fl.poolStats()` reports it: memory held by live tensors and
 * memory kept free for reuse (freed only by `fl.trimPool()`).
 */
export interface PoolStats {
  /** Bytes held by live tensors (bucket capacity). */
  liveBytes: number;
  /** Buffers held by live tensors (views of one buffer count once). */
  liveBuffers: number;
  /** Bytes kept free in the pool for reuse. */
  pooledBytes: number;
  /** Buffers kept free in the pool for reuse. */
  pooledBuffers: number;
  /** Buffers ever created on the device. */
  created: number;
  /** The most bytes live tensors held at once since the pool began or since `fl.resetPoolPeak()`. */
  peakLiveBytes: number;
  /**
   * The most bytes live tensors can hold: the WebAssembly memory's addressable space less what the
   * engine reserves; Infinity on WebGPU, whose adapters do not say how much memory they have.
   */
  limitBytes: number;
}

/**
 * Exact-size free lists per pool bucket and their accounting, shared by both backends; a subclass says how
 * big a bucket is and how a new block is made (a WebGPU buffer, or a range of the Wasm memory).
 */
export abstract class BucketPool<H = unknown> {
  private free = new Map<number, PooledBuffer<H>[]>();
  private nextId = 0;
  private stats = {
    liveBytes: 0,
    liveBuffers: 0,
    pooledBytes: 0,
    pooledBuffers: 0,
    created: 0,
    peakLiveBytes: 0,
  };

  /** See {@link PoolStats.limitBytes}. */
  get limitBytes(): number {
    return Infinity;
  }

  protected abstract capacityFor(bytes: number): number;
  protected abstract create(capacity: number): H;

  /** A buffer of at least `bytes`: a free one of the same bucket, else a new one. */
  acquire(bytes: number): PooledBuffer<H> {
    const capacity = this.capacityFor(bytes);
    let pb = this.free.get(capacity)?.pop();
    if (pb) {
      this.stats.pooledBytes -= capacity;
      this.stats.pooledBuffers--;
    } else {
      pb = { id: ++this.nextId, handle: this.create(capacity), capacity, bytes, lastBatch: -1 };
      this.stats.created++;
    }
    pb.bytes = bytes;
    pb.half = false;
    this.stats.liveBytes += capacity;
    this.stats.peakLiveBytes = Math.max(this.stats.peakLiveBytes, this.stats.liveBytes);
    this.stats.liveBuffers++;
    return pb;
  }

  /** Returns a buffer to its bucket's free list for reuse (nothing is freed on the device). */
  release(pb: PooledBuffer<H>): void {
    this.stats.liveBytes -= pb.capacity;
    this.stats.liveBuffers--;
    this.stats.pooledBytes += pb.capacity;
    this.stats.pooledBuffers++;
    let list = this.free.get(pb.capacity);
    if (!list) this.free.set(pb.capacity, list = []);
    list.push(pb);
  }

  /** Empties the free lists and returns what they held (for the subclass's trim). */
  protected drainFree(): PooledBuffer<H>[] {
    const all = [...this.free.values()].flat();
    this.free.clear();
    this.stats.pooledBytes = 0;
    this.stats.pooledBuffers = 0;
    return all;
  }

  /** Bytes held by live tensors. */
  get liveBytes(): number {
    return this.stats.liveBytes;
  }

  /** Starts the peak over from the bytes live now. */
  resetPeak(): void {
    this.stats.peakLiveBytes = this.stats.liveBytes;
  }

  /** A copy of the current accounting. */
  snapshot(): PoolStats {
    return { ...this.stats, limitBytes: this.limitBytes };
  }
}

/** The GPUBuffer behind a buffer of the WebGPU pool (ops hand the engine neutral handles). */
function gpuBuffer(pb: PooledBuffer): GPUBuffer {
  return pb.handle as GPUBuffer;
}

/** The WebGPU pool: buckets from {@link bucketSize}, blocks are storage buffers of the device. */
export class BufferPool extends BucketPool<GPUBuffer> {
  /** Throws on requests whose bucket exceeds `maxBufferSize` (the adapter's limit). */
  constructor(private device: GPUDevice, private maxBufferSize: number) {
    super();
  }

  protected capacityFor(bytes: number): number {
    const capacity = bucketSize(bytes);
    if (capacity > this.maxBufferSize) {
      throw new Error(
        `A tensor of ${bytes} bytes exceeds this adapter's maxBufferSize (${this.maxBufferSize} bytes).`,
      );
    }
    return capacity;
  }

  protected create(capacity: number): GPUBuffer {
    return this.device.createBuffer({ size: capacity, usage: STORAGE_USAGE });
  }

  /** Gives every free buffer back to the device. */
  trim(): void {
    for (const pb of this.drainFree()) pb.handle.destroy();
  }
}

/** Splits `n` workgroups over x and y so no dimension passes `maxPerDim`. */
export function splitGrid(workgroups: number, maxPerDim: number): [number, number] {
  if (workgroups <= maxPerDim) return [workgroups, 1];
  const y = Math.ceil(workgroups / maxPerDim);
  return [Math.ceil(workgroups / y), y];
}

/** A bound buffer: the whole buffer or a byte range of it. */
export type Binding = PooledBuffer | { pb: PooledBuffer; offset: number; size: number };

/** What tensors and ops need of a backend; WebGPU (below) and WebAssembly (wasm/engine.ts) provide it. */
export interface Engine {
  /** Which backend this is. */
  readonly kind: "webgpu" | "wasm";
  /** The buffer pool every tensor allocates from. */
  readonly pool: BucketPool;
  /** Largest byte range one kernel binding may cover. */
  readonly maxStorageBinding: number;
  /** Alignment, in bytes, of a binding's byte offset into a buffer. */
  readonly minStorageOffsetAlignment: number;
  /** Largest workgroup count along one grid dimension. */
  readonly maxWorkgroupsPerDim: number;
  /** Whether kernels run on the CPU (the WebAssembly backend, or a CPU implementation of WebGPU). */
  readonly onCpu: boolean;
  /** Whether the device offers subgroup operations (WebGPU's `subgroups` feature). */
  readonly subgroups: boolean;
  /** Whether workgroup sums use them unless a caller says otherwise (src/kernels/group_sum.ts). */
  readonly subgroupSums: boolean;
  /** Whether float16 tensors can be stored: WebGPU with `shader-f16` (src/backend/half.ts). */
  readonly halfStorage: boolean;
  /**
   * Whether GEMM kernels keep to one vec4 column group per thread because the compiler is slow on two:
   * SwiftShader (Chromium's CPU WebGPU) took 21-28 s per convolution kernel with two, 0.4 s with one.
   */
  readonly narrowTiles: boolean;
  /** Kernels compiled so far. */
  readonly pipelineCount: number;
  /** Batches submitted so far (always 0 on WebAssembly, which has no submits). */
  submits: number;
  /** Kernels dispatched so far. */
  dispatches: number;
  /**
   * Runs (WebGPU: records) one kernel. `buffers[i]` binds at @binding(i) as a whole buffer or as the given
   * byte range; `params` fill the uniforms; `workgroups` is the WGSL grid (the Wasm twin sees it too).
   * `label` names the kernel in a profile where its name alone would not say what it computes.
   */
  dispatch(
    spec: KernelSpec,
    buffers: Binding[],
    params: number[],
    workgroups: [number, number?, number?],
    label?: string,
  ): void;
  /**
   * Runs a kernel with one thread per element over `n` elements (its first uniform is `n`). Where a buffer
   * passes this backend's binding limit, the backend runs the kernel in chunks, which needs every buffer to
   * hold `n` elements (an element-wise kernel); `baseParam` names the uniform that receives a chunk's first
   * index (the RNG's counter).
   */
  dispatchElements(
    spec: KernelSpec,
    buffers: PooledBuffer[],
    params: number[],
    n: number,
    baseParam?: number,
  ): void;
  /** Copies bytes between buffers in order with the kernels. */
  copy(src: PooledBuffer, srcOffset: number, dst: PooledBuffer, dstOffset: number, bytes: number): void;
  /** Writes CPU data into a buffer, after every queued kernel that uses it. */
  write(pb: PooledBuffer, byteOffset: number, data: ArrayBufferView): void;
  /** Copies bytes back to the CPU. */
  read(pb: PooledBuffer, byteOffset: number, bytes: number): Promise<ArrayBuffer>;
  /** Submits what is recorded (a no-op where kernels run at once). */
  flush(): void;
  /** Waits until everything queued has run. */
  sync(): Promise<void>;
  /**
   * Waits until everything queued has run and the device times of profiled dispatches have been added to
   * their profile rows (WebGPU with `timestamp-query`; elsewhere the same as {@link sync}).
   */
  deviceTimes(): Promise<void>;
  /** Gives the pool's free memory back. */
  trimPool(): void;
  /** Splits `n` workgroups over x and y within the per-dimension limit. */
  grid(workgroups: number): [number, number];
}

interface CachedPipeline {
  id: number;
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
}

/**
 * Bind groups cannot be destroyed, only garbage-collected, and a GC that lags behind thousands of
 * dispatches a second exhausts lavapipe's descriptor memory (a segfault after ~60k dispatches in Deno and
 * Bun alike). So bind groups are cached by (pipeline, buffers), with the uniform slot as a dynamic offset:
 * a training loop that reuses pooled buffers rebinds the same few groups every step.
 */
const MAX_BIND_GROUPS = 8192;

/**
 * Releases for Bun's WebGPU (bun-webgpu over Dawn), which has no finalizers: a bind group, a compute pass
 * or a command buffer stays alive in Dawn, with everything it references, until released by hand, however
 * long ago its wrapper was collected. A submitted command buffer holds its pass's bind groups, so without these
 * releases no bind group was ever freed, and a process crashed (segfault) after about 60,000 distinct
 * ones. Dawn keeps its own references to what a submitted command buffer uses, so each is released once
 * the engine is done with it: a bind group when it leaves the cache, a pass when it ends, a command
 * buffer when it is submitted. Deno's objects have none of these members (V8 collects them).
 */
const bunRelease = {
  /** bun-webgpu's GPUBindGroup.destroy() releases it (standard WebGPU has no such method). */
  bindGroup: (g: GPUBindGroup) => (g as { destroy?: () => void }).destroy?.(),
  /** Its compute passes have no release of their own (their destroy() throws): the FFI call does it. */
  pass: (p: GPUComputePassEncoder) => {
    const h = p as { lib?: { wgpuComputePassEncoderRelease?: (ptr: unknown) => void }; ptr?: unknown };
    h.lib?.wgpuComputePassEncoderRelease?.(h.ptr);
  },
  /** Its command buffers release through their private _destroy(). */
  commands: (c: GPUCommandBuffer) => (c as { _destroy?: () => void })._destroy?.(),
};

/** The WebGPU engine: one device, its buffer pool, a pipeline and bind-group cache, and batched submits. */
export class WebGpuEngine implements Engine {
  /** Always "webgpu". */
  readonly kind = "webgpu" as const;
  /** Storage buffers of this device, bucketed. */
  readonly pool: BufferPool;
  /** The device's maxStorageBufferBindingSize. */
  readonly maxStorageBinding: number;
  /** The device's minStorageBufferOffsetAlignment. */
  readonly minStorageOffsetAlignment: number;
  /** The device's maxComputeWorkgroupsPerDimension. */
  readonly maxWorkgroupsPerDim: number;
  private pipelines = new Map<string, CachedPipeline>();
  /** Float16 variants of each kernel, by the bindings that hold float16 tensors ("0,2"). */
  private halfSpecs = new Map<KernelSpec, Map<string, KernelSpec>>();
  private bindGroups = new Map<string, GPUBindGroup>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private pending = 0;
  private batch = 0;
  private uniformRing: GPUBuffer;
  private uniformData = new ArrayBuffer(UNIFORM_SLOT * UNIFORM_SLOTS);
  private uniformSlot = 0;
  private stagingFree = new Map<number, GPUBuffer[]>();
  private stagingToDestroy: GPUBuffer[] = [];
  private pendingFlush: Promise<void> | null = null;
  private deviceError: string | null = null;
  private readonly queue: GPUQueue;
  /** Why the device was lost (GPUDevice.lost), once it has been: every later call fails with it. */
  private lostReason: string | null = null;
  /**
   * Called once when the device is lost: the waits on the device in flight (a read, a sync) end with the
   * reason. A set of callbacks, not a race against a promise that never settles while the device lives: each
   * race would leave a reaction on it for good (a leak of ~3.6 KB per training step, found by the soak).
   */
  private readonly onLost = new Set<() => void>();
  /** Submits so far: a measure of batching for tests and benches. */
  submits = 0;
  /** Dispatches recorded so far. */
  dispatches = 0;
  /** Whether the device has `timestamp-query`: a profile then holds each kernel's device time. */
  readonly timestamps: boolean;
  /** Whether the device has `subgroups`. */
  readonly subgroups: boolean;
  /** Whether workgroup sums use subgroups by default (InitOptions.subgroups, where the device has them). */
  readonly subgroupSums: boolean;
  /** Whether the device has `shader-f16`, which float16 tensors need. */
  readonly halfStorage: boolean;
  /**
   * The query set of this batch's timed dispatches, fresh for each batch and big enough for all of them: a
   * batch submitted early because a smaller set was full stalled lavapipe (under Deno) for minutes on its
   * next dispatch, in a training step's second profiled run.
   */
  private querySet: GPUQuerySet | null = null;
  /** The profile rows of this batch's timed dispatches, in the order of their timestamp pairs. */
  private timedRows: ProfileRow[] = [];
  /** Submitted batches' timestamps, not yet read back and added to their rows. */
  private unreadTimes: UnreadTimes[] = [];

  /**
   * Wraps an opened device; its uncaptured errors are rethrown by the next read or sync. `onCpu`: the adapter
   * is a CPU implementation (lavapipe), where kernels without workgroup memory run faster; `narrowTiles`: see
   * {@linkcode Engine.narrowTiles}.
   */
  constructor(
    readonly device: GPUDevice,
    readonly onCpu: boolean,
    readonly narrowTiles = false,
    subgroupSums = false,
  ) {
    // Held from the start: Bun's `device.queue` throws once the device is destroyed, before `lost` settles,
    // and the lost-device error should come from the next wait instead.
    this.queue = device.queue;
    this.timestamps = device.features.has("timestamp-query");
    this.subgroups = device.features.has("subgroups");
    this.subgroupSums = subgroupSums && this.subgroups;
    this.halfStorage = device.features.has("shader-f16");
    this.pool = new BufferPool(device, device.limits.maxBufferSize);
    this.maxStorageBinding = device.limits.maxStorageBufferBindingSize;
    this.minStorageOffsetAlignment = device.limits.minStorageBufferOffsetAlignment;
    this.maxWorkgroupsPerDim = device.limits.maxComputeWorkgroupsPerDimension;
    this.uniformRing = device.createBuffer({ size: UNIFORM_SLOT * UNIFORM_SLOTS, usage: UNIFORM_USAGE });
    // A lost device (driver reset, GPU removed, out of memory, destroy()) never runs what was submitted:
    // reads and syncs must fail, not return stale bytes or hang.
    device.lost.then((info) => {
      this.lostReason = `${info.reason ?? "unknown"}: ${info.message || "no message"}`;
      for (const f of this.onLost) f();
      this.onLost.clear();
    });
    const onError = (ev: Event) => {
      const err = (ev as GPUUncapturedErrorEvent).error;
      this.deviceError ??= err?.message ?? String(err);
    };
    const target = device as unknown as { addEventListener?: (t: string, f: (e: Event) => void) => void };
    if (typeof target.addEventListener === "function") target.addEventListener("uncapturederror", onError);
    else (device as unknown as { onuncapturederror: unknown }).onuncapturederror = onError;
  }

  /** The variant of `spec` whose bindings `halfBindings` hold float16 tensors, made once per combination. */
  private halfVariant(spec: KernelSpec, halfBindings: number[]): KernelSpec {
    let variants = this.halfSpecs.get(spec);
    if (!variants) this.halfSpecs.set(spec, variants = new Map());
    const key = halfBindings.join(",");
    let variant = variants.get(key);
    if (!variant) {
      const code = halfPrecisionWgsl(spec.name, spec.code, halfBindings);
      variant = { ...spec, key: `${spec.name}\n${code}`, code };
      variants.set(key, variant);
    }
    return variant;
  }

  private pipelineFor(spec: KernelSpec): CachedPipeline {
    let cached = this.pipelines.get(spec.key);
    if (cached) return cached;
    if (!spec.code) throw new Error(`kernel ${spec.key}: exists only on the WebAssembly backend`);
    const entries: GPUBindGroupLayoutEntry[] = spec.storage.map((access, binding) => ({
      binding,
      visibility: 4, /* COMPUTE */
      buffer: { type: access === "read" ? "read-only-storage" : "storage" },
    }));
    if (spec.uniforms.length > 0) {
      entries.push({
        binding: spec.storage.length,
        visibility: 4,
        buffer: { type: "uniform", hasDynamicOffset: true },
      });
    }
    const layout = this.device.createBindGroupLayout({ entries });
    const module = this.device.createShaderModule({ code: spec.code, label: spec.key });
    const pipeline = this.device.createComputePipeline({
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: "main" },
      label: spec.key,
    });
    cached = { id: this.pipelines.size, pipeline, layout };
    this.pipelines.set(spec.key, cached);
    return cached;
  }

  /** Compute pipelines compiled so far. */
  get pipelineCount(): number {
    return this.pipelines.size;
  }

  /**
   * Records one dispatch. `buffers[i]` binds at @binding(i) as a whole buffer or as the given byte range;
   * `params` fill the uniform struct. Nothing runs until the batch is submitted.
   */
  dispatch(
    spec: KernelSpec,
    buffers: Binding[],
    params: number[],
    workgroups: [number, number?, number?],
    label?: string,
  ): void {
    // A dispatch only records work here: a profile counts it, and its device time comes later where the
    // device has timestamps (NaN where it has none).
    const row = profiling() ? recordKernel(label ?? spec.name, this.timestamps ? 0 : NaN) : null;
    if (buffers.length !== spec.storage.length) {
      throw new Error(`kernel ${spec.key}: ${buffers.length} buffers bound, ${spec.storage.length} declared`);
    }
    if (params.length !== spec.uniforms.length) {
      throw new Error(
        `kernel ${spec.key}: ${params.length} uniforms given, ${spec.uniforms.length} declared`,
      );
    }
    const [x, y = 1, z = 1] = workgroups;
    if (x === 0 || y === 0 || z === 0) return;
    if (x > this.maxWorkgroupsPerDim || y > this.maxWorkgroupsPerDim || z > this.maxWorkgroupsPerDim) {
      throw new Error(
        `kernel ${spec.key}: grid ${x}x${y}x${z} exceeds ${this.maxWorkgroupsPerDim} per dimension`,
      );
    }
    if (this.uniformSlot >= UNIFORM_SLOTS || this.pending >= MAX_PENDING_DISPATCHES) this.flush();
    // Before the buffers are marked with this batch: dropping the cache submits the batch.
    if (this.bindGroups.size >= MAX_BIND_GROUPS) this.dropBindGroups();
    const halfBindings = buffers.flatMap((b, i) => (("pb" in b ? b.pb : b).half ? [i] : []));
    if (halfBindings.length > 0) spec = this.halfVariant(spec, halfBindings);
    const { id, pipeline, layout } = this.pipelineFor(spec);
    let key = String(id);
    for (const b of buffers) {
      const pb = "pb" in b ? b.pb : b;
      if (!("pb" in b) && pb.bytes > this.maxStorageBinding) {
        throw new Error(
          `${spec.name}: a tensor of ${pb.bytes} bytes exceeds one storage binding ` +
            `(maxStorageBufferBindingSize ${this.maxStorageBinding}); this op does not split such tensors`,
        );
      }
      pb.lastBatch = this.batch;
      key += "pb" in b ? `,${pb.id}@${b.offset}+${b.size}` : `,${pb.id}`;
    }
    let bindGroup = this.bindGroups.get(key);
    if (!bindGroup) {
      const entries: GPUBindGroupEntry[] = buffers.map((b, binding) =>
        "pb" in b
          ? { binding, resource: { buffer: gpuBuffer(b.pb), offset: b.offset, size: b.size } }
          // A bucket may exceed the binding limit while its tensor does not: bind what the limit allows.
          : {
            binding,
            resource: { buffer: gpuBuffer(b), size: Math.min(b.capacity, this.maxStorageBinding) },
          }
      );
      if (spec.uniforms.length > 0) {
        entries.push({
          binding: spec.storage.length,
          resource: { buffer: this.uniformRing, offset: 0, size: spec.uniforms.length * 4 },
        });
      }
      bindGroup = this.device.createBindGroup({ layout, entries });
      this.bindGroups.set(key, bindGroup);
    }
    const dynamicOffsets: number[] = [];
    if (spec.uniforms.length > 0) {
      const offset = this.uniformSlot++ * UNIFORM_SLOT;
      dynamicOffsets.push(offset);
      const u32 = new Uint32Array(this.uniformData, offset, spec.uniforms.length);
      const i32 = new Int32Array(this.uniformData, offset, spec.uniforms.length);
      const f32 = new Float32Array(this.uniformData, offset, spec.uniforms.length);
      spec.uniforms.forEach((t, i) => {
        if (t === "f32") f32[i] = params[i];
        else if (t === "i32") i32[i] = params[i];
        else u32[i] = params[i];
      });
    }
    const timed = row !== null && this.timestamps;
    if (timed) {
      // A pass of its own, timestamped at its start and end: WebGPU times passes, not dispatches.
      this.endPass();
      // Two timestamps for each of the batch's dispatches (at most 2,048: a query set holds 4,096).
      this.querySet ??= this.device.createQuerySet({ type: "timestamp", count: 2 * MAX_PENDING_DISPATCHES });
      const index = 2 * this.timedRows.length;
      this.timedRows.push(row);
      this.encoder ??= this.device.createCommandEncoder();
      this.pass = this.encoder.beginComputePass({
        timestampWrites: {
          querySet: this.querySet,
          beginningOfPassWriteIndex: index,
          endOfPassWriteIndex: index + 1,
        },
      });
    }
    if (!this.pass) {
      this.encoder ??= this.device.createCommandEncoder();
      this.pass = this.encoder.beginComputePass();
    }
    this.pass.setPipeline(pipeline);
    this.pass.setBindGroup(0, bindGroup, dynamicOffsets);
    this.pass.dispatchWorkgroups(x, y, z);
    if (timed) this.endPass();
    this.pending++;
    this.dispatches++;
  }

  /**
   * Resolves the batch's timestamps into a buffer that {@link deviceTimes} reads once the work has run, on
   * the batch's encoder before it is finished. The reads wait for deviceTimes, so no buffer is mapped while
   * the profiled work is still being recorded and submitted.
   */
  private resolveTimes(encoder: GPUCommandEncoder): void {
    const rows = this.timedRows, count = 2 * rows.length, querySet = this.querySet!;
    this.timedRows = [];
    this.querySet = null;
    const resolved = this.device.createBuffer({ size: count * 8, usage: QUERY_RESOLVE_USAGE });
    const readback = this.device.createBuffer({ size: count * 8, usage: MAP_READ_USAGE });
    encoder.resolveQuerySet(querySet, 0, count, resolved, 0);
    encoder.copyBufferToBuffer(resolved, 0, readback, 0, count * 8);
    this.stagingToDestroy.push(resolved);
    this.unreadTimes.push({ rows, readback, querySet });
    // A profile stopped without deviceTimes leaves its reads here: past a bound the oldest are dropped.
    if (this.unreadTimes.length > MAX_UNREAD_TIME_BATCHES) this.dropTimes(this.unreadTimes.shift()!);
  }

  private dropTimes(t: UnreadTimes): void {
    t.readback.destroy();
    t.querySet.destroy();
  }

  /**
   * Waits until the device has run everything, then reads the timestamps of every profiled dispatch and adds
   * each one's time (end minus start) to its profile row.
   */
  async deviceTimes(): Promise<void> {
    await this.sync();
    const unread = this.unreadTimes;
    this.unreadTimes = [];
    for (const t of unread) {
      const bytes = t.rows.length * 16;
      try {
        await this.untilLost(t.readback.mapAsync(1, /* GPUMapMode.READ */ 0, bytes));
        const ns = new BigUint64Array(t.readback.getMappedRange(0, bytes));
        // An implementation may clamp or reorder timestamps; a negative span counts as none.
        t.rows.forEach((r, i) => r.ms += Math.max(0, Number(ns[2 * i + 1] - ns[2 * i])) / 1e6);
        t.readback.unmap();
      } finally {
        this.dropTimes(t);
      }
    }
  }

  /**
   * One dispatch where every buffer fits one storage binding (128 MiB on lavapipe); else aligned chunks of
   * an element-wise kernel, each bound as a byte range.
   */
  dispatchElements(
    spec: KernelSpec,
    buffers: PooledBuffer[],
    params: number[],
    n: number,
    baseParam?: number,
  ): void {
    const limit = this.maxStorageBinding;
    if (buffers.every((pb) => pb.bytes <= limit)) {
      this.dispatch(spec, buffers, params, this.grid(Math.ceil(n / 256)));
      return;
    }
    if (buffers.some((pb) => pb.half || pb.bytes !== n * 4)) {
      throw new Error(
        `${spec.name}: tensors over ${limit} bytes (one storage binding) are only supported element-wise, in float32`,
      );
    }
    const align = this.minStorageOffsetAlignment;
    const chunk = Math.floor(limit / align) * align / 4;
    for (let start = 0; start < n; start += chunk) {
      const len = Math.min(chunk, n - start);
      const chunkParams = [len, ...params.slice(1)];
      if (baseParam !== undefined) chunkParams[baseParam] = params[baseParam] + start;
      this.dispatch(
        spec,
        buffers.map((pb) => ({ pb, offset: start * 4, size: len * 4 })),
        chunkParams,
        this.grid(Math.ceil(len / 256)),
      );
    }
  }

  /** Records a buffer-to-buffer copy in order with the dispatches. */
  copy(src: PooledBuffer, srcOffset: number, dst: PooledBuffer, dstOffset: number, bytes: number): void {
    if (bytes === 0) return;
    this.endPass();
    this.encoder ??= this.device.createCommandEncoder();
    this.encoder.copyBufferToBuffer(gpuBuffer(src), srcOffset, gpuBuffer(dst), dstOffset, bytes);
    src.lastBatch = dst.lastBatch = this.batch;
    this.pending++;
  }

  private endPass(): void {
    if (this.pass) {
      this.pass.end();
      bunRelease.pass(this.pass);
      this.pass = null;
    }
  }

  /** Gives the pool's free buffers back to the device (and forgets the bind groups that used them). */
  trimPool(): void {
    this.dropBindGroups();
    this.pool.trim();
  }

  /** Empties the bind-group cache, releasing the groups (see bunRelease); pending work is submitted first. */
  private dropBindGroups(): void {
    this.flush();
    for (const group of this.bindGroups.values()) bunRelease.bindGroup(group);
    this.bindGroups.clear();
  }

  /** The error every call gives once the device is lost. */
  private lostError(): Error {
    return new Error(
      `the WebGPU device was lost (${this.lostReason}); its buffers and the work not yet read back are gone ` +
        "and nothing computed after the loss was returned: restart the process (a training run resumes from " +
        "its last checkpoint)",
    );
  }

  /**
   * Rethrows the error of a failed wait on the device, as the lost-device error when the device turns out to
   * be lost: a call can fail (Deno: "validation error occurred") before `lost` settles, so it waits up to a
   * second for that.
   */
  private async explainFailure(err: unknown): Promise<never> {
    if (this.lostReason === null) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.onLost.delete(done);
          resolve();
        };
        const timer = setTimeout(done, 1000);
        this.onLost.add(done);
      });
    }
    this.checkLost();
    throw err;
  }

  /** `work`, or the lost-device error as soon as the device is lost while it is pending. */
  private untilLost<T>(work: Promise<T>): Promise<T> {
    if (this.lostReason !== null) return Promise.reject(this.lostError());
    return new Promise<T>((resolve, reject) => {
      const lost = () => reject(this.lostError());
      this.onLost.add(lost);
      work.then(resolve, reject).finally(() => this.onLost.delete(lost));
    });
  }

  /** Throws once the device is lost. */
  private checkLost(): void {
    if (this.lostReason !== null) throw this.lostError();
  }

  /** Submits everything recorded so far. */
  flush(): void {
    this.checkLost();
    this.endPass();
    if (!this.encoder) return;
    if (this.uniformSlot > 0) {
      this.queue.writeBuffer(
        this.uniformRing,
        0,
        this.uniformData,
        0,
        this.uniformSlot * UNIFORM_SLOT,
      );
    }
    if (this.timedRows.length > 0) this.resolveTimes(this.encoder);
    const commands = this.encoder.finish();
    this.queue.submit([commands]);
    bunRelease.commands(commands);
    for (const b of this.stagingToDestroy) b.destroy();
    this.stagingToDestroy = [];
    this.encoder = null;
    this.pending = 0;
    this.uniformSlot = 0;
    this.batch++;
    this.submits++;
  }

  /**
   * Writes CPU data into a buffer, after any recorded command that still uses the buffer's old content:
   * such a write goes through a staging buffer copied in order with the commands, so it costs no submit.
   */
  write(pb: PooledBuffer, byteOffset: number, data: ArrayBufferView): void {
    this.checkLost();
    if (pb.lastBatch !== this.batch || !this.encoder) {
      this.queue.writeBuffer(gpuBuffer(pb), byteOffset, data.buffer, data.byteOffset, data.byteLength);
      return;
    }
    const staging = this.device.createBuffer({
      size: data.byteLength,
      usage: 0x04, /* COPY_SRC */
      mappedAtCreation: true,
    });
    new Uint8Array(staging.getMappedRange()).set(
      new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    );
    staging.unmap();
    this.copy(
      { id: 0, handle: staging, capacity: data.byteLength, bytes: data.byteLength, lastBatch: -1 },
      0,
      pb,
      byteOffset,
      data.byteLength,
    );
    // Destroying after submit is allowed: the device frees it once the copy has run.
    this.stagingToDestroy.push(staging);
  }

  /** Copies `bytes` from a buffer back to the CPU; the only place that waits for the device. */
  async read(pb: PooledBuffer, byteOffset: number, bytes: number): Promise<ArrayBuffer> {
    const size = bucketSize(Math.max(bytes, 4));
    const staging = this.stagingFree.get(size)?.pop() ??
      this.device.createBuffer({ size, usage: MAP_READ_USAGE });
    if (bytes > 0) {
      this.copy(
        pb,
        byteOffset,
        { id: 0, handle: staging, capacity: size, bytes, lastBatch: -1 },
        0,
        bytes,
      );
    }
    await this.flushSoon();
    try {
      await this.untilLost(staging.mapAsync(1, /* GPUMapMode.READ */ 0, size));
    } catch (err) {
      await this.explainFailure(err);
    }
    this.checkLost();
    const out = staging.getMappedRange(0, size).slice(0, bytes);
    staging.unmap();
    let list = this.stagingFree.get(size);
    if (!list) this.stagingFree.set(size, list = []);
    list.push(staging);
    this.throwDeviceError();
    return out;
  }

  /**
   * Submits at the end of the current microtask turn: reads started together (Promise.all over a state
   * dict) share one submit and one wait instead of paying one each.
   */
  private flushSoon(): Promise<void> {
    this.pendingFlush ??= Promise.resolve().then(() => {
      this.pendingFlush = null;
      this.flush();
    });
    return this.pendingFlush;
  }

  /** Waits until the device has finished all submitted work (for benches and teardown). */
  async sync(): Promise<void> {
    this.flush();
    try {
      await this.untilLost(this.queue.onSubmittedWorkDone());
    } catch (err) {
      await this.explainFailure(err);
    }
    this.checkLost();
    this.throwDeviceError();
  }

  private throwDeviceError(): void {
    if (this.deviceError) {
      const msg = this.deviceError;
      this.deviceError = null;
      throw new Error(`WebGPU reported an error: ${msg}`);
    }
  }

  /** Splits `workgroups` over x and y within the device's per-dimension limit. */
  grid(workgroups: number): [number, number] {
    return splitGrid(workgroups, this.maxWorkgroupsPerDim);
  }
}
