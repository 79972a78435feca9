// safetensors: round trips, F16/BF16 decoding, files written by the reference implementation (Python
// `safetensors`, committed fixtures), every header validation error, a seeded fuzz of a valid file, and
// atomic saves.
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as fl from "../mod.ts";
import { assert, assertEquals, assertRejects, assertThrows, test } from "./harness.ts";
import { mulberry32 } from "./reference.ts";
import { loadSafetensorsSync } from "../src/io/safetensors.ts";

await fl.init();
const here = dirname(fileURLToPath(import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "fl-st-"));

/** A file from a header (object or raw JSON text) and a data section; `len` overrides the length field. */
function raw(header: unknown, data: Uint8Array | number[] = [], len?: bigint): Uint8Array {
  const json = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, len ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data instanceof Uint8Array ? data : Uint8Array.from(data), 8 + json.length);
  return out;
}

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const f32 = (shape: number[], begin: number) => ({
  dtype: "F32",
  shape,
  data_offsets: [begin, begin + 4 * shape.reduce((a, b) => a * b, 1)],
});

test("round trip of F32, I32 and I64 records with metadata, from a path and from bytes", async () => {
  const record = {
    "layer.weight": {
      dtype: "F32",
      shape: [2, 3],
      data: new Float32Array([1.5, -2, 3e-38, -0, Infinity, 7]),
    },
    "b.ids": { dtype: "I32", shape: [4], data: new Int32Array([-2147483648, -1, 0, 2147483647]) },
    "a.count": { dtype: "I64", shape: [], data: [123456789] },
    "big": { dtype: "I64", shape: [3], data: new BigInt64Array([-5n, 0n, 2147483647n]) },
    "empty": { dtype: "F32", shape: [0, 4], data: new Float32Array(0) },
    ["__proto__"]: { dtype: "F32", shape: [1], data: [0.25] }, // computed: an own key, not the prototype
  };
  const metadata = { format: "pt", epoch: "3", "json": JSON.stringify({ a: [1, 2] }) };
  const path = join(dir, "sub", "rt.safetensors");
  await fl.io.saveSafetensors(path, record, metadata);
  const bytes = new Uint8Array(readFileSync(path));
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  assertEquals(n % 8, 0, "header length is a multiple of 8");
  const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  assert(/^\{.*\} *$/.test(text), `header padded with spaces: ${JSON.stringify(text)}`);
  const header = JSON.parse(text);
  assertEquals(Object.keys(header), [
    "__metadata__",
    "__proto__",
    "a.count",
    "b.ids",
    "big",
    "empty",
    "layer.weight",
  ]);
  assertEquals(header["a.count"], { dtype: "I64", shape: [], data_offsets: [4, 12] });
  assertEquals(bytes.length, 8 + n + 4 + 8 + 16 + 24 + 0 + 24);
  for (const src of [path, bytes]) {
    const back = await fl.io.loadSafetensors(src);
    assertEquals(Object.keys(back).sort(), Object.keys(record).sort());
    assertEquals(back["layer.weight"].dtype, "F32");
    assert(back["layer.weight"].data instanceof Float32Array);
    [1.5, -2, Math.fround(3e-38), -0, Infinity, 7].forEach((v, i) =>
      assert(Object.is(back["layer.weight"].data[i], v), `layer.weight[${i}]`)
    );
    assert(Object.is(back["layer.weight"].data[3], -0), "negative zero survives");
    assert(back["b.ids"].data instanceof Int32Array && back["a.count"].data instanceof Int32Array);
    assertEquals(Array.from(back["b.ids"].data), [-2147483648, -1, 0, 2147483647]);
    assertEquals(back["a.count"], { dtype: "I64", shape: [], data: new Int32Array([123456789]) } as never);
    assertEquals(Array.from(back["big"].data), [-5, 0, 2147483647]);
    assertEquals(back["empty"].shape, [0, 4]);
    assertEquals(back["empty"].data.length, 0);
    assertEquals(Object.getPrototypeOf(back), Object.prototype);
    assertEquals(Array.from(back["__proto__"].data), [0.25]);
    assertEquals(await fl.io.readSafetensorsMetadata(src), metadata);
  }
  const some = await fl.io.loadSafetensors(path, { keys: ["big"] });
  assertEquals(Object.keys(some), ["big"]);
  await assertRejects(() => fl.io.loadSafetensors(path, { keys: ["nope"] }), 'no tensor named "nope"');
  assertEquals(await fl.io.readSafetensorsMetadata(raw({})), {});
});

test("Tensors save as F32/I32 and a module's state dict round-trips through a file", async () => {
  const model = new fl.nn.Sequential(new fl.nn.Conv2d(1, 2, 3), new fl.nn.BatchNorm2d(2));
  const path = join(dir, "model.safetensors");
  await fl.io.saveSafetensors(path, model.stateDict());
  const back = await fl.io.loadSafetensors(path);
  assertEquals(back["1.num_batches_tracked"].dtype, "I32");
  assertEquals(back["0.weight"].shape, [2, 1, 3, 3]);
  assertEquals(Array.from(back["0.weight"].data), Array.from(await model.stateDict()["0.weight"].toArray()));
  const other = new fl.nn.Sequential(new fl.nn.Conv2d(1, 2, 3), new fl.nn.BatchNorm2d(2));
  other.loadStateDict(back);
  assertEquals(Array.from(await other.stateDict()["0.bias"].toArray()), Array.from(back["0.bias"].data));
  model.dispose();
  other.dispose();
});

test("a file larger than a few MB reads by file descriptor into the typed arrays", async () => {
  const n = 1 << 20;
  const big = new Float32Array(n);
  for (let i = 0; i < n; i++) big[i] = i * 0.5 - 7;
  const path = join(dir, "big.safetensors");
  await fl.io.saveSafetensors(path, {
    w: { dtype: "F32", shape: [1024, 1024], data: big },
    z: { dtype: "I32", shape: [3], data: [1, 2, 3] },
  });
  const back = await fl.io.loadSafetensors(path);
  assertEquals(back.w.data.length, n);
  let same = true;
  for (let i = 0; i < n; i++) if (back.w.data[i] !== big[i]) same = false;
  assert(same, "values differ");
  assertEquals(Array.from(back.z.data), [1, 2, 3]);
});

test("F16 decoding: normals, subnormals, signed zeros, infinities, NaN", async () => {
  const cases: [number, number][] = [
    [0x0000, 0],
    [0x8000, -0],
    [0x3c00, 1],
    [0xc000, -2],
    [0x3555, 0.333251953125],
    [0x7bff, 65504],
    [0xfbff, -65504],
    [0x0400, 2 ** -14],
    [0x0001, 2 ** -24],
    [0x03ff, 1023 * 2 ** -24],
    [0x8001, -(2 ** -24)],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
    [0x7e00, NaN],
    [0x7c01, NaN],
    [0xfe00, NaN],
    [0x3bff, 1 - 2 ** -11],
  ];
  const file = raw(
    { h: { dtype: "F16", shape: [cases.length], data_offsets: [0, cases.length * 2] } },
    bytesOf(new Uint16Array(cases.map((c) => c[0]))),
  );
  const t = (await fl.io.loadSafetensors(file)).h;
  assertEquals(t.dtype, "F16");
  assert(t.data instanceof Float32Array);
  cases.forEach(([bits, want], i) => {
    assert(Object.is(t.data[i], want), `F16 0x${bits.toString(16)}: got ${t.data[i]}, expected ${want}`);
  });
});

test("F16 encoding: every half value round-trips; others round to the nearest half, ties to even", async () => {
  // all 65,536 bit patterns decoded by the (separately tested) reader, then written back
  const bits = new Uint16Array(65536).map((_, i) => i);
  const header = new TextEncoder().encode(
    JSON.stringify({ h: { dtype: "F16", shape: [65536], data_offsets: [0, 131072] } }).padEnd(64, " "),
  );
  const file = new Uint8Array(8 + header.length + 131072);
  new DataView(file.buffer).setBigUint64(0, BigInt(header.length), true);
  file.set(header, 8);
  file.set(new Uint8Array(bits.buffer), 8 + header.length);
  const halves = (await fl.io.loadSafetensors(file)).h.data as Float32Array;
  const finite = halves.filter((v) => Number.isFinite(v) || Number.isNaN(v));
  const written = await fl.io.encodeSafetensors({
    h: { dtype: "F16", shape: [finite.length], data: finite },
  });
  const back = (await fl.io.loadSafetensors(written)).h.data as Float32Array;
  let mismatched = 0;
  finite.forEach((v, i) => (mismatched += Object.is(back[i], v) ? 0 : 1));
  assertEquals(mismatched, 0);
  // float32 values between halves: the nearest half, ties to the even one (an independent nearest search)
  const grid = Float64Array.from(halves.filter(Number.isFinite)).sort();
  const rand = mulberry32(7);
  const values = Float32Array.from({ length: 20000 }, () => (rand() - 0.5) * 2 ** (rand() * 40 - 28));
  const ties = [1 + 2 ** -11, 1 + 3 * 2 ** -11, 2 ** -24 * 1.5, 2 ** -25]; // -> 1, 1 + 2^-9, 2^-23, 0
  const all = Float32Array.from([...values, ...ties]);
  const got = (await fl.io.loadSafetensors(
    await fl.io.encodeSafetensors({ v: { dtype: "F16", shape: [all.length], data: all } }),
  )).v.data as Float32Array;
  all.forEach((x, i) => {
    let lo = 0, hi = grid.length - 1;
    while (hi - lo > 1) {
      const m = (lo + hi) >> 1;
      if (grid[m] <= x) lo = m;
      else hi = m;
    }
    const best = Math.min(Math.abs(grid[lo] - x), Math.abs(grid[hi] - x));
    assert(Math.abs(got[i] - x) === best, `${x} -> ${got[i]}, the nearest half is ${best} away`);
  });
  assertEquals(Array.from(got.subarray(values.length)), [1, 1 + 2 ** -9, 2 ** -23, 0]);
  await assertRejects(
    () => fl.io.encodeSafetensors({ big: { dtype: "F16", shape: [2], data: [1, 65520] } }),
    /"big"\[1\] = 65520 is too large for F16/,
  );
});

test("BF16 decoding: the top 16 bits of a float32", async () => {
  const cases: [number, number][] = [
    [0x0000, 0],
    [0x8000, -0],
    [0x3f80, 1],
    [0xc040, -3],
    [0x3e4c, 0.19921875],
    [0x7f7f, 3.3895313892515355e38],
    [0x0001, 2 ** -133],
    [0x0080, 2 ** -126],
    [0x7f80, Infinity],
    [0xff80, -Infinity],
    [0x7fc0, NaN],
    [0xffc1, NaN],
  ];
  const file = raw({
    b: { dtype: "BF16", shape: [2, cases.length / 2], data_offsets: [0, cases.length * 2] },
  }, bytesOf(new Uint16Array(cases.map((c) => c[0]))));
  const t = (await fl.io.loadSafetensors(file)).b;
  assertEquals(t.shape, [2, 6]);
  cases.forEach(([bits, want], i) => {
    assert(Object.is(t.data[i], want), `BF16 0x${bits.toString(16)}: got ${t.data[i]}, expected ${want}`);
  });
});

test("files written by the reference implementation (Python safetensors 0.8) load; the writer matches its bytes", async () => {
  const expected = JSON.parse(readFileSync(join(here, "fixtures", "safetensors_ref.json"), "utf8")) as {
    metadata: Record<string, string>;
    tensors: Record<string, { shape: number[]; values: (number | string)[] }>;
  };
  const path = join(here, "fixtures", "safetensors_ref.safetensors");
  const got = await fl.io.loadSafetensors(path);
  assertEquals(Object.keys(got).sort(), Object.keys(expected.tensors).sort());
  const dtypes = Object.fromEntries(Object.entries(got).map(([k, v]) => [k, v.dtype]));
  assertEquals(dtypes["half"], "F16");
  assertEquals(dtypes["bhalf"], "BF16");
  assertEquals(dtypes["double"], "F64");
  assertEquals(dtypes["bn.num_batches_tracked"], "I64");
  assertEquals(dtypes["ids"], "I32");
  for (const [k, e] of Object.entries(expected.tensors)) {
    assertEquals(got[k].shape, e.shape, k);
    const isInt = got[k].data instanceof Int32Array;
    const want = e.values.map((v) =>
      typeof v === "string" ? { nan: NaN, inf: Infinity, "-inf": -Infinity }[v]! : isInt ? v : Math.fround(v)
    );
    assertEquals(got[k].data.length, want.length, k);
    want.forEach((w, i) =>
      assert(Object.is(got[k].data[i], w), `${k}[${i}]: got ${got[k].data[i]}, expected ${w}`)
    );
  }
  assert(
    got["bn.num_batches_tracked"].data instanceof Int32Array && got["bn.num_batches_tracked"].data[0] === 17,
  );
  const sorted = (m: Record<string, string>) => Object.entries(m).sort(([a], [b]) => (a < b ? -1 : 1));
  assertEquals(sorted(await fl.io.readSafetensorsMetadata(path)), sorted(expected.metadata)); // Rust's HashMap order

  // The same records written here give the reference implementation's bytes exactly.
  const refPath = join(here, "fixtures", "safetensors_ref_f32.safetensors");
  const ref = await fl.io.loadSafetensors(refPath);
  const mine = await fl.io.encodeSafetensors(ref, await fl.io.readSafetensorsMetadata(refPath));
  assertEquals(Array.from(mine), Array.from(readFileSync(refPath)));
  assertEquals(Array.from(ref["a.weight"].data), new Array(4).fill(Math.fround(1 / 3)));
});

test("malformed files give errors that say what is wrong", async () => {
  const ok = { a: f32([2], 0) };
  const data8 = new Uint8Array(8);
  const cases: [Uint8Array, RegExp | string][] = [
    [new Uint8Array(0), "file too short (0 bytes"],
    [new Uint8Array(5), "file too short (5 bytes"],
    [raw(ok, data8, 1000n), "header length 1000 is larger than the rest of the file"],
    [raw(ok, data8, 2n ** 60n), `header length ${2n ** 60n} exceeds the limit`],
    [raw(ok, data8, 2n ** 64n - 1n), "exceeds the limit"],
    [raw(ok, data8, 0n), "too short for a JSON object"],
    [raw('{"a": {"dtype": "F32", "shape": [2], ', data8), "header is not valid JSON"],
    [raw("[1, 2]"), "header is not a JSON object"],
    [raw("null"), "header is not a JSON object"],
    [
      Uint8Array.of(...raw("{}").subarray(0, 8).map((b, i) => (i === 0 ? 2 : b)), 0xff, 0xfe),
      "not valid UTF-8",
    ],
    [raw({ a: f32([2], 4) }, data8), 'tensor "a": data_offsets [4, 12] run past the data section (8 bytes)'],
    [raw({ a: { dtype: "F32", shape: [0], data_offsets: [8, 4] } }, data8), "has begin > end"],
    [raw({ a: f32([2], 0), b: f32([1], 4) }, new Uint8Array(12)), 'tensors "a" and "b" overlap'],
    [
      raw({ a: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, data8),
      'tensor "a": shape [3] of F32 needs 12 bytes but data_offsets give 8',
    ],
    [
      raw({ a: { dtype: "F32", shape: [2 ** 40, 2 ** 40], data_offsets: [0, 8] } }, data8),
      "needs more than 2^48 bytes",
    ],
    [
      raw({ w: { dtype: "F33", shape: [2], data_offsets: [0, 8] } }, data8),
      'tensor "w": unknown dtype "F33"',
    ],
    [
      raw({ w: { dtype: "U8", shape: [8], data_offsets: [0, 8] } }, data8),
      'tensor "w": dtype U8 is not supported',
    ],
    [
      raw({ w: { dtype: "BOOL", shape: [8], data_offsets: [0, 8] } }, data8),
      'tensor "w": dtype BOOL is not supported',
    ],
    [raw({ w: { shape: [2], data_offsets: [0, 8] } }, data8), 'tensor "w": missing or non-string dtype'],
    [
      raw({ w: { dtype: "F32", shape: [-2], data_offsets: [0, 8] } }, data8),
      "must hold non-negative integers",
    ],
    [
      raw({ w: { dtype: "F32", shape: [1.5], data_offsets: [0, 8] } }, data8),
      "must hold non-negative integers",
    ],
    [
      raw({ w: { dtype: "F32", shape: ["2"], data_offsets: [0, 8] } }, data8),
      "must hold non-negative integers",
    ],
    [raw({ w: { dtype: "F32", shape: 2, data_offsets: [0, 8] } }, data8), "shape must be an array"],
    [raw({ w: { dtype: "F32", shape: [2] } }, data8), "data_offsets must be [begin, end]"],
    [
      raw({ w: { dtype: "F32", shape: [2], data_offsets: [0, 8, 9] } }, data8),
      "data_offsets must be [begin, end]",
    ],
    [
      raw({ w: { dtype: "F32", shape: [2], data_offsets: [-8, 0] } }, data8),
      "data_offsets must be [begin, end]",
    ],
    [raw({ w: [1, 2] }, data8), 'tensor "w": entry is not an object'],
    [raw({ __metadata__: { a: 1 }, ...ok }, data8), '__metadata__ value of "a" is not a string'],
    [raw({ __metadata__: ["x"], ...ok }, data8), "__metadata__ must be an object of strings"],
    [
      raw(
        { big: { dtype: "I64", shape: [2], data_offsets: [0, 16] } },
        bytesOf(new BigInt64Array([1n, 2n ** 32n])),
      ),
      'tensor "big": I64 value 4294967296 at index 1 does not fit in int32',
    ],
    [
      raw(
        { neg: { dtype: "I64", shape: [1], data_offsets: [0, 8] } },
        bytesOf(new BigInt64Array([-(2n ** 31n) - 1n])),
      ),
      'tensor "neg": I64 value -2147483649',
    ],
  ];
  for (const [bytes, pattern] of cases) {
    assertThrows(() => loadSafetensorsSync(bytes), pattern);
    await assertRejects(() => fl.io.loadSafetensors(bytes), pattern);
  }
  // The same checks from a path (file descriptor reads), and a missing file.
  const p = join(dir, "bad.safetensors");
  writeFileSync(p, raw(ok, data8, 2n ** 60n));
  await assertRejects(() => fl.io.loadSafetensors(p), "exceeds the limit");
  writeFileSync(p, raw({ a: f32([2], 4) }, data8));
  await assertRejects(() => fl.io.loadSafetensors(p), /bad\.safetensors.*run past the data section/);
  await assertRejects(() => fl.io.loadSafetensors(join(dir, "missing.safetensors")), "cannot open");
  await assertRejects(() => fl.io.readSafetensorsMetadata(new Uint8Array(3)), "file too short");
  // F64 is converted to F32; I64 values inside int32 are fine; zero-size tensors may share an offset.
  const mixed = await fl.io.loadSafetensors(raw({
    d: { dtype: "F64", shape: [1], data_offsets: [0, 8] },
    e: { dtype: "F32", shape: [0], data_offsets: [8, 8] },
    i: { dtype: "I64", shape: [1], data_offsets: [8, 16] },
  }, [...bytesOf(new Float64Array([0.1])), ...bytesOf(new BigInt64Array([-7n]))]));
  assertEquals(mixed.d.dtype, "F64");
  assertEquals(mixed.d.data[0], Math.fround(0.1));
  assertEquals(Array.from(mixed.i.data), [-7]);
});

test("saveSafetensors rejects bad records", async () => {
  const p = join(dir, "bad_save.safetensors");
  await assertRejects(
    () => fl.io.saveSafetensors(p, { a: { dtype: "F32", shape: [3], data: [1, 2] } }),
    '"a" has shape [3] (3 values) but 2 values',
  );
  await assertRejects(
    () => fl.io.saveSafetensors(p, { a: { dtype: "U8", shape: [1], data: [1] } }),
    "F32, F16, I32 and I64 can be saved",
  );
  await assertRejects(
    () => fl.io.saveSafetensors(p, { a: { dtype: "I32", shape: [1], data: [2 ** 31] } }),
    "is not an int32",
  );
  await assertRejects(
    () => fl.io.saveSafetensors(p, { a: { dtype: "I64", shape: [1], data: [1.5] } }),
    "is not an int64",
  );
  await assertRejects(
    () => fl.io.saveSafetensors(p, { a: { dtype: "F32", shape: [-1], data: [] } }),
    "dims must be non-negative integers",
  );
  await assertRejects(
    () => fl.io.saveSafetensors(p, { __metadata__: { dtype: "F32", shape: [1], data: [1] } }),
    "reserved",
  );
  await assertRejects(() => fl.io.saveSafetensors(p, {}, { a: 1 as unknown as string }), "must be a string");
  assert(!existsSync(p), "nothing written");
});

test("atomic save: a failed write leaves no partial file and the existing file intact", async () => {
  const sub = join(dir, "atomic");
  mkdirSync(sub, { recursive: true });
  const path = join(sub, "w.safetensors");
  await fl.io.saveSafetensors(path, { a: { dtype: "F32", shape: [2], data: [1, 2] } });
  const before = readFileSync(path);
  // Fails while encoding: the old file stays as it was.
  await assertRejects(
    () =>
      fl.io.saveSafetensors(path, {
        a: { dtype: "F32", shape: [2], data: [1, 2] },
        b: { dtype: "X", shape: [1], data: [0] },
      }),
    "can be saved",
  );
  assertEquals(Array.from(readFileSync(path)), Array.from(before));
  // Fails at the rename (the target is a directory): the temporary file is removed, the directory kept.
  const target = join(sub, "dir.safetensors");
  mkdirSync(join(target, "inner"), { recursive: true });
  await assertRejects(
    () => fl.io.saveSafetensors(target, { a: { dtype: "F32", shape: [1], data: [3] } }),
    "could not write",
  );
  assert(existsSync(join(target, "inner")), "directory intact");
  assertEquals(readdirSync(sub).sort(), ["dir.safetensors", "w.safetensors"]);
  // Overwriting works and leaves no temporary files either.
  await fl.io.saveSafetensors(path, { a: { dtype: "F32", shape: [1], data: [5] } });
  assertEquals(Array.from((await fl.io.loadSafetensors(path)).a.data), [5]);
  assertEquals(readdirSync(sub).sort(), ["dir.safetensors", "w.safetensors"]);
});

test("fuzz: 20000 seeded mutations of a valid file each load or throw the loader's own error", async () => {
  const base = raw({
    __metadata__: { format: "pt", k: "v" },
    "a.weight": { dtype: "F32", shape: [2, 3], data_offsets: [0, 24] },
    "b": { dtype: "F16", shape: [4], data_offsets: [24, 32] },
    "c": { dtype: "BF16", shape: [2, 2], data_offsets: [32, 40] },
    "d.n": { dtype: "I64", shape: [], data_offsets: [40, 48] },
    "e": { dtype: "I32", shape: [2], data_offsets: [48, 56] },
    "f": { dtype: "F64", shape: [1], data_offsets: [56, 64] },
  }, [
    ...bytesOf(new Float32Array([1, -2, 0.5, 3, 1e-3, -7])),
    ...bytesOf(new Uint16Array([0x3c00, 0x8001, 0x7c00, 0x7e00, 0x3f80, 0xc040, 0x0001, 0x7f80])),
    ...bytesOf(new BigInt64Array([-12n])),
    ...bytesOf(new Int32Array([5, -6])),
    ...bytesOf(new Float64Array([0.1])),
  ]);
  const headerLen = Number(new DataView(base.buffer).getBigUint64(0, true));
  loadSafetensorsSync(base); // valid before mutation
  const SEED = 20260425;
  const rnd = mulberry32(SEED);
  const int = (n: number) => Math.floor(rnd() * n);
  const digits = "0123456789";
  const t0 = performance.now();
  let loaded = 0, threw = 0;
  // A rejection must be the loader's own validation error: exactly an Error whose message starts with
  // "safetensors (<source>): " (src/io/safetensors.ts `fail`). A TypeError, RangeError or any other error
  // from inside the loader is a bug that a malformed file reached, and fails the test.
  const foreign: string[] = [];
  const p = join(dir, "fuzz.safetensors");
  for (let iter = 0; iter < 20000; iter++) {
    let b = base.slice();
    const kind = int(7);
    const edits = 1 + int(3);
    for (let e = 0; e < edits; e++) {
      if (kind === 0) b[int(b.length)] ^= 1 << int(8); // bit flip anywhere
      else if (kind === 1) b[8 + int(headerLen)] = int(256); // random byte in the header
      else if (kind === 2) b = b.slice(0, int(b.length + 1)); // truncation
      else if (kind === 3) { // header length: small change, random 32-bit or random 64-bit value
        const dv = new DataView(b.buffer);
        const r = int(3);
        const v = r === 0
          ? BigInt(Math.max(0, headerLen + int(33) - 16))
          : r === 1
          ? BigInt(int(2 ** 32))
          : (BigInt(int(2 ** 32)) << 32n) | BigInt(int(2 ** 32));
        dv.setBigUint64(0, v, true);
      } else if (kind === 4) { // a digit of the header replaced (offsets, shapes)
        const at = 8 + int(headerLen);
        if (b[at] >= 48 && b[at] <= 57) b[at] = digits.charCodeAt(int(10));
      } else if (kind === 5) { // bytes inserted or removed inside the header, the length field unchanged
        const at = 8 + int(headerLen);
        b = int(2)
          ? Uint8Array.of(...b.subarray(0, at), ...b.subarray(at + 1 + int(4)))
          : Uint8Array.of(...b.subarray(0, at), 0x22, 0x2d, 0x31, ...b.subarray(at));
      } else { // a structural character swapped for another one
        const at = 8 + int(headerLen);
        b[at] = '{}[]:,"-.e0 '.charCodeAt(int(12));
      }
    }
    const viaPath = iter % 100 === 0;
    if (viaPath) writeFileSync(p, b);
    try {
      const out = viaPath ? await fl.io.loadSafetensors(p) : loadSafetensorsSync(b);
      for (const [k, t] of Object.entries(out)) {
        const count = t.shape.reduce((x, y) => x * y, 1);
        if (t.data.length !== count) {
          throw new Error(`fuzz ${iter}: ${k} has ${t.data.length} values for shape [${t.shape}]`);
        }
      }
      loaded++;
    } catch (err) {
      if (err instanceof Error && err.message.startsWith("fuzz ")) throw err;
      const prefix = `safetensors (${viaPath ? p : "bytes"}): `;
      if (err instanceof Error && err.constructor === Error && err.message.startsWith(prefix)) threw++;
      else {
        foreign.push(
          `mutation ${iter} (seed ${SEED}, kind ${kind}, ${viaPath ? "from a path" : "from bytes"}): ${
            err instanceof Error ? `${err.constructor.name}: ${err.message}` : `a non-Error: ${String(err)}`
          }`,
        );
      }
    }
  }
  assert(
    foreign.length === 0,
    `${foreign.length} rejections not by the loader's validation:\n${foreign.slice(0, 5).join("\n")}`,
  );
  const seconds = (performance.now() - t0) / 1000;
  assert(loaded > 500 && threw > 5000, `expected both outcomes, got ${loaded} loaded and ${threw} errors`);
  assert(seconds < 10, `fuzz took ${seconds.toFixed(1)} s`);
  console.log(`      fuzz: ${loaded} loaded, ${threw} rejected in ${seconds.toFixed(2)} s`);
});

test.afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});
