// fl.io.loadTorch against files written by PyTorch 1.13's torch.save (tests/fixtures/torch_checkpoints/, made
// by tests/fixtures/make_torch_checkpoints.py): every tensor bit for bit, non-contiguous views row-major,
// training checkpoints, DataParallel prefixes, protocols 2 and 4, a tiny learner's logits; hostile files
// refused with their exact messages; and, under Deno on WebAssembly where /usr/bin/python3 has torch,
// torchvision's five full-size learners written by PyTorch at test time give PyTorch's logits.
import * as fl from "../mod.ts";
await fl.init();

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { zipSync } from "fflate";
import { ZipReader } from "../src/io/zip.ts";
import { assert, assertClose, assertEquals, test } from "./harness.ts";
import { isBun, PYTHON, pythonImports } from "./cli_children.ts";

const here = dirname(fileURLToPath(import.meta.url));
const dir = join(here, "fixtures", "torch_checkpoints");
const fixture = (name: string) => join(dir, name);

interface ExpectedTensor {
  dtype: string;
  shape: number[];
  /** float32 bit patterns (uint32) or int32 values, row-major; for tensors of at most 64 values. */
  bits?: number[];
  /** SHA-256 of the little-endian float32 / int32 values, for larger tensors. */
  sha256?: string;
}
const expected: {
  files: Record<string, Record<string, ExpectedTensor>>;
  resnet_tiny: { input: { shape: number[] }; logits: number[][] };
  checkpoint_entries: string[];
} = JSON.parse(readFileSync(join(dir, "expected.json"), "utf8"));

/** The loaded record equals the fixture's: the same keys in the same order, dtypes, shapes, values to the bit. */
function assertTensors(
  got: Record<string, fl.io.SafetensorsTensor>,
  want: Record<string, ExpectedTensor>,
): void {
  assertEquals(Object.keys(got), Object.keys(want), "keys");
  for (const [key, w] of Object.entries(want)) {
    const t = got[key];
    assertEquals([t.dtype, t.shape], [w.dtype, w.shape], key);
    const isFloat = ["F32", "F16", "BF16", "F64"].includes(w.dtype);
    assert(t.data instanceof (isFloat ? Float32Array : Int32Array), `${key}: ${t.data.constructor.name}`);
    if (w.bits) {
      const bits = isFloat ? new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length) : t.data;
      assertEquals([...bits], w.bits, `${key} values`);
    } else {
      const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
      assertEquals(createHash("sha256").update(bytes).digest("hex"), w.sha256, `${key} SHA-256`);
    }
  }
}

/** The call must fail with exactly `message`. */
async function assertFailsWith(load: () => Promise<unknown>, message: string): Promise<void> {
  let error: unknown = null;
  try {
    await load();
  } catch (err) {
    error = err;
  }
  assert(error instanceof Error, `expected the error ${JSON.stringify(message)}, got ${String(error)}`);
  assertEquals(error.message, message);
}

test("resnet_tiny.pth: torchvision's keys in order, every tensor bit for bit (I64 num_batches_tracked [])", async () => {
  const loaded = await fl.io.loadTorch(fixture("resnet_tiny.pth"));
  assertEquals(Object.keys(loaded).length, 104, "key count");
  assertTensors(loaded, expected.files.resnet_tiny);
});

test("resnet_tiny.pth into resnet152({ scale: 'tiny' }): PyTorch's eval logits", async () => {
  const model = fl.models.resnet152({ numClasses: 4, scale: "tiny", generator: new fl.Generator(3) });
  try {
    model.loadStateDict(await fl.io.loadTorch(fixture("resnet_tiny.pth")));
    model.eval();
    // The input both sides compute: x[i] = ((i * 7919) % 2003) / 1001.5 - 1 as float32.
    const shape = expected.resnet_tiny.input.shape;
    const input = Float32Array.from(
      { length: shape.reduce((a, b) => a * b) },
      (_, i) => ((i * 7919) % 2003) / 1001.5 - 1,
    );
    const want = expected.resnet_tiny.logits.flat();
    await fl.scope(async () => {
      const logits = fl.noGrad(() => model.forward(fl.tensor(input, shape)));
      const scale = Math.max(...want.map(Math.abs));
      assertClose(await logits.toArray(), want, { rtol: 1e-3, atol: 1e-3 * scale, msg: "logits" });
    });
  } finally {
    model.dispose();
  }
});

test("dtypes.pth (protocol 4): F16, BF16, F64 to float32 and I64, I32, U8, BOOL to int32 exactly; 0-d and empty", async () => {
  const loaded = await fl.io.loadTorch(fixture("dtypes.pth"));
  assertTensors(loaded, expected.files.dtypes);
  // The conversions are loadSafetensors' own: a float64 past float32's range is Infinity, 1e-46 is 0.
  assertEquals([...loaded.f64.data].slice(4, 6), [Infinity, -Infinity]);
  assertEquals([...loaded.bool.data], [1, 0, 1]);
});

test("views.pth: transposes, offsets, a stride-0 expand, a permute, strided F16/F64/I64/BOOL come out row-major; storages read once", async () => {
  const read = ZipReader.prototype.read, reads: string[] = [];
  ZipReader.prototype.read = function (this: ZipReader, name: string) {
    reads.push(name);
    return read.call(this, name);
  };
  let loaded: Record<string, fl.io.SafetensorsTensor>;
  try {
    loaded = await fl.io.loadTorch(fixture("views.pth"));
  } finally {
    ZipReader.prototype.read = read;
  }
  assertTensors(loaded, expected.files.views);
  assertEquals(reads.length, new Set(reads).size, `entries read more than once: ${reads.join(", ")}`);
  // base, transposed, slice, row and column share one storage: 5 tensors, one read.
  assertEquals(reads.filter((n) => n.startsWith("views/data/")).length, 8, "storage reads");
  // Each tensor owns its values, also a contiguous view (row is base[2]): writing one changes no other.
  assertEquals(loaded.row.data[0], loaded.base.data[12]);
  loaded.base.data[12] = 1234;
  assert(loaded.row.data[0] !== 1234, "base and row share a buffer");
});

test("from bytes: the same tensors as from the path (a Buffer, and a copy at an odd offset)", async () => {
  for (const name of ["views", "dtypes"]) {
    const file = readFileSync(fixture(`${name}.pth`));
    assertTensors(await fl.io.loadTorch(file), expected.files[name]);
    const odd = new Uint8Array(file.length + 3);
    odd.set(file, 3);
    assertTensors(await fl.io.loadTorch(odd.subarray(3)), expected.files[name]);
  }
});

test("training checkpoints (protocols 2 and 4): key, a dotted key, and the errors that name the entries", async () => {
  for (const name of ["checkpoint_p2.pth", "checkpoint_p4.pth"]) {
    const path = fixture(name);
    const entries = expected.checkpoint_entries.join(", ");
    assertEquals(entries, "epoch, state_dict, optimizer, ema, best_acc, note, args");
    await assertFailsWith(
      () => fl.io.loadTorch(path),
      `${path} is a training checkpoint, not a state dict: pass { key: "state_dict" } (its entries: ${entries})`,
    );
    assertTensors(await fl.io.loadTorch(path, { key: "state_dict" }), expected.files.checkpoint);
    assertTensors(await fl.io.loadTorch(path, { key: "ema.state_dict" }), expected.files.checkpoint_ema);
    await assertFailsWith(
      () => fl.io.loadTorch(path, { key: "ema" }),
      `${path}: entry "ema" is a training checkpoint, not a state dict: pass { key: "ema.state_dict" } (its entries: state_dict, decay)`,
    );
    await assertFailsWith(
      () => fl.io.loadTorch(path, { key: "epoch" }),
      `${path}: entry "epoch" holds an int, not a dict of tensors`,
    );
    await assertFailsWith(
      () => fl.io.loadTorch(path, { key: "optimizer" }),
      `${path}: entry "optimizer" holds no tensors (its entries: state, param_groups)`,
    );
    await assertFailsWith(
      () => fl.io.loadTorch(path, { key: "ema.weights" }),
      `${path}: no entry "ema.weights" (entries there: state_dict, decay)`,
    );
  }
});

test("DataParallel's module. prefix: kept, or stripped by stripPrefix; keep_vars Parameters load as tensors", async () => {
  const plain = expected.files.checkpoint;
  const prefixed = Object.fromEntries(Object.entries(plain).map(([k, v]) => [`module.${k}`, v]));
  assertTensors(await fl.io.loadTorch(fixture("dataparallel.pth")), prefixed);
  assertTensors(await fl.io.loadTorch(fixture("dataparallel.pth"), { stripPrefix: "module." }), plain);
  assertTensors(await fl.io.loadTorch(fixture("keep_vars.pth")), plain);
});

test("an int64 outside int32 is an error naming the key, as loadSafetensors'", async () => {
  const path = fixture("int64_overflow.pth");
  await assertFailsWith(
    () => fl.io.loadTorch(path),
    `${path}: tensor "big": I64 value 1099511627776 at index 1 does not fit in int32`,
  );
});

const REFUSED =
  "(a torch checkpoint holds only tensors, dicts, lists and numbers; this file may run code when PyTorch loads it)";
/** Each hostile fixture and the whole message it gets (after the file's path). */
const HOSTILE: [string, string][] = [
  ["os_system.pth", `: refuses the global os.system ${REFUSED}`],
  ["posix_system.pth", `: refuses the global posix.system ${REFUSED}`],
  ["builtins_eval.pth", `: refuses the global builtins.eval ${REFUSED}`],
  ["unknown_class.pth", `: refuses the global __main__.TrainState ${REFUSED}`],
  ["whole_model.pth", `: refuses the global torch.nn.modules.container.Sequential ${REFUSED}`],
  [
    "legacy.pth",
    " is a legacy PyTorch file (torch < 1.6's format, not a zip); re-save it with torch >= 1.6: torch.save(torch.load(f), f2)",
  ],
  ["truncated.pth", ": not a zip archive, or truncated (no end-of-central-directory record)"],
  ["bad_opcode.pth", ": data.pkl: unknown or unsupported opcode 0xff at byte 2"],
  [
    "sizes_past_storage.pth",
    ': tensor "w" (sizes [10], strides [1], offset 0) reaches element 9 of storage "0", which holds 4',
  ],
  [
    "missing_storage.pth",
    ': tensor "w" refers to storage "7", an entry outside the archive (no archive/data/7)',
  ],
  [
    "negative_stride.pth",
    ': tensor "w" has a negative or oversized size, stride or offset (sizes [4], strides [-1], offset 3)',
  ],
  [
    "huge_product.pth",
    ': tensor "w" has 9903520314283042199192993792 values (sizes [2147483648, 2147483648, 2147483648], strides [0, 0, 0], offset 0) from a storage of 1; a view that repeats its storage is read up to 16777216 values',
  ],
  ["deep_nesting.pth", ": data.pkl: nests deeper than 1000 levels (at byte 101001)"],
  ["memo_abuse.pth", ": data.pkl: memo index 7 at byte 8 was never stored"],
  ["stack_underflow.pth", ": data.pkl: stack underflow at byte 3 (opcode 0x52)"],
  ["no_stop.pth", ": data.pkl: ends without STOP"],
  ["string_past_end.pth", ": data.pkl: a string of 65535 bytes at byte 2 runs past the end (11 bytes)"],
  [
    "big_endian.pth",
    ' was saved on a big-endian machine (byteorder "big"); only little-endian files are read',
  ],
  ["not_a_checkpoint.pth", " is not a PyTorch checkpoint (neither a zip nor a pickle)"],
  ["no_pickle.pth", " is a zip but not a PyTorch checkpoint (no <folder>/data.pkl entry)"],
];

for (const [name, message] of HOSTILE) {
  test(`hostile ${name}: refused with its message`, async () => {
    const path = fixture(name);
    await assertFailsWith(() => fl.io.loadTorch(path), path + message);
    // The same from bytes, where the file is called <bytes>.
    await assertFailsWith(() => fl.io.loadTorch(readFileSync(path)), "<bytes>" + message);
  });
}

// ---- pickles written here byte by byte, for what the fixture files leave out

const ascii = (s: string) => [...new TextEncoder().encode(s)];
const u32 = (n: number) => [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, n >>> 24];
const str = (s: string) => [0x58, ...u32(new TextEncoder().encode(s).length), ...ascii(s)];
const int = (n: number) => [0x4a, ...u32(n)];
const global = (module: string, name: string) => [0x63, ...ascii(`${module}\n${name}\n`)];
const tuple = (...items: number[][]) => [0x28, ...items.flat(), 0x74];
/** torch.save's pickling of a tensor over storage `key` (float32 unless `type` says otherwise). */
function tensor(
  key: string,
  numel: number,
  offset: number,
  sizes: number[],
  strides: number[],
  type = "FloatStorage",
) {
  return [
    ...global("torch._utils", "_rebuild_tensor_v2"),
    ...tuple(
      [...tuple(str("storage"), global("torch", type), str(key), str("cpu"), int(numel)), 0x51],
      int(offset),
      tuple(...sizes.map(int)),
      tuple(...strides.map(int)),
      [0x89],
      [...global("collections", "OrderedDict"), 0x29, 0x52],
    ),
    0x52,
  ];
}
/** A dict pickle of the entries, protocol 2. */
const dict = (entries: [number[], number[]][]) =>
  new Uint8Array([0x80, 2, 0x7d, 0x28, ...entries.flatMap(([k, v]) => [...k, ...v]), 0x75, 0x2e]);
/** A torch.save-like zip in memory (stored entries): archive/data.pkl and archive/data/<key>. */
function archive(
  pickle: Uint8Array,
  storages: Record<string, Uint8Array>,
  extra: Record<string, Uint8Array> = {},
) {
  const files: Record<string, [Uint8Array, { level: 0 }]> = { "archive/data.pkl": [pickle, { level: 0 }] };
  for (const [key, data] of Object.entries(storages)) files[`archive/data/${key}`] = [data, { level: 0 }];
  for (const [name, data] of Object.entries(extra)) files[name] = [data, { level: 0 }];
  return zipSync(files);
}
const floats = (n: number) => new Uint8Array(Float32Array.from({ length: n }, (_, i) => i).buffer);

test("written here: a storage size that disagrees, two dtypes for one storage, views repeating a storage, prefix clashes", async () => {
  const four = { "0": floats(4) };
  await assertFailsWith(
    () => fl.io.loadTorch(archive(dict([[str("w"), tensor("0", 5, 0, [4], [1])]]), four)),
    '<bytes>: storage "0": the pickle says 5 F32 values (20 bytes), its entry archive/data/0 holds 16 bytes',
  );
  await assertFailsWith(
    () =>
      fl.io.loadTorch(
        archive(
          dict([[str("a"), tensor("0", 4, 0, [4], [1])], [
            str("b"),
            tensor("0", 2, 0, [2], [1], "LongStorage"),
          ]]),
          four,
        ),
      ),
    '<bytes>: storage "0" is read as both F32 and I64',
  );
  // 25 tensors of all of a 2^20-value storage: 26,214,400 values from 1,048,576 stored.
  const big = { "0": floats(2 ** 20) };
  const views = Array.from(
    { length: 25 },
    (_, i): [number[], number[]] => [str(`v${i}`), tensor("0", 2 ** 20, 0, [2 ** 20], [1])],
  );
  await assertFailsWith(
    () => fl.io.loadTorch(archive(dict(views), big)),
    "<bytes>: its tensors would hold 26214400 values, over 4 times the 1048576 values of their storages",
  );
  const clash = archive(
    dict([[str("module.w"), tensor("0", 4, 0, [4], [1])], [str("w"), tensor("0", 4, 0, [4], [1])]]),
    four,
  );
  assertEquals(Object.keys(await fl.io.loadTorch(clash)), ["module.w", "w"]);
  await assertFailsWith(
    () => fl.io.loadTorch(clash, { stripPrefix: "module." }),
    '<bytes>: "module.w" and "w" are both "w" without the prefix "module."',
  );
  await assertFailsWith(
    () => fl.io.loadTorch(archive(dict([[int(3), tensor("0", 4, 0, [4], [1])]]), four)),
    "<bytes>: a tensor is stored under an int, not a name",
  );
});

test("written here: a missing file, a pickle past 64 MiB, MARK nesting, a top level that is no dict, a byteorder that is neither", async () => {
  const missing = join(tmpdir(), "fl-no-such-checkpoint.pth");
  const error = await fl.io.loadTorch(missing).then(() => null, (err: Error) => err.message);
  assert(error?.startsWith(`${missing}: cannot read: `) && error.includes("ENOENT"), String(error));
  const huge = new Uint8Array(64 * 2 ** 20 + 1);
  await assertFailsWith(
    () => fl.io.loadTorch(archive(huge, {})),
    "<bytes>: data.pkl is 67108865 bytes, over the limit of 67108864",
  );
  const marks = new Uint8Array([0x80, 2, ...new Array(1001).fill(0x28), 0x2e]);
  await assertFailsWith(
    () => fl.io.loadTorch(archive(marks, {})),
    "<bytes>: data.pkl: nests deeper than 1000 levels (at byte 1002)",
  );
  await assertFailsWith(
    () => fl.io.loadTorch(archive(new Uint8Array([0x80, 2, 0x5d, 0x2e]), {})),
    "<bytes> holds a list, not a dict of tensors",
  );
  await assertFailsWith(
    () =>
      fl.io.loadTorch(
        archive(dict([[str("w"), int(1)]]), {}, { "archive/byteorder": new Uint8Array(ascii("middle")) }),
      ),
    '<bytes>: archive/byteorder is neither "little" nor "big"',
  );
  await assertFailsWith(
    () => fl.io.loadTorch(archive(dict([[str("w"), int(1)]]), {})),
    "<bytes> holds no tensors (its entries: w)",
  );
});

test("2,000 seeded mutations of data.pkl: each loads, or fails with loadTorch's own one-line Error naming <bytes>", async () => {
  const reader = ZipReader.open(fixture("checkpoint_p4.pth"));
  const files: Record<string, [Uint8Array, { level: 0 }]> = {};
  for (const e of reader.entries()) if (!e.folder) files[e.name] = [reader.read(e.name), { level: 0 }];
  const pickle = files["checkpoint_p4/data.pkl"][0];
  let seed = 12345, loaded = 0;
  const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  // Random bytes, or opcodes that move the stack and the memo; a fifth of them also cut short.
  const opcodes = [0x28, 0x52, 0x74, 0x2e, 0x71, 0x68, 0x4b, 0x8a, 0x93, 0x51, 0x62, 0x75];
  for (let n = 0; n < 2000; n++) {
    const mutated = pickle.slice();
    for (let k = 1 + Math.floor(random() * 4); k > 0; k--) {
      const at = Math.floor(random() * mutated.length);
      mutated[at] = random() < 0.7
        ? Math.floor(random() * 256)
        : opcodes[Math.floor(random() * opcodes.length)];
    }
    const data = random() < 0.2 ? mutated.subarray(0, Math.floor(random() * mutated.length)) : mutated;
    try {
      await fl.io.loadTorch(zipSync({ ...files, "checkpoint_p4/data.pkl": [data, { level: 0 }] }), {
        key: "state_dict",
      });
      loaded++;
    } catch (err) {
      const message = (err as Error).message;
      assert(
        err instanceof Error && err.constructor === Error && message.startsWith("<bytes>") &&
          !message.includes("\n"),
        `mutation ${n}: ${(err as Error)?.constructor?.name}: ${message}`,
      );
    }
  }
  assert(loaded > 0 && loaded < 2000, `${loaded} of 2000 mutations loaded`);
});

// ---- full size: torchvision's five learners, written by PyTorch at test time

const fullSizeSkip = isBun
  ? "the full-size learners run once, under Deno (Bun reads the same files through the same code)"
  : fl.backendInfo()?.backend !== "wasm"
  ? "the full-size learners run in the WebAssembly run only: loading is the same code on every backend, the forwards are the slow part"
  : !pythonImports("torch, torchvision")
  ? `${PYTHON} cannot import torch and torchvision`
  : null;

const LEARNERS: [string, () => fl.nn.Module][] = [
  [
    "resnet152",
    () => fl.models.resnet152({ numClasses: 1000, init: "default", generator: new fl.Generator(1) }),
  ],
  [
    "vgg19_bn",
    () => fl.models.vgg19_bn({ numClasses: 1000, init: "default", generator: new fl.Generator(1) }),
  ],
  [
    "resnext101_32x8d",
    () => fl.models.resnext101_32x8d({ numClasses: 1000, init: "default", generator: new fl.Generator(1) }),
  ],
  ["densenet161", () => fl.models.densenet161({ numClasses: 1000, generator: new fl.Generator(1) })],
  [
    "inception_v3",
    () =>
      fl.models.inception_v3({
        numClasses: 1000,
        auxLogits: true,
        transformInput: false,
        generator: new fl.Generator(1),
      }),
  ],
];

test.when(fullSizeSkip === null, fullSizeSkip ?? "")(
  "full size: torchvision's five learners saved by PyTorch load into the library's and give PyTorch's logits",
  async () => {
    const out = mkdtempSync(join(tmpdir(), "fl-torch-learners-"));
    try {
      let started = performance.now();
      const made = spawnSync(PYTHON, [join(here, "fixtures", "write_torch_learners.py"), out], {
        encoding: "utf8",
      });
      assertEquals(made.status, 0, `write_torch_learners.py: ${made.stderr}`);
      console.log(
        `      PyTorch wrote the five learners in ${((performance.now() - started) / 1000).toFixed(1)} s`,
      );
      const want: Record<string, { keys: number; size: number; logits: number[] }> = JSON.parse(
        readFileSync(join(out, "expected.json"), "utf8"),
      );
      for (const [name, build] of LEARNERS) {
        started = performance.now();
        const state = await fl.io.loadTorch(join(out, `${name}.pth`));
        const loadS = (performance.now() - started) / 1000;
        const model = build();
        try {
          assertEquals(Object.keys(state).length, want[name].keys, `${name}: keys in the file`);
          assertEquals(Object.keys(model.stateDict()).length, want[name].keys, `${name}: keys of the model`);
          model.loadStateDict(state);
          model.eval();
          const size = want[name].size;
          const input = new Float32Array(new Uint8Array(readFileSync(join(out, `${name}.input.bin`))).buffer);
          await fl.scope(async () => {
            const logits = await fl.noGrad(() => model.forward(fl.tensor(input, [1, 3, size, size])))
              .toArray();
            const scale = Math.max(...want[name].logits.map(Math.abs));
            let worst = 0;
            for (let i = 0; i < logits.length; i++) {
              worst = Math.max(worst, Math.abs(logits[i] - want[name].logits[i]));
            }
            console.log(
              `      ${name}: ${want[name].keys} keys, loadTorch ${
                loadS.toFixed(1)
              } s, max |error| / max |logit| ${(worst / scale).toExponential(2)}, ${
                ((performance.now() - started) / 1000).toFixed(1)
              } s in all`,
            );
            assertClose(logits, want[name].logits, { rtol: 1e-4, atol: 1e-4 * scale, msg: `${name} logits` });
          });
        } finally {
          model.dispose();
          fl.trimPool();
        }
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  },
  { timeoutS: 600 },
);
