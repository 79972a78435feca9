// Patient-disjoint stratified splits: partition promises (no patient in two parts or folds, every image
// once), class shares near their targets, determinism, subsampling by patient, the split file round trip
// and its dataset check, and errors on bad input; on synthetic records and on the real chest X-ray labels.
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Generator } from "../src/kernels/random.ts";
import { CLASS_NAMES } from "../src/train/metrics.ts";
import {
  loadSplit,
  type PatientSplit,
  patientSplit,
  saveSplit,
  type SplitRecord,
} from "../src/data/splits.ts";
import { assert, assertEquals, assertThrows, test } from "./harness.ts";
import { parseCsv } from "../src/data/datasets.ts";

const here = dirname(fileURLToPath(import.meta.url));
const LABELS_CSV = join(here, "..", "..", "shared", "data", "chestxray", "labels.csv");

/** The real labels; missing test data fails the test loudly (never a silent pass or skip). */
function chestxrayRecords(): (SplitRecord & { file: string })[] {
  assert(
    existsSync(LABELS_CSV),
    `test data missing: ${LABELS_CSV} (splits.test.ts needs ../shared/data next to the repo; see its README)`,
  );
  const [header, ...rows] = parseCsv(readFileSync(LABELS_CSV, "utf8"));
  const col = (name: string) => {
    const i = header.indexOf(name);
    assert(i >= 0, `labels.csv has no column ${name}`);
    return i;
  };
  const [fi, li, pi] = [col("file"), col("label"), col("patient_id")];
  return rows.filter((r) => r.length > 1).map((r, n) => {
    assertEquals(r.length, header.length, `labels.csv row ${n + 2} field count`);
    const label = (CLASS_NAMES as readonly string[]).indexOf(r[li]);
    assert(label >= 0, `labels.csv row ${n + 2}: unknown label ${r[li]}`);
    return { file: r[fi], label, patientId: r[pi] };
  });
}

/** About 600 images of 250 patients with 1-5 images each, imbalanced classes, and a few two-label patients. */
function syntheticRecords(seed = 7): (SplitRecord & { file: string })[] {
  const gen = new Generator(seed);
  const classCum = [0.08, 0.3, 0.7, 1]; // covid 8%, viral 22%, bacterial 40%, normal 30%
  const sizes = [1, 1, 1, 2, 2, 3, 4, 5];
  const records: (SplitRecord & { file: string })[] = [];
  for (let p = 0; p < 250; p++) {
    const u = gen.uniform();
    const cls = classCum.findIndex((c) => u < c);
    const size = sizes[Math.floor(gen.uniform() * sizes.length)];
    const mixed = p % 31 === 5 && size >= 2; // a few patients with a second label
    for (let k = 0; k < size; k++) {
      const label = mixed && k === size - 1 ? (cls + 1) % 4 : cls;
      records.push({ file: `p${p}_img${k}.png`, label, patientId: `patient-${p}` });
    }
  }
  return records;
}

interface Deviation {
  worst: number; // images beyond the tolerance (<= 0 passes)
  worstImages: number; // largest |count - target| in images
  worstShare: number; // largest |class share in the part - class share overall|
  where: string;
}

/**
 * Checks the partition promises and measures, for every part (test, train, each fold's val) and label, how
 * far the image count is from its quota (share of the part times the label's total); the tolerance is one
 * image or the largest number of that label's images one patient has, whichever is larger.
 */
function checkSplit(records: readonly SplitRecord[], split: PatientSplit, kept?: Set<number>): Deviation {
  const all = kept ?? new Set(records.keys());
  const { train, test, foldSplits, testFraction, folds } = split;
  assertEquals(foldSplits.length, folds, "fold count");
  // Every kept image in exactly one of train/test; every train image in exactly one fold's val.
  const seen = new Map<number, string>();
  const mark = (idx: number[], part: string) => {
    for (const i of idx) {
      assert(all.has(i), `${part} holds index ${i}, which is not a kept record`);
      assert(!seen.has(i), `image ${i} is in ${seen.get(i)} and ${part}`);
      seen.set(i, part);
    }
  };
  mark(test, "test");
  foldSplits.forEach((f, k) => mark(f.val, `fold ${k}`));
  assertEquals(seen.size, all.size, "images placed");
  const trainSet = new Set(train);
  assertEquals(trainSet.size, train.length, "train has no duplicates");
  for (const i of all) {
    assert(trainSet.has(i) !== test.includes(i), `image ${i} must be in exactly one of train/test`);
  }
  for (const [k, f] of foldSplits.entries()) {
    assert(f.val.length > 0 && f.train.length > 0, `fold ${k} is empty`);
    assertEquals(f.train.length + f.val.length, train.length, `fold ${k} covers train`);
    const v = new Set(f.val);
    for (const i of f.train) assert(trainSet.has(i) && !v.has(i), `fold ${k} trains on ${i}`);
  }
  // Patient-disjoint: one part per patient.
  const partOf = new Map<string, string>();
  for (const [i, part] of seen) {
    const id = records[i].patientId, prev = partOf.get(id);
    assert(prev === undefined || prev === part, `patient ${id} is in ${prev} and ${part}`);
    partOf.set(id, part);
  }
  // Class quotas.
  const total = new Map<number, number>(),
    maxPerPatient = new Map<number, number>(),
    perPatient = new Map<string, number>();
  for (const i of all) {
    const l = records[i].label;
    total.set(l, (total.get(l) ?? 0) + 1);
    const key = `${records[i].patientId}\u0000${l}`;
    perPatient.set(key, (perPatient.get(key) ?? 0) + 1);
    maxPerPatient.set(l, Math.max(maxPerPatient.get(l) ?? 0, perPatient.get(key)!));
  }
  const parts: [string, number[], number][] = [
    ["test", test, testFraction],
    ["train", train, 1 - testFraction],
    ...foldSplits.map((
      f,
      k,
    ): [string, number[], number] => [`fold ${k} val`, f.val, (1 - testFraction) / folds]),
  ];
  const dev: Deviation = { worst: -Infinity, worstImages: 0, worstShare: 0, where: "" };
  for (const [name, idx, share] of parts) {
    const count = new Map<number, number>();
    for (const i of idx) count.set(records[i].label, (count.get(records[i].label) ?? 0) + 1);
    for (const [l, n] of total) {
      const diff = Math.abs((count.get(l) ?? 0) - share * n);
      const excess = diff - Math.max(1, maxPerPatient.get(l)!);
      if (excess > dev.worst) {
        [dev.worst, dev.where] = [
          excess,
          `${name}, class ${l}: ${count.get(l) ?? 0} images, target ${(share * n).toFixed(2)}`,
        ];
      }
      dev.worstImages = Math.max(dev.worstImages, diff);
      dev.worstShare = Math.max(dev.worstShare, Math.abs((count.get(l) ?? 0) / idx.length - n / all.size));
    }
  }
  assert(dev.worst <= 1e-9, `class share off by more than the tolerance at ${dev.where}`);
  return dev;
}

test("synthetic records: patient-disjoint, every image once, class counts within one patient of the quota", () => {
  const records = syntheticRecords();
  assert(records.length > 500 && records.length < 700, `synthetic size ${records.length}`);
  let worst = 0;
  for (const [testFraction, folds] of [[0.2, 5], [0.3, 3], [0.1, 10], [0.5, 2]]) {
    for (const seed of [0, 1, 2, 3, 12345]) {
      const split = patientSplit(records, { testFraction, folds, seed });
      assertEquals(
        [split.seed, split.testFraction, split.folds],
        [seed, testFraction, folds],
        "echoed options",
      );
      worst = Math.max(worst, checkSplit(records, split).worstImages);
    }
  }
  console.log(
    `      synthetic (${records.length} images): worst class-count deviation ${worst.toFixed(2)} images`,
  );
});

test("defaults: a 4:1 split with 5 folds; indices ascending; the file-list hash only when every record has a file", () => {
  const records = syntheticRecords(3);
  const split = patientSplit(records, { seed: 1 });
  assertEquals([split.testFraction, split.folds, split.foldSplits.length], [0.2, 5, 5]);
  const n = records.length;
  assert(Math.abs(split.test.length - 0.2 * n) <= 10, `test size ${split.test.length} of ${n}`);
  for (const list of [split.train, split.test, ...split.foldSplits.flatMap((f) => [f.train, f.val])]) {
    for (let i = 1; i < list.length; i++) assert(list[i - 1] < list[i], "indices ascending");
  }
  assert(/^[0-9a-f]{64}$/.test(split.fileListHash ?? ""), "hash present");
  const noFiles = records.map(({ label, patientId }) => ({ label, patientId }));
  const bare = patientSplit(noFiles, { seed: 1 });
  assertEquals(bare.fileListHash, undefined, "no hash without files");
  assertEquals(
    [bare.train, bare.test, bare.foldSplits],
    [split.train, split.test, split.foldSplits],
    "files do not change the split",
  );
});

test("two-label patients move together and are stratified under their majority label", () => {
  const records: SplitRecord[] = [];
  for (let p = 0; p < 60; p++) records.push({ label: p % 3, patientId: `s${p}` });
  // Mixed patients: majority viral (1), and a 2-2 tie that counts as its lowest class, covid (0).
  for (const l of [1, 1, 0]) records.push({ label: l, patientId: "mixed-a" });
  for (const l of [2, 0, 2, 0]) records.push({ label: l, patientId: "mixed-b" });
  for (let seed = 0; seed < 20; seed++) {
    const split = patientSplit(records, { seed, folds: 3 });
    checkSplit(records, split);
  }
  // Subsampling counts a patient under its majority class: viral keeps 20 singles + mixed-a's 3 images = 23.
  const viral = patientSplit(records, { seed: 4, folds: 3, subsample: { viral: 23 } });
  const kept = [...viral.train, ...viral.test];
  assertEquals(kept.filter((i) => records[i].patientId === "mixed-a").length, 3, "mixed-a kept whole");
  assertEquals(kept.length, records.length, "nothing dropped: viral has exactly 23 images by majority");
  const covidTie = patientSplit(records, { seed: 4, folds: 3, subsample: { covid: 24 } });
  assertEquals(
    [...covidTie.train, ...covidTie.test].length,
    records.length,
    "the 2-2 patient counts under covid",
  );
});

test("same seed, same split; another seed, another split", () => {
  const records = syntheticRecords();
  const a = patientSplit(records, { seed: 42 }), b = patientSplit(records, { seed: 42 });
  assertEquals(a, b);
  const c = patientSplit(records, { seed: 43 });
  assert(JSON.stringify(a.test) !== JSON.stringify(c.test), "seed 43 gives another test part");
  assert(JSON.stringify(a.foldSplits) !== JSON.stringify(c.foldSplits), "seed 43 gives other folds");
  // A fixed fingerprint: the same in Deno and Bun (the generator is the project's counter RNG).
  const fp = (s: PatientSplit) =>
    createHash("sha256").update(JSON.stringify([s.test, s.foldSplits.map((f) => f.val)])).digest("hex").slice(
      0,
      16,
    );
  assertEquals(fp(a), "1b2275fb2580a14e");
});

test("chest X-ray labels.csv: patient-disjoint and stratified within one patient's images", () => {
  const records = chestxrayRecords();
  assertEquals(records.length, 1052, "images");
  assertEquals(new Set(records.map((r) => r.patientId)).size, 790, "patients");
  // The quoted "COVID-19, ARDS" finding did not shift the columns.
  assert(records.every((r) => /\.png$/.test(r.file) && /^(ieee8023|kaggle):/.test(r.patientId)), "columns");
  let worst: Deviation = { worst: -Infinity, worstImages: 0, worstShare: 0, where: "" };
  for (const seed of [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]) {
    const d = checkSplit(records, patientSplit(records, { seed }));
    if (d.worstImages > worst.worstImages) {
      worst = { ...d, worstShare: Math.max(d.worstShare, worst.worstShare) };
    } else worst.worstShare = Math.max(d.worstShare, worst.worstShare);
  }
  console.log(
    `      chestxray (1052 images, 10 seeds, 4:1 + 5 folds): worst class-count deviation ${
      worst.worstImages.toFixed(2)
    } images, ` +
      `worst class-share deviation ${(100 * worst.worstShare).toFixed(2)} points`,
  );
  const split = patientSplit(records, { seed: 0, subsample: { covid: 30, viral: 100 } });
  const kept = new Set([...split.train, ...split.test]);
  checkSplit(records, split, kept);
});

test("subsampling draws by patient, seeded, to the requested counts and fractions, before splitting", () => {
  const records = syntheticRecords();
  // Class sizes by patient majority label and the largest patient per class.
  const byPatient = new Map<string, number[]>();
  records.forEach((r) => byPatient.set(r.patientId, [...(byPatient.get(r.patientId) ?? []), r.label]));
  const majority = (labels: number[]) => {
    const c = [0, 0, 0, 0];
    for (const l of labels) c[l]++;
    return c.indexOf(Math.max(...c));
  };
  const classOf = new Map([...byPatient].map(([id, ls]) => [id, majority(ls)]));
  const classTotal = [0, 0, 0, 0];
  for (const r of records) classTotal[classOf.get(r.patientId)!]++;
  const largest = Math.max(...[...byPatient.values()].map((l) => l.length));

  const cases: [Record<string, number>, number[]][] = [
    [{ covid: 20, bacterial: 100 }, [20, classTotal[1], 100, classTotal[3]]],
    [{ "1": 0.5, normal: 0.25 }, [
      classTotal[0],
      Math.round(0.5 * classTotal[1]),
      classTotal[2],
      Math.round(0.25 * classTotal[3]),
    ]],
  ];
  for (const [spec, want] of cases) {
    for (const seed of [0, 1, 2]) {
      const split = patientSplit(records, { seed, subsample: spec });
      const kept = new Set([...split.train, ...split.test]);
      checkSplit(records, split, kept);
      const got = [0, 0, 0, 0];
      for (const i of kept) got[classOf.get(records[i].patientId)!]++;
      for (let c = 0; c < 4; c++) {
        assert(
          got[c] <= want[c] && want[c] - got[c] < largest,
          `class ${c}: kept ${got[c]}, asked ${want[c]} (seed ${seed})`,
        );
      }
      // Whole patients only.
      for (const [id] of byPatient) {
        const idx = records.flatMap((r, i) => (r.patientId === id ? [i] : []));
        const n = idx.filter((i) => kept.has(i)).length;
        assert(n === 0 || n === idx.length, `patient ${id} partly kept`);
      }
      assertEquals(split.subsample, spec, "subsample echoed");
    }
  }
  const a = patientSplit(records, { seed: 5, subsample: { normal: 60 } });
  assertEquals(a, patientSplit(records, { seed: 5, subsample: { normal: 60 } }), "seeded");
  const b = patientSplit(records, { seed: 6, subsample: { normal: 60 } });
  assert(JSON.stringify(a.train) !== JSON.stringify(b.train), "another seed, another draw");
  assertThrows(
    () => patientSplit(records, { seed: 0, subsample: { covid: 100000 } }),
    /covid has \d+ images .*cannot draw 100000/,
  );
  assertThrows(
    () => patientSplit(records, { seed: 0, subsample: { pneumonia: 10 } }),
    /unknown class "pneumonia"/,
  );
  assertThrows(
    () => patientSplit(records, { seed: 0, subsample: { covid: 1.5 } }),
    /image count .* or a fraction/,
  );
  assertThrows(
    () => patientSplit(records, { seed: 0, subsample: { covid: 0 } }),
    /image count .* or a fraction/,
  );
});

test("saveSplit / loadSplit: JSON round trip by file name; a split of another dataset is refused", () => {
  const records = syntheticRecords();
  const dir = mkdtempSync(join(tmpdir(), "flannel-splits-"));
  try {
    const split = patientSplit(records, {
      seed: 9,
      testFraction: 0.25,
      folds: 4,
      subsample: { bacterial: 0.5 },
    });
    const path = join(dir, "nested", "split.json");
    saveSplit(path, split, records);
    const json = JSON.parse(readFileSync(path, "utf8"));
    assertEquals([json.seed, json.testFraction, json.folds, json.fileListHash], [
      9,
      0.25,
      4,
      split.fileListHash,
    ]);
    assertEquals(json.subsample, { bacterial: 0.5 });
    assertEquals(json.test.length, split.test.length);
    assert(json.test.every((f: unknown) => typeof f === "string" && f.endsWith(".png")), "files by name");
    assertEquals(loadSplit(path, records), split, "round trip");

    // The same dataset in another order loads, with the indices remapped.
    const order = new Generator(1).permutation(records.length);
    const shuffled = Array.from(order, (j) => records[j]);
    const re = loadSplit(path, shuffled);
    assertEquals(re.test.map((i) => shuffled[i].file).sort(), split.test.map((i) => records[i].file).sort());
    assertEquals(re.fileListHash, split.fileListHash);

    // Another dataset: one file dropped, or one renamed.
    assertThrows(() => loadSplit(path, records.slice(1)), /different dataset: file-list hash/);
    const renamed = records.map((r, i) => (i === 3 ? { ...r, file: "other.png" } : r));
    assertThrows(() => loadSplit(path, renamed), /different dataset/);
    assertThrows(() => saveSplit(join(dir, "x.json"), split, renamed), /different file list/);
    assertThrows(
      () =>
        saveSplit(join(dir, "y.json"), split, records.map(({ label, patientId }) => ({ label, patientId }))),
      /has no file name/,
    );
    const dup = records.map((r, i) => (i === 1 ? { ...r, file: records[0].file } : r));
    assertThrows(() => patientSplit(dup, { seed: 0 }), /appears twice/);

    // Not a split file, or a broken one.
    writeFileSync(join(dir, "bad.json"), "{ not json");
    assertThrows(() => loadSplit(join(dir, "bad.json"), records), /cannot read/);
    writeFileSync(join(dir, "other.json"), JSON.stringify({ format: "x" }));
    assertThrows(() => loadSplit(join(dir, "other.json"), records), /not a flannel-patient-split/);
    assertThrows(() => loadSplit(join(dir, "missing.json"), records), /cannot read/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("bad input: folds, testFraction, empty records, too few patients, bad labels", () => {
  const records = syntheticRecords();
  assertThrows(() => patientSplit(records, { seed: 0, folds: 1 }), /folds must be an integer >= 2, got 1/);
  assertThrows(() => patientSplit(records, { seed: 0, folds: 2.5 }), /folds must be an integer >= 2/);
  for (const tf of [0, 1, -0.1, 1.5, NaN]) {
    assertThrows(
      () => patientSplit(records, { seed: 0, testFraction: tf }),
      /testFraction must be in \(0, 1\)/,
    );
  }
  assertThrows(() => patientSplit([], { seed: 0 }), /no records/);
  const few = Array.from({ length: 12 }, (_, i) => ({ label: i % 2, patientId: `p${i % 4}` }));
  assertThrows(
    () => patientSplit(few, { seed: 0, folds: 5 }),
    /4 patients cannot fill a test part and 5 folds/,
  );
  assertThrows(() => patientSplit(few, { seed: 0, folds: 4 }), /4 patients cannot fill/);
  assertThrows(() => patientSplit([{ label: -1, patientId: "a" }], { seed: 0 }), /label -1/);
  assertThrows(() => patientSplit([{ label: 0.5, patientId: "a" }], { seed: 0 }), /label 0.5/);
  assertThrows(() => patientSplit([{ label: 0, patientId: "" }], { seed: 0 }), /no patientId/);
  assertThrows(() => patientSplit(records, { seed: -1 }), /seed must be a non-negative/);
});
