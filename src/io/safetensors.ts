// The safetensors format (https://github.com/huggingface/safetensors), read and written without a copy of
// the whole file: 8 bytes little-endian u64 N, then N bytes of JSON header, then the data section. Every
// header entry is `{ "dtype": "F32", "shape": [..], "data_offsets": [begin, end] }` with offsets relative to
// the data section; the optional `__metadata__` entry is a string -> string map.
//
// Reading checks the whole header before allocating anything for tensor data, so a lying header (absurd
// lengths, offsets past the end, overlapping tensors, sizes that disagree with the shape) gives an Error
// that names the key, never a huge allocation. From a path, each tensor's byte range is read straight
// into its typed array through a file descriptor.
import { closeSync, fstatSync, openSync, readSync } from "../platform/runtime.ts";
import { Tensor } from "../autograd/tensor.ts";
import { writeFileAtomic } from "./files.ts";

/** A tensor as `loadSafetensors` returns it: `dtype` is the stored dtype string ("F32", "F16", "I64", ...). */
export interface SafetensorsTensor {
  /** The dtype as stored in the header ("F32", "F16", "I64", ...), before any widening or narrowing. */
  dtype: string;
  /** Dimensions, outermost first; `[]` for a scalar. */
  shape: number[];
  /** F32, F16, BF16, F64 come back as Float32Array; I32, I64 (and loadTorch's U8, BOOL) as Int32Array. */
  data: Float32Array | Int32Array;
}

/** What `saveSafetensors` accepts per key: a record (`dtype` "F32" | "F16" | "I32" | "I64") or a Tensor. */
export interface SafetensorsInput {
  /** "F32", "F16" (rounded to nearest, ties to even), "I32" or "I64"; any other dtype is refused. */
  dtype: string;
  /** Dimensions, non-negative integers; their product must equal the number of values. */
  shape: number[];
  /** Row-major values; integers (in range) for I32 and I64, bigints allowed for I64. */
  data: Float32Array | Int32Array | BigInt64Array | ArrayLike<number>;
}

/** Longest header accepted (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100_000_000;

const DTYPE_BYTES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  F8_E8M0: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
};
const READABLE = new Set(["F32", "F16", "BF16", "F64", "I32", "I64"]);

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

interface Entry {
  key: string;
  dtype: string;
  shape: number[];
  count: number;
  begin: number;
  end: number;
}

interface Header {
  entries: Entry[];
  metadata: Record<string, string>;
  /** Absolute file offset of the data section. */
  dataStart: number;
}

/** Random-access reads from a file descriptor or from bytes in memory. */
interface Source {
  name: string;
  size: number;
  /** Fills `into` with the bytes at [position, position + into.length). */
  read(into: Uint8Array, position: number): void;
  close(): void;
}

function fail(src: string, msg: string): never {
  throw new Error(`safetensors (${src}): ${msg}`);
}

function openSource(input: string | Uint8Array | ArrayBuffer): Source {
  if (typeof input === "string") {
    let fd: number;
    try {
      fd = openSync(input, "r");
    } catch (err) {
      throw new Error(`safetensors: cannot open ${input}: ${(err as Error).message}`);
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) fail(input, "not a regular file");
      const size = Number(st.size);
      return {
        name: input,
        size,
        read(into, position) {
          let done = 0;
          while (done < into.length) {
            const chunk = Math.min(into.length - done, 1 << 30);
            const n = readSync(fd, into, done, chunk, position + done);
            if (n <= 0) {
              fail(
                input,
                `unexpected end of file at byte ${position + done} (the file changed while reading?)`,
              );
            }
            done += n;
          }
        },
        close() {
          closeSync(fd);
        },
      };
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }
  const bytes = input instanceof Uint8Array
    ? input
    : input instanceof ArrayBuffer
    ? new Uint8Array(input)
    : null;
  if (!bytes) throw new Error("safetensors: expected a path, a Uint8Array or an ArrayBuffer");
  return {
    name: "bytes",
    size: bytes.length,
    read(into, position) {
      into.set(bytes.subarray(position, position + into.length));
    },
    close() {},
  };
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

function readHeader(src: Source): Header {
  const name = src.name;
  if (src.size < 8) {
    fail(name, `file too short (${src.size} bytes; a safetensors file starts with an 8-byte header length)`);
  }
  const lenBytes = new Uint8Array(8);
  src.read(lenBytes, 0);
  const n64 = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (n64 > BigInt(MAX_HEADER_BYTES)) {
    fail(name, `header length ${n64} exceeds the limit of ${MAX_HEADER_BYTES} bytes`);
  }
  const n = Number(n64);
  if (n > src.size - 8) {
    fail(name, `header length ${n} is larger than the rest of the file (${src.size - 8} bytes)`);
  }
  if (n < 2) fail(name, `header length ${n} is too short for a JSON object`);
  const headerBytes = new Uint8Array(n);
  src.read(headerBytes, 8);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    fail(name, "header is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    fail(name, `header is not valid JSON (${(err as Error).message})`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    fail(name, "header is not a JSON object");
  }

  const dataStart = 8 + n;
  const dataLength = src.size - dataStart;
  const entries: Entry[] = [];
  const metadata: Record<string, string> = {};
  for (const [key, raw] of Object.entries(json as Record<string, unknown>)) {
    if (key === "__metadata__") {
      if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
        fail(name, "__metadata__ must be an object of strings");
      }
      for (const [mk, mv] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof mv !== "string") fail(name, `__metadata__ value of ${JSON.stringify(mk)} is not a string`);
        defineKey(metadata, mk, mv);
      }
      continue;
    }
    const k = JSON.stringify(key);
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      fail(name, `tensor ${k}: entry is not an object`);
    }
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (typeof dtype !== "string") fail(name, `tensor ${k}: missing or non-string dtype`);
    const itemBytes = DTYPE_BYTES[dtype];
    if (itemBytes === undefined) fail(name, `tensor ${k}: unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape)) fail(name, `tensor ${k}: shape must be an array`);
    if (!shape.every(isCount)) {
      fail(name, `tensor ${k}: shape ${JSON.stringify(shape)} must hold non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      fail(name, `tensor ${k}: data_offsets must be [begin, end] with non-negative integers`);
    }
    const [begin, end] = offsets as number[];
    if (begin > end) fail(name, `tensor ${k}: data_offsets [${begin}, ${end}] has begin > end`);
    if (end > dataLength) {
      fail(
        name,
        `tensor ${k}: data_offsets [${begin}, ${end}] run past the data section (${dataLength} bytes)`,
      );
    }
    // Product with an early exit once it leaves exact integers; only a size that equals end - begin (bounded
    // by the file) is ever allocated.
    let count = (shape as number[]).includes(0) ? 0 : 1;
    let tooBig = false;
    for (const d of shape as number[]) {
      if (count === 0) break;
      count *= d;
      if (count * itemBytes > 2 ** 48) {
        tooBig = true;
        break;
      }
    }
    if (tooBig || count * itemBytes !== end - begin) {
      const need = tooBig ? "more than 2^48" : `${count * itemBytes}`;
      fail(
        name,
        `tensor ${k}: shape [${
          (shape as number[]).join(", ")
        }] of ${dtype} needs ${need} bytes but data_offsets give ${end - begin}`,
      );
    }
    entries.push({ key, dtype, shape: [...(shape as number[])], count, begin, end });
  }
  const byStart = entries.filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < byStart.length; i++) {
    if (byStart[i].begin < byStart[i - 1].end) {
      fail(
        name,
        `tensors ${JSON.stringify(byStart[i - 1].key)} and ${JSON.stringify(byStart[i].key)} overlap`,
      );
    }
  }
  return { entries, metadata, dataStart };
}

/** Assigns even keys like "__proto__" as own properties. */
export function defineKey<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/** IEEE half-precision bits -> the float32 values they stand for (every half is exact in float32). */
export function halfBitsToFloat32(bits: Uint16Array): Float32Array {
  const table = halfTable();
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]];
  return out;
}

/** bfloat16 bits -> float32 values, exactly: a bfloat16 is the upper half of a float32. */
export function bfloat16BitsToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) outBits[i] = bits[i] << 16;
  return out;
}

/**
 * int64 values, as pairs of little-endian int32 words (low word first), -> Int32Array. `outOfRange` gets the
 * index and value of the first one outside int32 and must throw.
 */
export function int64WordsToInt32(
  words: Int32Array,
  outOfRange: (index: number, value: bigint) => never,
): Int32Array {
  const out = new Int32Array(words.length >> 1);
  for (let i = 0; i < out.length; i++) {
    const lo = words[2 * i], hi = words[2 * i + 1];
    if (hi !== lo >> 31) outOfRange(i, (BigInt(hi) << 32n) | BigInt(lo >>> 0));
    out[i] = lo;
  }
  return out;
}

let f16Table: Float32Array | null = null;
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    t[h] = exp === 0
      ? sign * frac * 2 ** -24 // zero and subnormals
      : exp === 31
      ? (frac ? NaN : sign * Infinity)
      : sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return f16Table = t;
}

/**
 * float32 values -> IEEE half-precision bits, rounded to nearest (ties to even), subnormals kept; NaN stays
 * NaN. Returns the index of the first finite value too large for a half (|x| >= 65520), or -1.
 */
function encodeHalf(a: Float32Array, out: Uint16Array): number {
  const bits = new Uint32Array(a.buffer, a.byteOffset, a.length);
  for (let i = 0; i < a.length; i++) {
    const b = bits[i], sign = (b >>> 16) & 0x8000, exp = (b >>> 23) & 0xff, mant = b & 0x7fffff;
    if (exp === 255) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    const e = exp - 112; // the half's biased exponent
    let h: number;
    if (e >= 31) return i;
    if (e <= 0) {
      if (e < -10) h = 0;
      else {
        const m = mant | 0x800000, shift = 14 - e, rest = m & ((1 << shift) - 1), half = 1 << (shift - 1);
        h = m >>> shift;
        if (rest > half || (rest === half && h & 1)) h++;
      }
    } else {
      h = (e << 10) | (mant >>> 13);
      const rest = mant & 0x1fff;
      if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++; // a carry moves into the exponent, as it should
      if (h >= 0x7c00) return i;
    }
    out[i] = sign | h;
  }
  return -1;
}

function readEntry(src: Source, h: Header, e: Entry): Float32Array | Int32Array {
  const pos = h.dataStart + e.begin;
  const k = JSON.stringify(e.key);
  switch (e.dtype) {
    case "F32": {
      const out = new Float32Array(e.count);
      src.read(new Uint8Array(out.buffer), pos);
      return out;
    }
    case "I32": {
      const out = new Int32Array(e.count);
      src.read(new Uint8Array(out.buffer), pos);
      return out;
    }
    case "F16":
    case "BF16": {
      const raw = new Uint16Array(e.count);
      src.read(new Uint8Array(raw.buffer), pos);
      return e.dtype === "BF16" ? bfloat16BitsToFloat32(raw) : halfBitsToFloat32(raw);
    }
    case "F64": {
      const raw = new Float64Array(e.count);
      src.read(new Uint8Array(raw.buffer), pos);
      return Float32Array.from(raw);
    }
    case "I64": {
      const words = new Int32Array(e.count * 2);
      src.read(new Uint8Array(words.buffer), pos);
      return int64WordsToInt32(
        words,
        (i, v) => fail(src.name, `tensor ${k}: I64 value ${v} at index ${i} does not fit in int32`),
      );
    }
  }
  fail(src.name, `tensor ${k}: dtype ${e.dtype} is not supported (F32, F16, BF16, F64, I32 and I64 are)`);
}

/**
 * Reads every tensor of a safetensors file (a path, or the file's bytes). F32 as stored; F16, BF16 and
 * F64 are converted to Float32Array; I32 and I64 come back as Int32Array (an I64 value outside int32 is
 * an error naming the key). `dtype` reports the stored dtype. Other dtypes (U8, BOOL, ...) are an error
 * naming the key. Use `readSafetensorsMetadata` for the `__metadata__` map.
 */
export function loadSafetensors(
  pathOrBytes: string | Uint8Array | ArrayBuffer,
  { keys }: { keys?: string[] } = {},
): Promise<Record<string, SafetensorsTensor>> {
  return Promise.resolve().then(() => loadSafetensorsSync(pathOrBytes, { keys }));
}

/** `loadSafetensors` without the Promise. */
export function loadSafetensorsSync(
  pathOrBytes: string | Uint8Array | ArrayBuffer,
  { keys }: { keys?: string[] } = {},
): Record<string, SafetensorsTensor> {
  if (!littleEndian) throw new Error("safetensors: big-endian hosts are not supported");
  const src = openSource(pathOrBytes);
  try {
    const header = readHeader(src);
    let entries = header.entries;
    if (keys) {
      const want = new Set(keys);
      const have = new Set(entries.map((e) => e.key));
      const absent = keys.filter((k) => !have.has(k));
      if (absent.length) fail(src.name, `no tensor named ${absent.map((k) => JSON.stringify(k)).join(", ")}`);
      entries = entries.filter((e) => want.has(e.key));
    }
    for (const e of entries) {
      if (!READABLE.has(e.dtype)) {
        fail(
          src.name,
          `tensor ${
            JSON.stringify(e.key)
          }: dtype ${e.dtype} is not supported (F32, F16, BF16, F64, I32 and I64 are)`,
        );
      }
    }
    const out: Record<string, SafetensorsTensor> = {};
    for (const e of entries) {
      defineKey(out, e.key, { dtype: e.dtype, shape: e.shape, data: readEntry(src, header, e) });
    }
    return out;
  } finally {
    src.close();
  }
}

/** The `__metadata__` map of a safetensors file ({} when it has none); reads only the header. */
export function readSafetensorsMetadata(
  pathOrBytes: string | Uint8Array | ArrayBuffer,
): Promise<Record<string, string>> {
  return Promise.resolve().then(() => {
    const src = openSource(pathOrBytes);
    try {
      return readHeader(src).metadata;
    } finally {
      src.close();
    }
  });
}

/** Key -> { dtype, shape, begin, end } of a file's header, without reading tensor data. */
export function inspectSafetensors(
  pathOrBytes: string | Uint8Array | ArrayBuffer,
): {
  tensors: Record<string, { dtype: string; shape: number[]; dataOffsets: [number, number] }>;
  metadata: Record<string, string>;
  headerBytes: number;
} {
  const src = openSource(pathOrBytes);
  try {
    const h = readHeader(src);
    const tensors: Record<string, { dtype: string; shape: number[]; dataOffsets: [number, number] }> = {};
    for (const e of h.entries) {
      defineKey(tensors, e.key, { dtype: e.dtype, shape: e.shape, dataOffsets: [e.begin, e.end] });
    }
    return { tensors, metadata: h.metadata, headerBytes: h.dataStart - 8 };
  } finally {
    src.close();
  }
}

function normDtype(d: string): string {
  const u = d.toUpperCase();
  return u === "FLOAT32" ? "F32" : u === "INT32" ? "I32" : u === "INT64" ? "I64" : u;
}

interface Prepared {
  key: string;
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

async function prepare(key: string, value: Tensor | SafetensorsInput): Promise<Prepared> {
  const k = JSON.stringify(key);
  if (value instanceof Tensor) {
    if (value.dtype === "float32") {
      const a = await value.toArray();
      return {
        key,
        dtype: "F32",
        shape: [...value.shape],
        bytes: new Uint8Array(a.buffer, a.byteOffset, a.byteLength),
      };
    }
    if (value.dtype === "int32") {
      const a = await value.toInt32Array();
      return {
        key,
        dtype: "I32",
        shape: [...value.shape],
        bytes: new Uint8Array(a.buffer, a.byteOffset, a.byteLength),
      };
    }
    throw new Error(`saveSafetensors: tensor ${k} has dtype ${value.dtype}, which cannot be saved`);
  }
  if (
    typeof value !== "object" || value === null || typeof value.dtype !== "string" ||
    !Array.isArray(value.shape) || value.data == null
  ) {
    throw new Error(`saveSafetensors: ${k} must be a Tensor or a { dtype, shape, data } record`);
  }
  const dtype = normDtype(value.dtype);
  const shape = value.shape;
  if (!shape.every(isCount)) {
    throw new Error(
      `saveSafetensors: ${k} has shape ${JSON.stringify(shape)}; dims must be non-negative integers`,
    );
  }
  const count = shape.reduce((a, b) => a * b, 1);
  const data = value.data;
  if (data.length !== count) {
    throw new Error(
      `saveSafetensors: ${k} has shape [${shape.join(", ")}] (${count} values) but ${data.length} values`,
    );
  }
  if (dtype === "F32") {
    const a = data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>, Number);
    return { key, dtype, shape: [...shape], bytes: new Uint8Array(a.buffer, a.byteOffset, a.byteLength) };
  }
  if (dtype === "F16") {
    const a = data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>, Number);
    const out = new Uint16Array(count);
    const bad = encodeHalf(a, out);
    if (bad >= 0) throw new Error(`saveSafetensors: ${k}[${bad}] = ${a[bad]} is too large for F16`);
    return { key, dtype, shape: [...shape], bytes: new Uint8Array(out.buffer) };
  }
  if (dtype === "I32" || dtype === "I64") {
    const out = dtype === "I32" ? new Int32Array(count) : new BigInt64Array(count);
    for (let i = 0; i < count; i++) {
      const v = (data as ArrayLike<number | bigint>)[i];
      if (dtype === "I64") {
        const b = typeof v === "bigint" ? v : Number.isInteger(v) ? BigInt(v) : NaN;
        if (typeof b !== "bigint" || b !== BigInt.asIntN(64, b)) {
          throw new Error(`saveSafetensors: ${k}[${i}] = ${v} is not an int64`);
        }
        (out as BigInt64Array)[i] = b;
      } else {
        const x = Number(v);
        if (!Number.isInteger(x) || x !== (x | 0)) {
          throw new Error(`saveSafetensors: ${k}[${i}] = ${v} is not an int32`);
        }
        (out as Int32Array)[i] = x;
      }
    }
    return { key, dtype, shape: [...shape], bytes: new Uint8Array(out.buffer) };
  }
  throw new Error(
    `saveSafetensors: ${k} has dtype ${JSON.stringify(value.dtype)}; F32, F16, I32 and I64 can be saved`,
  );
}

/**
 * Encodes tensors as safetensors bytes: header entries (and data) sorted by key, `__metadata__` first,
 * the header padded with spaces to a multiple of 8 bytes as the reference implementation does.
 */
export async function encodeSafetensors(
  record: Record<string, Tensor | SafetensorsInput>,
  metadata?: Record<string, string>,
): Promise<Uint8Array> {
  if (!littleEndian) throw new Error("safetensors: big-endian hosts are not supported");
  if (typeof record !== "object" || record === null) {
    throw new Error("saveSafetensors: record must be an object");
  }
  const keys = Object.keys(record).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    const meta: Record<string, string> = {};
    for (const [mk, mv] of Object.entries(metadata)) {
      if (typeof mv !== "string") {
        throw new Error(`saveSafetensors: metadata value of ${JSON.stringify(mk)} must be a string`);
      }
      defineKey(meta, mk, mv);
    }
    defineKey(header, "__metadata__", meta);
  }
  const parts: Prepared[] = [];
  let offset = 0;
  for (const key of keys) {
    if (key === "__metadata__") {
      throw new Error("saveSafetensors: __metadata__ is reserved; pass metadata separately");
    }
    if (key === "") throw new Error("saveSafetensors: empty tensor name");
  }
  // Every device tensor's read starts at once: one submit and one wait for the whole record.
  const prepared = await Promise.all(keys.map((key) => prepare(key, record[key])));
  for (const [i, key] of keys.entries()) {
    const p = prepared[i];
    parts.push(p);
    defineKey(header, key, {
      dtype: p.dtype,
      shape: p.shape,
      data_offsets: [offset, offset + p.bytes.length],
    });
    offset += p.bytes.length;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerLen = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLen + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLen), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLen);
  let pos = 8 + headerLen;
  for (const p of parts) {
    out.set(p.bytes, pos);
    pos += p.bytes.length;
  }
  return out;
}

/**
 * Writes tensors (Tensors, downloaded, or `{ dtype: "F32" | "F16" | "I32" | "I64", shape, data }` records) and an
 * optional string -> string metadata map to `path`, atomically (temporary sibling, then rename).
 */
export async function saveSafetensors(
  path: string,
  record: Record<string, Tensor | SafetensorsInput>,
  metadata?: Record<string, string>,
): Promise<void> {
  const bytes = await encodeSafetensors(record, metadata);
  writeFileAtomic(path, bytes);
}
