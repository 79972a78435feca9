// src/train/metrics.ts: hand-computed cases, scikit-learn goldens (tests/fixtures/make_metrics_goldens.py
// wrote them), fold aggregation, and each input check.
import { readFileSync } from "node:fs";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";
import {
  aggregateFolds,
  argmaxRows,
  averagePrecision,
  calibration,
  CLASS_NAMES,
  classificationReport,
  confusionMatrix,
  eceFloor,
  fitTemperature,
  formatMeanStd,
  meanStd,
  pairedBootstrap,
  precisionRecallCurve,
  rocAuc,
  rocCurve,
  TEMPERATURE_RANGE,
  temperatureScale,
} from "../src/train/metrics.ts";
import { Generator } from "../src/kernels/random.ts";

interface GoldenCase {
  name: string;
  yTrue: number[];
  probs: number[][];
  precision: number[];
  recall: number[];
  f1: number[];
  support: number[];
  macroF1: number;
  accuracy: number;
  confusion: number[][];
  rocAuc: (number | null)[];
  prAuc: (number | null)[];
}
const goldens = JSON.parse(
  readFileSync(new URL("./fixtures/metrics_goldens.json", import.meta.url), "utf8"),
) as { numClasses: number; cases: GoldenCase[] };

const exact = { rtol: 0, atol: 1e-9 };
const nanForNull = (xs: (number | null)[]) => xs.map((x) => x ?? NaN);

// Three classes, seven samples; predictions [0, 1, 1, 1, 2, 0, 2].
const HAND_Y = [0, 0, 1, 1, 2, 2, 2];
const HAND_PROBS = [
  [0.7, 0.2, 0.1],
  [0.3, 0.6, 0.1],
  [0.1, 0.8, 0.1],
  [0.2, 0.5, 0.3],
  [0.1, 0.1, 0.8],
  [0.5, 0.1, 0.4],
  [0.2, 0.2, 0.6],
];
const HAND_NAMES = ["a", "b", "c"];

test("confusionMatrix counts [true][predicted] on a hand 3x3 case", () => {
  assertEquals(confusionMatrix(HAND_Y, [0, 1, 1, 1, 2, 0, 2], 3), [[1, 1, 0], [0, 2, 0], [1, 0, 2]]);
  assertEquals(confusionMatrix(Int32Array.from([2, 2]), Int32Array.from([0, 2]), 4), [
    [0, 0, 0, 0],
    [0, 0, 0, 0],
    [1, 0, 1, 0],
    [0, 0, 0, 0],
  ]);
});

test("argmaxRows: first maximum wins a tie; flat and nested rows agree", () => {
  assertEquals(Array.from(argmaxRows([[0.5, 0.5, 0], [0, 0.3, 0.3], [0.1, 0.2, 0.7]], 3)), [0, 1, 2]);
  assertEquals(Array.from(argmaxRows(new Float32Array([0.5, 0.5, 0, 0, 0.3, 0.3]), 3)), [0, 1]);
  assert(argmaxRows([0.1, 0.9], 2) instanceof Int32Array, "returns an Int32Array");
});

test("classificationReport on the hand case", () => {
  const r = classificationReport(HAND_Y, HAND_PROBS, HAND_NAMES);
  assertEquals(r.confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 2]]);
  assertEquals(r.classNames, HAND_NAMES);
  assertEquals(r.n, 7);
  // a: 1 of 2 predicted, 1 of 2 true; b: 2 of 3 predicted, 2 of 2 true; c: 2 of 2 predicted, 2 of 3 true.
  assertClose([r.perClass.a.precision, r.perClass.a.recall, r.perClass.a.f1], [1 / 2, 1 / 2, 1 / 2], exact);
  assertClose([r.perClass.b.precision, r.perClass.b.recall, r.perClass.b.f1], [2 / 3, 1, 0.8], exact);
  assertClose([r.perClass.c.precision, r.perClass.c.recall, r.perClass.c.f1], [1, 2 / 3, 0.8], exact);
  assertEquals([r.perClass.a.support, r.perClass.b.support, r.perClass.c.support], [2, 2, 3]);
  assertClose(r.macroF1, 2.1 / 3, exact);
  assertClose(r.macroPrecision, (1 / 2 + 2 / 3 + 1) / 3, exact);
  assertClose(r.macroRecall, (1 / 2 + 1 + 2 / 3) / 3, exact);
  assertClose(r.accuracy, 5 / 7, exact);
  // Class a's column against (y == a): positives 0.7, 0.3; negatives 0.1, 0.2, 0.1, 0.5, 0.2.
  // Pairs won: 0.7 beats all 5, 0.3 beats 4 -> 9 / 10.
  assertClose(r.perClass.a.rocAuc, 0.9, exact);
});

test("classificationReport accepts flat number[], Float32Array and Int32Array labels alike", () => {
  const nested = classificationReport(HAND_Y, HAND_PROBS, HAND_NAMES);
  const flat = classificationReport(HAND_Y, HAND_PROBS.flat(), HAND_NAMES);
  assertEquals(flat, nested);
  // Float32 rounding moves the scores but none of this case's orderings, so every metric is unchanged.
  const f32 = classificationReport(Int32Array.from(HAND_Y), new Float32Array(HAND_PROBS.flat()), HAND_NAMES);
  assertEquals(f32, nested);
});

test("classificationReport defaults to the four FLANNEL classes", () => {
  const r = classificationReport([0, 1, 2, 3], [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]);
  assertEquals(r.classNames, [...CLASS_NAMES]);
  assertEquals(Object.keys(r.perClass), ["covid", "viral", "bacterial", "normal"]);
  assertEquals([r.accuracy, r.macroF1, r.perClass.covid.rocAuc, r.perClass.normal.prAuc], [1, 1, 1, 1]);
});

test("rocCurve and rocAuc: sklearn's documented example", () => {
  const y = [0, 0, 1, 1], s = [0.1, 0.4, 0.35, 0.8];
  const c = rocCurve(y, s);
  assertEquals(c.fpr, [0, 0, 0.5, 0.5, 1]);
  assertEquals(c.tpr, [0, 0.5, 0.5, 1, 1]);
  assertEquals(c.thresholds, [Infinity, 0.8, 0.4, 0.35, 0.1]);
  assertClose(rocAuc(y, s), 0.75, exact);
});

test("precisionRecallCurve and averagePrecision: sklearn's documented example", () => {
  const y = [0, 0, 1, 1], s = [0.1, 0.4, 0.35, 0.8];
  const c = precisionRecallCurve(y, s);
  assertClose(c.precision, [0.5, 2 / 3, 0.5, 1, 1], exact);
  assertEquals(c.recall, [1, 1, 0.5, 0.5, 0]);
  assertEquals(c.thresholds, [0.1, 0.35, 0.4, 0.8]);
  // (0.5 - 0) * 1 + (1 - 0.5) * 2/3
  assertClose(averagePrecision(y, s), 5 / 6, exact);
});

test("tied scores enter the curves together, independent of sample order", () => {
  // The positive at 0.5 ties a negative: that pair counts half. Pairs: 1 + 1 + 0.5 + 1 of 4.
  const y = [1, 0, 1, 0], s = [0.9, 0.5, 0.5, 0.1];
  assertClose(rocAuc(y, s), 0.875, exact);
  assertClose(averagePrecision(y, s), 0.5 * 1 + 0.5 * (2 / 3), exact);
  assertEquals(rocCurve(y, s).thresholds, [Infinity, 0.9, 0.5, 0.1]);
  const y2 = [0, 1, 0, 1], s2 = [0.1, 0.5, 0.5, 0.9];
  assertEquals(rocCurve(y2, s2), rocCurve(y, s));
  assertEquals(precisionRecallCurve(y2, s2), precisionRecallCurve(y, s));
  assertClose([rocAuc([1, 0], [0.5, 0.5]), averagePrecision([1, 0], [0.5, 0.5])], [0.5, 0.5], exact);
});

test("one-sided labels give NaN: ROC without positives or negatives, AP without positives", () => {
  assert(Number.isNaN(rocAuc([1, 1, 1], [0.2, 0.5, 0.9])), "no negatives");
  assert(Number.isNaN(rocAuc([0, 0], [0.2, 0.5])), "no positives");
  assert(Number.isNaN(averagePrecision([0, 0], [0.2, 0.5])), "AP without positives");
  assertClose(averagePrecision([1, 1], [0.2, 0.5]), 1, exact);
  const r = classificationReport([0, 0, 1], [[0.9, 0.1, 0], [0.2, 0.8, 0], [0.3, 0.6, 0.1]], HAND_NAMES);
  assert(Number.isNaN(r.perClass.c.rocAuc) && Number.isNaN(r.perClass.c.prAuc), "class c has no positives");
  assertEquals([r.perClass.c.precision, r.perClass.c.recall, r.perClass.c.f1, r.perClass.c.support], [
    0,
    0,
    0,
    0,
  ]);
});

for (const g of goldens.cases) {
  test(`matches scikit-learn: ${g.name}`, () => {
    const r = classificationReport(g.yTrue, g.probs);
    assertEquals(r.confusion, g.confusion, "confusion");
    assertEquals(r.n, g.yTrue.length);
    const per = (k: "precision" | "recall" | "f1" | "support" | "rocAuc" | "prAuc") =>
      CLASS_NAMES.map((name) => r.perClass[name][k]);
    assertClose(per("precision"), g.precision, { ...exact, msg: "precision" });
    assertClose(per("recall"), g.recall, { ...exact, msg: "recall" });
    assertClose(per("f1"), g.f1, { ...exact, msg: "f1" });
    assertEquals(per("support"), g.support, "support");
    assertClose(r.macroF1, g.macroF1, { ...exact, msg: "macro F1" });
    assertClose(r.accuracy, g.accuracy, { ...exact, msg: "accuracy" });
    assertClose(per("rocAuc"), nanForNull(g.rocAuc), { ...exact, msg: "ROC-AUC" });
    assertClose(per("prAuc"), nanForNull(g.prAuc), { ...exact, msg: "average precision" });
  });
}

test("the goldens cover a never-predicted class and a class without positives", () => {
  assert(goldens.cases.some((g) => g.confusion.some((_, p) => g.confusion.every((row) => row[p] === 0))));
  assert(goldens.cases.some((g) => g.support.includes(0) && g.rocAuc.includes(null)));
  assert(goldens.cases.every((g) => g.probs.length >= 20 && g.probs[0].length === goldens.numClasses));
});

test("meanStd uses the sample standard deviation", () => {
  const m = meanStd([1, 2, 3, 4]);
  assertClose(m.mean, 2.5, exact);
  assertClose(m.std, Math.sqrt(5 / 3), exact); // (2.25 + 0.25 + 0.25 + 2.25) / 3
  assertEquals(meanStd([0.9]), { mean: 0.9, std: 0 });
  assertEquals(meanStd([0.5, 0.5, 0.5]), { mean: 0.5, std: 0 });
  assertThrows(() => meanStd([]), "no values");
});

test("formatMeanStd rounds to the given digits", () => {
  assertEquals(formatMeanStd({ mean: 0.91234, std: 0.03149 }), "0.912 (0.031)");
  assertEquals(formatMeanStd({ mean: 0.91234, std: 0.03149 }, 2), "0.91 (0.03)");
});

test("aggregateFolds: mean (std) per metric and summed confusion", () => {
  const fold0 = classificationReport(HAND_Y, HAND_PROBS, HAND_NAMES);
  const fold1 = classificationReport(
    [0, 1, 2],
    [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]],
    HAND_NAMES,
  );
  const agg = aggregateFolds([fold0, fold1]);
  // Two values: mean (x + y) / 2, sample std |x - y| / sqrt(2).
  assertClose([agg.macroF1.mean, agg.macroF1.std], [(0.7 + 1) / 2, 0.3 / Math.SQRT2], exact);
  assertClose([agg.accuracy.mean, agg.accuracy.std], [(5 / 7 + 1) / 2, (2 / 7) / Math.SQRT2], exact);
  assertClose(
    [agg.perClass.b.precision.mean, agg.perClass.b.precision.std],
    [5 / 6, (1 / 3) / Math.SQRT2],
    exact,
  );
  assertClose([agg.perClass.a.rocAuc.mean, agg.perClass.a.rocAuc.std], [0.95, 0.1 / Math.SQRT2], exact);
  assertClose([agg.perClass.c.recall.mean, agg.perClass.c.f1.mean], [5 / 6, 0.9], exact);
  assertEquals(agg.confusion, [[2, 1, 0], [0, 3, 0], [1, 0, 3]]);
  assertEquals(Object.keys(agg.perClass), HAND_NAMES);
  const single = aggregateFolds([fold0]);
  assertEquals([single.macroF1.mean, single.macroF1.std], [fold0.macroF1, 0]);
});

test("aggregateFolds rejects no folds and folds with different classes", () => {
  assertThrows(() => aggregateFolds([]), "at least one report");
  const a = classificationReport([0, 1], [[1, 0], [0, 1]], ["x", "y"]);
  const b = classificationReport([0, 1], [[1, 0], [0, 1]], ["x", "z"]);
  assertThrows(() => aggregateFolds([a, b]), /fold 1 has classes .*"z"/);
});

test("classificationReport input errors name the problem", () => {
  const row = [0.25, 0.25, 0.25, 0.25];
  assertThrows(
    () => classificationReport([0, 1], [row]),
    "length mismatch: yTrue has 2 labels, probs has 1 rows",
  );
  assertThrows(() => classificationReport([0], [row, row]), "length mismatch");
  assertThrows(() => classificationReport([4], [row]), "yTrue[0] = 4 is not a class index in [0, 4)");
  assertThrows(() => classificationReport([0, -1], [row, row]), "yTrue[1] = -1");
  assertThrows(() => classificationReport([1.5], [row]), "yTrue[0] = 1.5");
  assertThrows(() => classificationReport([0], [[0.5, NaN, 0.25, 0.25]]), "probs[0][1] is not finite (NaN)");
  assertThrows(
    () => classificationReport([0, 0], [...row, 0, 0, Infinity, 0]),
    "probs[1][2] is not finite (Infinity)",
  );
  assertThrows(() => classificationReport([], []), "empty input");
  assertThrows(() => classificationReport([], new Float32Array(0)), "empty input");
  assertThrows(() => classificationReport([0], [[0.5, 0.5]]), "probs row 0 has 2 entries, expected 4");
  assertThrows(() => classificationReport([0], [0.5, 0.5]), "not a multiple of the 4 classes");
  assertThrows(() => classificationReport([0], [1], []), "classNames is empty");
});

test("confusionMatrix and argmaxRows input errors", () => {
  assertThrows(() => confusionMatrix([0, 1], [0], 2), "length mismatch: yTrue has 2 labels, yPred has 1");
  assertThrows(() => confusionMatrix([0, 2], [0, 1], 2), "yTrue[1] = 2 is not a class index in [0, 2)");
  assertThrows(() => confusionMatrix([0], [3], 2), "yPred[0] = 3");
  assertThrows(() => confusionMatrix([0], [0], 0), "numClasses must be a positive integer");
  assertThrows(() => argmaxRows([0.1, 0.2, 0.3], 2), "not a multiple of the 2 classes");
  assertThrows(() => argmaxRows([0.1, -Infinity], 2), "probs[0][1] is not finite");
});

test("binary curve input errors", () => {
  assertThrows(() => rocCurve([0, 1], [0.5]), "length mismatch: 2 labels, 1 scores");
  assertThrows(() => rocAuc([], []), "empty input");
  assertThrows(() => averagePrecision([0, 2], [0.1, 0.2]), "binaryTrue[1] = 2, expected 0 or 1");
  assertThrows(() => precisionRecallCurve([0, 1], [0.1, NaN]), "scores[1] is not finite (NaN)");
});

test("pairedBootstrap: identical rows give p 1; a perfect row against a constant one p 2/(B+1); swapping negates", () => {
  const n = 120, labels = Int32Array.from({ length: n }, (_, i) => i % 4);
  const onehot = (pred: (i: number) => number) =>
    Float32Array.from({ length: n * 4 }, (_, k) => (pred(Math.floor(k / 4)) === k % 4 ? 1 : 0));
  const perfect = onehot((i) => labels[i]), constant = onehot(() => 0);
  const noisy = onehot((i) => (i % 7 === 0 ? (labels[i] + 1) % 4 : labels[i]));
  const same = pairedBootstrap(labels, [noisy], [noisy], { replicates: 200 });
  assertEquals([same.difference, same.low, same.high, same.pValue], [0, 0, 0, 1]);
  const clear = pairedBootstrap(labels, [perfect], [constant], { replicates: 200 });
  const constantF1 = classificationReport(labels, constant).macroF1;
  assertClose(clear.difference, 1 - constantF1);
  assertClose(clear.pValue, 2 / 201);
  assert(clear.low > 0, `interval ${clear.low}..${clear.high} excludes 0`);
  // Two fold models on a side: the metric is their mean, as Table 3's.
  const two = pairedBootstrap(labels, [perfect, noisy], [constant], { replicates: 10 });
  const noisyF1 = classificationReport(labels, noisy).macroF1;
  assertClose(two.difference, (1 + noisyF1) / 2 - constantF1);
  const ab = pairedBootstrap(labels, [noisy], [perfect], { replicates: 300, seed: 4, metric: { f1: 2 } });
  const ba = pairedBootstrap(labels, [perfect], [noisy], { replicates: 300, seed: 4, metric: { f1: 2 } });
  assertClose([ab.difference, ab.low, ab.high, ab.pValue], [-ba.difference, -ba.high, -ba.low, ba.pValue]);
  const classF1 = (p: Float32Array) => classificationReport(labels, p).perClass.bacterial.f1;
  assertClose(ab.difference, classF1(noisy) - classF1(perfect));
});

test("pairedBootstrap resamples: each replicate's difference equals classificationReport's on the same images", () => {
  const n = 60, labels = Int32Array.from({ length: n }, (_, i) => (i * 7) % 4);
  const gen = new Generator(11);
  const random = () => Float32Array.from({ length: n * 4 }, () => gen.uniform());
  const [a, b] = [random(), random()];
  const result = pairedBootstrap(labels, [a], [b], { replicates: 40, seed: 3 });
  // The same resamples drawn independently here: n uniform draws per replicate from Generator(seed).
  const draws = new Generator(3), diffs: number[] = [];
  for (let r = 0; r < 40; r++) {
    const idx = Array.from({ length: n }, () => Math.floor(draws.uniform() * n));
    const pick = (p: Float32Array) => idx.map((i) => Array.from(p.subarray(i * 4, i * 4 + 4)));
    const y = idx.map((i) => labels[i]);
    diffs.push(
      classificationReport(y, pick(a)).macroF1 - classificationReport(y, pick(b)).macroF1,
    );
  }
  diffs.sort((x, y) => x - y);
  assertClose([result.low, result.high], [diffs[Math.round(0.025 * 39)], diffs[Math.round(0.975 * 39)]], {
    atol: 1e-12,
  });
  const k = Math.min(diffs.filter((d) => d <= 0).length, diffs.filter((d) => d >= 0).length) + 1;
  assertClose(result.pValue, Math.min(1, (2 * k) / 41));
  assertThrows(() => pairedBootstrap(labels, [], [b]), /each side needs at least one model/);
  assertThrows(() => pairedBootstrap(labels, [a.subarray(4)], [b]), /59 prediction rows for 60 labels/);
});

test("calibration: ECE, classwise ECE, Brier and NLL on a hand-computed case; the reliability bins", () => {
  // Confidences 0.9 (right), 0.8 (wrong), 0.6 (right), 0.7 (right), each alone in its bin of 10:
  // ECE = (0.1 + 0.8 + 0.4 + 0.3) / 4; per class the same four gaps; Brier (0.02 + 1.28 + 0.32 + 0.18) / 4.
  const probs = [[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]], y = [0, 1, 0, 1];
  const r = calibration(y, probs, { numClasses: 2, bins: 10 });
  assertClose(r.ece, 0.4, { atol: 1e-12 });
  assertClose(r.classwiseEce, 0.4, { atol: 1e-12 });
  assertClose(r.brier, 0.45, { atol: 1e-12 });
  assertClose(r.nll, -(Math.log(0.9) + Math.log(0.2) + Math.log(0.6) + Math.log(0.7)) / 4, { atol: 1e-12 });
  assertEquals(r.bins.map((b) => b.count), [0, 0, 0, 0, 0, 1, 1, 1, 1, 0]);
  assertEquals([r.bins[7].confidence, r.bins[7].accuracy, r.bins[8].accuracy], [0.8, 0, 1]);
  assert(Number.isNaN(r.bins[0].confidence) && Number.isNaN(r.bins[0].accuracy), "an empty bin is NaN");
  assertClose([r.bins[3].lower, r.bins[3].upper], [0.3, 0.4], { atol: 1e-12 });
  // Sure and right: no error at all; sure and wrong: ECE 1, Brier 2, NLL -ln 1e-12.
  const right = calibration([2, 0], [[0, 0, 1, 0], [1, 0, 0, 0]]);
  assertEquals([right.ece, right.classwiseEce, right.brier, right.nll], [0, 0, 0, 0]);
  const wrong = calibration([1], [[1, 0, 0, 0]]);
  assertClose([wrong.ece, wrong.brier, wrong.nll], [1, 2, -Math.log(1e-12)], { atol: 1e-9 });
});

test("calibration: labels drawn at the stated confidence give an ECE near 0, overconfident ones near the gap", () => {
  // 20,000 samples, 4 classes: the top class has probability q in [0.3, 1), the rest share 1 - q; the label
  // is the top class with probability q (calibrated), or with probability q - 0.2 (overconfident by 0.2).
  const gen = new Generator(7);
  const n = 20_000, probs = new Float32Array(n * 4), calibrated: number[] = [], over: number[] = [];
  for (let i = 0; i < n; i++) {
    const q = 0.3 + 0.7 * gen.uniform(), top = Math.floor(gen.uniform() * 4);
    for (let c = 0; c < 4; c++) probs[i * 4 + c] = c === top ? q : (1 - q) / 3;
    const u = gen.uniform(), other = (top + 1 + Math.floor(gen.uniform() * 3)) % 4;
    calibrated.push(u < q ? top : other);
    over.push(u < q - 0.2 ? top : other);
  }
  const good = calibration(calibrated, probs), bad = calibration(over, probs);
  assert(good.ece < 0.02, `calibrated ECE ${good.ece}`);
  assertClose(bad.ece, 0.2, { atol: 0.02, msg: "overconfident by 0.2" });
  assert(bad.brier > good.brier && bad.nll > good.nll, "the overconfident labels score worse");
  assertEquals(good.bins.reduce((a, b) => a + b.count, 0), n);
});

test("calibration: bad inputs name the problem", () => {
  assertThrows(() => calibration([], []), /no samples/);
  assertThrows(() => calibration([0, 1], [[1, 0, 0, 0]]), /1 probability rows for 2 labels/);
  assertThrows(() => calibration([4], [[1, 0, 0, 0]]), /yTrue\[0\] = 4 is not a class index/);
  assertThrows(() => calibration([0], [[NaN, 0, 0, 0]]), /not finite/);
  assertThrows(() => calibration([0], [[1, 0, 0, 0]], { bins: 0 }), /bins must be a positive integer/);
});

test("temperatureScale: softmax(ln p / T) by hand; T = 1 renormalises; every argmax kept; zeros clamped", () => {
  // T = 2 turns p into sqrt(p), normalised; T = 0.5 into p^2, normalised.
  const p = [[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]];
  const soft = temperatureScale(p, 2, 3), sharp = temperatureScale(p, 0.5, 3);
  const norm = (row: number[]) => row.map((v) => v / row.reduce((a, b) => a + b, 0));
  assertClose(Array.from(soft), [...norm(p[0].map(Math.sqrt)), ...norm(p[1].map(Math.sqrt))], { atol: 1e-7 });
  assertClose(Array.from(sharp), [...norm(p[0].map((v) => v * v)), ...norm(p[1].map((v) => v * v))], {
    atol: 1e-7,
  });
  assertClose(Array.from(temperatureScale([[2, 1, 1]], 1, 3)), [0.5, 0.25, 0.25], { atol: 1e-7 });
  assertEquals(Array.from(argmaxRows(soft, 3)), [0, 1]);
  // A zero becomes 1e-12 before the logarithm: at T = 100 it is far from 0 but still the smallest.
  const zero = temperatureScale([[0, 0.9, 0.1]], 100, 3);
  assert(zero[0] > 0.25 && zero[0] < zero[2] && zero[2] < zero[1], `clamped zero: ${Array.from(zero)}`);
  assertThrows(() => temperatureScale(p, 0, 3), /finite positive number, got 0/);
  assertThrows(() => temperatureScale([[-0.1, 1.1]], 1, 2), /probability -0.1 at row 0/);
});

test("fitTemperature: recovers the temperature labels were drawn at; the NLL is least there", () => {
  // Probabilities softmax(z), labels drawn from softmax(z / 2.5): the right temperature is 2.5.
  const gen = new Generator(3);
  const n = 20_000, m = 4, probs = new Float32Array(n * m), labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const z = Array.from({ length: m }, () => 4 * (gen.uniform() - 0.5) * 2);
    const at = (t: number) => norm(z.map((v) => Math.exp(v / t)));
    const norm = (row: number[]) => row.map((v) => v / row.reduce((a, b) => a + b, 0));
    probs.set(at(1), i * m);
    const drawn = at(2.5), u = gen.uniform();
    let c = 0;
    for (let acc = drawn[0]; acc < u && c < m - 1;) acc += drawn[++c];
    labels[i] = c;
  }
  const t = fitTemperature(labels, probs);
  assertClose(t, 2.5, { atol: 0.1, msg: "fitted temperature" });
  // The fit is the NLL's minimum, checked by the NLL itself (calibration) a little either side.
  const nll = (temp: number) => calibration(labels, temperatureScale(probs, temp)).nll;
  assert(
    nll(t) < nll(t * 0.97) && nll(t) < nll(t * 1.03),
    `NLL ${nll(t * 0.97)}, ${nll(t)}, ${nll(t * 1.03)}`,
  );
  const before = calibration(labels, probs).ece, after = calibration(labels, temperatureScale(probs, t)).ece;
  assert(before > 0.1 && after < 0.02, `ECE ${before} before, ${after} after`);
});

test("fitTemperature: range bounds when the optimum lies beyond them; bad inputs name the problem", () => {
  // Always right: sharper is always better, down to the lower bound; always wrong: flatter, to the upper.
  assertEquals(fitTemperature([0, 1], [[0.6, 0.4], [0.3, 0.7]], { numClasses: 2 }), TEMPERATURE_RANGE[0]);
  assertEquals(fitTemperature([1, 0], [[0.6, 0.4], [0.3, 0.7]], { numClasses: 2 }), TEMPERATURE_RANGE[1]);
  assertThrows(() => fitTemperature([], []), /no samples/);
  assertThrows(() => fitTemperature([0, 1], [[1, 0, 0, 0]]), /1 probability rows for 2 labels/);
  assertThrows(() => fitTemperature([7], [[1, 0, 0, 0]]), /yTrue\[0\] = 7 is not a class index/);
  assertThrows(() => fitTemperature([0], [[NaN, 0, 0, 0]]), /not finite/);
});

test("eceFloor: ECE's bias when the probabilities are right by construction; shrinks as the set grows", () => {
  // One coin flip at 0.5 is right or wrong, never half right: ECE 0.5 whatever is drawn. Sure rows: 0.
  assertEquals(eceFloor([[0.5, 0.5]], { numClasses: 2 }), 0.5);
  assertEquals(eceFloor([[0, 0, 1, 0], [1, 0, 0, 0]]), 0);
  // The same confidences on 10,000 rows instead of 100: the floor falls about tenfold (1 / sqrt(n)).
  const gen = new Generator(5);
  const rows = (n: number) =>
    Array.from({ length: n }, () => {
      const q = 0.4 + 0.5 * gen.uniform();
      return [q, (1 - q) / 3, (1 - q) / 3, (1 - q) / 3];
    });
  const small = eceFloor(rows(100), { draws: 100 }), large = eceFloor(rows(10_000), { draws: 20 });
  assert(
    small > 0.05 && large < 0.015 && small / large > 5,
    `floor ${small} at 100 rows, ${large} at 10,000`,
  );
  const some = rows(50);
  assertEquals(eceFloor(some, { seed: 3 }), eceFloor(some, { seed: 3 }), "seeded: the same floor twice");
  assertThrows(() => eceFloor([[1, 0, 0, 0]], { draws: 0 }), /draws must be a positive integer/);
});
