// ONNX export by tracing, as torch.onnx.export does: a Trace runs models on example inputs while each op
// records its own ONNX translation (src/onnx/trace.ts, the hooks in src/kernels), then writes one ModelProto
// (opset 17, IR version 8) through protobufjs and ONNX's own schema, with the initializers inside it or,
// past protobuf's 2 GB or when asked, in an external data file beside it.
import {
  basename,
  closeSync,
  join,
  mkdtempSync,
  openSync,
  rmSync,
  tmpdir,
  writeSync,
} from "../platform/runtime.ts";
import { noGrad, scope, type Tensor } from "../autograd/tensor.ts";
import { zeros } from "../kernels/basic.ts";
import { Module } from "../nn/module.ts";
import { openAtomic, readAll, writeAll, writeFileAtomic } from "../io/files.ts";
import { protobuf } from "../npm.ts";
import { ONNX_PROTO } from "./onnx_proto.ts";
import {
  type AttributeValue,
  type TracedInitializer,
  type TracedNode,
  tracer,
  TraceRecorder,
  withTracer,
} from "./trace.ts";

/** The ONNX operator set (default domain) that the ops' translations are written for. */
export const OPSET = 17;
/** The ONNX IR version that came with opset 17 (ONNX 1.12). */
export const IR_VERSION = 8;
/** Written into every exported model's producer_name and producer_version (the package's version). */
export const PRODUCER = { name: "flannel-webgpu", version: "0.2.0" } as const;

/** protobuf's limit on one message: a larger model must keep its initializers in an external file. */
const PROTOBUF_LIMIT = 2 ** 31 - 1;
/** What "auto" leaves for the graph itself when it decides whether the initializers fit inside. */
const GRAPH_ALLOWANCE = 64 * 2 ** 20;
const DEFAULT_MEMORY_LIMIT = 512 * 2 ** 20;
/** Chunk of a spill-file copy: data files are streamed, never held whole. */
const COPY_CHUNK = 16 * 2 ** 20;
/** TensorProto.DataType of each initializer type. */
const DATA_TYPES = { float32: 1, int32: 6, int64: 7 } as const;
/** AttributeProto.AttributeType values used here. */
const ATTRIBUTE_TYPES = { FLOAT: 1, INT: 2, STRING: 3, INTS: 7 } as const;
/** TensorProto.DataLocation.EXTERNAL. */
const EXTERNAL = 1;

let modelType: protobuf.Type | null = null;
/** onnx.ModelProto, from the embedded schema parsed on first use. */
function modelProto(): protobuf.Type {
  return modelType ??= protobuf.parse(ONNX_PROTO).root.lookupType("onnx.ModelProto");
}

/**
 * Where an initializer starts in a data file after `offset`: page-aligned (4 KiB) for tensors of 64 KiB and
 * more, so a runtime may map them, else 64-byte aligned.
 */
function alignedOffset(offset: number, byteLength: number): number {
  const alignment = byteLength >= 65536 ? 4096 : 64;
  return Math.ceil(offset / alignment) * alignment;
}

/** The translations' int64 constants (shapes, axes): shape inference must read them from the model. */
const staysInside = (init: TracedInitializer) => init.dataType === "int64";

const spillEnded = () => new Error("ONNX trace: the spill file ended early (was it changed or removed?)");

/** A graph input: the example tensor the models run on is made from its shape. */
export interface TraceInputSpec {
  /** The input's name in the graph. */
  name: string;
  /** The example's shape, e.g. `[1, 3, 224, 224]`. */
  shape: number[];
  /** Dim 0 is "batch" in the graph (any size at run time) instead of `shape[0]` (default true). */
  dynamicBatch?: boolean;
}

/** Options of {@link Trace}. */
export interface TraceOptions {
  /** The graph inputs, in order. */
  inputs: TraceInputSpec[];
  /**
   * Initializer bytes {@link Trace.flush} keeps in JavaScript memory (default 512 MiB); past it, it moves
   * them all to a temporary file (in the layout of an external data file), so that a trace of many large
   * models holds one model's values at a time.
   */
  memoryLimit?: number;
  /** Folder of that temporary file (default: the system's temporary folder). */
  tempDir?: string;
}

/** Options of {@link Trace.record}. */
export interface RecordOptions {
  /**
   * Names of the initializers: a module (its parameters and buffers by state-dict key, running statistics
   * included) or a map from tensor to name. Other tensors the ops read become `const_<n>`.
   */
  names?: Module | ReadonlyMap<Tensor, string>;
  /** Put before every name this call makes (initializers, constants, nodes), e.g. "fold0.resnet152.". */
  prefix?: string;
}

/** A graph output. */
export interface TraceOutput {
  /** Its name in the graph. */
  name: string;
  /** The tensor a {@link Trace.record} call computed. */
  tensor: Tensor;
  /** Dim 0 is "batch" in the graph (default: when an input's is). */
  dynamicBatch?: boolean;
}

/** Options of {@link Trace.save}. */
export interface SaveOptions {
  /** The graph outputs, in order. */
  outputs: TraceOutput[];
  /** The model's metadata_props (key to value). */
  metadata?: Record<string, string>;
  /**
   * Where the initializers go: `true` into `<path>.data` beside the model (raw little-endian values,
   * aligned offsets), `false` inside the model, "auto" (default) inside unless protobuf's 2 GB limit is
   * near. The int64 constants of the translations (Reshape shapes, axes) stay inside either way: shape
   * inference reads them, and onnxruntime's cannot read external ones.
   */
  externalData?: "auto" | boolean;
  /** The graph's name (default "flannel"). */
  graphName?: string;
}

/** What {@link Trace.save} and {@link exportModel} wrote. */
export interface SaveInfo {
  /** The model file. */
  path: string;
  /** Its size in bytes. */
  bytes: number;
  /** The external data file (`<path>.data`), or null when the initializers are inside the model. */
  externalDataPath: string | null;
  /** The data file's size in bytes (0 without one). */
  externalDataBytes: number;
  /** Nodes in the graph. */
  nodes: number;
  /** Initializers in the graph. */
  initializers: number;
  /** Whether the initializers are in the external data file. */
  external: boolean;
}

/** A temporary file holding initializer values that {@link Trace.flush} moved out of memory. */
interface SpillFile {
  dir: string;
  fd: number;
  length: number;
  /** Where each moved initializer starts. */
  offsets: Map<TracedInitializer, number>;
}

/**
 * A concrete trace that becomes one ONNX graph (opset 17): the models run on example inputs inside
 * {@link Trace.record} while every op records its ONNX translation; an op without one throws
 * `<op> cannot be exported to ONNX yet` instead of leaving a wrong graph. Several models may be recorded
 * into one graph (an ensemble), each with its own initializer names.
 *
 * Memory: each initializer's values are read from the device when an op first uses it (on WebGPU into a
 * staging buffer each); {@link Trace.flush} awaits the reads and keeps the values in JavaScript memory up
 * to `memoryLimit`, moving them all to a temporary file past it. For an ensemble: record a model, flush,
 * dispose it, then the next. The graph itself (nodes, names) stays in memory; intermediate tensors are not
 * held (they are known by identity only).
 *
 * @example Two models, one graph
 * ```ts
 * const trace = new fl.onnx.Trace({ inputs: [{ name: "input", shape: [1, 3, 64, 64] }] });
 * const ya = fl.scope(() => trace.record(() => a.forward(trace.inputs[0]), { names: a, prefix: "a." }));
 * const yb = fl.scope(() => trace.record(() => b.forward(trace.inputs[0]), { names: b, prefix: "b." }));
 * await trace.flush(); // a and b may be disposed now
 * const info = await trace.save("pair.onnx", { outputs: [{ name: "a", tensor: ya }, { name: "b", tensor: yb }] });
 * trace.dispose();
 * ```
 */
export class Trace {
  /** The example tensors (zeros) to run the models on, one per input spec; owned by the trace. */
  readonly inputs: Tensor[];
  private readonly specs: TraceInputSpec[];
  private readonly recorder = new TraceRecorder();
  private readonly memoryLimit: number;
  private readonly tempDir: string;
  private spill: SpillFile | null = null;

  /**
   * Makes the example inputs and declares them the graph's inputs.
   * @throws Error for a missing input list or an input name or shape that is not usable.
   */
  constructor(options: TraceOptions) {
    if (!Array.isArray(options?.inputs) || options.inputs.length === 0) {
      throw new Error("ONNX trace: inputs must list at least one { name, shape }");
    }
    this.specs = options.inputs.map((spec) => ({ ...spec, shape: [...spec.shape] }));
    this.memoryLimit = options.memoryLimit ?? DEFAULT_MEMORY_LIMIT;
    this.tempDir = options.tempDir ?? tmpdir();
    this.inputs = this.specs.map((spec) => {
      if (typeof spec.name !== "string" || spec.name === "") {
        throw new Error(`ONNX trace: an input needs a name, got ${JSON.stringify(spec.name)}`);
      }
      if (spec.dynamicBatch !== false && spec.shape.length === 0) {
        throw new Error(`ONNX trace: input "${spec.name}" has no dim 0 to make dynamic`);
      }
      const t = zeros(spec.shape).keep();
      this.recorder.bindInput(t, spec.name);
      return t;
    });
  }

  /**
   * Runs `fn` (synchronous, under noGrad) and records the ONNX nodes of the ops it runs; returns its result.
   * Every op must run inside a record() call: a tensor computed outside one is a constant to the graph.
   * @throws Error from an op that cannot be exported, or when a trace is already recording.
   */
  record<T>(fn: () => T, options: RecordOptions = {}): T {
    if (tracer) throw new Error("ONNX trace: record() cannot run inside another record()");
    const prefix = options.prefix ?? "";
    const names = options.names ?? new Map<Tensor, string>();
    const entries: [string, Tensor][] = names instanceof Module
      ? [...names.namedParameters(), ...names.namedBuffers()]
      : [...names].map(([t, name]) => [name, t]);
    this.recorder.names = new Map(entries.map(([name, t]) => [t, prefix + name]));
    this.recorder.prefix = prefix;
    try {
      return withTracer(this.recorder, () => noGrad(fn));
    } finally {
      this.recorder.names = new Map();
      this.recorder.prefix = "";
    }
  }

  /**
   * Waits for the initializer values read so far; after it, the recorded models may be disposed. Past
   * `memoryLimit` the values held move to a temporary file.
   */
  async flush(): Promise<void> {
    for (const init of this.recorder.initializers) {
      if (!init.read) continue;
      init.bytes = await init.read;
      init.read = null;
    }
    const held = this.recorder.initializers.reduce((n, init) => n + (init.bytes?.length ?? 0), 0);
    if (held > this.memoryLimit) this.spillHeld();
  }

  /**
   * Writes the graph as an ONNX model to `path` (atomically; the data file too, first) and returns what
   * it wrote; without a path, returns the model's bytes (initializers inside). Flushes first.
   * @throws Error for an output not computed inside record(), a name used twice, external data without a
   * path, or a model past protobuf's 2 GB with externalData false.
   */
  save(path: string, options: SaveOptions): Promise<SaveInfo>;
  /** The model's bytes, initializers inside (see the overload above). */
  save(path: undefined, options: SaveOptions): Promise<Uint8Array>;
  async save(path: string | undefined, options: SaveOptions): Promise<SaveInfo | Uint8Array> {
    await this.flush();
    const graph = this.graph(options);
    const inits = this.recorder.initializers;
    const initBytes = inits.reduce((n, init) => n + init.byteLength, 0);
    const mode = options.externalData ?? "auto";
    const external = mode === "auto" ? initBytes > PROTOBUF_LIMIT - GRAPH_ALLOWANCE : mode;
    if (external && path === undefined) {
      throw new Error(
        "ONNX export: external data needs a path (the model is over 2 GB or externalData is set)",
      );
    }
    const dataPath = external ? `${path}.data` : null;
    const data = dataPath ? this.writeData(dataPath) : null;
    const initializer = inits.map((init) => {
      const tensor = { name: init.name, dims: init.dims, dataType: DATA_TYPES[init.dataType] };
      const offset = data?.offsets.get(init);
      if (offset === undefined) return { ...tensor, rawData: this.valuesOf(init) };
      const where = {
        location: basename(dataPath!),
        offset: String(offset),
        length: String(init.byteLength),
      };
      return {
        ...tensor,
        dataLocation: EXTERNAL,
        externalData: Object.entries(where).map(([key, value]) => ({ key, value })),
      };
    });
    const type = modelProto();
    const bytes = type.encode(type.fromObject({
      irVersion: IR_VERSION,
      opsetImport: [{ domain: "", version: OPSET }],
      producerName: PRODUCER.name,
      producerVersion: PRODUCER.version,
      graph: { ...graph, initializer },
      metadataProps: Object.entries(options.metadata ?? {}).map(([key, value]) => ({
        key,
        value: String(value),
      })),
    })).finish();
    if (bytes.length > PROTOBUF_LIMIT) {
      throw new Error(
        `ONNX export: the model is ${bytes.length} bytes, past protobuf's 2 GB: use externalData`,
      );
    }
    if (path === undefined) return bytes;
    writeFileAtomic(path, bytes);
    return {
      path,
      bytes: bytes.length,
      externalDataPath: dataPath,
      externalDataBytes: data?.length ?? 0,
      nodes: graph.node.length,
      initializers: inits.length,
      external,
    };
  }

  /** Frees the example inputs and removes the temporary file; the trace is unusable after. */
  dispose(): void {
    for (const t of this.inputs) t.dispose();
    if (this.spill) {
      closeSync(this.spill.fd);
      rmSync(this.spill.dir, { recursive: true, force: true });
      this.spill = null;
    }
  }

  /** The GraphProto without initializers: the nodes, inputs and outputs (outputs renamed as asked). */
  private graph(options: SaveOptions): Record<string, unknown> & { node: object[] } {
    const nodes: TracedNode[] = [...this.recorder.nodes];
    const produced = new Set(nodes.flatMap((n) => n.outputs));
    const names = new Set([
      ...this.specs.map((s) => s.name),
      ...this.recorder.initializers.map((i) => i.name),
      ...produced,
    ]);
    const rename = new Map<string, string>();
    for (const out of options.outputs) {
      const value = this.recorder.nameOf(out.tensor);
      if (value === null) {
        throw new Error(`ONNX export: output "${out.name}" was not computed inside trace.record()`);
      }
      if (names.has(out.name)) throw new Error(`ONNX export: the output name "${out.name}" is taken`);
      names.add(out.name);
      // A node's output takes the output's name; a graph input, an initializer or a value already output
      // under another name is passed on by an Identity.
      if (produced.has(value) && !rename.has(value)) {
        rename.set(value, out.name);
        continue;
      }
      nodes.push({
        opType: "Identity",
        name: out.name,
        inputs: [value],
        outputs: [out.name],
        attributes: {},
      });
    }
    const renamed = (v: string) => rename.get(v) ?? v;
    const batched = this.specs.some((s) => s.dynamicBatch !== false);
    return {
      name: options.graphName ?? "flannel",
      node: nodes.map((n) => ({
        opType: n.opType,
        name: n.name,
        input: n.inputs.map(renamed),
        output: n.outputs.map(renamed),
        attribute: Object.entries(n.attributes).map(([name, v]) => attributeProto(name, v)),
      })),
      input: this.specs.map((s) => valueInfo(s.name, s.shape, s.dynamicBatch !== false)),
      output: options.outputs.map((o) => valueInfo(o.name, o.tensor.shape, o.dynamicBatch ?? batched)),
    };
  }

  /** An initializer's values, from memory or the spill file. */
  private valuesOf(init: TracedInitializer): Uint8Array {
    if (init.bytes) return init.bytes;
    return readAll(this.spill!.fd, this.spill!.offsets.get(init)!, init.byteLength, spillEnded);
  }

  /** Moves the initializer values held in memory (but the int64 constants) to the spill file. */
  private spillHeld(): void {
    if (!this.spill) {
      const dir = mkdtempSync(join(this.tempDir, "flannel-onnx-"));
      this.spill = { dir, fd: openSync(join(dir, "initializers.data"), "w+"), length: 0, offsets: new Map() };
    }
    const spill = this.spill;
    for (const init of this.recorder.initializers) {
      if (!init.bytes || staysInside(init)) continue;
      const offset = alignedOffset(spill.length, init.byteLength);
      let done = 0;
      while (done < init.bytes.length) {
        done += writeSync(spill.fd, init.bytes, done, init.bytes.length - done, offset + done);
      }
      spill.offsets.set(init, offset);
      spill.length = offset + init.byteLength;
      init.bytes = null;
    }
  }

  /**
   * Writes every initializer to `dataPath` (atomically, streaming: the spill file's part is copied in
   * chunks, then the values still in memory follow, each at an aligned offset); returns the offsets.
   */
  private writeData(dataPath: string): { offsets: Map<TracedInitializer, number>; length: number } {
    const offsets = new Map(this.spill?.offsets);
    const spilled = this.spill?.length ?? 0;
    let length = spilled;
    const file = openAtomic(dataPath);
    try {
      for (let at = 0; at < spilled; at += COPY_CHUNK) {
        writeAll(file.fd, readAll(this.spill!.fd, at, Math.min(COPY_CHUNK, spilled - at), spillEnded));
      }
      for (const init of this.recorder.initializers) {
        if (offsets.has(init) || staysInside(init)) continue;
        const offset = alignedOffset(length, init.byteLength);
        writeAll(file.fd, new Uint8Array(offset - length));
        writeAll(file.fd, init.bytes!);
        offsets.set(init, offset);
        length = offset + init.byteLength;
      }
    } catch (err) {
      file.abort();
      throw err;
    }
    file.commit();
    return { offsets, length };
  }
}

/** An AttributeProto: whole numbers as INT/INTS, `{ float }` as FLOAT, strings as STRING. */
function attributeProto(name: string, v: AttributeValue) {
  if (typeof v === "string") return { name, type: ATTRIBUTE_TYPES.STRING, s: new TextEncoder().encode(v) };
  if (typeof v === "object" && !Array.isArray(v)) return { name, type: ATTRIBUTE_TYPES.FLOAT, f: v.float };
  const ints = Array.isArray(v) ? v : [v];
  if (!ints.every(Number.isInteger)) {
    throw new Error(`ONNX export: attribute ${name} must be whole, got ${v}`);
  }
  return Array.isArray(v)
    ? { name, type: ATTRIBUTE_TYPES.INTS, ints }
    : { name, type: ATTRIBUTE_TYPES.INT, i: v };
}

/** A float32 tensor's ValueInfoProto, dim 0 named "batch" when dynamic. */
function valueInfo(name: string, shape: readonly number[], dynamicBatch: boolean) {
  const dim = shape.map((d, i) => (i === 0 && dynamicBatch ? { dimParam: "batch" } : { dimValue: d }));
  return { name, type: { tensorType: { elemType: DATA_TYPES.float32, shape: { dim } } } };
}

/** Options of {@link exportModel}. */
export interface ExportOptions {
  /** The example input's shape, e.g. `[1, 3, 224, 224]`; its dim 0 is dynamic ("batch") in the graph. */
  input: number[];
  /** The graph input's name (default "input"). */
  inputName?: string;
  /** The graph output's name (default "logits"). */
  outputName?: string;
  /** The model's metadata_props. */
  metadata?: Record<string, string>;
  /** Where to write the model; without it, {@link exportModel} returns the bytes. */
  path?: string;
  /** See {@link SaveOptions.externalData} (default "auto"). */
  externalData?: "auto" | boolean;
}

/**
 * Exports a model's forward pass as an ONNX model (opset 17, dynamic batch): in eval mode, without
 * gradients, traced on zeros of shape `options.input`; parameters and buffers are initializers named by
 * their state-dict keys. The model's training flag is restored after. With `path`, writes the file
 * (atomically; `<path>.data` too with external data) and returns what it wrote; without, returns the bytes.
 *
 * @example
 * ```ts
 * const model = fl.models.resnet152({ numClasses: 4, scale: "tiny" });
 * const info = await fl.onnx.exportModel(model, { input: [1, 3, 64, 64], path: "resnet152.onnx" });
 * ```
 * @throws Error from an op without an ONNX translation (`<op> cannot be exported to ONNX yet`).
 */
export function exportModel(model: Module, options: ExportOptions & { path: string }): Promise<SaveInfo>;
/** Without `path`: the ONNX model's bytes (see the overload above). */
export function exportModel(
  model: Module,
  options: ExportOptions & { path?: undefined },
): Promise<Uint8Array>;
export async function exportModel(model: Module, options: ExportOptions): Promise<SaveInfo | Uint8Array> {
  const { inputName = "input", outputName = "logits", path, externalData, metadata } = options;
  const wasTraining = model.training;
  model.eval();
  const trace = new Trace({ inputs: [{ name: inputName, shape: options.input }] });
  try {
    const x = trace.inputs[0];
    const y = scope(() => trace.record(() => model.forward(x), { names: model }));
    try {
      const saving = { outputs: [{ name: outputName, tensor: y }], metadata, externalData };
      return path === undefined ? await trace.save(undefined, saving) : await trace.save(path, saving);
    } finally {
      if (y !== x) y.dispose();
    }
  } finally {
    trace.dispose();
    model.train(wasTraining);
  }
}
