// The image experiment end to end on ../shared/data/chestxray64 (two tiny learners, two folds, one epoch:
// a check of the plumbing, not of accuracy), and stacking learner outputs.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import process from "node:process";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";
import {
  assert,
  assertClose,
  assertEquals,
  AssertionError,
  assertRejects,
  assertThrows,
  test,
  writeArtifact,
} from "./harness.ts";

await fl.init();
const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const dataDir = resolve(repo, "..", "shared", "data", "chestxray64");
const tmp = mkdtempSync(join(tmpdir(), "fl-experiment-"));

const outputs = (learner: string, files: string[], probs: number[]): flannel.LearnerOutputsFile => ({
  files,
  labels: Int32Array.from(files, (_, i) => i % 4),
  probs: Float32Array.from(probs),
  learner,
  fold: 0,
});

test("stackLearnerOutputs: [S, N, M] in learner order; other images or class counts are refused", () => {
  const a = outputs("a", ["x", "y"], [0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0, 0]);
  const b = outputs("b", ["x", "y"], [1, 0, 0, 0, 0, 1, 0, 0]);
  const s = flannel.stackLearnerOutputs([a, b]);
  assertEquals([s.learners, s.classes, s.labels.length], [2, 4, 2]);
  assertClose(Array.from(s.probs), [0.1, 0.2, 0.3, 0.4, 1, 0, 0, 0, 0.5, 0.5, 0, 0, 0, 1, 0, 0]);
  assertThrows(
    () => flannel.stackLearnerOutputs([a, outputs("c", ["x", "z"], [...a.probs])]),
    /c \(fold 0\) has other images than a/,
  );
  assertThrows(
    () => flannel.stackLearnerOutputs([a, outputs("d", ["x", "y"], [1, 0, 0, 1, 0, 0])]),
    /d has 3 classes, a 4/,
  );
});

test("experiment on chestxray64: two tiny learners, two folds; every Table 3 row per fold, voting = mean of probabilities", async () => {
  if (!existsSync(join(dataDir, "labels.csv"))) throw new AssertionError(`test data missing: ${dataDir}`);
  const { records: all } = fl.data.loadDataset([dataDir]);
  const cache = new fl.data.ImageCache(64);
  const { records, images } = await cache.getReadable(all);
  const split = fl.data.patientSplit(records, {
    folds: 2,
    seed: 2,
    subsample: { covid: 40, viral: 40, bacterial: 40, normal: 40 },
  });
  const archs: flannel.LearnerArch[] = ["resnet152", "densenet161"];
  const result = await flannel.runExperiment({
    records,
    images,
    split,
    archs,
    scale: "tiny",
    outDir: tmp,
    epochs: 1,
    batchSize: 16,
    crop: 56,
    resize: 64,
    seed: 1,
    stage2Epochs: 3,
  });
  assertEquals(result.methods.map((m) => m.name), [
    "ResNet152",
    "DenseNet161",
    "Voting",
    "Ensemble_MLP_1",
    "Ensemble_MLP_2",
    "FLANNEL w/o focal",
    "FLANNEL w/o focal + sampling",
    "FLANNEL",
  ]);
  assertEquals([result.folds, result.samples.train + result.samples.test], [2, 160]);
  for (const m of result.methods) {
    assertEquals(m.folds.length, 2);
    for (const r of m.folds) assertEquals(r.n, split.test.length);
  }
  // each learner's row and the voting row, recomputed from the stage-1 files of fold 1
  const load = (arch: string) =>
    flannel.loadLearnerOutputs(join(flannel.stage1FoldDir(tmp, arch, 1), "test.safetensors"));
  const [r, d] = [await load("resnet152"), await load("densenet161")];
  assertClose(result.methods[0].folds[1].macroF1, fl.metrics.classificationReport(r.labels, r.probs).macroF1);
  assertClose(result.methods[1].folds[1].macroF1, fl.metrics.classificationReport(d.labels, d.probs).macroF1);
  const mean = r.probs.map((p, i) => (p + d.probs[i]) / 2);
  const voting = fl.metrics.classificationReport(r.labels, mean);
  assertEquals(result.methods[2].folds[1].confusion, voting.confusion);
  assertEquals(result.stage1.length, 4);
  // tests/both.ts compares this file between Deno and Bun: the same seed must give the same experiment.
  writeArtifact("experiment", {
    stage1: result.stage1,
    methods: result.methods.map((m) => ({
      name: m.name,
      folds: m.folds,
      probsHead: Array.from(m.testProbs[0].slice(0, 8)),
    })),
  });

  // the figures: four PNGs that decode, and results.json without the per-sample probabilities
  const figures = flannel.writeFigures(tmp, result);
  assertEquals(figures.map((f) => f.slice(tmp.length + 1)), [
    "fig2_covid_f1.png",
    "fig3_covid_roc.png",
    "fig3_covid_pr.png",
    "fig3_reliability.png",
    "fig4_confusion.png",
  ]);
  for (const f of figures) {
    const png = fl.train.plots.decodePNG(readFileSync(f));
    assert(png.width >= 400 && png.height >= 300, `${f}: ${png.width}x${png.height}`);
  }
  const json = JSON.parse(JSON.stringify(result, flannel.withoutProbabilities));
  assertEquals([json.testLabels, json.methods[0].testProbs, json.methods[0].calibratedTestProbs], [
    undefined,
    undefined,
    undefined,
  ]);
  assertEquals(json.methods[7].calibration[1], result.methods[7].calibration[1]);

  // Calibration: every row's temperature is fitted on its fold's selection share (recomputed here for a
  // learner: the out-of-fold outputs' stratified 20%), its scores are those of the test probabilities raw and
  // scaled, and scaling keeps every argmax (Table 3 is the same either way).
  const oof = await flannel.loadLearnerOutputs(
    join(flannel.stage1FoldDir(tmp, "resnet152", 1), "val.safetensors"),
  );
  const share = fl.data.stratifiedSplit(oof.labels, 0.2, 1 + 31 * 2).test;
  const shareProbs = new Float32Array(share.length * 4);
  share.forEach((i, j) => shareProbs.set(oof.probs.subarray(4 * i, 4 * i + 4), 4 * j));
  assertClose(
    result.methods[0].calibration[1].temperature,
    fl.metrics.fitTemperature(share.map((i) => oof.labels[i]), shareProbs),
    { atol: 1e-12 },
  );
  for (const m of result.methods) {
    for (const [f, c] of m.calibration.entries()) {
      const { bins: _, ...raw } = fl.metrics.calibration(result.testLabels, m.testProbs[f]);
      const scaled = fl.metrics.temperatureScale(m.testProbs[f], c.temperature);
      const { bins: __, ...calibrated } = fl.metrics.calibration(result.testLabels, scaled);
      assertEquals([c.raw, c.calibrated], [raw, calibrated], `${m.name} fold ${f}`);
      assertEquals(c.eceFloor, fl.metrics.eceFloor(scaled), `${m.name} fold ${f}: ECE's floor`);
      assertEquals(
        fl.metrics.classificationReport(result.testLabels, m.calibratedTestProbs[f]).confusion,
        m.folds[f].confusion,
        `${m.name} fold ${f}: the argmax moved`,
      );
    }
    assertClose(
      m.calibrationSummary.temperature.mean,
      (m.calibration[0].temperature + m.calibration[1].temperature) / 2,
    );
  }
  const flannelRow = result.methods[7];
  const meta = await fl.io.readSafetensorsMetadata(flannel.stage2ModelPath(tmp, 1, "FLANNEL"));
  assertEquals(Number(meta.temperature), flannelRow.calibration[1].temperature);
  assert(flannel.calibrationTable(result).includes("| FLANNEL |"), "the calibration table has FLANNEL's row");
  assertEquals(result.methods[0].testProbs.length, 2);

  // prediction on new files from the folder: Voting = the folds' mean of the learners' mean probabilities
  writeFileSync(join(tmp, "results.json"), JSON.stringify(result));
  const files = split.test.slice(0, 3).map((i) => records[i].file);
  const predicted = await flannel.predictFiles(tmp, [...files, join(tmp, "results.json")], {
    method: "Voting",
    calibration: "none",
  });
  assertEquals(predicted.files, files);
  assertEquals(predicted.skipped.length, 1);
  const expected = new Float64Array(12);
  for (const f of [0, 1]) {
    for (const arch of archs) {
      const out = await flannel.loadLearnerOutputs(
        join(flannel.stage1FoldDir(tmp, arch, f), "test.safetensors"),
      );
      files.forEach((file, i) => {
        const row = out.files.indexOf(file);
        for (let c = 0; c < 4; c++) expected[i * 4 + c] += out.probs[row * 4 + c] / 4;
      });
    }
  }
  assertClose(predicted.probs, expected, { atol: 1e-5 });
  const flannelPredicted = await flannel.predictFiles(tmp, files);
  for (let i = 0; i < 3; i++) {
    assertClose(flannelPredicted.probs.subarray(4 * i, 4 * i + 4).reduce((a, b) => a + b, 0), 1, {
      atol: 1e-5,
    });
  }
  // Calibrated prediction: the raw fold average scaled by the folds' mean temperature, the same argmax.
  const rawPredicted = await flannel.predictFiles(tmp, files, { calibration: "none" });
  const meanTemperature = (flannelRow.calibration[0].temperature + flannelRow.calibration[1].temperature) / 2;
  assertEquals([rawPredicted.temperature, flannelPredicted.temperature], [null, meanTemperature]);
  assertClose(flannelPredicted.probs, fl.metrics.temperatureScale(rawPredicted.probs, meanTemperature), {
    atol: 1e-6,
  });
  assertEquals(
    fl.metrics.argmaxRows(flannelPredicted.probs, 4),
    fl.metrics.argmaxRows(rawPredicted.probs, 4),
  );
  // ... which is the experiment's fold ensemble on those test images, and its report is that of the average.
  const testFiles = (await load("resnet152")).files;
  const ensembleProbs = fl.metrics.temperatureScale(
    flannel.foldMean(flannelRow.testProbs),
    flannelRow.foldEnsemble.temperature,
  );
  files.forEach((file, i) => {
    const row = testFiles.indexOf(file);
    assertClose(
      flannelPredicted.probs.subarray(4 * i, 4 * i + 4),
      ensembleProbs.subarray(4 * row, 4 * row + 4),
      {
        atol: 1e-5,
      },
    );
  });
  assertEquals(flannelRow.foldEnsemble.temperature, meanTemperature);
  assertEquals(
    flannelRow.foldEnsemble.report,
    fl.metrics.classificationReport(result.testLabels, flannel.foldMean(flannelRow.testProbs)),
  );
  await assertRejects(
    () => flannel.predictFiles(tmp, files, { calibration: "platt" as flannel.Calibration }),
    /calibration must be temperature or none, not "platt"/,
  );
  assertEquals(
    flannel.runFolderModels(tmp).learnerTemperature("densenet161", 1),
    result.methods[1].calibration[1].temperature,
  );
  await assertRejects(
    () => flannel.predictFiles(tmp, files, { method: "Bagging" }),
    /no trained Bagging for fold 0/,
  );
  await assertRejects(() => flannel.predictFiles(join(tmp, "stage1"), files), /is not an experiment folder/);

  // Fig. 6: one tile per learner, enlarged to at least 224 pixels
  const camPng = fl.train.plots.decodePNG(await flannel.camFigure(tmp, files[0], { fold: 1 }));
  assert(camPng.width >= 2 * 224 && camPng.height >= 224, `${camPng.width}x${camPng.height}`);
  await assertRejects(
    () => flannel.camFigure(tmp, files[0], { fold: 2 }),
    /fold 2 is not in the experiment/,
  );
});

test("experiment with the baselines: their rows between the learners' and the ensembles', never combined", async () => {
  const { records: all } = fl.data.loadDataset([dataDir]);
  const { records, images } = await new fl.data.ImageCache(64).getReadable(all);
  const split = fl.data.patientSplit(records, {
    folds: 2,
    seed: 3,
    subsample: { covid: 24, viral: 24, bacterial: 24, normal: 24 },
  });
  const out = join(tmp, "baselines");
  const config = {
    records,
    images,
    split,
    scale: "tiny" as const,
    outDir: out,
    epochs: 1,
    batchSize: 16,
    crop: 56,
    resize: 64,
    seed: 4,
    stage2Epochs: 2,
  };
  await assertRejects(
    () => flannel.runExperiment({ ...config, archs: ["covidnet"] }),
    /stage 2 combines the base learners, and none is among the archs/,
  );
  const result = await flannel.runExperiment({ ...config, archs: ["covidnet", "resnet152", "aicovid"] });
  assertEquals(result.methods.map((m) => m.name).slice(0, 4), [
    "ResNet152",
    "COVID-Net",
    "AI-Covid",
    "Voting",
  ]);
  assertEquals(result.methods.length, 9);
  assertEquals([result.settings.archs, result.settings.baselines], [["resnet152"], ["covidnet", "aicovid"]]);
  assertEquals(result.stage1.length, 6);
  for (const [row, arch] of [[1, "covidnet"], [2, "aicovid"]] as const) {
    const o = await flannel.loadLearnerOutputs(join(flannel.stage1FoldDir(out, arch, 1), "test.safetensors"));
    assertEquals(
      result.methods[row].folds[1].confusion,
      fl.metrics.classificationReport(o.labels, o.probs).confusion,
    );
  }
  // The audit: every row's non-covid test images called covid per (source, class), recounted here for one row.
  const audit = result.audit;
  assertEquals(audit.calledCovid.map((r) => r.method), result.methods.map((m) => m.name));
  const sources = split.test.map((i) => records[i].source);
  assertEquals(result.testSources, sources);
  for (const g of audit.calledCovid[1].groups) {
    const idx = sources.flatMap((s, i) =>
      s === g.source && fl.metrics.CLASS_NAMES[result.testLabels[i]] === g.className ? [i] : []
    );
    assertEquals(g.images, idx.length);
    const shares = result.methods[1].testProbs.map((p) => {
      const predicted = fl.metrics.argmaxRows(p, 4);
      return idx.filter((i) => predicted[i] === 0).length / idx.length;
    });
    assertClose(g.share.mean, shares.reduce((a, b) => a + b, 0) / shares.length);
  }
  // Out of fold: every non-covid training image once per learner, in its source and class group.
  assertEquals(audit.outOfFold.map((r) => r.method), ["ResNet152", "COVID-Net", "AI-Covid"]);
  const trainNonCovid = split.train.filter((i) => records[i].label !== 0);
  for (const r of audit.outOfFold) {
    assertEquals(r.groups.reduce((a, g) => a + g.images, 0), trainNonCovid.length, `${r.method} images`);
    const ieee = trainNonCovid.filter((i) => records[i].source === "ieee8023").length;
    assertEquals(r.groups.filter((g) => g.source === "ieee8023").reduce((a, g) => a + g.images, 0), ieee);
  }
  assertEquals(
    audit.paired.map((p) => p.method),
    result.methods.map((m) => m.name).filter((n) => n !== "FLANNEL"),
  );
  for (const p of audit.paired) {
    assert(p.macroF1.pValue > 0 && p.macroF1.pValue <= 1, `${p.method}: p ${p.macroF1.pValue}`);
    assert(p.macroF1.low <= p.macroF1.high, `${p.method}: interval`);
  }
  // Voting over the one learner is that learner: the baselines are not among its inputs.
  for (const f of [0, 1]) {
    assertEquals(result.methods[3].folds[f].confusion, result.methods[0].folds[f].confusion);
  }
  // The run's folder predicts with the learner, and its Fig. 6 has a tile for each of the three.
  writeFileSync(join(out, "results.json"), JSON.stringify(result, flannel.withoutProbabilities));
  // results.json keeps the audit whole (a user's own analysis reads it there), only the probabilities go.
  const written = JSON.parse(readFileSync(join(out, "results.json"), "utf8"));
  assertEquals(written.audit, JSON.parse(JSON.stringify(audit)));
  assertEquals(written.methods[0].testProbs, undefined);
  const file = records[split.test[0]].file;
  const predicted = await flannel.predictFiles(out, [file], { method: "Voting", calibration: "none" });
  const r = await flannel.loadLearnerOutputs(
    join(flannel.stage1FoldDir(out, "resnet152", 0), "test.safetensors"),
  );
  const r1 = await flannel.loadLearnerOutputs(
    join(flannel.stage1FoldDir(out, "resnet152", 1), "test.safetensors"),
  );
  const row = r.files.indexOf(file);
  assertClose(
    predicted.probs,
    [0, 1, 2, 3].map((c) => (r.probs[row * 4 + c] + r1.probs[row * 4 + c]) / 2),
    { atol: 1e-5 },
  );
  const cam = fl.train.plots.decodePNG(await flannel.camFigure(out, file, { fold: 0 }));
  assert(cam.width >= 3 * 224, `Fig. 6 of 3 tiles is ${cam.width} wide`);
  // The command line, as a shell glob gives it: `--images a.png b.png` (one option, several paths).
  const files2 = split.test.slice(0, 2).map((i) => records[i].file);
  const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
  const cli = [...(isBun ? ["run"] : ["run", "-A"]), join(repo, "cli.ts"), "predict", "--run", out];
  const csv = execFileSync(process.execPath, [...cli, "--method", "Voting", "--images", ...files2], {
    encoding: "utf8",
    env: { ...process.env, FLANNEL_BACKEND: fl.backendInfo()!.backend },
  });
  const rows = csv.trim().split("\n");
  assertEquals(rows.length, 3, csv);
  assertEquals(rows.slice(1).map((r) => r.split(",")[0]), files2);
  const both = await flannel.predictFiles(out, files2, { method: "Voting" });
  assertClose(rows.slice(1).flatMap((r) => r.split(",").slice(1, 5).map(Number)), [...both.probs], {
    atol: 2e-6,
  });
});

test.afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});
