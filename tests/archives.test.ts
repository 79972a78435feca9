// Data sets read straight from zip archives (src/io/tree.ts, src/data/datasets.ts): zips of the three
// layouts built here from ../shared/data (never copied into the repo) give the same index and the same
// pixels as the unpacked folders; GitHub's top folder, Kaggle's nested copy and __MACOSX, folders holding
// zips; corrupt entries skipped with their reason; hostile archives and CSV rows refused; the CLI.
import { execFileSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { zipSync } from "fflate";
import * as data from "../src/data/datasets.ts";
import { ImageCache } from "../src/data/preprocess.ts";
import { isFile, isFolder, listFolder, readBytes, splitArchivePath } from "../src/io/tree.ts";
import { writeZip, type ZipInput } from "../src/io/zip.ts";
import { assert, assertEquals, assertRejects, assertThrows, test } from "./harness.ts";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
/** A folder under ../shared/data; a missing one fails the test loudly instead of passing it silently. */
const sharedDir = (sub: string) => {
  const p = resolve(repo, "..", "shared", "data", sub);
  assert(existsSync(p), `test data missing: ${p} (archives.test.ts reads ../shared/data; see its README)`);
  return p;
};
const tmp = mkdtempSync(join(tmpdir(), "fl-archives-"));

/** Every file under `dir`, sorted, as `[path inside the folder, absolute path]`. */
function filesUnder(dir: string): [string, string][] {
  const out: [string, string][] = [];
  const walk = (d: string) => {
    for (const n of readdirSync(d).sort()) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else out.push([relative(dir, p).split("\\").join("/"), p]);
    }
  };
  walk(dir);
  return out;
}

/** The entries of a zip of `dir` under `prefix`, read one at a time. */
function* entriesOf(dir: string, prefix = "", only?: (rel: string) => boolean): Generator<ZipInput> {
  for (const [rel, abs] of filesUnder(dir)) {
    if (!only || only(rel)) yield { name: prefix + rel, data: readFileSync(abs), compress: false };
  }
}

/** An index with each file written relative to its root, so that a folder's and a zip's compare equal. */
function relativeIndex(loaded: data.LoadedSource, root: string) {
  const rel = (f: string) => {
    assert(f.startsWith(root), `${f} is under ${root}`);
    return f.slice(root.length);
  };
  return {
    records: loaded.records.map((r) => ({ ...r, file: rel(r.file) })),
    skipped: loaded.skipped.map((s) => ({ ...s, file: rel(s.file) })),
  };
}

/** `sub` of ../shared/data zipped (by writeZip, stored, under `prefix`) into `name`; both loaded. */
async function zipAndLoad(sub: string, name: string, prefix = "") {
  const dir = sharedDir(sub), zip = join(tmp, name);
  await writeZip(zip, entriesOf(dir, prefix));
  return { dir, zip, folder: data.loadDataset([dir]), zipped: data.loadDataset([zip]) };
}

/** Both loads agree record for record (labels, patients, views, sources, splits) and skip the same files. */
function assertSameIndex(
  zipped: data.LoadedDataset,
  zipRoot: string,
  folder: data.LoadedDataset,
  dir: string,
) {
  const a = relativeIndex(zipped, zipRoot), b = relativeIndex(folder, dir);
  assertEquals(a.records, b.records);
  assertEquals(a.skipped.map((s) => s.file), b.skipped.map((s) => s.file));
  assertEquals(zipped.summary.table, folder.summary.table);
}

/** Decoded pixels equal, file by file; `every`-th record only (JPEG decoding is slow). */
async function assertSamePixels(zipped: data.ImageRecord[], folder: data.ImageRecord[], every = 1) {
  assertEquals(zipped.length, folder.length);
  let compared = 0;
  for (let i = 0; i < zipped.length; i += every) {
    const [x, y] = [await data.loadImage(zipped[i]), await data.loadImage(folder[i])];
    assertEquals([x.width, x.height], [y.width, y.height], zipped[i].file);
    assert(x.data.every((v, k) => v === y.data[k]), `pixels of ${zipped[i].file}`);
    compared++;
  }
  assert(compared > 0, "compared some images");
}

test("Kaggle layout from a zip (Kaggle's chest_xray/ at the root): index and pixels equal the folder's", async () => {
  const { dir, zip, folder, zipped } = await zipAndLoad("layouts/kaggle", "chest-xray-pneumonia.zip");
  assertEquals(zipped.records.length, 27);
  assertEquals(zipped.summary.classes, { covid: 0, viral: 9, bacterial: 9, normal: 9 });
  assertSameIndex(zipped, `${zip}!/`, folder, dir + "/");
  const r = zipped.records.find((x) => x.file.endsWith("/person30_bacteria_154.jpeg"))!;
  assertEquals(r.file, `${zip}!/chest_xray/train/PNEUMONIA/person30_bacteria_154.jpeg`);
  assertEquals([r.labelName, r.patientId, r.split], ["bacterial", "kaggle:person30", "train"]);
  assertEquals(data.detectSources(zip), [{ kind: "kaggle", dir: `${zip}!/` }]);
  assertEquals(
    relativeIndex(data.loadKaggle(zip), `${zip}!/`),
    relativeIndex(data.loadKaggle(dir), dir + "/"),
  );
  await assertSamePixels(zipped.records, folder.records, 5);
  // the cache of stage 1 reads them too
  const cache = new ImageCache(64);
  const [a, b] = [await cache.get(zipped.records[3]), await new ImageCache(64).get(folder.records[3])];
  assertEquals([...a.data], [...b.data]);
});

test("Kaggle's archive quirks: the nested chest_xray/chest_xray copy skipped as duplicates, __MACOSX ignored", async () => {
  const dir = sharedDir("layouts/kaggle");
  const zip = join(tmp, "kaggle-quirks.zip");
  const copy = (rel: string) => rel.startsWith("chest_xray/test/PNEUMONIA/");
  await writeZip(zip, [
    ...entriesOf(dir),
    ...entriesOf(dir, "chest_xray/", copy), // chest_xray/chest_xray/test/PNEUMONIA/...
    { name: "__MACOSX/chest_xray/test/NORMAL/._IM-0176-0001.jpeg", data: new Uint8Array(82) },
    { name: "chest_xray/test/NORMAL/.DS_Store", data: new Uint8Array(10) },
  ]);
  const { records, skipped } = data.loadDataset([zip]);
  assertEquals(records.length, 27);
  assertEquals(skipped.length, 6);
  // folders are walked in sorted order, so the nested copy (chest_xray/chest_xray < chest_xray/test) is kept
  const pneumonia = readdirSync(join(dir, "chest_xray/test/PNEUMONIA")).sort();
  assertEquals(skipped.map((s) => s.file), pneumonia.map((n) => `${zip}!/chest_xray/test/PNEUMONIA/${n}`));
  assertEquals(
    skipped.map((s) => s.reason),
    pneumonia.map((n) => `duplicate of ${zip}!/chest_xray/chest_xray/test/PNEUMONIA/${n}`),
  );
  assertEquals(records.filter((r) => r.file.includes("/chest_xray/chest_xray/")).length, 6);
});

test("covid-chestxray-dataset as GitHub's zip (one top folder, made by fflate): index and pixels equal", async () => {
  const dir = sharedDir("layouts/covid-chestxray-dataset");
  const files: Record<string, Uint8Array> = {};
  for (const [rel, abs] of filesUnder(dir)) {
    files[`covid-chestxray-dataset-master/${rel}`] = readFileSync(abs);
  }
  const zip = join(tmp, "covid-chestxray-dataset-master.zip");
  writeFileSync(zip, zipSync(files, { level: 1 }));
  const folder = data.loadDataset([dir]), zipped = data.loadDataset([zip]);
  assertEquals([zipped.records.length, zipped.skipped.length], [24, 2]);
  assertEquals(zipped.summary.classes, { covid: 16, viral: 2, bacterial: 4, normal: 2 });
  const top = `${zip}!/covid-chestxray-dataset-master/`;
  assertSameIndex(zipped, top, folder, dir + "/");
  for (const s of zipped.skipped) assert(/CT/.test(s.reason), s.reason);
  assertEquals(data.detectSources(zip), [{ kind: "covid-chestxray-dataset", dir: top.slice(0, -1) }]);
  // the per-layout loader given the archive finds the top folder itself; an inner path works too
  assertEquals(data.loadCovidChestxray(zip).records.length, 24);
  assertEquals(data.loadCovidChestxray(top).records.map((r) => r.file), zipped.records.map((r) => r.file));
  await assertSamePixels(zipped.records, folder.records, 3);
});

test("labels.csv layout (chestxray64, 1052 images) from a zip: index, pixels, default source from the name", async () => {
  const { dir, zip, folder, zipped } = await zipAndLoad("chestxray64", "chestxray64.zip");
  assertEquals(zipped.records.length, 1052);
  assertEquals(zipped.summary.classes, { covid: 313, viral: 245, bacterial: 259, normal: 235 });
  assertEquals(
    new Set(zipped.records.map((r) => r.patientId)).size,
    new Set(folder.records.map((r) => r.patientId)).size,
  );
  assertSameIndex(zipped, `${zip}!/`, folder, dir + "/");
  await assertSamePixels(zipped.records, folder.records, 7);
  const checked = await data.validateImages(zipped.records);
  assertEquals([checked.records.length, checked.skipped.length], [1052, 0]);
  // a labels.csv without patient and source columns: both default to the archive's name, as to a folder's
  const names = readdirSync(join(dir, "images")).sort().slice(0, 3);
  const csv = "file,label\n" + names.map((n) => `${n},normal`).join("\n") + "\n";
  const small = join(tmp, "mini.zip"), smallDir = join(tmp, "mini");
  await writeZip(small, [
    { name: "labels.csv", data: new TextEncoder().encode(csv) },
    ...names.map((n) => ({ name: `images/${n}`, data: readFileSync(join(dir, "images", n)) })),
  ]);
  mkdirSync(join(smallDir, "images"), { recursive: true });
  writeFileSync(join(smallDir, "labels.csv"), csv);
  for (const n of names) writeFileSync(join(smallDir, "images", n), readFileSync(join(dir, "images", n)));
  const a = data.loadLabelsCsv(small), b = data.loadLabelsCsv(smallDir);
  assertEquals(a.records.map((r) => [r.source, r.patientId]), names.map((n) => ["mini", `mini:${n}`]));
  assertEquals(relativeIndex(a, `${small}!/`), relativeIndex(b, smallDir + "/"));
});

test("a folder of sources holding zips, and a zip holding the layouts one folder down", async () => {
  const layouts = sharedDir("layouts");
  const sources = join(tmp, "sources");
  mkdirSync(sources, { recursive: true });
  await writeZip(join(sources, "kaggle.zip"), entriesOf(join(layouts, "kaggle")));
  await writeZip(
    join(sources, "ieee.zip"),
    entriesOf(join(layouts, "covid-chestxray-dataset"), "covid-chestxray-dataset-master/"),
  );
  writeFileSync(join(sources, "notes.txt"), "not a source");
  const reference = data.loadDataset([layouts]);
  const kinds = (p: string) => data.detectSources(p).map((s) => [s.kind, s.dir]);
  assertEquals(kinds(sources), [
    ["covid-chestxray-dataset", `${join(sources, "ieee.zip")}!/covid-chestxray-dataset-master`],
    ["kaggle", `${join(sources, "kaggle.zip")}!/`],
  ]);
  const fromZips = data.loadDataset([sources]);
  assertEquals([fromZips.records.length, fromZips.skipped.length], [51, 2]);
  assertEquals(fromZips.summary.classes, reference.summary.classes);
  assertEquals(fromZips.summary.table, reference.summary.table);
  const nested = join(tmp, "layouts.zip");
  await writeZip(nested, entriesOf(layouts, "", (rel) => !rel.endsWith(".png") || rel.includes("000005-3")));
  assertEquals(kinds(nested), [
    ["covid-chestxray-dataset", `${nested}!/covid-chestxray-dataset`],
    ["kaggle", `${nested}!/kaggle`],
  ]);
  const leftOut =
    reference.records.filter((r) => r.file.endsWith(".png") && !r.file.includes("000005-3")).length;
  assert(leftOut > 0, "some PNGs are left out of this zip");
  const n = data.loadDataset([nested]);
  assertEquals(n.records.length, 51 - leftOut);
  assertEquals(n.skipped.filter((s) => s.reason === "file missing").length, leftOut);
  // the virtual tree
  assert(
    isFolder(`${nested}!/`) && isFolder(`${nested}!/kaggle/chest_xray`) && !isFile(`${nested}!/kaggle`),
    "tree",
  );
  assertEquals(listFolder(`${nested}!/kaggle/chest_xray`), ["test", "train"]);
  assertEquals(splitArchivePath(`${nested}!/kaggle/./chest_xray//test`), {
    archive: nested,
    entry: "kaggle/chest_xray/test",
  });
  assertEquals(splitArchivePath(join(layouts, "kaggle")), null);
  assertThrows(() => splitArchivePath(`${nested}!/kaggle/../../x`), "leads outside the archive");
  const csv = join(layouts, "covid-chestxray-dataset", "metadata.csv");
  assertEquals([...readBytes(`${nested}!/covid-chestxray-dataset/metadata.csv`)], [...readFileSync(csv)]);
  assertThrows(
    () => readBytes(`${nested}!/kaggle/nope.jpeg`),
    `${nested}!/kaggle/nope.jpeg: cannot read (no such entry in ${nested})`,
  );
});

test("corrupt and unreadable image entries land in skipped with the archive, the entry and the reason", async () => {
  const dir = sharedDir("chestxray64");
  const names = readdirSync(join(dir, "images")).sort().slice(0, 6);
  const labels = "file,label,patient_id\n" + names.map((n, i) => `${n},covid,p${i}`).join("\n") + "\n";
  const png = (i: number) => readFileSync(join(dir, "images", names[i]));
  const entries: ZipInput[] = [
    { name: "set/labels.csv", data: new TextEncoder().encode(labels) },
    { name: `set/images/${names[0]}`, data: png(0), compress: false },
    { name: `set/images/${names[1]}`, data: png(1), compress: false }, // bytes flipped below: CRC mismatch
    { name: `set/images/${names[2]}`, data: png(2).subarray(0, 300) }, // a good entry holding a truncated PNG
    { name: `set/images/${names[3]}`, data: png(3) }, // its DEFLATE stream broken below
    { name: `set/images/${names[4]}`, data: png(4), compress: false },
    { name: `set/images/${names[5]}`, data: png(5), compress: false },
  ];
  const zip = join(tmp, "corrupt.zip");
  await writeZip(zip, entries);
  const bytes = readFileSync(zip);
  const at = (name: string) => bytes.indexOf(Buffer.from(name)) + name.length; // data follows the local name
  bytes[at(`set/images/${names[1]}`) + 200] ^= 0xff;
  bytes[at(`set/images/${names[3]}`)] = 0x07; // reserved block type
  writeFileSync(zip, bytes);
  const { records, skipped } = data.loadDataset([zip]);
  assertEquals([records.length, skipped.length], [6, 0], "the index reads no pixels");
  const checked = await data.validateImages(records);
  assertEquals(checked.records.map((r) => r.patientId), ["p0", "p4", "p5"]);
  const file = (i: number) => `${zip}!/set/images/${names[i]}`;
  assertEquals(checked.skipped.map((s) => s.file), [file(1), file(2), file(3)]);
  assertEquals(checked.skipped[0].reason, `${file(1)}: corrupt (CRC-32 mismatch)`);
  assert(checked.skipped[1].reason.startsWith(`${file(2)}: truncated PNG`), checked.skipped[1].reason);
  assertEquals(checked.skipped[2].reason, `${file(3)}: corrupt DEFLATE data (invalid block type)`);
  await assertRejects(() => new ImageCache(32).get(records[1]), `${file(1)}: corrupt (CRC-32 mismatch)`);
});

test("hostile archives fail the load with a message naming the archive and the entry; caps are options", async () => {
  const img = readFileSync(
    join(sharedDir("chestxray64/images"), readdirSync(sharedDir("chestxray64/images"))[0]),
  );
  const labels = new TextEncoder().encode("file,label\nx.png,normal\n");
  const make = async (name: string, entries: ZipInput[]) => {
    const p = join(tmp, name);
    await writeZip(p, entries);
    return p;
  };
  // traversal: the writer refuses such names, so patch a good archive's name bytes (both headers)
  const trav = await make("trav.zip", [{ name: "labels.csv", data: labels }, {
    name: "images/x.png",
    data: img,
  }]);
  const t = readFileSync(trav);
  for (
    let i = t.indexOf(Buffer.from("images/x.png"));
    i >= 0;
    i = t.indexOf(Buffer.from("images/x.png"), i + 1)
  ) {
    t.set(Buffer.from("../../x.png."), i);
  }
  writeFileSync(trav, t);
  assertThrows(
    () => data.loadDataset([trav]),
    `${trav}: entry "../../x.png.": unsafe name (a '..', '.' or empty path segment)`,
  );
  // a bomb: 64 MiB of zeros in 64 KB
  const bomb = await make("bomb.zip", [{ name: "labels.csv", data: labels }, {
    name: "images/x.png",
    data: new Uint8Array(64 << 20),
  }]);
  assertThrows(() => data.loadDataset([bomb]), `${bomb}: entry "images/x.png" would inflate`);
  assertThrows(() => data.detectSources(tmp), `${bomb}: entry "images/x.png" would inflate`); // a folder holding it fails too
  const allowed = data.loadDataset([bomb], { archiveLimits: { maxRatio: 2000 } });
  assertEquals(allowed.records.length, 1);
  const v = await data.validateImages(allowed.records);
  assert(/not a PNG or JPEG/.test(v.skipped[0]?.reason ?? ""), JSON.stringify(v.skipped));
  rmSync(bomb);
  const ok = await make("ok.zip", [{ name: "labels.csv", data: labels }, {
    name: "images/x.png",
    data: img,
  }]);
  assertThrows(
    () => data.loadDataset([ok], { archiveLimits: { maxTotalBytes: 1000 } }),
    `${ok}: the entries would inflate to over 1000 bytes (the limit)`,
  );
  assertEquals(data.loadDataset([ok]).records.length, 1, "the default caps again");
  // a corrupt central directory, and a truncated archive
  const bad = readFileSync(ok);
  bad.set([0, 0, 0, 0], bad.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02])));
  writeFileSync(join(tmp, "dir.zip"), bad);
  assertThrows(
    () => data.loadDataset([join(tmp, "dir.zip")]),
    `${join(tmp, "dir.zip")}: corrupt central directory at entry 1 of 2`,
  );
  writeFileSync(join(tmp, "cut.zip"), readFileSync(ok).subarray(0, 500));
  assertThrows(() => data.loadDataset([join(tmp, "cut.zip")]), "not a zip archive, or truncated");
  // encrypted and duplicate entries
  const enc = readFileSync(ok);
  const c = enc.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
  enc[c + 8] |= 1;
  writeFileSync(join(tmp, "enc.zip"), enc);
  assertThrows(() => data.loadDataset([join(tmp, "enc.zip")]), 'entry "labels.csv" is encrypted');
  for (const f of ["trav.zip", "dir.zip", "cut.zip", "enc.zip"]) rmSync(join(tmp, f));
  assertThrows(() => data.loadDataset([join(tmp, "nothing.zip")]), "not a folder or a zip archive");
  writeFileSync(join(tmp, "fake.zip"), "just text");
  assertThrows(
    () => data.loadDataset([join(tmp, "fake.zip")]),
    `${join(tmp, "fake.zip")}: not a folder or a zip archive`,
  );
  rmSync(join(tmp, "fake.zip"));
});

test("CSV rows inside an archive cannot point outside it (no reading the host's files)", async () => {
  const img = readFileSync(
    join(sharedDir("chestxray64/images"), readdirSync(sharedDir("chestxray64/images"))[0]),
  );
  const onDisk = join(sharedDir("layouts/covid-chestxray-dataset"), "images");
  const meta = [
    "patientid,finding,view,modality,folder,filename",
    "1,COVID-19,PA,X-ray,images,ok.png",
    `2,COVID-19,PA,X-ray,${onDisk},wong-0004.jpg`, // an absolute folder: on disk, outside the archive
    "3,COVID-19,PA,X-ray,images,../../../etc/passwd",
    "4,COVID-19,PA,X-ray,..,images/ok.png", // leaves the top folder but stays inside the archive
  ].join("\n");
  const zip = join(tmp, "escape.zip");
  await writeZip(zip, [
    { name: "top/metadata.csv", data: new TextEncoder().encode(meta) },
    { name: "top/images/ok.png", data: img },
    { name: "images/ok.png", data: img },
  ]);
  const { records, skipped } = data.loadCovidChestxray(`${zip}!/top`);
  assertEquals(records.map((r) => r.file), [`${zip}!/top/images/ok.png`, `${zip}!/images/ok.png`]);
  assertEquals(skipped.length, 2);
  for (const s of skipped) assert(/leads outside the archive/.test(s.reason), JSON.stringify(s));
  const labels = "file,label\nok.png,covid\n../../x.png,covid\n/etc/passwd,covid\n";
  const z2 = join(tmp, "escape2.zip");
  await writeZip(z2, [{ name: "labels.csv", data: new TextEncoder().encode(labels) }, {
    name: "images/ok.png",
    data: img,
  }]);
  const l = data.loadLabelsCsv(z2);
  assertEquals(l.records.map((r) => r.file), [`${z2}!/images/ok.png`]);
  assertEquals(l.skipped.map((s) => /leads outside the archive/.test(s.reason)), [true, true]);
});

test("an archive rewritten on disk is read again: its new directory, never a stale offset", async () => {
  const images = sharedDir("chestxray64/images");
  const [a, b] = readdirSync(images).sort().slice(0, 2).map((n) => readFileSync(join(images, n)));
  const zip = join(tmp, "rewritten.zip");
  const csv = new TextEncoder().encode("file,label\nx.png,normal\n");
  await writeZip(zip, [{ name: "labels.csv", data: csv }, { name: "images/x.png", data: a }]);
  const { records } = data.loadDataset([zip]);
  const before = await data.loadImage(records[0]);
  await writeZip(zip, [
    { name: "images/pad.bin", data: new Uint8Array(12345) }, // moves every entry's data
    { name: "labels.csv", data: csv },
    { name: "images/x.png", data: b },
  ]);
  const after = await data.loadImage(records[0]);
  const direct = await data.loadImage({ file: join(images, readdirSync(images).sort()[1]) });
  assertEquals([...after.data], [...direct.data]);
  assert(before.data.some((v, i) => v !== after.data[i]), "the new image, not the old one");
});

test("CLI: `data --data x.zip --json` and `--decode` equal the unpacked folder's", async () => {
  const dir = sharedDir("layouts/covid-chestxray-dataset");
  const zip = join(tmp, "cli.zip");
  await writeZip(zip, entriesOf(dir, "covid-chestxray-dataset-master/"));
  const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
  const run = (...args: string[]) =>
    execFileSync(process.execPath, [
      ...(isBun ? ["run"] : ["run", "-A"]),
      join(repo, "cli.ts"),
      "data",
      ...args,
    ], {
      encoding: "utf8",
    });
  const fromZip = JSON.parse(run("--data", zip, "--json"));
  assertEquals(fromZip, JSON.parse(run("--data", dir, "--json")));
  assertEquals([fromZip.images, fromZip.skipped, fromZip.classes.covid], [24, 2, 16]);
  const decoded = run("--data", zip, "--decode");
  assert(decoded.includes("skipped: 2"), decoded);
  assert(
    decoded.includes(
      `skipped ${zip}!/covid-chestxray-dataset-master/images/jkms-35-e79-g001-l-d.jpg: modality CT`,
    ),
    decoded,
  );
});

test.afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});
