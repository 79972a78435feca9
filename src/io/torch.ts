// PyTorch checkpoints, as `torch.save` writes them since PyTorch 1.6, read without PyTorch and without
// running them.
//
// Format. A zip of stored entries under one top folder (the archive's name): `<name>/data.pkl` is a pickle
// of the saved object, `<name>/data/<key>` the raw little-endian bytes of each storage, `<name>/byteorder`
// ("little"; absent before torch 2.1) and `<name>/version`. In the pickle a tensor is the call
// torch._utils._rebuild_tensor_v2(storage, storage offset, sizes, strides, requires_grad, backward hooks
// [, metadata]) (a Parameter wraps one in torch._utils._rebuild_parameter), and a storage is a persistent
// id ('storage', torch.FloatStorage | HalfStorage | ..., key, location, element count). Several tensors
// may view one storage (a transpose, a slice at an offset, tied weights): each comes out as its own
// row-major values.
//
// Safety. Python's unpickler calls whatever globals a pickle names, so loading a checkpoint in PyTorch can
// run code (os.system, builtins.eval). The reader here executes nothing: it is a stack machine that builds
// only what state dicts and training checkpoints hold (dicts, OrderedDicts, lists, tuples, strings, ints,
// floats, booleans, None, bytes, tensors) and refuses any other global by name as soon as it reads it. It
// is iterative (no recursion to overflow), caps the pickle's size and its nesting, keeps the memo in a Map
// (a huge index costs nothing) and checks every length against the bytes left. Each returned tensor's
// sizes, strides and offset are checked in BigInt (no overflow) against its storage's size from the zip's
// central directory before any storage is read, and the values returned are bounded by the storages'
// (a stride-0 view cannot blow a few bytes up into gigabytes). Storages are read one at a time, a shared
// one once, and dropped after their last tensor.
import { closeSync, openSync, readSync, resolve } from "../platform/runtime.ts";
import {
  bfloat16BitsToFloat32,
  defineKey,
  halfBitsToFloat32,
  int64WordsToInt32,
  type SafetensorsTensor,
} from "./safetensors.ts";
import { startsLikeZip, ZipReader } from "./zip.ts";

/** Options of `loadTorch`. */
export interface LoadTorchOptions {
  /** A training checkpoint's entry that holds the state dict: "state_dict", "model", "ema.state_dict". */
  key?: string;
  /** Strip this prefix from every key that has it (DataParallel's "module."). */
  stripPrefix?: string;
}

/** Largest data.pkl read: a state dict's pickle is ~100 KB, one of thousands of tensors a few MB. */
const MAX_PICKLE_BYTES = 64 * 2 ** 20;
/** Deepest nesting of containers (and of open MARKs) in a pickle. */
const MAX_NESTING = 1000;
/** A tensor holding more values than its storage (a stride-0 view) is read only up to this many values. */
const MAX_REPEATED_VALUES = 2 ** 24;
/** The tensors returned may hold at most this many times their storages' values (plus MAX_REPEATED_VALUES). */
const MAX_VALUES_PER_STORED = 4;

type Units = Uint8Array | Uint16Array | Uint32Array;

/** A storage class of torch.save: the dtype string it is returned as, and how its elements are read. */
interface StorageType {
  dtype: string;
  /** The typed array of one unit; an element is `width` units (two 32-bit words for the 64-bit types). */
  unit: typeof Uint8Array | typeof Uint16Array | typeof Uint32Array;
  width: number;
}

const STORAGE_TYPES: Record<string, StorageType> = {
  "torch.FloatStorage": { dtype: "F32", unit: Uint32Array, width: 1 },
  "torch.HalfStorage": { dtype: "F16", unit: Uint16Array, width: 1 },
  "torch.BFloat16Storage": { dtype: "BF16", unit: Uint16Array, width: 1 },
  "torch.DoubleStorage": { dtype: "F64", unit: Uint32Array, width: 2 },
  "torch.LongStorage": { dtype: "I64", unit: Uint32Array, width: 2 },
  "torch.IntStorage": { dtype: "I32", unit: Uint32Array, width: 1 },
  "torch.ByteStorage": { dtype: "U8", unit: Uint8Array, width: 1 },
  "torch.BoolStorage": { dtype: "BOOL", unit: Uint8Array, width: 1 },
};

const REBUILD_TENSOR = "torch._utils._rebuild_tensor_v2";
const REBUILD_PARAMETER = "torch._utils._rebuild_parameter";
const ORDERED_DICT = "collections.OrderedDict";
/** How Python 3 pickles bytes at protocol 2: _codecs.encode(latin-1 text, "latin1"). */
const CODECS_ENCODE = "_codecs.encode";
const ALLOWED_GLOBALS = new Set([
  REBUILD_TENSOR,
  REBUILD_PARAMETER,
  ORDERED_DICT,
  CODECS_ENCODE,
  ...Object.keys(STORAGE_TYPES),
]);

// What the pickle builds. Python ints are bigints, floats numbers, so a size can never be a float.
class PyList {
  readonly items: PyValue[] = [];
  depth = 1;
}
class PyTuple {
  constructor(readonly items: PyValue[], readonly depth: number) {}
}
class PyDict {
  readonly items = new Map<PyValue, PyValue>();
  depth = 1;
}
/** An allowed global: a callable for REDUCE or a storage class for a persistent id. */
class PyGlobal {
  constructor(readonly name: string) {}
}
class Storage {
  constructor(readonly key: string, readonly type: StorageType, readonly numel: bigint) {}
}
class TensorRef {
  constructor(
    readonly storage: Storage,
    readonly offset: bigint,
    readonly sizes: bigint[],
    readonly strides: bigint[],
  ) {}
}
type PyValue =
  | null
  | boolean
  | bigint
  | number
  | string
  | Uint8Array
  | PyList
  | PyTuple
  | PyDict
  | PyGlobal
  | Storage
  | TensorRef;

function typeName(v: PyValue): string {
  if (v === null) return "None";
  if (typeof v === "boolean") return "bool";
  if (typeof v === "bigint") return "int";
  if (typeof v === "number") return "float";
  if (typeof v === "string") return "str";
  if (v instanceof Uint8Array) return "bytes";
  if (v instanceof PyList) return "list";
  if (v instanceof PyTuple) return "tuple";
  if (v instanceof PyDict) return "dict";
  if (v instanceof PyGlobal) return v.name;
  return v instanceof Storage ? "storage" : "tensor";
}

/** `v`'s type with its article, for messages: "an int", "a tensor", "None". */
function describe(v: PyValue): string {
  const name = typeName(v);
  return v === null ? name : `${/^[aeiou]/.test(name) ? "an" : "a"} ${name}`;
}

const depthOf = (v: PyValue) =>
  v instanceof PyList || v instanceof PyTuple || v instanceof PyDict ? v.depth : 0;
const hex = (op: number) => `0x${op.toString(16).padStart(2, "0")}`;
/** A string from the file, quoted for a one-line message (escapes, and at most 200 characters). */
const quote = (s: string) => JSON.stringify(s.length > 200 ? `${s.slice(0, 200)}…` : s);
/** A name from the file as it is, unless it needs `quote`'s escapes or shortening. */
const plain = (s: string) => (quote(s) === `"${s}"` ? s : quote(s));
const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Runs the pickle `p` (the bytes of data.pkl) on a stack machine that knows only the opcodes and globals of
 * torch checkpoints, and returns the object it saved. Every error is one line naming `file`.
 */
function unpickle(p: Uint8Array, file: string): PyValue {
  const where = `${file}: data.pkl`;
  const view = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const stack: PyValue[] = [], marks: number[] = [];
  const memo = new Map<number, PyValue>();
  let pos = 0, at = 0, op = 0;
  const fail = (msg: string): never => {
    throw new Error(`${where}: ${msg}`);
  };
  const need = (n: number | bigint, what: string) => {
    if (BigInt(pos) + BigInt(n) > p.length) {
      fail(`${what} of ${n} bytes at byte ${at} runs past the end (${p.length} bytes)`);
    }
    return Number(n);
  };
  const u8 = () => (need(1, "an argument"), p[pos++]);
  const u16 = () => (need(2, "an argument"), pos += 2, view.getUint16(pos - 2, true));
  const u32 = () => (need(4, "an argument"), pos += 4, view.getUint32(pos - 4, true));
  const u64 = () => (need(8, "an argument"), pos += 8, view.getBigUint64(pos - 8, true));
  const take = (n: number | bigint, what: string) => {
    const length = need(n, what);
    pos += length;
    return p.subarray(pos - length, pos);
  };
  const text = (n: number | bigint) => {
    const bytes = take(n, "a string");
    try {
      return utf8.decode(bytes);
    } catch {
      return fail(`the string at byte ${at} is not valid UTF-8`);
    }
  };
  const line = () => {
    const end = p.indexOf(0x0a, pos);
    if (end < 0) fail(`the GLOBAL at byte ${at} has no end of line`);
    const s = text(end - pos);
    pos++; // the newline
    return s;
  };
  const floor = () => (marks.length ? marks[marks.length - 1] : 0);
  const pop = (): PyValue => {
    if (stack.length <= floor()) fail(`stack underflow at byte ${at} (opcode ${hex(op)})`);
    return stack.pop()!;
  };
  const top = (): PyValue => {
    if (stack.length <= floor()) fail(`stack underflow at byte ${at} (opcode ${hex(op)})`);
    return stack[stack.length - 1];
  };
  const popMark = (): PyValue[] => {
    const mark = marks.pop();
    if (mark === undefined) fail(`opcode ${hex(op)} at byte ${at} has no MARK`);
    return stack.splice(mark!);
  };
  const deepen = (parent: PyList | PyDict, child: PyValue) => {
    parent.depth = Math.max(parent.depth, depthOf(child) + 1);
    if (parent.depth > MAX_NESTING) fail(`nests deeper than ${MAX_NESTING} levels (at byte ${at})`);
  };
  const append = (l: PyList, item: PyValue) => {
    deepen(l, item);
    l.items.push(item);
  };
  const setItem = (d: PyDict, key: PyValue, value: PyValue) => {
    deepen(d, value);
    d.items.set(key, value);
  };
  const tuple = (items: PyValue[]) => {
    const depth = 1 + items.reduce((most: number, item) => Math.max(most, depthOf(item)), 0);
    if (depth > MAX_NESTING) fail(`nests deeper than ${MAX_NESTING} levels (at byte ${at})`);
    return new PyTuple(items, depth);
  };
  const list = (): PyList => {
    const l = top();
    if (!(l instanceof PyList)) return fail(`opcode ${hex(op)} at byte ${at} appends to ${describe(l)}`);
    return l;
  };
  const dict = (): PyDict => {
    const d = top();
    if (!(d instanceof PyDict)) {
      return fail(`opcode ${hex(op)} at byte ${at} sets an item of ${describe(d)}`);
    }
    return d;
  };
  const global = (module: string, name: string) => {
    const full = `${module}.${name}`;
    if (!ALLOWED_GLOBALS.has(full)) {
      throw new Error(
        `${file}: refuses the global ${
          plain(full)
        } (a torch checkpoint holds only tensors, dicts, lists and numbers; this file may run code when PyTorch loads it)`,
      );
    }
    return new PyGlobal(full);
  };
  const isInt = (v: PyValue) => typeof v === "bigint";

  while (pos < p.length) {
    at = pos;
    op = p[pos++];
    switch (op) {
      case 0x80: { // PROTO
        const protocol = u8();
        if (protocol > 5) fail(`pickle protocol ${protocol} is newer than 5`);
        break;
      }
      case 0x95: // FRAME: a length hint for buffered reading; the whole pickle is in memory already
        u64();
        break;
      case 0x2e: // STOP
        return pop();
      case 0x28: // MARK
        if (marks.length >= MAX_NESTING) fail(`nests deeper than ${MAX_NESTING} levels (at byte ${at})`);
        marks.push(stack.length);
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
      case 0x89: // NEWFALSE
        stack.push(op === 0x88);
        break;
      case 0x4b: // BININT1
      case 0x4d: // BININT2
      case 0x4a: // BININT (signed)
        stack.push(BigInt(op === 0x4b ? u8() : op === 0x4d ? u16() : u32() | 0));
        break;
      case 0x8a: { // LONG1: little-endian two's complement
        const bytes = take(u8(), "an int");
        let v = 0n;
        for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
        stack.push(bytes.length ? BigInt.asIntN(8 * bytes.length, v) : 0n);
        break;
      }
      case 0x47: // BINFLOAT, big-endian
        need(8, "a float");
        pos += 8;
        stack.push(view.getFloat64(pos - 8, false));
        break;
      case 0x8c: // SHORT_BINUNICODE (a 1-byte length)
      case 0x58: // BINUNICODE (4 bytes)
      case 0x8d: // BINUNICODE8 (8 bytes)
        stack.push(text(op === 0x8c ? u8() : op === 0x58 ? u32() : u64()));
        break;
      case 0x43: // SHORT_BINBYTES (a 1-byte length)
      case 0x42: // BINBYTES (4 bytes)
      case 0x8e: // BINBYTES8 (8 bytes)
        stack.push(take(op === 0x43 ? u8() : op === 0x42 ? u32() : u64(), "a bytes object").slice());
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push(tuple([]));
        break;
      case 0x85: // TUPLE1
      case 0x86: // TUPLE2
      case 0x87: { // TUPLE3
        const items = Array.from({ length: op - 0x84 }, pop).reverse();
        stack.push(tuple(items));
        break;
      }
      case 0x74: // TUPLE
        stack.push(tuple(popMark()));
        break;
      case 0x5d: // EMPTY_LIST
        stack.push(new PyList());
        break;
      case 0x6c: { // LIST
        const l = new PyList();
        for (const item of popMark()) append(l, item);
        stack.push(l);
        break;
      }
      case 0x61: { // APPEND
        const item = pop();
        append(list(), item);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark(), l = list();
        for (const item of items) append(l, item);
        break;
      }
      case 0x7d: // EMPTY_DICT
        stack.push(new PyDict());
        break;
      case 0x64: // DICT
      case 0x75: { // SETITEMS
        const items = popMark();
        if (items.length % 2) fail(`opcode ${hex(op)} at byte ${at} has a key without a value`);
        const d = op === 0x64 ? new PyDict() : dict();
        for (let i = 0; i < items.length; i += 2) setItem(d, items[i], items[i + 1]);
        if (op === 0x64) stack.push(d);
        break;
      }
      case 0x73: { // SETITEM
        const value = pop(), key = pop();
        setItem(dict(), key, value);
        break;
      }
      case 0x71: // BINPUT
      case 0x72: // LONG_BINPUT
        memo.set(op === 0x71 ? u8() : u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: { // LONG_BINGET
        const index = op === 0x68 ? u8() : u32();
        if (!memo.has(index)) fail(`memo index ${index} at byte ${at} was never stored`);
        stack.push(memo.get(index)!);
        break;
      }
      case 0x63: { // GLOBAL: "module\nname\n"
        const module = line();
        stack.push(global(module, line()));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop(), module = pop();
        if (typeof module !== "string" || typeof name !== "string") {
          return fail(
            `STACK_GLOBAL at byte ${at} takes two strings, got ${describe(module)} and ${describe(name)}`,
          );
        }
        stack.push(global(module, name));
        break;
      }
      case 0x51: { // BINPERSID: ('storage', storage class, key, location, numel)
        const pid = pop();
        const [kind, type, key, , numel] = pid instanceof PyTuple ? pid.items : [];
        if (
          !(pid instanceof PyTuple) || pid.items.length !== 5 || kind !== "storage" ||
          !(type instanceof PyGlobal) || !(type.name in STORAGE_TYPES) || typeof key !== "string" ||
          typeof numel !== "bigint"
        ) {
          return fail(
            `the persistent id at byte ${at} is not ('storage', a storage class, key, location, size)`,
          );
        }
        stack.push(new Storage(key, STORAGE_TYPES[type.name], numel));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop(), callable = pop();
        if (!(callable instanceof PyGlobal) || !(args instanceof PyTuple)) {
          return fail(`REDUCE at byte ${at} calls ${describe(callable)} with ${describe(args)}`);
        }
        stack.push(reduce(callable.name, args.items));
        break;
      }
      case 0x62: { // BUILD: an OrderedDict's attributes (state_dict's _metadata) are not kept
        pop();
        const target = top();
        if (!(target instanceof PyDict)) fail(`BUILD at byte ${at} sets the state of ${describe(target)}`);
        break;
      }
      default:
        fail(`unknown or unsupported opcode ${hex(op)} at byte ${at}`);
    }
  }
  return fail("ends without STOP");

  function reduce(callable: string, args: PyValue[]): PyValue {
    const bad = (): never => fail(`REDUCE at byte ${at}: unexpected arguments for ${callable}`);
    switch (callable) {
      case ORDERED_DICT:
        return args.length === 0 ? new PyDict() : bad();
      case REBUILD_TENSOR: {
        const [storage, offset, sizes, strides] = args;
        if (
          args.length < 6 || args.length > 7 || !(storage instanceof Storage) || !isInt(offset) ||
          !(sizes instanceof PyTuple) || !(strides instanceof PyTuple) ||
          sizes.items.length !== strides.items.length || !sizes.items.every(isInt) ||
          !strides.items.every(isInt)
        ) {
          return bad();
        }
        return new TensorRef(storage, offset as bigint, sizes.items as bigint[], strides.items as bigint[]);
      }
      case REBUILD_PARAMETER:
        return args.length === 3 && args[0] instanceof TensorRef ? args[0] : bad();
      case CODECS_ENCODE: {
        const [s, encoding] = args;
        if (args.length !== 2 || typeof s !== "string" || (encoding !== "latin1" && encoding !== "latin-1")) {
          return bad();
        }
        const bytes = new Uint8Array(s.length);
        for (let i = 0; i < s.length; i++) {
          if (s.charCodeAt(i) > 255) return bad();
          bytes[i] = s.charCodeAt(i);
        }
        return bytes;
      }
    }
    return fail(`REDUCE at byte ${at} calls ${callable}, which is not callable`);
  }
}

/** A dict's keys for messages, in order, the first 30. */
function entryList(d: PyDict): string {
  const names = [...d.items.keys()].map((k) =>
    typeof k === "string" ? plain(k) : typeof k === "bigint" ? String(k) : typeName(k)
  );
  return names.length > 30
    ? `${names.slice(0, 30).join(", ")}, and ${names.length - 30} more`
    : names.join(", ");
}

const holdsTensors = (v: PyValue) =>
  v instanceof PyDict && [...v.items.values()].some((x) => x instanceof TensorRef);

/**
 * The state dict in `root`: the dict at `key` (a dotted path) or the root itself, which must hold tensors
 * and no dicts of tensors (that is a training checkpoint: the error names its entries and one to pass).
 */
function selectStateDict(root: PyValue, file: string, key: string | undefined): PyDict {
  let d = root, path = "";
  for (const part of key === undefined ? [] : key.split(".")) {
    if (!(d instanceof PyDict)) break;
    const next = d.items.get(part);
    if (next === undefined) {
      throw new Error(
        `${file}: no entry "${path ? `${path}.` : ""}${part}" (entries there: ${entryList(d)})`,
      );
    }
    d = next;
    path = path ? `${path}.${part}` : part;
  }
  const what = path ? `${file}: entry "${path}"` : file;
  if (!(d instanceof PyDict)) throw new Error(`${what} holds ${describe(d)}, not a dict of tensors`);
  const items = d.items;
  const nested = [...items.keys()].find((k): k is string =>
    typeof k === "string" && holdsTensors(items.get(k)!)
  );
  if (nested !== undefined) {
    const suggestion = path ? `${path}.${nested}` : nested;
    throw new Error(
      `${what} is a training checkpoint, not a state dict: pass { key: ${quote(suggestion)} } (its entries: ${
        entryList(d)
      })`,
    );
  }
  if (!holdsTensors(d)) throw new Error(`${what} holds no tensors (its entries: ${entryList(d)})`);
  return d;
}

/** A tensor to return, checked against its storage: where its values are and how to walk them. */
interface Planned {
  name: string;
  /** The key in the file (before stripPrefix), for messages. */
  key: string;
  storage: Storage;
  /** The storage's entry in the archive. */
  entry: string;
  shape: number[];
  strides: number[];
  offset: number;
  numel: number;
  /** Row-major strides (dimensions of size 1 aside), or no values: one slice of the storage. */
  contiguous: boolean;
}

/**
 * Checks every tensor against the storage entries' sizes in the central directory (BigInt arithmetic, so
 * no product or sum can overflow) and the values returned against the values stored.
 */
function plan(
  tensors: [string, string, TensorRef][],
  reader: ZipReader,
  folder: string,
  file: string,
): Planned[] {
  const storageTypes = new Map<string, StorageType>();
  const storedValues = new Map<string, bigint>();
  let returnedValues = 0n;
  const planned = tensors.map(([key, name, t]): Planned => {
    const { storage, offset, sizes, strides } = t;
    const entryName = `${folder}/data/${storage.key}`;
    const what = `${file}: tensor ${quote(key)}`;
    const entry = reader.entry(entryName);
    if (!entry || entry.folder) {
      throw new Error(
        `${what} refers to storage ${quote(storage.key)}, an entry outside the archive (no ${entryName})`,
      );
    }
    const type = storage.type, seen = storageTypes.get(storage.key);
    if (seen && seen !== type) {
      throw new Error(
        `${file}: storage ${quote(storage.key)} is read as both ${seen.dtype} and ${type.dtype}`,
      );
    }
    storageTypes.set(storage.key, type);
    const bytes = storage.numel * BigInt(type.unit.BYTES_PER_ELEMENT * type.width);
    if (bytes !== BigInt(entry.size)) {
      throw new Error(
        `${file}: storage ${
          quote(storage.key)
        }: the pickle says ${storage.numel} ${type.dtype} values (${bytes} bytes), its entry ${entryName} holds ${entry.size} bytes`,
      );
    }
    const elements = storage.numel;
    const layout = `sizes [${sizes.join(", ")}], strides [${strides.join(", ")}], offset ${offset}`;
    const limit = BigInt(Number.MAX_SAFE_INTEGER);
    if ([offset, ...sizes, ...strides].some((v) => v < 0n || v > limit)) {
      throw new Error(`${what} has a negative or oversized size, stride or offset (${layout})`);
    }
    const numel = sizes.reduce((a, b) => a * b, 1n);
    if (numel > 0n) {
      const last = sizes.reduce((sum, size, i) => sum + (size - 1n) * strides[i], offset);
      if (last >= elements) {
        throw new Error(
          `${what} (${layout}) reaches element ${last} of storage ${
            quote(storage.key)
          }, which holds ${elements}`,
        );
      }
    }
    if (numel > elements && numel > BigInt(MAX_REPEATED_VALUES)) {
      throw new Error(
        `${what} has ${numel} values (${layout}) from a storage of ${elements}; a view that repeats its storage is read up to ${MAX_REPEATED_VALUES} values`,
      );
    }
    storedValues.set(storage.key, elements);
    returnedValues += numel;
    const shape = sizes.map(Number), strideNumbers = strides.map(Number);
    let expected = 1, contiguous = true;
    for (let i = shape.length - 1; i >= 0; i--) {
      if (shape[i] !== 1 && strideNumbers[i] !== expected) contiguous = false;
      expected *= shape[i];
    }
    return {
      name,
      key,
      storage,
      entry: entryName,
      shape,
      strides: strideNumbers,
      offset: Number(offset),
      numel: Number(numel),
      contiguous: contiguous || numel === 0n,
    };
  });
  const stored = [...storedValues.values()].reduce((a, b) => a + b, 0n);
  if (returnedValues > BigInt(MAX_VALUES_PER_STORED) * stored + BigInt(MAX_REPEATED_VALUES)) {
    throw new Error(
      `${file}: its tensors would hold ${returnedValues} values, over ${MAX_VALUES_PER_STORED} times the ${stored} values of their storages`,
    );
  }
  return planned;
}

/**
 * The tensor's units (`width` per element) in row-major order. `soleUser`: no other tensor views the
 * storage, so a tensor that is all of it may keep its buffer.
 */
function rowMajor(units: Units, width: number, t: Planned, soleUser: boolean): Units {
  const start = t.offset * width, length = t.numel * width;
  if (t.contiguous) {
    const slice = units.subarray(start, start + length);
    return soleUser && slice.length === units.length ? slice : slice.slice();
  }
  // An odometer over every dimension but the last, whose values are copied in the inner loop.
  const out = new (units.constructor as new (length: number) => Units)(length);
  const last = t.shape.length - 1, inner = t.shape[last], innerStep = t.strides[last] * width;
  const index = new Array<number>(last).fill(0);
  let from = start, to = 0;
  for (let row = 0; row < t.numel / inner; row++) {
    for (let i = 0, s = from; i < inner; i++, s += innerStep) {
      for (let w = 0; w < width; w++) out[to++] = units[s + w];
    }
    for (let d = last - 1; d >= 0; d--) {
      from += t.strides[d] * width;
      if (++index[d] < t.shape[d]) break;
      from -= t.strides[d] * width * t.shape[d];
      index[d] = 0;
    }
  }
  return out;
}

/** Row-major units -> the values returned (Float32Array for floats, Int32Array for integers and bools). */
function convert(units: Units, t: Planned, file: string): Float32Array | Int32Array {
  const { buffer, byteOffset, length } = units;
  switch (t.storage.type.dtype) {
    case "F32":
      return new Float32Array(buffer, byteOffset, length);
    case "I32":
      return new Int32Array(buffer, byteOffset, length);
    case "F16":
      return halfBitsToFloat32(units as Uint16Array);
    case "BF16":
      return bfloat16BitsToFloat32(units as Uint16Array);
    case "F64":
      return Float32Array.from(new Float64Array(buffer, byteOffset, length / 2));
    case "I64":
      return int64WordsToInt32(new Int32Array(buffer, byteOffset, length), (i, v) => {
        throw new Error(
          `${file}: tensor ${quote(t.key)}: I64 value ${v} at index ${i} does not fit in int32`,
        );
      });
    case "U8":
      return Int32Array.from(units);
    default: // BOOL
      return Int32Array.from(units, (b) => (b ? 1 : 0));
  }
}

/** The first bytes of a file: a zip's (torch >= 1.6) or a pickle's PROTO opcode (the legacy format). */
function checkMagic(head: Uint8Array, file: string): void {
  if (startsLikeZip(head)) return;
  const [a, b] = head;
  if (a === 0x80 && b >= 1 && b <= 5) {
    throw new Error(
      `${file} is a legacy PyTorch file (torch < 1.6's format, not a zip); re-save it with torch >= 1.6: torch.save(torch.load(f), f2)`,
    );
  }
  throw new Error(`${file} is not a PyTorch checkpoint (neither a zip nor a pickle)`);
}

function openCheckpoint(input: string | Uint8Array): { reader: ZipReader; file: string } {
  if (typeof input === "string") {
    const file = resolve(input), head = new Uint8Array(4);
    let fd: number | undefined;
    try {
      fd = openSync(file, "r");
      readSync(fd, head, 0, 4, 0);
    } catch (err) {
      throw new Error(`${file}: cannot read: ${(err as Error).message}`);
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
    checkMagic(head, file);
    return { reader: ZipReader.open(file), file };
  }
  if (!(input instanceof Uint8Array)) throw new Error("loadTorch: expected a path or a Uint8Array");
  const file = "<bytes>";
  checkMagic(input.subarray(0, 4), file);
  return { reader: ZipReader.fromBytes(input, file), file };
}

/**
 * Reads a PyTorch checkpoint written by `torch.save` since PyTorch 1.6 (a zip), from a path or its bytes,
 * without running it: the tensors of its state dict as `loadSafetensors` returns them (`dtype` "F32",
 * "F16", "BF16", "F64" -> Float32Array; "I64", "I32", "U8", "BOOL" -> Int32Array, an int64 outside int32
 * being an error naming the key), each in row-major order whatever its strides, in the file's order.
 * A training checkpoint ({ epoch, state_dict, optimizer, ... }) needs `key`; non-tensor values of the
 * state dict are left out.
 * @throws Error naming the file and the problem: a legacy (torch < 1.6) or big-endian file, any global
 * but the ones tensors and dicts need (a pickle that may run code), a truncated or corrupt archive or
 * pickle, tensors that reach outside their storage, a training checkpoint without `key`.
 */
export function loadTorch(
  pathOrBytes: string | Uint8Array,
  options: LoadTorchOptions = {},
): Promise<Record<string, SafetensorsTensor>> {
  return Promise.resolve().then(() => readCheckpoint(pathOrBytes, options));
}

function readCheckpoint(
  pathOrBytes: string | Uint8Array,
  options: LoadTorchOptions,
): Record<string, SafetensorsTensor> {
  const { reader, file } = openCheckpoint(pathOrBytes);
  const pickles = reader.entries().filter((e) => !e.folder && /^[^/]+\/data\.pkl$/.test(e.name));
  if (pickles.length !== 1) {
    throw new Error(
      pickles.length === 0
        ? `${file} is a zip but not a PyTorch checkpoint (no <folder>/data.pkl entry)`
        : `${file} holds ${pickles.length} pickles (${
          pickles.map((e) => e.name).join(", ")
        }); a checkpoint has one`,
    );
  }
  const folder = pickles[0].name.slice(0, -"/data.pkl".length);
  const byteorder = reader.entry(`${folder}/byteorder`);
  if (byteorder) {
    const order = byteorder.size <= 16 ? reader.readText(byteorder.name) : "";
    if (order === "big") {
      throw new Error(
        `${file} was saved on a big-endian machine (byteorder "big"); only little-endian files are read`,
      );
    }
    if (order !== "little") throw new Error(`${file}: ${byteorder.name} is neither "little" nor "big"`);
  }
  if (pickles[0].size > MAX_PICKLE_BYTES) {
    throw new Error(`${file}: data.pkl is ${pickles[0].size} bytes, over the limit of ${MAX_PICKLE_BYTES}`);
  }
  const root = unpickle(reader.read(pickles[0].name), file);
  const stateDict = selectStateDict(root, file, options.key);

  const prefix = options.stripPrefix ?? "";
  const named = new Map<string, string>();
  const tensors: [string, string, TensorRef][] = [];
  for (const [key, value] of stateDict.items) {
    if (!(value instanceof TensorRef)) continue;
    if (typeof key !== "string") {
      throw new Error(`${file}: a tensor is stored under ${describe(key)}, not a name`);
    }
    const name = prefix && key.startsWith(prefix) ? key.slice(prefix.length) : key;
    const other = named.get(name);
    if (other !== undefined) {
      throw new Error(
        `${file}: ${quote(other)} and ${quote(key)} are both ${quote(name)} without the prefix ${
          quote(prefix)
        }`,
      );
    }
    named.set(name, key);
    tensors.push([key, name, value]);
  }
  const planned = plan(tensors, reader, folder, file);

  // Each storage is read once, when its first tensor comes, and dropped after its last.
  const users = new Map<string, number>();
  for (const t of planned) users.set(t.storage.key, (users.get(t.storage.key) ?? 0) + 1);
  const soleUsers = new Set([...users].filter(([, n]) => n === 1).map(([key]) => key));
  const cache = new Map<string, Units>();
  const out: Record<string, SafetensorsTensor> = {};
  for (const t of planned) {
    const { key } = t.storage, { unit, width, dtype } = t.storage.type;
    let units = cache.get(key);
    if (!units) {
      let bytes = reader.read(t.entry);
      if (bytes.byteOffset % 8) bytes = bytes.slice(); // typed views need aligned offsets
      units = new unit(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.length / unit.BYTES_PER_ELEMENT);
    }
    const left = users.get(key)! - 1;
    users.set(key, left);
    if (left > 0) cache.set(key, units);
    else cache.delete(key);
    const data = convert(rowMajor(units, width, t, soleUsers.has(key)), t, file);
    defineKey(out, t.name, { dtype, shape: t.shape, data });
  }
  return out;
}
