// Zip archives (src/io/zip.ts): writeZip's output read by fflate's unzipSync (an independent reader), fflate's
// zipSync output and a zip64 archive made by CPython's zipfile read by ZipReader, CRC-32 against known
// values, and every hostile case made by patching the bytes of a good archive, each with its message.
import { mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { strToU8, unzipSync, zipSync } from "fflate";
import { crc32 } from "../src/io/images.ts";
import { isZipFile, writeZip, type ZipInput, ZipReader } from "../src/io/zip.ts";
import { assert, assertEquals, assertRejects, assertThrows, test } from "./harness.ts";

const fixtures = resolve(dirname(fileURLToPath(import.meta.url)), "fixtures");
const tmp = mkdtempSync(join(tmpdir(), "fl-zip-"));
let serial = 0;
/** Writes `bytes` to a fresh file in the temporary folder and returns its path. */
const put = (bytes: Uint8Array, name = `a${serial++}.zip`) => {
  const p = join(tmp, name);
  writeFileSync(p, bytes);
  return p;
};
const text = (s: string) => new TextEncoder().encode(s);
/** Deterministic bytes that do not compress (a 32-bit LCG's top byte). */
function noise(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** The offsets of one entry's fields, found by walking the central directory (a reader of its own). */
interface Where {
  name: string;
  central: number; // offset of the central header
  local: number; // offset of the local header
  data: number; // offset of the entry's data
  compressedSize: number;
}
function layout(zip: Uint8Array): Where[] {
  const dv = new DataView(zip.buffer, zip.byteOffset, zip.byteLength);
  const end = zip.length - 22;
  assertEquals(dv.getUint32(end, true), 0x06054b50, "end record (no comment)");
  const count = dv.getUint16(end + 10, true);
  let p = dv.getUint32(end + 16, true);
  const out: Where[] = [];
  for (let i = 0; i < count; i++) {
    assertEquals(dv.getUint32(p, true), 0x02014b50, "central header");
    const n = dv.getUint16(p + 28, true), x = dv.getUint16(p + 30, true), c = dv.getUint16(p + 32, true);
    const local = dv.getUint32(p + 42, true);
    const data = local === 0xffffffff // a zip64 offset, in the extra field: not needed here
      ? -1
      : local + 30 + dv.getUint16(local + 26, true) + dv.getUint16(local + 28, true);
    const name = new TextDecoder().decode(zip.subarray(p + 46, p + 46 + n));
    out.push({ name, central: p, local, data, compressedSize: dv.getUint32(p + 20, true) });
    p += 46 + n + x + c;
  }
  return out;
}
const u16 = (b: Uint8Array, at: number, v: number) =>
  new DataView(b.buffer, b.byteOffset).setUint16(at, v, true);
const u32 = (b: Uint8Array, at: number, v: number) =>
  new DataView(b.buffer, b.byteOffset).setUint32(at, v, true);
/** Renames an entry in place (both headers; the new name has the old one's length). */
function rename(zip: Uint8Array, w: Where, name: string): void {
  const bytes = text(name);
  assertEquals(bytes.length, w.name.length, `same length as ${w.name}`);
  zip.set(bytes, w.central + 46);
  zip.set(bytes, w.local + 30);
}

// A good archive to patch: a stored entry, a deflated one and a third, plus a compressible 2 MiB one.
const GOOD: ZipInput[] = [
  { name: "data/stored.bin", data: noise(5000), compress: false },
  { name: "data/deflated.txt", data: text("chest x-ray ".repeat(400)) },
  { name: "data/others.bin", data: noise(3000, 7), compress: false },
];
let goodPath = "";
async function good(): Promise<Uint8Array> {
  if (!goodPath) {
    goodPath = join(tmp, "good.zip");
    await writeZip(goodPath, GOOD);
  }
  return readFileSync(goodPath).slice();
}

test("crc32: the check value and known strings", () => {
  assertEquals(crc32(text("123456789")), 0xcbf43926); // the CRC-32/ISO-HDLC check value
  assertEquals(crc32(new Uint8Array(0)), 0);
  assertEquals(crc32(text("The quick brown fox jumps over the lazy dog")), 0x414fa339);
  assertEquals(crc32(new Uint8Array(32)), 0x190a55ad); // 32 zero bytes (RFC 3720's test vector)
});

test("writeZip output read back by fflate's unzipSync, and by ZipReader", async () => {
  const entries: ZipInput[] = [
    { name: "a.txt", data: text("hello\n") },
    { name: "dir/b.bin", data: noise(70_000), compress: false },
    { name: "dir/sub/zeros.bin", data: new Uint8Array(100_000) },
    { name: "dir/empty", data: new Uint8Array(0) },
    { name: "ünïcode/名前.txt", data: text("utf-8 names") },
  ];
  const path = join(tmp, "written.zip");
  await writeZip(path, entries);
  const bytes = readFileSync(path);
  const theirs = unzipSync(bytes);
  assertEquals(Object.keys(theirs).sort(), entries.map((e) => e.name).sort());
  for (const e of entries) assertEquals([...theirs[e.name]], [...e.data], e.name);
  assert(bytes.length < 70_000 + 2_000, `zeros deflated: ${bytes.length} bytes`);
  const r = ZipReader.open(path);
  assertEquals(
    r.entries().map((e) => [e.name, e.method, e.size]),
    entries.map((e) => [
      e.name,
      e.compress === false ? 0 : 8,
      e.data.length,
    ]),
  );
  for (const e of entries) assertEquals([...r.read(e.name)], [...e.data], e.name);
  assertEquals(r.list(""), ["a.txt", "dir", "ünïcode"]);
  assertEquals(r.list("dir"), ["b.bin", "empty", "sub"]);
  assert(r.isFolder("dir/sub") && !r.isFile("dir/sub") && r.isFile("dir/sub/zeros.bin"), "tree");
  assertEquals(r.readText("ünïcode/名前.txt"), "utf-8 names");
  // the same entries give the same bytes again (fixed timestamps)
  await writeZip(join(tmp, "again.zip"), entries);
  assertEquals(crc32(readFileSync(join(tmp, "again.zip"))), crc32(bytes));
  assert(isZipFile(path) && !isZipFile(join(tmp, "nope.zip")) && !isZipFile(fixtures), "isZipFile");
  await assertRejects(() => writeZip(join(tmp, "bad.zip"), [{ name: "../x", data: text("") }]), "'..'");
  await assertRejects(
    () => writeZip(join(tmp, "bad.zip"), [{ name: "x", data: text("") }, { name: "x", data: text("") }]),
    'entry "x" given twice',
  );
});

test("writeZip with 65,536 entries writes the zip64 end records; fflate and ZipReader read them", async () => {
  const n = 65_536;
  const path = join(tmp, "many.zip");
  await writeZip(
    path,
    (function* () {
      for (let i = 0; i < n; i++) yield { name: `f/${i}`, data: text(String(i * 3)), compress: false };
    })(),
  );
  const bytes = readFileSync(path);
  const dv = new DataView(bytes.buffer, bytes.byteOffset);
  assertEquals(dv.getUint16(bytes.length - 22 + 10, true), 0xffff, "end record's count saturated");
  assertEquals(dv.getUint32(bytes.length - 22 - 20, true), 0x07064b50, "zip64 locator");
  const r = ZipReader.open(path);
  assertEquals(r.entries().length, n);
  assertEquals(r.readText("f/65535"), String(65535 * 3));
  const theirs = unzipSync(bytes);
  assertEquals(Object.keys(theirs).length, n);
  assertEquals(new TextDecoder().decode(theirs["f/40000"]), "120000");
});

test("fflate's zipSync output (stored and deflated, folder entries) read by ZipReader", () => {
  const files = {
    "top/readme.txt": strToU8("made by fflate\n".repeat(50)),
    "top/images/a.bin": noise(20_000, 3),
    "top/images/b.bin": [noise(9_000, 4), { level: 0 }] as [Uint8Array, { level: 0 }],
    "top/empty/": new Uint8Array(0),
  };
  const path = put(zipSync(files, { level: 9 }));
  const r = ZipReader.open(path);
  assertEquals(r.entries().map((e) => [e.name, e.folder, e.method]), [
    ["top/readme.txt", false, 8],
    ["top/images/a.bin", false, 8],
    ["top/images/b.bin", false, 0],
    ["top/empty", true, 8], // fflate deflates even a folder's empty entry
  ]);
  assertEquals(r.readText("top/readme.txt"), "made by fflate\n".repeat(50));
  assertEquals([...r.read("top/images/a.bin")], [...files["top/images/a.bin"]]);
  assertEquals([...r.read("top/images/b.bin")], [...files["top/images/b.bin"][0]]);
  assertEquals(r.list("top"), ["empty", "images", "readme.txt"]);
  assertEquals(r.list("top/empty"), []);
  assertThrows(() => r.read("top/empty"), 'entry "top/empty" is a folder');
  assertThrows(() => r.read("top/nope"), 'entry "top/nope" is not in the archive');
});

test("zip64 archive made by CPython's zipfile: sizes, offsets and the zip64 end record", () => {
  const path = join(fixtures, "zip64_python.zip");
  const ref = JSON.parse(readFileSync(join(fixtures, "zip64_python.json"), "utf8")).entries as Record<
    string,
    { size: number; compressedSize: number; crc32: number; method: number }
  >;
  // the recipes of make_zip64.py
  const expected: Record<string, Uint8Array> = {
    "zip64/hello.txt": text("Hello, zip64!\n".repeat(20)),
    "zip64/bytes.bin": Uint8Array.from({ length: 3000 }, (_, i) => (i * 7 + 3) % 256),
    "zip64/empty.txt": new Uint8Array(0),
    "zip64/nested/squares.bin": Uint8Array.from({ length: 5000 }, (_, i) => (i * i) % 251),
  };
  const bytes = readFileSync(path);
  // it does use zip64: sizes of 0xFFFFFFFF in the central directory, and a zip64 end record
  const central = layout(bytes);
  assertEquals(
    new DataView(bytes.buffer, bytes.byteOffset).getUint32(central[0].central + 20, true),
    0xffffffff,
  );
  assert(Buffer.from(bytes).includes(Buffer.from([0x50, 0x4b, 0x06, 0x06])), "zip64 end record present");
  const check = (r: ZipReader) => {
    assertEquals(r.entries().map((e) => e.name), Object.keys(ref));
    for (const e of r.entries()) {
      const want = ref[e.name];
      assertEquals([e.size, e.compressedSize, e.crc32, e.method], [
        want.size,
        want.compressedSize,
        want.crc32,
        want.method,
      ], e.name);
      const data = r.read(e.name);
      assertEquals([...data], [...expected[e.name]], e.name);
      assertEquals(crc32(data), want.crc32, `crc32 of ${e.name} vs zlib's`);
    }
  };
  check(ZipReader.open(path));
  // Python fills the classic end record with the true values; writers that saturate them (0xFFFF,
  // 0xFFFFFFFF, as the format allows) make a reader take the zip64 end record instead.
  const sat = bytes.slice();
  const end = sat.length - 22;
  u16(sat, end + 8, 0xffff);
  u16(sat, end + 10, 0xffff);
  u32(sat, end + 12, 0xffffffff);
  u32(sat, end + 16, 0xffffffff);
  check(ZipReader.open(put(sat)));
});

test("hostile: zip bombs by ratio and by absolute size, caps on entries and totals", async () => {
  // a real bomb: 8 MiB of zeros deflate to ~8 KB (ratio ~1000)
  const bombPath = join(tmp, "bomb.zip");
  await writeZip(bombPath, [{ name: "x.png", data: new Uint8Array(8 << 20) }]);
  assertThrows(
    () => ZipReader.open(bombPath),
    /bomb\.zip: entry "x\.png" would inflate \d+ bytes to 8388608 \(ratio over 200: a zip bomb\?\)$/,
  );
  assert(
    ZipReader.open(bombPath, { maxRatio: 2000 }).read("x.png").every((v) => v === 0),
    "allowed by a cap",
  );
  // patched: a 5000-byte entry declared to inflate to 3 GB
  const z = await good();
  const w = layout(z).find((e) => e.name === "data/deflated.txt")!;
  u32(z, w.central + 24, 3_000_000_000);
  assertThrows(
    () => ZipReader.open(put(z)),
    `entry "data/deflated.txt" would inflate ${w.compressedSize} bytes to 3000000000 (ratio over 200: a zip bomb?)`,
  );
  // absolute caps: one entry, the sum, the count
  const g = put(await good());
  assertThrows(
    () => ZipReader.open(g, { maxEntryBytes: 4000 }),
    'entry "data/stored.bin" would inflate to 5000 bytes, over the limit of 4000',
  );
  assertThrows(
    () => ZipReader.open(g, { maxTotalBytes: 9000 }),
    "the entries would inflate to over 9000 bytes",
  );
  assertThrows(() => ZipReader.open(g, { maxEntries: 2 }), "3 entries, over the limit of 2");
  assertEquals(ZipReader.open(g, { maxEntryBytes: 5000, maxTotalBytes: 12800 }).entries().length, 3);
});

test("hostile: path traversal names of each kind, duplicates, encryption", async () => {
  const cases: [string, string][] = [
    ["../stored.bin00", "a '..', '.' or empty path segment"],
    ["/abs/stored.bin", "an absolute path"],
    ["C:\\x/stored.bin", "a backslash"],
    ["C:/x/stored.bin", "a drive letter"],
    ["data/./ored.bin", "a '..', '.' or empty path segment"],
    ["data//tored.bin", "a '..', '.' or empty path segment"],
  ];
  for (const [name, why] of cases) {
    const z = await good();
    rename(z, layout(z)[0], name);
    assertThrows(() => ZipReader.open(put(z)), `entry "${name}": unsafe name (${why})`);
  }
  const dup = await good();
  rename(dup, layout(dup)[2], "data/stored.bin");
  assertThrows(() => ZipReader.open(put(dup)), 'entry "data/stored.bin" appears twice in the archive');
  const enc = await good();
  const e = layout(enc)[1];
  u16(enc, e.central + 8, 0x801); // UTF-8 names + encrypted
  assertThrows(
    () => ZipReader.open(put(enc)),
    'entry "data/deflated.txt" is encrypted; encrypted archives are not supported',
  );
  const aes = await good();
  u16(aes, layout(aes)[1].central + 10, 99); // WinZip AES
  assertThrows(
    () => ZipReader.open(put(aes)),
    'entry "data/deflated.txt" is encrypted; encrypted archives are not supported',
  );
});

test("hostile: truncated archive, overlapping entries, data running into the directory, corrupt directory", async () => {
  const z = await good();
  assertThrows(
    () => ZipReader.open(put(z.subarray(0, z.length >> 1))),
    "not a zip archive, or truncated (no end-of-central-directory record)",
  );
  assertThrows(() => ZipReader.open(put(z.subarray(0, 10))), "not a zip archive (10 bytes)");
  const cut = z.slice(0, z.length - 30); // the end record, cut short
  assertThrows(() => ZipReader.open(put(cut)), "no end-of-central-directory record");
  const over = await good();
  const [a, b] = layout(over);
  u32(over, b.central + 42, a.local + 10); // the second entry's data starts inside the first's
  assertThrows(
    () => ZipReader.open(put(over)),
    'entries "data/stored.bin" and "data/deflated.txt" overlap (a zip bomb\'s trick, or corruption)',
  );
  const long = await good();
  const last = layout(long)[2];
  u32(long, last.central + 20, last.compressedSize + 100);
  assertThrows(
    () => ZipReader.open(put(long)),
    'entry "data/others.bin": corrupt (its data runs into the central directory)',
  );
  const dir = await good();
  u32(dir, layout(dir)[1].central, 0x12345678);
  assertThrows(() => ZipReader.open(put(dir)), "corrupt central directory at entry 2 of 3");
  const split = await good();
  u16(split, split.length - 22 + 4, 1);
  assertThrows(() => ZipReader.open(put(split)), "multi-disk (split) archives are not supported");
});

/** A reader of entry `name` of the good archive after `patch` changed its bytes (or of `archive`'s). */
async function readPatched(
  name: string,
  patch: (z: Uint8Array, entries: Where[]) => void,
  archive?: Uint8Array,
): Promise<() => Uint8Array> {
  const z = archive ?? await good();
  patch(z, layout(z));
  const r = ZipReader.open(put(z));
  return () => r.read(name);
}

test("hostile entries when read: corrupt DEFLATE data, CRC mismatch, bad local header, unsupported method, sizes", async () => {
  const STORED = "data/stored.bin", DEFLATED = "data/deflated.txt";
  const where = (name: string) => `entry "${name}"`;
  // a final block of the reserved type 3; the other entries still read
  const z = await good();
  const [stored, deflated] = layout(z);
  z[deflated.data] = 0x07;
  const r = ZipReader.open(put(z));
  assertThrows(() => r.read(DEFLATED), `${where(DEFLATED)}: corrupt DEFLATE data (invalid block type)`);
  assertEquals([...r.read(STORED)], [...GOOD[0].data]);
  const cases: [string, (z: Uint8Array, e: Where[]) => void, string | RegExp][] = [
    [STORED, (z) => z[stored.data + 100] ^= 0x01, `${where(STORED)}: corrupt (CRC-32 mismatch)`],
    // a bit flipped inside the Huffman codes: other bytes (CRC) or an invalid stream, either way corrupt
    [
      DEFLATED,
      (z) => z[deflated.data + deflated.compressedSize - 3] ^= 0x10,
      /entry "data\/deflated\.txt": corrupt/,
    ],
    [DEFLATED, (z) => u32(z, deflated.local, 0), `${where(DEFLATED)}: corrupt (no local header)`],
    [STORED, (z) => {
      u16(z, stored.central + 10, 12);
      u16(z, stored.local + 8, 12);
    }, `${where(STORED)} uses compression method 12; only stored (0) and DEFLATE (8) are supported`],
    // declared sizes that cannot be: a stored entry whose two sizes differ; a DEFLATE output one byte
    // shorter than the stream's (it cannot grow the buffer: the CRC of what fits fails) or longer
    [
      STORED,
      (z) => u32(z, stored.central + 24, 4000),
      `${where(STORED)}: corrupt (5000 compressed bytes for 4000 inflated)`,
    ],
    [DEFLATED, (z) => u32(z, deflated.central + 24, 4799), `${where(DEFLATED)}: corrupt (CRC-32 mismatch)`],
    [
      DEFLATED,
      (z) => u32(z, deflated.central + 24, 4801),
      `${where(DEFLATED)}: corrupt (inflated to 4800 bytes, the directory says 4801)`,
    ],
  ];
  for (const [name, patch, message] of cases) assertThrows(await readPatched(name, patch), message);
  // a DEFLATE entry declared far smaller than its compressed data: refused before reading or inflating it
  const big = join(tmp, "big.zip");
  await writeZip(big, [{ name: "n.bin", data: noise(100_000), compress: false }]);
  const small = await readPatched("n.bin", (z, [n]) => {
    u16(z, n.central + 10, 8);
    u32(z, n.central + 24, 100);
  }, readFileSync(big));
  assertThrows(small, 'entry "n.bin": corrupt (100000 compressed bytes for 100 inflated)');
});

test("a reader refuses to read once its archive changed", async () => {
  const path = put(await good());
  const r = ZipReader.open(path);
  assertEquals(r.read("data/others.bin").length, 3000);
  utimesSync(path, new Date(2001, 1, 1), new Date(2001, 1, 1));
  assertThrows(() => r.read("data/others.bin"), "the archive changed since it was opened; open it again");
});

test("writeZip is atomic: a throwing entry iterable leaves no file, no temporary sibling, an old file untouched", async () => {
  const dir = mkdtempSync(join(tmp, "atomic-"));
  const path = join(dir, "out.zip");
  const failing = function* (): Generator<ZipInput> {
    yield { name: "one.txt", data: noise(100_000) };
    throw new Error("entry source failed");
  };
  await assertRejects(() => writeZip(path, failing()), "entry source failed");
  assertEquals(readdirSync(dir), [], "nothing left behind");
  await writeZip(path, [{ name: "keep.txt", data: text("old") }]);
  const before = readFileSync(path);
  await assertRejects(() => writeZip(path, failing()), "entry source failed");
  await assertRejects(
    () => writeZip(path, [{ name: "ok", data: text("") }, { name: "/abs", data: text("") }]),
    "an absolute path",
  );
  assertEquals(readdirSync(dir), ["out.zip"], "only the old file");
  assertEquals([...readFileSync(path)], [...before], "old file untouched");
  assertEquals(ZipReader.open(path).readText("keep.txt"), "old");
});

test.afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});
