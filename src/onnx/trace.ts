// The ONNX tracer's recorder: while a trace runs, each op states its own ONNX translation here, next to its
// kernel and gradient rule (`tracer?.node("Conv", [x, w, b], out, {...})` in src/kernels/conv.ts), so one op
// lives in one place. It imports no kernel (the kernels import it) and reads no file: src/onnx/export.ts
// turns what it collects into a ModelProto. Outside a trace `tracer` is null and a hook costs one check.
import type { Tensor } from "../autograd/tensor.ts";

/**
 * An ONNX attribute's value: an integer or a list of integers (INT, INTS), a string (STRING), or
 * `{ float }` (FLOAT: a number alone would be ambiguous where it happens to be whole, as an epsilon of 0).
 */
export type AttributeValue = number | number[] | string | { float: number };

/** One recorded NodeProto: its op (default domain), the names of the values it reads and writes. */
export interface TracedNode {
  /** The ONNX operator ("Conv", "Relu", ...). */
  opType: string;
  /** A unique node name. */
  name: string;
  /** The names of its inputs (graph inputs, initializers or earlier nodes' outputs). */
  inputs: string[];
  /** The names of its outputs. */
  outputs: string[];
  /** Its attributes by ONNX name. */
  attributes: Record<string, AttributeValue>;
}

/** The element types an initializer can hold (ONNX's FLOAT, INT32, INT64). */
export type InitializerType = "float32" | "int32" | "int64";

/**
 * A recorded initializer: a model's parameter or buffer, a constant tensor it made, or a constant an op's
 * translation needs (a Reshape's shape). Its little-endian bytes are in `bytes` once read; `read` holds the
 * device read started when the tensor was first used, until src/onnx/export.ts awaits it.
 */
export interface TracedInitializer {
  /** Its name in the graph. */
  name: string;
  /** Its shape. */
  dims: number[];
  /** Its element type. */
  dataType: InitializerType;
  /** Its size in bytes (4 or 8 per element). */
  byteLength: number;
  /** The values, little-endian; null while `read` is pending or after they moved to a spill file. */
  bytes: Uint8Array | null;
  /** The device read of a tensor's values, until awaited. */
  read: Promise<Uint8Array> | null;
}

/** What a translation reads: a traced tensor (or a parameter, which becomes an initializer) or a value name. */
export type TraceValue = Tensor | string;

/**
 * Collects the nodes and initializers of one graph while ops run. Tensors are known by identity: a graph
 * input, an op's output, or else an initializer named by the current `names` map (a model's parameters and
 * buffers) or `const_<n>`, whose values are read from the device at once (as they are now, before the caller
 * can change or dispose them).
 */
export class TraceRecorder {
  /** The nodes in execution order (ONNX wants them topologically sorted: they are). */
  readonly nodes: TracedNode[] = [];
  /** The initializers in order of first use. */
  readonly initializers: TracedInitializer[] = [];
  /** Names of the initializers of the record() in progress, by tensor; set by src/onnx/export.ts. */
  names: ReadonlyMap<Tensor, string> = new Map();
  /** Prefix of the value, node and constant names of the record() in progress. */
  prefix = "";
  private readonly values = new WeakMap<Tensor, string>();
  private readonly taken = new Set<string>();
  private counter = 0;

  /** The name `t` has in the graph, or null when it is none of a graph input, a node output, an initializer. */
  nameOf(t: Tensor): string | null {
    return this.values.get(t) ?? null;
  }

  /** Declares `t` a graph input called `name`. */
  bindInput(t: Tensor, name: string): void {
    this.claim(name);
    this.values.set(t, name);
  }

  /**
   * Records one node reading `inputs` and returns the name of its output, which is `output`'s when given
   * (the op's result tensor) and else a fresh intermediate value for a later node of the same translation.
   */
  node(
    opType: string,
    inputs: readonly TraceValue[],
    output?: Tensor,
    attributes: Record<string, AttributeValue> = {},
  ): string {
    const name = this.fresh(opType);
    this.claim(name);
    this.nodes.push({
      opType,
      name,
      inputs: inputs.map((v) => (typeof v === "string" ? v : this.valueOf(v, opType))),
      outputs: [name],
      attributes,
    });
    if (output) this.values.set(output, name);
    return name;
  }

  /** A float32 initializer holding `values` with shape `dims` (a scalar for `[]`); returns its name. */
  constant(values: ArrayLike<number>, dims: number[]): string {
    return this.addInitializer(
      this.fresh("const"),
      dims,
      "float32",
      new Uint8Array(Float32Array.from(values).buffer),
    );
  }

  /** A 1-D int64 initializer (a Reshape's shape, an Unsqueeze's axes); returns its name. */
  int64s(values: readonly number[]): string {
    const bytes = new Uint8Array(BigInt64Array.from(values, BigInt).buffer);
    return this.addInitializer(this.fresh("const"), [values.length], "int64", bytes);
  }

  /**
   * Called by the tape for every op result: an op that recorded no node for it has no translation, and a
   * graph without it would be wrong.
   */
  requireNode(out: Tensor, op: string): void {
    if (!this.values.has(out)) refuse(op);
  }

  private valueOf(t: Tensor, opType: string): string {
    const known = this.values.get(t);
    if (known !== undefined) return known;
    if (t.disposed) throw new Error(`an input of ${opType} was disposed before the trace read it`);
    if (t.dtype === "float16") {
      throw new Error(
        `ONNX export traces float32 models: an input of ${opType} is float16 (trace outside autocast)`,
      );
    }
    const name = this.names.get(t) ?? this.fresh("const");
    const read = t.dtype === "int32" ? t.toInt32Array().then(asBytes) : t.toArray().then(asBytes);
    // Awaited by flush(); until then a failed read must not surface as an unhandled rejection.
    read.catch(() => {});
    this.addInitializer(name, [...t.shape], t.dtype as "float32" | "int32", null, read);
    this.values.set(t, name);
    return name;
  }

  private addInitializer(
    name: string,
    dims: number[],
    dataType: InitializerType,
    bytes: Uint8Array | null,
    read: Promise<Uint8Array> | null = null,
  ): string {
    this.claim(name);
    const elements = dims.reduce((a, d) => a * d, 1);
    const byteLength = elements * (dataType === "int64" ? 8 : 4);
    this.initializers.push({ name, dims, dataType, byteLength, bytes, read });
    return name;
  }

  private fresh(kind: string): string {
    return `${this.prefix}${kind}_${this.counter++}`;
  }

  private claim(name: string): void {
    if (this.taken.has(name)) throw new Error(`ONNX trace: the name "${name}" is given to two values`);
    this.taken.add(name);
  }
}

const asBytes = (a: Float32Array | Int32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** The recorder of the trace in progress, or null (ops check it before doing anything for the trace). */
export let tracer: TraceRecorder | null = null;

/** Runs `fn` with `recorder` as the active recorder (null: untraced), restoring the previous one after. */
export function withTracer<T>(recorder: TraceRecorder | null, fn: () => T): T {
  const previous = tracer;
  tracer = recorder;
  try {
    return fn();
  } finally {
    tracer = previous;
  }
}

/**
 * An op built from other ops that has an ONNX translation of its own (linear as one Gemm): outside a trace
 * just `compute()`; inside one, `compute()` runs untraced and its result becomes one `opType` node.
 */
export function traceComposite(
  opType: string,
  inputs: readonly TraceValue[],
  attributes: Record<string, AttributeValue>,
  compute: () => Tensor,
): Tensor {
  const recorder = tracer;
  if (!recorder) return compute();
  const out = withTracer(null, compute);
  recorder.node(opType, inputs, out, attributes);
  return out;
}

/** Throws the error of an op without an ONNX translation. */
export function refuse(op: string): never {
  throw new Error(`${op} cannot be exported to ONNX yet`);
}
