// The data pipeline on the real chest X-rays in ../shared/data (never copied into the repo): the three
// loaders, Table 1, PNG/JPEG decoding (8/16 bit, gray/alpha/RGB/palette), corrupt files, bombs, resizing,
// and the `data --json` command.
import { execFileSync } from "node:child_process";
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
import { basename, dirname, join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { deflateSync } from "node:zlib";
import UPNG from "upng-js";
import * as data from "../src/data/datasets.ts";
import {
  crc32,
  decodeImage,
  encodePngGray,
  encodePngRaw,
  readImageSync,
  resizeGray,
} from "../src/io/images.ts";
import { equalizeHistogram, ImageCache, resizeShortSide } from "../src/data/preprocess.ts";
import { cropBox, cropLungField, lungFieldBox } from "../src/data/lung_field.ts";
import { assert, assertClose, assertEquals, AssertionError, assertThrows, test } from "./harness.ts";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const shared = resolve(repo, "..", "shared", "data");

/** A folder under ../shared/data; a missing one fails the test loudly instead of passing it silently. */
function sharedDir(sub: string): string {
  const p = join(shared, sub);
  if (!existsSync(p)) {
    throw new AssertionError(
      `test data missing: ${p} (these tests need ../shared/data next to the repo; see its README)`,
    );
  }
  return p;
}

const tmp = mkdtempSync(join(tmpdir(), "fl-data-"));
const mean = (a: Float32Array) => a.reduce((s, v) => s + v, 0) / a.length;
const byName = (records: data.ImageRecord[], name: string) => {
  const r = records.find((x) => basename(x.file) === name);
  if (!r) throw new AssertionError(`no record for ${name}`);
  return r;
};

test("equalizeHistogram: levels map to their cumulative share, darkest present 0, brightest 1", async () => {
  const img = { width: 3, height: 2, data: Float32Array.from([0, 0, 0.5, 0.5, 0.5, 1]) };
  // levels 0 (2 pixels), 128 (3), 255 (1): cumulative 2, 5, 6; (cdf - 2) / (6 - 2)
  assertEquals([...equalizeHistogram(img).data], [0, 0, 0.75, 0.75, 0.75, 1]);
  const flat = { width: 2, height: 1, data: Float32Array.from([0.3, 0.3]) };
  assertEquals([...equalizeHistogram(flat).data], [...flat.data].map(Math.fround), "a constant image stays");
  // On a real X-ray: the same order of pixel values, and the full range used.
  const images = join(sharedDir("chestxray64"), "images");
  const file = join(images, readdirSync(images).sort()[0]);
  const cache = new ImageCache(64, { equalize: true });
  const x = await new ImageCache(64).get({ file }), y = await cache.get({ file });
  assertEquals([...y.data], [...equalizeHistogram(x).data], "the cache equalises after resizing");
  assertEquals([Math.min(...y.data), Math.max(...y.data)], [0, 1]);
  for (let i = 0; i < 500; i++) {
    const [a, b] = [(i * 37) % x.data.length, (i * 101 + 7) % x.data.length];
    if (x.data[a] < x.data[b]) assert(y.data[a] <= y.data[b], `order kept at ${a}, ${b}`);
  }
});

test("parseCsv: quoted commas, newlines, doubled quotes, CRLF, BOM", () => {
  const text = '\ufeffa,b,c\r\n1,"x, y","line1\nline2"\r\n2,"say ""hi""",\n\n3,,"",\n';
  assertEquals(data.parseCsv(text), [["a", "b", "c"], ["1", "x, y", "line1\nline2"], ["2", 'say "hi"', ""], [
    "3",
    "",
    "",
    "",
  ]]);
  assertEquals(data.parseCsvObjects("p,q\n1,2\n3")[1], { p: "3", q: "" });
  assertThrows(() => data.parseCsv('a,b\nc,"d\n'), "unterminated quoted field starting on line 2");
});

test("classifyFinding: flat and hierarchical findings", () => {
  const cases: [string, string][] = [
    ["COVID-19", "covid"],
    ["COVID-19, ARDS", "covid"],
    ["Pneumonia/Viral/COVID-19", "covid"],
    ["SARS", "viral"],
    ["Pneumonia/Viral/MERS-CoV", "viral"],
    ["Pneumonia/Viral/Influenza", "viral"],
    ["Varicella", "viral"],
    ["Pneumonia/Viral/Herpes ", "viral"],
    ["Streptococcus", "bacterial"],
    ["Pneumonia/Bacterial/Klebsiella", "bacterial"],
    ["Pneumonia/Fungal/Pneumocystis", "bacterial"],
    ["E.Coli", "bacterial"],
    ["Pneumonia/Bacterial/Staphylococcus/MRSA", "bacterial"],
    ["Legionella", "bacterial"],
    ["Chlamydophila", "bacterial"],
    ["Pneumonia/Bacterial/Mycoplasma", "bacterial"],
    ["No Finding", "normal"],
  ];
  for (const [f, want] of cases) assertEquals<unknown>(data.classifyFinding(f), want, f);
  for (const f of ["ARDS", "Pneumonia", "Pneumonia/Lipoid", "todo", ""]) {
    const r = data.classifyFinding(f);
    assert(typeof r !== "string" && r.reason.length > 0, `${f} should be skipped, got ${JSON.stringify(r)}`);
  }
});

test("Kaggle layout: labels from folder and file name, patients, views", () => {
  const { records, skipped } = data.loadKaggle(sharedDir("layouts/kaggle"));
  assertEquals(skipped, []);
  assertEquals(records.length, 27);
  const s = data.summarize(records);
  assertEquals(s.classes, { covid: 0, viral: 9, bacterial: 9, normal: 9 });
  assert(
    records.every((r) => r.source === data.SOURCE_KAGGLE && r.view === "AP"),
    "kaggle source and view AP",
  );
  const check = (name: string, label: string, patient: string, split: string) => {
    const r = byName(records, name);
    assertEquals([r.labelName, r.label, r.patientId, r.split], [
      label,
      data.CLASSES.indexOf(label as data.ClassName),
      patient,
      split,
    ], name);
  };
  check("person30_bacteria_154.jpeg", "bacterial", "kaggle:person30", "train");
  check("person1413_virus_2422.jpeg", "viral", "kaggle:person1413", "test");
  check("IM-0176-0001.jpeg", "normal", "kaggle:IM-0176", "test");
  check("IM-0429-0001-0001.jpeg", "normal", "kaggle:IM-0429", "train");
  check("NORMAL2-IM-1154-0001-0002.jpeg", "normal", "kaggle:NORMAL2-IM-1154", "train");
  assertEquals(data.parseKaggleName("person5_bacteria_1.jpeg", "PNEUMONIA"), {
    labelName: "bacterial",
    patient: "kaggle:person5",
  });
  assert("reason" in data.parseKaggleName("odd.jpeg", "PNEUMONIA"), "unlabelled pneumonia name is skipped");
});

test("covid-chestxray-dataset layout: X-ray frontal rows, findings, patients; the 2 CT rows skipped", () => {
  const { records, skipped } = data.loadCovidChestxray(sharedDir("layouts/covid-chestxray-dataset"));
  assertEquals(records.length, 24);
  assertEquals(skipped.length, 2);
  for (const s of skipped) {
    assert(/jkms-35-e79-g001-l-[de]\.jpg$/.test(s.file) && /CT/.test(s.reason), JSON.stringify(s));
  }
  const s = data.summarize(records, skipped);
  assertEquals(s.classes, { covid: 16, viral: 2, bacterial: 4, normal: 2 });
  assertEquals(s.skipped, 2);
  assertEquals(Object.keys(s.views).sort(), ["AP", "AP Supine", "PA"]);
  const check = (name: string, label: string, patient: string, view: string) => {
    const r = byName(records, name);
    assertEquals([r.labelName, r.patientId, r.view, r.source], [label, patient, view, "ieee8023"], name);
  };
  check("wong-0004.jpg", "viral", "ieee8023:171", "PA");
  check("000005-3.png", "viral", "ieee8023:277", "AP");
  check("covid-19-caso-86-Rx-torace-1.jpg", "covid", "ieee8023:344", "AP Supine");
  check("2c35005f.jpg", "normal", "ieee8023:251", "PA");
  check("000006-12.jpg", "bacterial", "ieee8023:284", "PA");
  check("aspiration-pneumonia-5-day27.jpg", "bacterial", "ieee8023:91", "AP Supine");
  check("pneumococcal-pneumonia-day35.jpg", "bacterial", "ieee8023:87", "PA");
});

test("covid-chestxray-dataset: hierarchical findings, lateral views, missing files (temp copy of the index)", () => {
  const dir = join(tmp, "ieee");
  const img = join(sharedDir("layouts/covid-chestxray-dataset"), "images");
  const rows = [
    "patientid,finding,view,modality,folder,filename",
    `1,Pneumonia/Viral/COVID-19,PA,X-ray,${img},wong-0004.jpg`,
    `2,"Pneumonia/Bacterial/Streptococcus",AP Supine,X-ray,${img},000005-3.png`,
    `3,COVID-19,L,X-ray,${img},2c35005f.jpg`,
    `4,Pneumonia/Lipoid,PA,X-ray,${img},a38e1877.jpg`,
    `5,No Finding,PA,X-ray,images,gone.jpg`,
  ];
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "metadata.csv"), rows.join("\n") + "\n");
  const { records, skipped } = data.loadCovidChestxray(dir);
  assertEquals(records.map((r) => [r.labelName, r.patientId, r.view]), [["covid", "ieee8023:1", "PA"], [
    "bacterial",
    "ieee8023:2",
    "AP Supine",
  ]]);
  assertEquals(skipped.length, 3);
  assert(/not frontal/.test(skipped[0].reason), skipped[0].reason);
  assert(/Lipoid/.test(skipped[1].reason), skipped[1].reason);
  assert(
    /missing/.test(skipped[2].reason) && skipped[2].file.endsWith("gone.jpg"),
    JSON.stringify(skipped[2]),
  );
});

test("loadDataset on layouts/: both sources detected, Table 1", () => {
  const kinds = data.detectSources(sharedDir("layouts")).map((s) => s.kind).sort();
  assertEquals(kinds, ["covid-chestxray-dataset", "kaggle"]);
  const { records, skipped, summary } = data.loadDataset([sharedDir("layouts")]);
  assertEquals(records.length, 51);
  assertEquals(skipped.length, 2);
  assertEquals(summary.classes, { covid: 16, viral: 11, bacterial: 13, normal: 11 });
  assertEquals(summary.sources.ieee8023.total, 24);
  assertEquals(summary.sources[data.SOURCE_KAGGLE].total, 27);
  assertEquals(summary.views.AP, { covid: 2, viral: 10, bacterial: 9, normal: 9, total: 30 });
  const text = data.formatSummary(summary);
  assert(text.includes("Table 1") && text.includes("AP Supine") && text.includes("skipped: 2"), text);
  assertThrows(() => data.detectSources(tmpdir() + "/does-not-exist-fl"), "not a folder");
  assertThrows(() => data.loadDataset([repo + "/src"]), "no data source found");
});

test("labels.csv loader on chestxray64: 1052 images, class counts, patients", () => {
  const { records, skipped, summary } = data.loadDataset([sharedDir("chestxray64")]);
  assertEquals(skipped, []);
  assertEquals(records.length, 1052);
  assertEquals(summary.classes, { covid: 313, viral: 245, bacterial: 259, normal: 235 });
  assertEquals(Object.keys(summary.sources).sort(), ["ieee8023", data.SOURCE_KAGGLE]);
  const r = byName(records, "bacterial_ieee_000001-19.png");
  assertEquals([r.label, r.labelName, r.source], [2, "bacterial", "ieee8023"]);
  assert(r.patientId.startsWith("ieee8023:"), r.patientId);
  assert(records.every((x) => ["AP", "PA", "AP Supine"].includes(x.view)), "views");
});

test("decoding real files: Kaggle JPEG, PNG from chestxray64, RGBA PNG, PNG named .jpg", async () => {
  const kag = sharedDir("layouts/kaggle/chest_xray");
  const j = readImageSync(join(kag, "train/PNEUMONIA/person30_bacteria_154.jpeg"));
  assertEquals([j.width, j.height, j.data.length], [840, 672, 840 * 672]);
  assertClose(mean(j.data), 0.56086, { atol: 2e-3, msg: "JPEG mean vs PIL" });
  const j2 = await data.loadImage({ file: join(kag, "test/NORMAL/IM-0176-0001.jpeg") });
  assertEquals([j2.width, j2.height], [1680, 1557]);
  assertClose(mean(j2.data), 0.60739, { atol: 2e-3, msg: "JPEG mean vs PIL" });
  const p = readImageSync(join(sharedDir("chestxray64/images"), "bacterial_ieee_000001-19.png"));
  assertEquals([p.width, p.height], [64, 64]);
  assertClose(Array.from(p.data.subarray(0, 6), (v) => v * 255), [1, 2, 1, 0, 0, 2], { atol: 1e-4 });
  assertClose(p.data.reduce((s, v) => s + v, 0), 2170.7568627, { rtol: 1e-6 });
  const ieee = join(sharedDir("layouts/covid-chestxray-dataset"), "images");
  const rgba = readImageSync(join(ieee, "000005-3.png"));
  assertEquals([rgba.width, rgba.height], [724, 595]);
  assertClose(mean(rgba.data), 0.54919, { atol: 1e-3, msg: "RGBA luma mean vs PIL convert('L')" });
  const pngAsJpg = readImageSync(join(ieee, "000006-12.jpg")); // PNG bytes despite the name
  assertEquals([pngAsJpg.width, pngAsJpg.height], [744, 744]);
  assertClose(mean(pngAsJpg.data), 0.48448, { atol: 1e-3 });
  for (const v of [j, p, rgba]) assert(v.data.every((x) => x >= 0 && x <= 1), "values in [0, 1]");
});

test("corrupt files: truncated PNG/JPEG, random bytes, bad CRC -> skipped with a message naming the file", async () => {
  const png = readFileSync(join(sharedDir("chestxray64/images"), "bacterial_ieee_000001-19.png"));
  const jpg = readFileSync(
    join(sharedDir("layouts/kaggle/chest_xray/train/PNEUMONIA"), "person30_bacteria_154.jpeg"),
  );
  const files: Record<string, Uint8Array> = {
    "truncated.png": png.subarray(0, Math.floor(png.length / 2)),
    "random.jpeg": Uint8Array.from({ length: 5000 }, (_, i) => (i * 7919 + 13) % 251),
    "truncated.jpeg": jpg.subarray(0, Math.floor(jpg.length * 0.6)),
    "empty.png": new Uint8Array(0),
  };
  const badCrc = png.slice();
  const idat = Buffer.from(badCrc).indexOf("IDAT");
  badCrc[idat + 10] ^= 0xff;
  files["badcrc.png"] = badCrc;
  const records: data.ImageRecord[] = [];
  for (const [name, bytes] of Object.entries(files)) {
    writeFileSync(join(tmp, name), bytes);
    records.push({
      file: join(tmp, name),
      label: 0,
      labelName: "covid",
      patientId: "x",
      view: "PA",
      source: "test",
    });
  }
  records.push({ ...records[0], file: join(tmp, "absent.png") });
  records.push({
    ...records[0],
    file: join(sharedDir("chestxray64/images"), "bacterial_ieee_000001-19.png"),
  });
  const { records: ok, skipped } = await data.validateImages(records);
  assertEquals(ok.length, 1);
  assertEquals(skipped.length, 6);
  const reason = (n: string) => skipped.find((s) => s.file === join(tmp, n))!.reason;
  for (const s of skipped) assert(s.reason.startsWith(s.file + ": "), `message names the file: ${s.reason}`);
  assert(/truncated PNG/.test(reason("truncated.png")), reason("truncated.png"));
  assert(/not a PNG or JPEG/.test(reason("random.jpeg")), reason("random.jpeg"));
  assert(/truncated JPEG/.test(reason("truncated.jpeg")), reason("truncated.jpeg"));
  assert(/empty/.test(reason("empty.png")), reason("empty.png"));
  assert(/CRC/.test(reason("badcrc.png")), reason("badcrc.png"));
  assert(/cannot read/.test(reason("absent.png")), reason("absent.png"));
});

test("bombs: huge headers refused before decoding; zlib data past the header's size refused", () => {
  const jpg = readFileSync(
    join(sharedDir("layouts/kaggle/chest_xray/train/PNEUMONIA"), "person30_bacteria_154.jpeg"),
  ).slice();
  let sof = -1;
  for (let i = 2; i < jpg.length - 1; i++) {
    if (jpg[i] === 0xff && (jpg[i + 1] === 0xc0 || jpg[i + 1] === 0xc2)) {
      sof = i;
      break;
    }
  }
  assert(sof > 0, "SOF found");
  jpg.set([0xff, 0xff, 0xff, 0xff], sof + 5); // 65535 x 65535
  assertThrows(
    () => decodeImage(jpg, "bomb.jpeg"),
    /^bomb\.jpeg: image is 65535 x 65535 = 4294\.8 megapixels, over the limit/,
  );
  const small = readFileSync(join(sharedDir("chestxray64/images"), "bacterial_ieee_000001-19.png"));
  assertThrows(() => decodeImage(small, "small.png", { maxPixels: 1000 }), "over the limit of 0.0");
  // a 1x1 gray PNG whose IDAT inflates to 8 MB
  const bomb = encodePngRaw({ width: 1, height: 1, depth: 8, ctype: 0, data: new Uint8Array(1) });
  const idat = new Uint8Array(deflateSync(new Uint8Array(8 << 20)));
  const head = bomb.subarray(0, 33), tail = bomb.subarray(bomb.length - 12);
  const chunk = new Uint8Array(12 + idat.length);
  new DataView(chunk.buffer).setUint32(0, idat.length);
  chunk.set([73, 68, 65, 84], 4);
  chunk.set(idat, 8);
  new DataView(chunk.buffer).setUint32(8 + idat.length, crc32(chunk, 4, 8 + idat.length));
  const file = new Uint8Array([...head, ...chunk, ...tail]);
  assertThrows(() => decodeImage(file, "zbomb.png"), /^zbomb\.png: corrupt PNG \(image data inflates past/);
});

test("PNG variants made here: 16-bit gray/RGB/gray+alpha/RGBA, palette 8/2 bit, 1-bit gray, upng-js palette", () => {
  const be16 = (vals: number[]) => {
    const b = new Uint8Array(vals.length * 2);
    vals.forEach((v, i) => [b[2 * i], b[2 * i + 1]] = [v >> 8, v & 255]);
    return b;
  };
  const dec = (raw: Parameters<typeof encodePngRaw>[0]) => decodeImage(encodePngRaw(raw), "made.png");
  const g16 = dec({ width: 2, height: 2, depth: 16, ctype: 0, data: be16([0, 65535, 32768, 1000]) });
  assertClose(g16.data, [0, 1, 32768 / 65535, 1000 / 65535], { atol: 1e-7 });
  const rgb16 = dec({
    width: 2,
    height: 1,
    depth: 16,
    ctype: 2,
    data: be16([65535, 0, 0, 1000, 30000, 65535]),
  });
  assertClose(rgb16.data, [0.299, (0.299 * 1000 + 0.587 * 30000 + 0.114 * 65535) / 65535], { atol: 1e-6 });
  const ga16 = dec({ width: 2, height: 1, depth: 16, ctype: 4, data: be16([500, 0, 60000, 65535]) });
  assertClose(ga16.data, [500 / 65535, 60000 / 65535], { atol: 1e-7 });
  const ga8 = dec({
    width: 3,
    height: 1,
    depth: 8,
    ctype: 4,
    data: new Uint8Array([10, 0, 200, 255, 255, 128]),
  });
  assertClose(ga8.data, [10 / 255, 200 / 255, 1], { atol: 1e-7 });
  const rgba8 = dec({
    width: 2,
    height: 1,
    depth: 8,
    ctype: 6,
    data: new Uint8Array([255, 255, 255, 0, 0, 0, 255, 255]),
  });
  assertClose(rgba8.data, [1, 0.114], { atol: 1e-6 });
  const palette = new Uint8Array([0, 0, 0, 255, 0, 0, 0, 255, 0, 255, 255, 255]);
  const p8 = dec({ width: 4, height: 1, depth: 8, ctype: 3, data: new Uint8Array([3, 2, 1, 0]), palette });
  assertClose(p8.data, [1, 0.587, 0.299, 0], { atol: 1e-6 });
  // 2-bit palette, 5 pixels per row, 2 rows: indices packed 4 per byte, rows padded to whole bytes
  const p2 = dec({
    width: 5,
    height: 2,
    depth: 2,
    ctype: 3,
    data: new Uint8Array([0b00011011, 0b11000000, 0b11100100, 0b01000000]),
    palette,
  });
  assertClose(p2.data, [0, 0.299, 0.587, 1, 1, 1, 0.587, 0.299, 0, 0.299], { atol: 1e-6 });
  const g1 = dec({ width: 9, height: 1, depth: 1, ctype: 0, data: new Uint8Array([0b10100000, 0b10000000]) });
  assertEquals(Array.from(g1.data), [1, 0, 1, 0, 0, 0, 0, 0, 1]);
  // a palette PNG written by upng-js itself (4 colours -> colour type 3)
  const rgba = new Uint8Array(4 * 4 * 4);
  const cols = [[0, 0, 0], [255, 0, 0], [0, 0, 255], [255, 255, 255]];
  for (let i = 0; i < 16; i++) rgba.set([...cols[i % 4], 255], 4 * i);
  const file = new Uint8Array(UPNG.encode([rgba.buffer], 4, 4, 256));
  assertEquals(file[25], 3, "upng-js wrote a palette PNG");
  const up = decodeImage(file, "upng.png");
  // upng-js quantizes, so the reference is its own RGBA decode of the file, reduced to luma
  const ref = new Uint8Array(UPNG.toRGBA8(UPNG.decode(file.slice().buffer))[0]);
  const refLuma = Array.from(
    { length: 16 },
    (_, i) => (0.299 * ref[4 * i] + 0.587 * ref[4 * i + 1] + 0.114 * ref[4 * i + 2]) / 255,
  );
  assertClose(up.data, refLuma, { atol: 1e-6 });
  assert(up.data[0] < 0.05 && up.data[3] > 0.95, "black and white stay black and white");
});

/** Builds a PNG from chunks (type, payload) with correct CRCs. */
function pngFromChunks(chunks: [string, Uint8Array][]): Uint8Array {
  const parts: number[] = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  for (const [type, d] of chunks) {
    const c = new Uint8Array(12 + d.length);
    new DataView(c.buffer).setUint32(0, d.length);
    for (let i = 0; i < 4; i++) c[4 + i] = type.charCodeAt(i);
    c.set(d, 8);
    new DataView(c.buffer).setUint32(8 + d.length, crc32(c, 4, 8 + d.length));
    parts.push(...c);
  }
  return new Uint8Array(parts);
}

test("interlaced (Adam7) 8-bit gray PNG made here", () => {
  const w = 11, h = 7;
  const px = Uint8Array.from({ length: w * h }, (_, i) => (i * 29) % 256);
  const passes = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [
    0,
    1,
    1,
    2,
  ]];
  const raw: number[] = [];
  for (const [sx, sy, dx, dy] of passes) {
    for (let y = sy; y < h; y += dy) {
      if (sx >= w) break;
      raw.push(0);
      for (let x = sx; x < w; x += dx) raw.push(px[y * w + x]);
    }
  }
  const ihdr = new Uint8Array(13);
  new DataView(ihdr.buffer).setUint32(0, w);
  new DataView(ihdr.buffer).setUint32(4, h);
  ihdr.set([8, 0, 0, 0, 1], 8);
  const file = pngFromChunks([["IHDR", ihdr], ["IDAT", new Uint8Array(deflateSync(new Uint8Array(raw)))], [
    "IEND",
    new Uint8Array(0),
  ]]);
  const img = decodeImage(file, "adam7.png");
  assertEquals([img.width, img.height], [w, h]);
  assertClose(img.data, Array.from(px, (v) => v / 255), { atol: 1e-7 });
});

test("encodePngGray round trip (8 and 16 bit)", () => {
  const img = { width: 3, height: 2, data: new Float32Array([0, 0.25, 0.5, 0.75, 1, 0.1]) };
  const e8 = decodeImage(encodePngGray(img), "e8.png");
  assertClose(e8.data, img.data, { atol: 0.5 / 255 + 1e-7 });
  const e16 = decodeImage(encodePngGray(img, { bits: 16 }), "e16.png");
  assertClose(e16.data, img.data, { atol: 0.5 / 65535 + 1e-7 });
  assertEquals([e16.width, e16.height], [3, 2]);
});

test("resizeGray matches PIL's BILINEAR resize (mode F) down and up", () => {
  const src = {
    width: 7,
    height: 5,
    data: Float32Array.from({ length: 35 }, (_, i) => ((i * 37) % 101) / 100),
  };
  const down = resizeGray(src, 3, 4);
  assertClose(down.data, [
    0.405536,
    0.405882,
    0.512321,
    0.577560,
    0.471814,
    0.540060,
    0.400893,
    0.512990,
    0.615893,
    0.524821,
    0.573971,
    0.415179,
  ], { atol: 2e-6 });
  const up = resizeGray(src, 12, 9);
  assertEquals(up.data.length, 108);
  assertClose(up.data.subarray(0, 12), [
    0.000000,
    0.138750,
    0.354583,
    0.570417,
    0.660000,
    0.286667,
    0.207917,
    0.423750,
    0.639583,
    0.813333,
    0.440000,
    0.200000,
  ], { atol: 2e-6 });
  assertClose(up.data.subarray(96), [
    0.260000,
    0.398750,
    0.614583,
    0.830417,
    0.920000,
    0.546667,
    0.467917,
    0.683750,
    0.436667,
    0.105417,
    0.321250,
    0.460000,
  ], { atol: 2e-6 });
  const flat = resizeGray({ width: 10, height: 10, data: new Float32Array(100).fill(0.3) }, 3, 7);
  assertClose(flat.data, new Float32Array(21).fill(0.3), { atol: 1e-6 });
  assertThrows(() => resizeGray(src, 0, 3), "bad target size");
});

test("validateImages decodes all of chestxray64 (1052 PNGs) without a skip", async () => {
  const { records } = data.loadDataset([sharedDir("chestxray64")]);
  const res = await data.validateImages(records);
  assertEquals([res.records.length, res.skipped.length], [1052, 0]);
});

test("bad CSV indexes: a missing column is one error naming file and column; bad rows are skipped with reasons", () => {
  const img = join(sharedDir("chestxray64"), "images");
  const write = (name: string, lines: string[]) => {
    const dir = join(tmp, name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, name.startsWith("meta") ? "metadata.csv" : "labels.csv"),
      lines.join("\n") + "\n",
    );
    return dir;
  };
  const first = readdirSync(img).sort()[0];
  // no label column: one error for the file, not "label undefined" for every row
  const noLabel = write("labels-nolabel", ["file,diagnosis", `${first},covid`, `${first},normal`]);
  assertThrows(
    () => data.loadLabelsCsv(noLabel),
    /labels-nolabel\/labels.csv: no "label" column \(it needs file, label; its header: file, diagnosis\)/,
  );
  assertThrows(
    () => data.loadLabelsCsv(write("labels-empty", [])),
    /no "file" or "label" column .*its header: empty/,
  );
  assertThrows(
    () => data.loadCovidChestxray(write("meta-nofinding", ["patientid,view,filename", "1,PA,x.png"])),
    /metadata.csv: no "finding" column \(it needs filename, finding, view;/,
  );
  // rows: an unknown label, a missing file, a row without a file, the same file twice
  const rows = write("labels-rows", [
    "file,label,patient_id",
    `${first},Covid,p1`,
    `${first},pneumonia,p2`,
    "nothere.png,normal,p3",
    ",viral,p4",
  ]);
  writeFileSync(join(rows, first), readFileSync(join(img, first)));
  const loaded = data.loadLabelsCsv(rows);
  assertEquals(loaded.records.map((r) => [r.labelName, r.patientId]), [["covid", "p1"]]);
  assertEquals(loaded.skipped.map((k) => k.reason), [
    'label "pneumonia" is none of covid, viral, bacterial, normal',
    "file missing",
    "no file name",
  ]);
  const twice = data.loadDataset([rows, rows]);
  assertEquals([twice.records.length, twice.skipped.filter((k) => k.reason === "listed twice").length], [
    1,
    1,
  ]);
  // the command line says it once, with status 2
  const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
  let err = "";
  try {
    execFileSync(process.execPath, [
      ...(isBun ? ["run"] : ["run", "-A"]),
      "cli.ts",
      "data",
      "--data",
      noLabel,
    ], {
      cwd: repo,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (e) {
    err = `${(e as { status?: number }).status} ${(e as { stderr?: string }).stderr}`;
  }
  assert(/^2 flannel: .*labels.csv: no "label" column/.test(err), err);
  assertEquals(err.trim().split("\n").length, 1);
});

test("`data --json` on layouts/ (the CLI, spawned in this runtime)", () => {
  const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
  const args = isBun ? ["run", "cli.ts"] : ["run", "-A", "cli.ts"];
  const out = execFileSync(process.execPath, [...args, "data", "--data", sharedDir("layouts"), "--json"], {
    cwd: repo,
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1" },
  });
  const j = JSON.parse(out);
  assertEquals(j.classes, { covid: 16, viral: 11, bacterial: 13, normal: 11 });
  assertEquals(j.skipped, 2);
  assertEquals(j.images, 51);
  assertEquals(j.sources.ieee8023, { covid: 16, viral: 2, bacterial: 4, normal: 2, total: 24 });
  assertEquals(j.sources[data.SOURCE_KAGGLE], { covid: 0, viral: 9, bacterial: 9, normal: 9, total: 27 });
  assertEquals(j.views["AP Supine"], { covid: 7, viral: 0, bacterial: 1, normal: 1, total: 9 });
  const text = execFileSync(process.execPath, [...args, "data", "--data", sharedDir("layouts")], {
    cwd: repo,
    encoding: "utf8",
  });
  assert(text.includes("Table 1") && text.includes("modality CT, not X-ray"), text);
  const help = execFileSync(process.execPath, [...args, "data", "--help"], { cwd: repo, encoding: "utf8" });
  assert(help.includes("--data DIR"), help);
});

test.afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});

test("lungFieldBox: both lungs of a drawn chest in, the marker and the air around out; the fallbacks by hand", () => {
  // 128 x 128: air (0) outside x 10..117, body 0.7, lungs 0.2 at x 25..55 and 73..103, rows 30..100, the spine
  // 0.9 at x 60..68, a burnt-in marker (1) at x, y 2..8.
  const w = 128, h = 128, image = { width: w, height: h, data: new Float32Array(w * h) };
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const lung = y >= 30 && y <= 100 && ((x >= 25 && x <= 55) || (x >= 73 && x <= 103));
      const body = x >= 10 && x <= 117;
      image.data[y * w + x] = lung ? 0.2 : x >= 60 && x <= 68 ? 0.9 : body ? 0.7 : 0;
      if (x >= 2 && x <= 8 && y >= 2 && y <= 8) image.data[y * w + x] = 1;
    }
  }
  const box = lungFieldBox(image);
  assert(box.x <= 25 && box.x + box.width - 1 >= 103, `columns ${box.x}..${box.x + box.width - 1}`);
  assert(box.y <= 30 && box.y + box.height - 1 >= 100, `rows ${box.y}..${box.y + box.height - 1}`);
  assert(box.x > 10 && box.x + box.width - 1 < 117, `the air at the sides is out: ${JSON.stringify(box)}`);
  assert(box.x > 8 || box.y > 8, `the marker is out: ${JSON.stringify(box)}`);
  assertEquals(box.width, box.height, "grown to a square");
  const cropped = cropLungField(image);
  assertEquals([cropped.width, cropped.height], [box.width, box.height]);
  assertEquals(cropped.data[0], image.data[box.y * w + box.x]);
  // A constant image (100 wide, 200 tall) has no lungs: no chest wall, so the columns run to the edges; no dark
  // rows, so the rows fall back to the central 80% (20..180), plus 5% of 160 each side; no wider than the image.
  const flat = { width: 100, height: 200, data: new Float32Array(100 * 200).fill(0.5) };
  assertEquals(lungFieldBox(flat), { x: 0, y: 12, width: 100, height: 177 });
  assertThrows(
    () => lungFieldBox({ width: 8, height: 40, data: new Float32Array(320) }),
    /8x40; at least 16x16/,
  );
  assertThrows(() => cropBox(flat, { x: 90, y: 0, width: 20, height: 5 }), /not inside the 100x200 image/);
});

test("lungFieldBox on real X-rays: inside the image, at least 40% x 30% of it, cropped in the cache before resizing", async () => {
  const dir = sharedDir("chestxray");
  const files = readdirSync(join(dir, "images")).sort().filter((_, i) => i % 50 === 0);
  const plain = new ImageCache(73), cropped = new ImageCache(73, { lungCrop: true });
  let smaller = 0;
  for (const f of files) {
    const record = { file: join(dir, "images", f) };
    const image = readImageSync(record.file), box = lungFieldBox(image);
    assert(
      box.x >= 0 && box.y >= 0 && box.x + box.width <= image.width && box.y + box.height <= image.height,
      f,
    );
    assert(
      box.width >= 0.4 * image.width && box.height >= 0.3 * image.height,
      `${f}: ${JSON.stringify(box)}`,
    );
    if (box.width * box.height < 0.9 * image.width * image.height) smaller++;
    assertEquals(await cropped.get(record), resizeShortSide(cropBox(image, box), 73), f);
    assertEquals(await plain.get(record), resizeShortSide(image, 73), f);
  }
  assert(
    smaller >= 0.5 * files.length,
    `only ${smaller} of ${files.length} boxes leave out a tenth of the image`,
  );
});
