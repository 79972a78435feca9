// Stage 1: preprocessing (shapes, normalisation, centre crop, determinism, flips), a tiny ResNet trained
// on ../shared/data/chestxray64 reaching a validation macro-F1 well above chance, and resuming from a
// checkpoint giving the uninterrupted run's final weights exactly.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";
import { balanceSourcesOrder, epochBatches, patienceExhausted } from "../src/flannel/stage1.ts";
import {
  assert,
  assertClose,
  assertEquals,
  AssertionError,
  assertRejects,
  test,
  writeArtifact,
} from "./harness.ts";

await fl.init();
const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const dataDir = resolve(repo, "..", "shared", "data", "chestxray64");
const tmp = mkdtempSync(join(tmpdir(), "fl-stage1-"));
const MEAN = [0.485, 0.456, 0.406], STD = [0.229, 0.224, 0.225];

function needData(): string {
  if (!existsSync(join(dataDir, "labels.csv"))) {
    throw new AssertionError(
      `test data missing: ${dataDir} (these tests need ../shared/data next to the repo; see its README)`,
    );
  }
  return dataDir;
}

/** A w x h image whose pixel (x, y) is (y * w + x) / (w * h). */
function ramp(w: number, h: number): fl.io.GrayImage {
  return { width: w, height: h, data: Float32Array.from({ length: w * h }, (_, i) => i / (w * h)) };
}

test("makeBatch: shape, ImageNet normalisation per channel, exact centre crop", () => {
  const img = ramp(10, 8);
  const out = fl.data.makeBatch([img, img], [0, 1], { crop: 4, train: false });
  assertEquals(out.length, 2 * 3 * 4 * 4);
  // CenterCrop: top = round((8 - 4) / 2) = 2, left = round((10 - 4) / 2) = 3
  const expected: number[] = [];
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < 4; y++) {
      for (let x = 0; x < 4; x++) expected.push((img.data[(y + 2) * 10 + x + 3] - MEAN[c]) / STD[c]);
    }
  }
  assertClose(out.subarray(0, 48), expected, { rtol: 1e-6, atol: 1e-6 });
  assertClose(out.subarray(48), expected, { rtol: 1e-6, atol: 1e-6 });
  // an odd margin rounds as torchvision (round half to even is not used: Math.round(0.5) = 1)
  const odd = fl.data.makeBatch([ramp(5, 5)], [0], { crop: 4, train: false });
  assertClose(odd[0], (ramp(5, 5).data[6] - MEAN[0]) / STD[0], { rtol: 1e-6 });
});

test("makeBatch: training augmentation is deterministic for a seed, flips happen, noise is small", () => {
  const img = ramp(12, 12);
  const idx = Array.from({ length: 32 }, () => 0);
  const a = fl.data.makeBatch([img], idx, { crop: 8, train: true, generator: new fl.Generator(5) });
  const b = fl.data.makeBatch([img], idx, { crop: 8, train: true, generator: new fl.Generator(5) });
  const c = fl.data.makeBatch([img], idx, { crop: 8, train: true, generator: new fl.Generator(6) });
  assertEquals(a.length, 32 * 3 * 64);
  assert(a.every((v, i) => v === b[i]), "same seed, same batch");
  assert(a.some((v, i) => v !== c[i]), "another seed, another batch");
  // without noise every sample is an exact (possibly flipped) crop of the ramp: find which
  const clean = fl.data.makeBatch([img], idx, {
    crop: 8,
    train: true,
    generator: new fl.Generator(5),
    noiseStd: 0,
  });
  let flips = 0;
  const offsets = new Set<string>();
  for (let n = 0; n < 32; n++) {
    const g = (i: number) => clean[n * 192 + i] * STD[0] + MEAN[0];
    const flipped = g(1) < g(0); // the ramp rises along x
    if (flipped) flips++;
    const v = Math.round(g(flipped ? 7 : 0) * 144);
    offsets.add(`${Math.floor(v / 12)},${v % 12}`);
    for (let y = 0; y < 8; y++) {
      for (let x = 0; x < 8; x++) {
        const want = (v + y * 12 + (flipped ? 7 - x : x)) / 144;
        assertClose(g(y * 8 + x), want, { atol: 1e-6, rtol: 0 });
      }
    }
    // the noisy version differs from the clean one by about noiseStd (0.01) in gray units
    let sq = 0;
    for (let i = 0; i < 64; i++) sq += ((a[n * 192 + i] - clean[n * 192 + i]) * STD[0]) ** 2;
    const rms = Math.sqrt(sq / 64);
    assert(rms > 0.003 && rms < 0.03, `noise rms ${rms}`);
  }
  assert(flips > 5 && flips < 27, `${flips} of 32 flipped`);
  assert(offsets.size > 5, `only ${offsets.size} distinct crop offsets`);
});

test("resizeShortSide and ImageCache: short side resized, each file decoded once", async () => {
  const r = fl.data.resizeShortSide(ramp(20, 10), 5);
  assertEquals([r.width, r.height], [10, 5]);
  const { records } = fl.data.loadDataset([needData()]);
  const cache = new fl.data.ImageCache(48);
  const [a] = await cache.getAll(records.slice(0, 1));
  const again = await cache.get(records[0]);
  assert(a === again, "cached object returned");
  assertEquals(Math.min(a.width, a.height), 48);
  assertEquals(cache.size, 1);
});

/** A seeded class-balanced subset: `perClass` images of each class, split patient-disjointly. */
function subset(perClass: number, seed: number) {
  const { records } = fl.data.loadDataset([needData()]);
  const split = fl.data.patientSplit(records, {
    seed,
    testFraction: 0.25,
    folds: 2,
    subsample: { covid: perClass, viral: perClass, bacterial: perClass, normal: perClass },
  });
  return { train: split.train.map((i) => records[i]), val: split.test.map((i) => records[i]) };
}

test("tiny ResNet on chestxray64: 360 train images, 3 epochs, validation macro-F1 ~0.69 (> 0.5; chance ~0.25)", async () => {
  const { train, val } = subset(120, 1);
  const model = fl.models.resnet152({ numClasses: 4, scale: "tiny", generator: new fl.Generator(3) });
  const cache = new fl.data.ImageCache(64);
  const logPath = join(tmp, "train.jsonl");
  const t0 = performance.now();
  const run = await flannel.trainStage1({
    model,
    train: { records: train },
    val: { records: val },
    epochs: 3,
    batchSize: 16,
    lr: 3e-3,
    crop: 56,
    resize: 64,
    cache,
    seed: 7,
    logPath,
  });
  const seconds = (performance.now() - t0) / 1000;
  const lines = readFileSync(logPath, "utf8").trim().split("\n").map((l) => JSON.parse(l));
  assertEquals(lines.length, 3);
  for (const key of ["epoch", "trainLoss", "valMacroF1", "valAccuracy", "seconds", "imagesPerSecond"]) {
    assert(key in lines[0], `log line lacks ${key}`);
  }
  const best = Math.max(...run.history.map((h) => h.valMacroF1));
  console.log(
    `      stage 1 tiny resnet: ${train.length} train / ${val.length} val images, macro-F1 per epoch ` +
      `${run.history.map((h) => h.valMacroF1.toFixed(3)).join(" ")}, ` +
      `${run.history.map((h) => h.imagesPerSecond.toFixed(0)).join("/")} images/s, ${seconds.toFixed(1)} s`,
  );
  assertEquals(run.bestEpoch, run.history.findIndex((h) => h.valMacroF1 === best) + 1);
  assertClose(run.valReport!.macroF1, best, { atol: 1e-6 });
  // measured 0.69 (Deno and Bun: the same seeded run); chance is ~0.25
  assert(best > 0.5, `macro-F1 ${best} not above 0.5 (chance ~0.25)`);
  // probabilities for stage 2, saved and read back
  const images = await cache.getAll(val);
  const probs = await flannel.predictStage1(model, images, { crop: 56, batchSize: 16 });
  assertEquals(probs.length, val.length * 4);
  for (let i = 0; i < val.length; i++) {
    assertClose(probs[i * 4] + probs[i * 4 + 1] + probs[i * 4 + 2] + probs[i * 4 + 3], 1, { atol: 1e-5 });
  }
  const path = join(tmp, "oof.safetensors");
  await flannel.saveLearnerOutputs(path, {
    files: val.map((r) => r.file),
    labels: val.map((r) => r.label),
    probs,
    learner: "resnet152",
    fold: 0,
  });
  const back = await flannel.loadLearnerOutputs(path);
  assertEquals(back.files, val.map((r) => r.file));
  assert(back.probs.every((v, i) => v === probs[i]), "probabilities round trip");
  assertEquals([back.learner, back.fold], ["resnet152", 0]);
  await assertRejects(
    () =>
      flannel.saveLearnerOutputs(path, {
        files: ["a"],
        labels: [0],
        probs: new Float32Array(3),
        learner: "x",
        fold: 0,
      }),
    /expected 1 x 4/,
  );
});

// Adam's first step moves every parameter by about lr in the direction of its gradient's sign, also where
// that gradient is float32 rounding noise (~1e-9: channels that barely reach the loss), so two correct
// implementations that sum in different orders part after the first step (measured: 3e-4 in the second
// batch's loss, 2% by the fourth). The cross-backend run is therefore one step: forward, backward, Adam,
// then evaluation with the stepped weights.
test("a short seeded stage-1 run (tiny ResNet, one Adam step) for the cross-backend check", async () => {
  const { train, val } = subset(24, 2);
  const model = fl.models.resnet152({ numClasses: 4, scale: "tiny", generator: new fl.Generator(5) });
  const cache = new fl.data.ImageCache(64);
  const run = await flannel.trainStage1({
    model,
    train: { records: train.slice(0, 16) },
    val: { records: val },
    epochs: 1,
    batchSize: 16,
    lr: 3e-3,
    crop: 56,
    resize: 64,
    cache,
    seed: 11,
  });
  assertEquals(run.history.length, 1);
  assert(run.history.every((h) => Number.isFinite(h.trainLoss) && h.trainLoss > 0), "finite training losses");
  const probs = await flannel.predictStage1(model, await cache.getAll(val), { crop: 56, batchSize: 16 });
  const report = fl.metrics.classificationReport(Int32Array.from(val, (r) => r.label), probs);
  model.dispose();
  // tests/both.ts compares this between runtimes (1e-6) and between backends (1e-4).
  writeArtifact("stage1", {
    history: run.history.map(({ trainLoss, valMacroF1, valAccuracy }) => ({
      trainLoss,
      valMacroF1,
      valAccuracy,
    })),
    bestEpoch: run.bestEpoch,
    macroF1: report.macroF1,
    confusion: report.confusion,
    probsHead: Array.from(probs.slice(0, 16)),
  });
});

/** 24 images of chestxray64 (6 a class) at 40 px, split 3:1 by patient (seed 2) into training and validation. */
async function smallSet() {
  const { train, val } = subset(6, 2);
  const images = await new fl.data.ImageCache(40).getAll([...train, ...val]);
  return {
    train: { images: images.slice(0, train.length), labels: train.map((r) => r.label) },
    val: { images: images.slice(train.length), labels: val.map((r) => r.label) },
  };
}

test("resume from a checkpoint: the same final weights as an uninterrupted run, exactly", async () => {
  const set = await smallSet();
  const common = { ...set, epochs: 4, batchSize: 8, crop: 32, seed: 11 };
  const make = () => fl.models.resnet152({ numClasses: 4, scale: "tiny", generator: new fl.Generator(4) });
  const weights = async (m: fl.nn.Module) => {
    const out: number[][] = [];
    for (const [, t] of Object.entries(m.stateDict())) {
      out.push(Array.from(t.dtype === "int32" ? await t.toInt32Array() : await t.toArray()));
    }
    return out;
  };

  const full = await flannel.trainStage1({ ...common, model: make() });
  const ckpt = join(tmp, "resume.safetensors");
  const logPath = join(tmp, "resume.jsonl");
  const partA = await flannel.trainStage1({
    ...common,
    model: make(),
    checkpointPath: ckpt,
    stopAfterEpoch: 2,
    logPath,
  });
  assertEquals(partA.history.length, 2);
  console.log(
    `      resume: macro-F1 per epoch ${
      full.history.map((h) => h.valMacroF1.toFixed(3)).join(" ")
    }, best epoch ${full.bestEpoch}`,
  );
  const resumed = await flannel.trainStage1({
    ...common,
    model: make(),
    checkpointPath: ckpt,
    resume: true,
    logPath,
  });
  assertEquals(readFileSync(logPath, "utf8").trim().split("\n").map((l) => JSON.parse(l).epoch), [
    1,
    2,
    3,
    4,
  ]);
  assertEquals(resumed.history.length, 4);
  assertEquals(resumed.bestEpoch, full.bestEpoch);
  assertEquals(
    resumed.history.map((h) => [h.trainLoss, h.valMacroF1]),
    full.history.map((h) => [h.trainLoss, h.valMacroF1]),
  );
  const a = await weights(full.model), b = await weights(resumed.model);
  assertEquals(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    assert(a[i].every((v, j) => Object.is(v, b[i][j])), `tensor ${i} differs`);
  }
  // With dropout (VGG's classifier): the masks are reseeded per epoch, so a resumed run draws the same ones.
  const vgg = () => fl.models.vgg19_bn({ numClasses: 4, scale: "tiny", generator: new fl.Generator(4) });
  const vggFull = await flannel.trainStage1({ ...common, epochs: 2, model: vgg() });
  const vggCkpt = join(tmp, "resume-vgg.safetensors");
  const vggA = await flannel.trainStage1({
    ...common,
    epochs: 2,
    model: vgg(),
    checkpointPath: vggCkpt,
    stopAfterEpoch: 1,
  });
  const vggB = await flannel.trainStage1({
    ...common,
    epochs: 2,
    model: vgg(),
    checkpointPath: vggCkpt,
    resume: true,
  });
  const [va, vb] = [await weights(vggFull.model), await weights(vggB.model)];
  for (let i = 0; i < va.length; i++) {
    assert(va[i].every((v, j) => Object.is(v, vb[i][j])), `VGG tensor ${i} differs`);
  }
  for (const m of [vggFull.model, vggA.model, vggB.model]) m.dispose();
  // killed between epoch 1's checkpoint and its best file: the resumed run writes the best file itself (epoch
  // 2 does not improve here, so nothing else would)
  assert(
    full.history[1].valMacroF1 <= full.history[0].valMacroF1,
    "epoch 2 improved: this check needs another seed",
  );
  const cut = join(tmp, "resume-cut.safetensors");
  (await flannel.trainStage1({ ...common, epochs: 2, model: make(), checkpointPath: cut, stopAfterEpoch: 1 }))
    .model.dispose();
  rmSync(cut + ".best");
  const afterCut = await flannel.trainStage1({
    ...common,
    epochs: 2,
    model: make(),
    checkpointPath: cut,
    resume: true,
  });
  assertEquals(afterCut.bestEpoch, 1);
  assertEquals((await fl.io.readSafetensorsMetadata(cut + ".best")).epoch, "1");
  afterCut.model.dispose();
  // a checkpoint of another configuration is refused
  const other = make();
  await assertRejects(
    () => flannel.trainStage1({ ...common, seed: 12, model: other, checkpointPath: ckpt, resume: true }),
    /trained with seed 11, this run has 12/,
  );
  other.dispose();
  full.model.dispose();
  resumed.model.dispose();
  partA.model.dispose();
});

test("a non-finite loss or gradient stops training at its step, keeps the last good checkpoint; --resume continues from it", async () => {
  const set = await smallSet();
  const common = { ...set, epochs: 3, batchSize: 8, crop: 32, seed: 11 };
  const make = () => fl.models.resnet152({ numClasses: 4, scale: "tiny", generator: new fl.Generator(4) });
  const ckpt = join(tmp, "diverge.safetensors");
  (await flannel.trainStage1({ ...common, model: make(), checkpointPath: ckpt, stopAfterEpoch: 1 })).model
    .dispose();
  const good = readFileSync(ckpt);
  // One image of NaNs: the first step whose batch holds it has a NaN loss, or (on WebGPU, where a max() in
  // ReLU or pooling drops a NaN) a finite loss with NaN gradients; both stop the run at that step.
  const poisoned = {
    ...set.train,
    images: set.train.images.map((im, i) => (i === 0 ? { ...im, data: im.data.map(() => NaN) } : im)),
  };
  // The step that holds image 0, from the epoch's order as trainStage1 draws it (seed * 1000 + epoch).
  const stepOf = (epoch: number) => {
    const s = set.train.labels.length;
    const gen = new fl.Generator(common.seed * 1000 + epoch);
    const labels = Int32Array.from(set.train.labels);
    const batches = epochBatches(gen.permutation(s), labels, common.batchSize, undefined, gen);
    const step = batches.findIndex((b) => b.includes(0)) + 1;
    assert(step > 0, `image 0 is in no batch of epoch ${epoch}`);
    return { step, of: batches.length };
  };
  const at2 = stepOf(2), at1 = stepOf(1);
  const stop = (epoch: number, at: { step: number; of: number }) =>
    `stage 1: epoch ${epoch}, step ${at.step} of ${at.of}: (the training loss is NaN|a gradient is not finite ` +
    `\\(the step's loss was [-0-9.e]+\\)) \\(training diverged\\); `;
  const model = make();
  await assertRejects(
    () => flannel.trainStage1({ ...common, train: poisoned, model, checkpointPath: ckpt, resume: true }),
    new RegExp(stop(2, at2) + ".*diverge.safetensors still holds epoch 1: resume from it \\(--resume\\)"),
  );
  model.dispose();
  assert(readFileSync(ckpt).equals(good), "the checkpoint changed");
  const fresh = make();
  await assertRejects(
    () => flannel.trainStage1({ ...common, train: poisoned, model: fresh }),
    new RegExp(stop(1, at1) + "nothing was checkpointed"),
  );
  fresh.dispose();
  // --resume from the kept checkpoint with a lower learning rate: epoch 1 is the checkpoint's, the rest trains
  // at the new rate (the new checkpoint records it).
  const resumed = await flannel.trainStage1({
    ...common,
    model: make(),
    checkpointPath: ckpt,
    resume: true,
    lr: 1e-4,
  });
  assertEquals(resumed.history.length, 3);
  const first = JSON.parse(new TextDecoder().decode(good.subarray(8, 8 + Number(good.readBigUInt64LE(0)))));
  assertEquals(resumed.history[0], JSON.parse(first.__metadata__.history)[0], "epoch 1 from the checkpoint");
  assert(resumed.history.every((h) => Number.isFinite(h.trainLoss)), "finite losses after the resume");
  const optimizer = JSON.parse((await fl.io.readSafetensorsMetadata(ckpt))["checkpoint.optimizer"]);
  assertEquals(optimizer.hyper.lr, 1e-4, "the resumed run's learning rate");
  resumed.model.dispose();
});

test("recipes: covid share of batches, early stopping on the validation loss", () => {
  // 10 covid (labels 0) among 50: batches of 8 with round(0.3 x 8) = 2 covid, the 40 others each once
  // (6 a batch: 7 batches, the last with 4).
  const labels = Int32Array.from({ length: 50 }, (_, i) => (i < 10 ? 0 : 1 + (i % 3)));
  const gen = new fl.Generator(3);
  const batches = epochBatches(gen.permutation(50), labels, 8, 0.3, gen);
  assertEquals(batches.map((b) => b.length), [8, 8, 8, 8, 8, 8, 6]);
  assertEquals(batches.map((b) => [...b].filter((i) => labels[i] === 0).length), [2, 2, 2, 2, 2, 2, 2]);
  const others = batches.flatMap((b) => [...b].filter((i) => labels[i] !== 0)).sort((a, b) => a - b);
  assertEquals(others, Array.from({ length: 40 }, (_, i) => i + 10));
  // Without a share: the shuffled order in batches, a last batch of one dropped.
  const plain = epochBatches(Int32Array.from({ length: 17 }, (_, i) => i), labels, 8, undefined, gen);
  assertEquals(plain.map((b) => [...b]), [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15]]);
  const log = (valLoss: number) => ({ valLoss }) as flannel.Stage1EpochLog;
  assert(!patienceExhausted([1, 0.9, 0.95].map(log), 2), "one epoch without improvement");
  assert(patienceExhausted([1, 0.9, 0.95, 0.92].map(log), 2), "two epochs without improvement");
  assert(!patienceExhausted([1, 0.9, 0.95, 0.85].map(log), 2), "improved in the last");
  assert(!patienceExhausted([1, 2, 3].map(log), undefined), "no patience, no stop");
});

test("recipes: negatives balanced by source (each source's non-covid images drawn up to its covid count)", async () => {
  // Source a: 12 covid, 3 non-covid; source b: 0 covid, 10 non-covid; source c: 2 covid, 5 non-covid.
  const sources = [...Array(15).fill("a"), ...Array(10).fill("b"), ...Array(7).fill("c")];
  const labels = Int32Array.from(
    sources,
    (s, i) => (s === "a" ? (i < 12 ? 0 : 2) : s === "c" ? (i < 27 ? 0 : 3) : 1),
  );
  const order = new fl.Generator(1).permutation(labels.length);
  const balanced = balanceSourcesOrder(order, labels, sources, new fl.Generator(2));
  const count = (s: string, covid: boolean) =>
    [...balanced].filter((i) => sources[i] === s && (labels[i] === 0) === covid).length;
  assertEquals([count("a", true), count("a", false)], [12, 12], "source a: 3 non-covid drawn up to 12");
  assertEquals([count("b", true), count("b", false)], [0, 10], "no covid in b: nothing added");
  assertEquals([count("c", true), count("c", false)], [2, 5], "c already has more negatives");
  assertEquals(balanced.length, labels.length + 9);
  // Every image still once at least, the added draws only among a's negatives; the same bits again.
  assertEquals([...new Set(balanced)].sort((x, y) => x - y), Array.from({ length: 32 }, (_, i) => i));
  assertEquals([...balanceSourcesOrder(order, labels, sources, new fl.Generator(2))], [...balanced]);
  // Nothing to add (one source, more negatives than covid): the order as it was, no draw taken.
  const untouched = new fl.Generator(2);
  const one = sources.map(() => "one");
  assertEquals([...balanceSourcesOrder(order, labels, one, untouched)], [...order]);
  assertEquals(untouched.uniform(), new fl.Generator(2).uniform(), "the generator was drawn from");
  // trainStage1 needs the sources for it, and says so.
  const set = await smallSet();
  const model = fl.models.resnet152({ numClasses: 4, scale: "tiny", generator: new fl.Generator(4) });
  try {
    await assertRejects(
      () => flannel.trainStage1({ ...set, model, epochs: 1, crop: 32, recipe: { balanceSources: true } }),
      /balanceSources needs the source of every training image/,
    );
    await assertRejects(
      () =>
        flannel.trainStage1({
          ...set,
          train: { ...set.train, sources: ["x"] },
          model,
          epochs: 1,
          crop: 32,
        }),
      /has \d+ labels and 1 sources/,
    );
  } finally {
    model.dispose();
  }
});

test("own recipes: AI-Covid (SGD Nesterov, class weights, penalty, patience) and COVID-Net resume exactly", async () => {
  const set = await smallSet();
  for (const arch of ["aicovid", "covidnet"] as const) {
    const make = () => flannel.createLearner(arch, { scale: "tiny", crop: 32, seed: 5 });
    const probe = make();
    const own = flannel.ownRecipe(arch, probe, set.train.labels);
    probe.dispose();
    if (arch === "aicovid") {
      assertEquals(own.recipe.penalty!.parameters.length, 6, "the six dense kernels");
      const n = set.train.labels.length, covid = set.train.labels.filter((y) => y === 0).length;
      assertClose(own.recipe.classWeights![0], n / covid);
    }
    const common = {
      ...set,
      epochs: 3,
      batchSize: own.batchSize ?? 8,
      crop: 32,
      seed: 11,
      lr: own.lr,
      weightDecay: own.weightDecay,
      recipe: { ...own.recipe, patience: own.recipe.patience && 1 },
    };
    const full = await flannel.trainStage1({ ...common, model: make() });
    const ckpt = join(tmp, `${arch}-recipe.safetensors`);
    const partA = await flannel.trainStage1({
      ...common,
      model: make(),
      checkpointPath: ckpt,
      stopAfterEpoch: 1,
    });
    const resumed = await flannel.trainStage1({
      ...common,
      model: make(),
      checkpointPath: ckpt,
      resume: true,
    });
    assertEquals(
      resumed.history.map((h) => [h.trainLoss, h.valLoss]),
      full.history.map((h) => [h.trainLoss, h.valLoss]),
    );
    assertEquals(resumed.bestEpoch, full.bestEpoch);
    const [a, b] = [full.model.stateDict(), resumed.model.stateDict()];
    for (const k of Object.keys(a)) {
      if (a[k].dtype === "int32") continue;
      assertEquals([...await a[k].toArray()], [...await b[k].toArray()], `${arch} ${k}`);
    }
    if (arch === "aicovid") {
      // patience 1: stops after the first epoch that does not lower the validation loss
      const h = full.history;
      assert(
        h.length === 3 || h[h.length - 1].valLoss >= Math.min(...h.slice(0, -1).map((x) => x.valLoss)),
        "stop",
      );
    }
    const shared = make();
    await assertRejects(
      () =>
        flannel.trainStage1({
          ...common,
          recipe: undefined,
          model: shared,
          checkpointPath: ckpt,
          resume: true,
        }),
      /was trained with recipe|holds SGD state, not Adam/,
    );
    for (const m of [shared, full.model, partA.model, resumed.model]) m.dispose();
  }
});

test("runStage1Folds: out-of-fold and test outputs per learner and fold, patient-disjoint, resumable", async () => {
  const { records: all } = fl.data.loadDataset([needData()]);
  const cache = new fl.data.ImageCache(64);
  // a corrupt file among the records is left out with its name, not fatal
  const bad = join(tmp, "corrupt.png");
  writeFileSync(bad, new Uint8Array([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]));
  const withBad = [...all, { ...all[0], file: bad, patientId: "bad" }];
  const readable = await cache.getReadable(withBad);
  assertEquals(readable.records.length, all.length);
  assertEquals(readable.skipped.length, 1);
  assertEquals(readable.skipped[0].reason, `${bad}: not a PNG or JPEG file (starts with 89 50 4e 47)`);

  const { records, images } = readable;
  const split = fl.data.patientSplit(records, {
    folds: 3,
    seed: 5,
    subsample: { covid: 50, viral: 50, bacterial: 50, normal: 50 },
  });
  const outDir = join(tmp, "folds");
  const config = {
    records,
    images,
    split,
    archs: ["resnet152"] as flannel.LearnerArch[],
    scale: "tiny" as const,
    outDir,
    epochs: 1,
    batchSize: 16,
    crop: 56,
    seed: 3,
    folds: [1],
  };
  const batches: { done: number; total: number }[] = [];
  const [r] = await flannel.runStage1Folds({ ...config, onBatch: (_a, _f, p) => batches.push(p) });
  assertEquals([r.arch, r.fold, r.trained], ["resnet152", 1, true]);
  // progress: one report per batch of 16, the last one at the whole training part
  const last = batches.at(-1)!;
  assertEquals(batches.length, Math.ceil(last.total / 16) - (last.total % 16 === 1 ? 1 : 0));
  assert(last.done >= last.total - 1 && last.total > 80, JSON.stringify(last));
  const val = await flannel.loadLearnerOutputs(r.valPath),
    testOut = await flannel.loadLearnerOutputs(r.testPath);
  // out of fold: the held-out fold's files, in order, and the test part's
  assertEquals(val.files, split.foldSplits[1].val.map((i) => records[i].file));
  assertEquals(testOut.files, split.test.map((i) => records[i].file));
  assertEquals(Array.from(val.labels), split.foldSplits[1].val.map((i) => records[i].label));
  for (const out of [val, testOut]) {
    for (let i = 0; i < out.files.length; i++) {
      const row = out.probs.subarray(4 * i, 4 * i + 4);
      assertClose(row.reduce((a, b) => a + b, 0), 1, { rtol: 1e-5 });
    }
  }
  // the held-out fold's patients are in neither the learner's training nor its epoch-selection images
  const heldPatients = new Set(split.foldSplits[1].val.map((i) => records[i].patientId));
  assert(split.foldSplits[1].train.every((i) => !heldPatients.has(records[i].patientId)), "patient leak");
  assertEquals(r.val.macroF1, fl.metrics.classificationReport(val.labels, val.probs).macroF1);
  // a second run needs resume, and then skips the finished pair with the same results
  await assertRejects(() => flannel.runStage1Folds(config), /exists; pass resume/);
  const [again] = await flannel.runStage1Folds({ ...config, resume: true });
  assertEquals([again.trained, again.val.macroF1, again.test.macroF1], [
    false,
    r.val.macroF1,
    r.test.macroF1,
  ]);
  await assertRejects(() => flannel.runStage1Folds({ ...config, folds: [3] }), /fold 3 does not exist/);
  // a diverging pair names its learner and fold in front of the epoch and step: every image NaN here
  const nan = images.map((im) => ({ ...im, data: im.data.map(() => NaN) }));
  await assertRejects(
    () => flannel.runStage1Folds({ ...config, images: nan, outDir: join(tmp, "folds-nan") }),
    /^resnet152 fold 1: stage 1: epoch 1, step 1 of \d+: (the training loss is NaN|a gradient is not finite .*) \(training diverged\); nothing was checkpointed$/,
  );
});

test("loadPretrained: matching tensors loaded, a head of another class count kept fresh", async () => {
  const source = fl.models.resnet152({ numClasses: 10, scale: "tiny", generator: new fl.Generator(8) });
  const path = join(tmp, "resnet152.safetensors");
  await fl.io.saveSafetensors(path, await source.downloadStateDict());
  const model = flannel.createLearner("resnet152", { scale: "tiny", seed: 9 });
  const freshFc = await model.stateDict()["fc.weight"].toArray();
  const { loaded, kept } = await flannel.loadPretrained(model, path);
  assertEquals(kept, ["fc.weight", "fc.bias"]);
  assertEquals(loaded, Object.keys(source.stateDict()).length - 2);
  const [a, b] = [source.stateDict(), model.stateDict()];
  assertEquals(Array.from(await b["conv1.weight"].toArray()), Array.from(await a["conv1.weight"].toArray()));
  assertEquals(Array.from(await b["fc.weight"].toArray()), Array.from(freshFc));
  const vgg = flannel.createLearner("vgg19_bn", { scale: "tiny" });
  await assertRejects(
    () => flannel.loadPretrained(vgg, path),
    `pretrained weights: ${path} does not fit the model (another architecture?): 30 of its 41 tensors are ` +
      "missing or of another shape: features.0.weight [4, 3, 3, 3]: not in the file; features.0.bias [4]: not in " +
      "the file; features.1.weight [4]: not in the file; ...",
  );
  await assertRejects(
    () => flannel.loadPretrained(vgg, join(tmp, "none.safetensors")),
    `pretrained weights: ${join(tmp, "none.safetensors")} does not exist`,
  );
  [source, model, vgg].forEach((m) => m.dispose());
});

test("progress line: bar, counts, rate and ETA", () => {
  assertEquals(
    fl.train.progressLine("epoch 1/3", 30, 120, 15, "images", 8),
    "epoch 1/3 [##------] 30/120 images, 15.0 images/s, ETA 6s",
  );
  assertEquals(fl.train.formatDuration(3725), "1h02m");
  assertEquals(fl.train.formatDuration(125), "2m05s");
  assertEquals(fl.train.formatDuration(NaN), "?");
  const lines: string[] = [];
  const bar = new fl.train.ProgressBar((t) => lines.push(t), false, 3600);
  bar.update("x", 1, 4, 1);
  bar.update("x", 2, 4, 1); // within the interval: not printed
  bar.update("x", 4, 4, 1); // the last one always is
  assertEquals(lines.length, 2);
  assert(lines[1].startsWith("x [########################] 4/4"), lines[1]);
});

test.afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});
