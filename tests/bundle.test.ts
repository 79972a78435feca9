// Bundles (flannel export / loadBundle): a small real experiment exported and loaded back, predictions
// and class activation maps equal to the folder's, F16 weights within their rounding, tampered bundles
// refused with a message naming the problem, the command line, and the shipped weights.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import process from "node:process";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";
import { writeZip, ZipReader } from "../src/io/zip.ts";
import { assert, assertClose, assertEquals, AssertionError, assertThrows, test } from "./harness.ts";

await fl.init();
const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const shared = resolve(repo, "..", "shared", "data");
const tmp = mkdtempSync(join(tmpdir(), "fl-bundle-"));
const run = join(tmp, "run");
const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";

function cli(...args: string[]): string {
  return execFileSync(
    process.execPath,
    [...(isBun ? ["run"] : ["run", "-A"]), join(repo, "cli.ts"), ...args],
    {
      encoding: "utf8",
      // the command line is the same on both backends (bundles are compared in process on this run's backend);
      // WebAssembly keeps these child processes from compiling every kernel again
      env: { ...process.env, FLANNEL_BACKEND: "wasm" },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
}

/** The CLI's stderr when it fails (it must, with the status 2 of a refused input), else an assertion error. */
function cliError(...args: string[]): string {
  try {
    cli(...args);
  } catch (err) {
    const e = err as { stderr?: string; status?: number };
    assertEquals(e.status, 2, `exit status of flannel ${args.join(" ")}; stderr: ${e.stderr}`);
    return String(e.stderr);
  }
  throw new AssertionError(`flannel ${args.join(" ")} succeeded`);
}

let files: string[] = [];

/** A copy of `bundle` at `out` with `change` applied to its entries (name -> bytes); CRCs are valid. */
async function rewrite(bundle: string, out: string, change: (entries: Map<string, Uint8Array>) => void) {
  const zip = ZipReader.open(bundle);
  const entries = new Map(zip.entries().filter((e) => !e.folder).map((e) => [e.name, zip.read(e.name)]));
  change(entries);
  await writeZip(out, [...entries].map(([name, data]) => ({ name, data })));
  return out;
}

function editManifest(entries: Map<string, Uint8Array>, edit: (m: Record<string, unknown>) => void) {
  const m = JSON.parse(new TextDecoder().decode(entries.get("manifest.json")));
  edit(m);
  entries.set("manifest.json", new TextEncoder().encode(JSON.stringify(m)));
}

test("bundle: a trained experiment exported; predictions and Fig. 6 from the bundle equal the folder's", async () => {
  const dataDir = join(shared, "chestxray64");
  if (!existsSync(join(dataDir, "labels.csv"))) throw new AssertionError(`test data missing: ${dataDir}`);
  const { records: all } = fl.data.loadDataset([dataDir]);
  const { records, images } = await new fl.data.ImageCache(72).getReadable(all);
  const split = fl.data.patientSplit(records, {
    folds: 2,
    seed: 3,
    subsample: { covid: 20, viral: 20, bacterial: 20, normal: 20 },
  });
  const result = await flannel.runExperiment({
    records,
    images,
    split,
    archs: ["resnet152"],
    scale: "tiny",
    outDir: run,
    epochs: 1,
    batchSize: 16,
    stage2Epochs: 2,
    crop: 64,
    resize: 72,
  });
  writeFileSync(join(run, "results.json"), JSON.stringify(result, flannel.withoutProbabilities));
  writeFileSync(
    join(run, "report.md"),
    "# r\n\n## Table 3: scores\n\n| FLANNEL | 0.5 |\n\n## Figures\n\n![x](y.png)\n",
  );
  files = split.test.slice(0, 4).map((i) => records[i].file);

  const manifest = await flannel.exportBundle(run, join(tmp, "b32.zip"), { notes: "Data: chestxray64." });
  assertEquals(manifest.folds, [0, 1]);
  assertEquals(manifest.settings.archs, ["resnet152"]);
  assertEquals(manifest.methods[0], "FLANNEL");
  assert(manifest.methods.includes("Voting"), manifest.methods.join());
  const bundle = flannel.loadBundle(join(tmp, "b32.zip"));
  for (const method of ["FLANNEL", "Voting"]) {
    const fromFolder = await flannel.predictFiles(run, files, { method });
    const fromBundle = await flannel.predictFiles(bundle, files, { method });
    assertEquals([...fromBundle.probs], [...fromFolder.probs], method);
    assert(fromBundle.temperature !== null && fromBundle.temperature === fromFolder.temperature, method);
  }
  assertEquals(
    bundle.learnerTemperature("resnet152", 1),
    flannel.runFolderModels(run).learnerTemperature("resnet152", 1),
  );
  const card = bundle.card();
  assert(card.includes("Not for clinical use") && card.includes("## Table 3: scores"), card);
  assert(card.includes("Data: chestxray64.") && !card.includes("![x]"), card);
  assertEquals((bundle.results() as { classNames: string[] }).classNames, [...fl.metrics.CLASS_NAMES]);
  assertEquals(
    [...await flannel.camFigure(bundle, files[0], { fold: 1 })],
    [...await flannel.camFigure(run, files[0], { fold: 1 })],
  );
  // the captions' probabilities are the learner's scaled by its temperature unless calibration is "none"
  const camRaw = await flannel.camFigure(bundle, files[0], { fold: 1, calibration: "none" });
  const camScaled = await flannel.camFigure(bundle, files[0], { fold: 1 });
  assert(
    camRaw.length !== camScaled.length || camRaw.some((v, i) => v !== camScaled[i]),
    `the caption ignored the temperature ${bundle.learnerTemperature("resnet152", 1)}`,
  );
  // the same experiment gives the same bytes (fixed timestamps, sorted entries)
  await flannel.exportBundle(run, join(tmp, "again.zip"), { notes: "Data: chestxray64." });
  assertEquals(readFileSync(join(tmp, "again.zip")).equals(readFileSync(join(tmp, "b32.zip"))), true);

  // F16 weights: half the learner bytes; probabilities within their rounding
  await flannel.exportBundle(run, join(tmp, "b16.zip"), { weights: "F16" });
  const half = flannel.loadBundle(join(tmp, "b16.zip"));
  const learner = (b: flannel.Bundle) => b.manifest.entries["fold0/resnet152.safetensors"].bytes;
  assert(learner(half) < 0.55 * learner(bundle), `${learner(half)} vs ${learner(bundle)} bytes`);
  assertClose(
    (await flannel.predictFiles(half, files)).probs,
    (await flannel.predictFiles(bundle, files)).probs,
    { atol: 2e-3 },
  );
});

test("bundle: altered, incomplete or foreign bundles are refused before use, each with its reason", async () => {
  assert(files.length > 0, "the export test did not run");
  const good = join(tmp, "b32.zip");
  const at = (name: string) => join(tmp, `bad-${name}.zip`);
  const refused = async (path: string, pattern: RegExp) => {
    let message = "";
    try {
      const b = flannel.loadBundle(path);
      await flannel.predictFiles(b, files.slice(0, 1));
    } catch (err) {
      message = (err as Error).message;
    }
    assert(pattern.test(message), `${path}: expected ${pattern}, got "${message}"`);
  };
  // one byte of a learner's weights changed (the zip's CRC is valid: only the manifest's SHA-256 can tell)
  await refused(
    await rewrite(good, at("byte"), (e) => {
      const w = e.get("fold1/resnet152.safetensors")!.slice();
      w[w.length - 3] ^= 0x40;
      e.set("fold1/resnet152.safetensors", w);
    }),
    /entry fold1\/resnet152.safetensors does not match its SHA-256 in the manifest \(the bundle was altered\)/,
  );
  await refused(
    await rewrite(good, at("missing"), (e) => e.delete("fold0/stage2/FLANNEL.safetensors")),
    /entry fold0\/stage2\/FLANNEL.safetensors is missing/,
  );
  await refused(
    await rewrite(good, at("extra"), (e) => e.set("fold0/run.sh", new Uint8Array(3))),
    /unexpected entry fold0\/run.sh/,
  );
  await refused(
    await rewrite(good, at("format"), (e) => editManifest(e, (m) => (m.format = "flannel-bundle/9"))),
    /format "flannel-bundle\/9", expected flannel-bundle\/1/,
  );
  await refused(
    await rewrite(
      good,
      at("arch"),
      (e) => editManifest(e, (m) => ((m.settings as { archs: string[] }).archs = ["densenet161"])),
    ),
    /the manifest does not list fold0\/densenet161.safetensors/,
  );
  await refused(
    await rewrite(
      good,
      at("crop"),
      (e) => editManifest(e, (m) => ((m.settings as { crop: number }).crop = 0)),
    ),
    /settings \(archs, scale, crop, resize, equalize, lungCrop\) missing or out of range/,
  );
  await refused(
    await rewrite(
      good,
      at("lungcrop"),
      (e) => editManifest(e, (m) => ((m.settings as { lungCrop: unknown }).lungCrop = "yes")),
    ),
    /settings \(archs, scale, crop, resize, equalize, lungCrop\) missing or out of range/,
  );
  await refused(
    await rewrite(good, at("huge"), (e) => e.set("manifest.json", noise(2 << 20))), // noise: no zip-bomb ratio
    /manifest.json is 2097152 bytes/,
  );
  await refused(
    await rewrite(good, at("nomanifest"), (e) => e.delete("manifest.json")),
    /no manifest.json/,
  );
  // weights of another model under the right name, with a matching hash: the metadata says whose they are
  const foreign = await fl.io.encodeSafetensors({ w: { dtype: "F32", shape: [2], data: [1, 2] } }, {
    format: "flannel-bundle-learner/1",
    arch: "densenet161",
    fold: "0",
  });
  const rehash = (e: Map<string, Uint8Array>, name: string, data: Uint8Array) => {
    e.set(name, data);
    editManifest(e, (m) => {
      (m.entries as Record<string, unknown>)[name] = {
        bytes: data.length,
        sha256: sha256Hex(data),
      };
    });
  };
  await refused(
    await rewrite(good, at("foreign"), (e) => rehash(e, "fold0/resnet152.safetensors", foreign)),
    /fold0\/resnet152.safetensors holds densenet161 weights of fold 0, not resnet152's/,
  );
  // a safetensors header that lies about its length, hash updated to match
  const lying = new Uint8Array(64);
  new DataView(lying.buffer).setBigUint64(0, 1n << 40n, true);
  await refused(
    await rewrite(good, at("header"), (e) => rehash(e, "fold0/resnet152.safetensors", lying)),
    /header/i,
  );
  // not a zip, and a zip with a path-traversal name
  writeFileSync(at("png"), readFileSync(files[0]));
  assertThrows(() => flannel.loadBundle(at("png")), /not a zip archive/);
  // the writer refuses such names, so rename an entry in the bytes (same length, both headers)
  const named = readFileSync(
    await rewrite(good, at("traversal"), (e) => e.set("zz/evil.sh", new Uint8Array(1))),
  );
  const from = new TextEncoder().encode("zz/evil.sh"), to = new TextEncoder().encode("../evil.sh");
  for (let i = 0; i + from.length <= named.length; i++) {
    if (from.every((b, k) => named[i + k] === b)) named.set(to, i);
  }
  writeFileSync(at("traversal"), named);
  await refused(at("traversal"), /entry "..\/evil.sh": unsafe name \(a '..', '.' or empty path segment\)/);
});

/** Bytes that do not compress (a linear congruential sequence's high bytes). */
function noise(n: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = 12345;
  for (let i = 0; i < n; i++) out[i] = (x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 24;
  return out;
}

const sha256Hex = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");

test("bundle: export, predict --model and cam --model on the command line; the errors name the problem", () => {
  assert(files.length > 0, "the export test did not run");
  const out = join(tmp, "cli.zip");
  assert(/wrote .*cli\.zip \(.* MiB\): 1 learners x 2 folds/.test(cli("export", "--run", run, "--out", out)));
  const fromRun = cli("predict", "--run", run, "--images", ...files);
  assertEquals(cli("predict", "--model", out, "--images", ...files), fromRun);
  // --calibration none: the raw fold average, other probabilities, the same predicted classes
  const rawCsv = cli("predict", "--model", out, "--calibration", "none", "--images", ...files);
  const column = (csv: string, c: number) => csv.trim().split("\n").slice(1).map((r) => r.split(",")[c]);
  assert(
    column(rawCsv, 1).join() !== column(fromRun, 1).join(),
    "calibration left the probabilities as they were",
  );
  assertEquals(column(rawCsv, 5), column(fromRun, 5));
  assert(
    /--calibration must be temperature or none, not platt/.test(
      cliError("predict", "--model", out, "--calibration", "platt", "--images", files[0]),
    ),
  );
  const camDir = join(tmp, "cams");
  cli("cam", "--model", out, "--out", camDir, "--images", files[0], files[1]);
  assertEquals(readdirSync(camDir).length, 2);
  assert(statSync(join(camDir, readdirSync(camDir)[0])).size > 1000);
  assert(
    /give --run DIR or --model FILE.zip, not both/.test(
      cliError("predict", "--run", run, "--model", out, "--images", files[0]),
    ),
  );
  assert(
    /nothere.zip does not exist/.test(
      cliError("predict", "--model", join(tmp, "nothere.zip"), "--images", files[0]),
    ),
  );
  assert(
    /--weights must be f32 or f16, not f8/.test(
      cliError("export", "--run", run, "--out", out, "--weights", "f8"),
    ),
  );
  assert(/is not an experiment folder/.test(cliError("export", "--run", tmp, "--out", join(tmp, "x.zip"))));
  assert(!existsSync(join(tmp, "x.zip")), "a failed export left a file");
});

test("bundle: the shipped weights (weights/): under 10 MB, F16, five learners x five folds, a model card; predict uses them by default", () => {
  const path = fileURLToPath(flannel.SHIPPED_BUNDLE);
  assert(existsSync(path), `${path} is missing`);
  assert(statSync(path).size < 10e6, `${statSync(path).size} bytes`);
  const shipped = flannel.loadBundle(flannel.SHIPPED_BUNDLE);
  assertEquals(shipped.manifest.settings.archs, [...flannel.LEARNER_ARCHS]);
  assertEquals(shipped.manifest.folds, [0, 1, 2, 3, 4]);
  assertEquals(shipped.manifest.weights, "F16");
  assert(shipped.card().includes("Not for clinical use"));
  // calibrated: every fold's FLANNEL and every learner carry a temperature, and the card reports them
  for (const fold of shipped.manifest.folds) {
    for (const arch of shipped.manifest.settings.archs) {
      assert(shipped.learnerTemperature(arch, fold)! > 0, `${arch} fold ${fold} has no temperature`);
    }
  }
  assert(
    shipped.card().includes("## Calibration") && shipped.card().includes("## The folds' ensemble"),
    "the model card reports calibration",
  );
  const images = join(shared, "chestxray", "images");
  if (!existsSync(images)) throw new AssertionError(`test data missing: ${images}`);
  const pick = readdirSync(images).filter((f) => /^(covid_ieee|normal_kaggle)/.test(f)).sort()
    .filter((_, i) => i % 40 === 0).map((f) => join(images, f));
  const csv = cli("predict", "--images", ...pick).trim().split("\n").slice(1).map((r) => r.split(","));
  assertEquals(csv.length, pick.length);
  for (const row of csv) {
    assertClose(row.slice(1, 5).map(Number).reduce((a, b) => a + b, 0), 1, { atol: 1e-5 });
  }
  // they learned the two sources apart (see the model card): most covid (ieee8023) images are called covid
  const covidRows = csv.filter((r) => r[0].includes("covid_ieee"));
  const called = covidRows.filter((r) => r[5] === "covid").length;
  assert(covidRows.length >= 4 && called >= 0.6 * covidRows.length, `${called} of ${covidRows.length}`);
});

test.afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});
