// Stage 2 against what it promises and against PyTorch:
// - balancedOrder (the "+ sampling" ablation): class-balanced draws with replacement, measured on heavily
//   imbalanced labels (200/30/10/5): equal class shares within binomial bounds, indices from the training
//   set, minority samples repeated and majority samples left out, uniform within a class, seeded.
// - a 20-step training trajectory of the Neural Weight Module (focal loss and cross-entropy, Adam) replayed
//   from tests/fixtures/nwm_trajectory.json (tests/fixtures/make_nwm_trajectory.py, PyTorch in float64, with
//   the initial weights, the data and every batch's indices stored there), through the same device-side path
//   trainStage2 takes (gatherRows, fl.train.trainStep): the loss at every step and the final weights.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";
import { balancedOrder } from "../src/flannel/stage2.ts";
import { assert, assertClose, assertEquals, float32FromBase64, test } from "./harness.ts";

await fl.init();
const here = dirname(fileURLToPath(import.meta.url));

// ---------------------------------------------------------------- balancedOrder

const COUNTS = [200, 30, 10, 5];
/** 245 labels, classes interleaved (not sorted), so an order that just walks the labels would show. */
function imbalancedLabels(counts: number[]): Int32Array {
  const labels: number[] = [];
  counts.forEach((n, c) => labels.push(...new Array(n).fill(c)));
  return Int32Array.from(new fl.Generator(99).permutation(labels.length), (i) => labels[i]);
}

/** Per-class draw counts of an order. */
function classCounts(order: Int32Array, labels: Int32Array, classes: number): number[] {
  const counts = new Array(classes).fill(0);
  for (const i of order) counts[labels[i]]++;
  return counts;
}

/** `epochs` epochs' orders of balancedOrder over `labels` (M classes) from one generator seeded `seed`. */
function drawEpochs(labels: Int32Array, m: number, seed: number, epochs: number): Int32Array[] {
  const gen = new fl.Generator(seed);
  return Array.from({ length: epochs }, () => balancedOrder(labels, m, gen));
}

test("balancedOrder on 200/30/10/5 labels: each class a quarter of the draws, within binomial bounds", () => {
  const labels = imbalancedLabels(COUNTS);
  const s = labels.length, m = COUNTS.length, epochs = 40;
  const total = new Array(m).fill(0);
  for (const [e, order] of drawEpochs(labels, m, 5, epochs).entries()) {
    assertEquals(order.length, s, "one epoch draws as many indices as there are samples");
    for (const i of order) {
      assert(Number.isInteger(i) && i >= 0 && i < s, `index ${i} outside the training set`);
    }
    const counts = classCounts(order, labels, m);
    // Each epoch's class count is Binomial(245, 1/4): mean 61.25, sd 6.78. Within 5 sd: 27..95 (the
    // imbalanced labels themselves would give 200/30/10/5).
    for (let c = 0; c < m; c++) {
      assert(
        Math.abs(counts[c] - s / m) <= 5 * Math.sqrt(s * 0.25 * 0.75),
        `epoch ${e}: class counts ${counts}`,
      );
    }
    counts.forEach((n, c) => (total[c] += n));
  }
  // Over 40 epochs: Binomial(9800, 1/4) per class, mean 2450, sd 42.9: a 4-sigma band (+-172), which a
  // sampler that favoured a class by even 10 % (245 draws) would leave.
  const sd = Math.sqrt(s * epochs * 0.25 * 0.75);
  for (let c = 0; c < m; c++) {
    assert(Math.abs(total[c] - (s * epochs) / m) <= 4 * sd, `class totals over ${epochs} epochs: ${total}`);
  }
});

test("balancedOrder repeats minority samples, leaves majority samples out, and is uniform within a class", () => {
  const labels = imbalancedLabels(COUNTS);
  const s = labels.length, m = COUNTS.length, epochs = 40;
  const perSample = new Array(s).fill(0);
  for (const [e, order] of drawEpochs(labels, m, 6, epochs).entries()) {
    const seen = new Map<number, number>();
    for (const i of order) seen.set(i, (seen.get(i) ?? 0) + 1);
    const distinct = (c: number) => [...seen.keys()].filter((i) => labels[i] === c).length;
    const drawn = classCounts(order, labels, m);
    // the 5-sample class gets ~61 draws: every one of its samples, several times over
    assert(drawn[3] > COUNTS[3] && distinct(3) === COUNTS[3], `epoch ${e}: minority drawn ${drawn[3]} times`);
    // the 200-sample class gets ~61 draws: most of its samples are left out of the epoch
    assert(
      distinct(0) <= drawn[0] && distinct(0) < COUNTS[0] / 2,
      `epoch ${e}: ${distinct(0)} majority seen`,
    );
    for (const i of order) perSample[i]++;
  }
  // Within a class every sample is equally likely: the majority's 200 per-sample counts (about 12.25 each)
  // give a chi-square with 199 degrees of freedom, mean 199, sd 20; 300 is 5 sd up. A sampler that always
  // took the class's first samples would be in the thousands.
  const majority = [...labels.keys()].filter((i) => labels[i] === 0);
  const drawnMajority = majority.reduce((a, i) => a + perSample[i], 0);
  const expected = drawnMajority / majority.length;
  const chi2 = majority.reduce((a, i) => a + (perSample[i] - expected) ** 2 / expected, 0);
  assert(chi2 < 300, `chi-square of the majority's per-sample counts ${chi2.toFixed(1)} (df 199)`);
  // each of the minority's 5 samples: Binomial(9800, 1/20), mean 490, sd 21.6; within 5 sd
  for (const i of [...labels.keys()].filter((i) => labels[i] === 3)) {
    assert(Math.abs(perSample[i] - 490) <= 5 * 21.6, `minority sample ${i} drawn ${perSample[i]} times`);
  }
});

test("balancedOrder never draws a class absent from the labels; the present ones share equally", () => {
  // classes 0, 1, 3 of 4 present (100/12/4): each present class a third
  const labels = Int32Array.from([
    ...new Array(100).fill(0),
    ...new Array(12).fill(1),
    ...new Array(4).fill(3),
  ]);
  const total = [0, 0, 0, 0];
  for (const order of drawEpochs(labels, 4, 7, 30)) {
    classCounts(order, labels, 4).forEach((n, c) => (total[c] += n));
  }
  assertEquals(total[2], 0, "absent class 2 drawn");
  const draws = 30 * labels.length, sd = Math.sqrt(draws * (1 / 3) * (2 / 3));
  for (const c of [0, 1, 3]) {
    assert(
      Math.abs(total[c] - draws / 3) <= 5 * sd,
      `present classes' totals ${total} (expected ~${draws / 3})`,
    );
  }
});

test("balancedOrder is seeded: the same seed repeats the order, another seed or the next epoch differs", () => {
  const labels = imbalancedLabels(COUNTS);
  const a = new fl.Generator(11), b = new fl.Generator(11), c = new fl.Generator(12);
  const first = balancedOrder(labels, 4, a);
  assertEquals(Array.from(balancedOrder(labels, 4, b)), Array.from(first), "same seed, same order");
  const other = balancedOrder(labels, 4, c);
  assert(other.some((v, i) => v !== first[i]), "another seed gives another order");
  const next = balancedOrder(labels, 4, a);
  assert(next.some((v, i) => v !== first[i]), "the next epoch's order differs");
  assertEquals(
    Array.from(balancedOrder(labels, 4, b)),
    Array.from(next),
    "and repeats for the same seed too",
  );
});

// ---------------------------------------------------------------- NWM trajectory against PyTorch

interface TrajectoryCase {
  name: string;
  loss: "focal" | "ce";
  gamma: number | null;
  alpha: number[] | null;
  activation: "tanh" | "softmax";
  lr: number;
  weight_decay: number;
  batch_size: number;
  learners: number;
  classes: number;
  labels: number[];
  probs_f32: string;
  orders: number[][];
  dense_weight_f32: string;
  dense_bias_f32: string;
  losses: number[];
  final_dense_weight_f32: string;
  final_dense_bias: number[];
}
// Read at import: a missing or broken fixture fails the file.
const trajectories = JSON.parse(readFileSync(join(here, "fixtures", "nwm_trajectory.json"), "utf8")) as {
  cases: TrajectoryCase[];
};

// Tolerances. The library computes in float32, PyTorch here in float64 from the same float32 start. One
// forward/backward in float32 is good to ~1e-6 relative (400-term dot products, softmax, log); Adam's update
// lr * m / (sqrt(v) + eps) is a smooth function of the gradient unless the gradient is as small as its own
// rounding error (an update of +-lr either way; no weight here is near that), so the float32 errors do not
// compound over 20 steps. Measured on wasm and on WebGPU (lavapipe): losses within 5.6e-6 relative (the
// largest where the focal loss is small and (1 - p_y)^3 cancels), final weights within 1.2e-6 absolute (the
// lr 1e-2 case; 3.6e-7 at lr 1e-3). The bounds: losses rtol 1e-4 (18x the measured), weights
// 1e-5 + 1e-4 |w| (at least 8x the measured; about 1 % of one Adam step at lr 1e-3). Each test shows the
// bounds have power: the weights moved by >100x the tolerance, consecutive steps' losses differ by >100x,
// and gamma 2 instead of 3 or a module without tanh are far outside.
const LOSS_RTOL = 1e-4;
const WEIGHT_ATOL = 1e-5, WEIGHT_RTOL = 1e-4;

type Variant = { gamma?: number; skipTanh?: boolean };

/** Replays a case: the stored initial weights and batches, the library's module, loss and Adam. */
async function replay(c: TrajectoryCase, variant: Variant = {}) {
  const { learners: n, classes: m } = c;
  const s = c.labels.length;
  const probs = float32FromBase64(c.probs_f32);
  assertEquals(probs.length, s * n * m, "probabilities in the fixture");
  const model = new flannel.NeuralWeightModule({ learners: n, classes: m, activation: c.activation });
  model.loadStateDict({
    "dense.weight": { dtype: "F32", shape: [n, (n * m) ** 2], data: float32FromBase64(c.dense_weight_f32) },
    "dense.bias": { dtype: "F32", shape: [n], data: float32FromBase64(c.dense_bias_f32) },
  });
  const optimizer = new fl.optim.Adam(model.parameters(), { lr: c.lr, weightDecay: c.weight_decay });
  const probsT = fl.tensor(probs, [s, n, m]).keep();
  const labelsT = fl.intTensor(Int32Array.from(c.labels)).keep();
  const lossSum = fl.zeros([1]).keep();
  const losses: number[] = [];
  model.train();
  try {
    for (const order of c.orders) {
      assertEquals(order.length, s, "an epoch's order covers the training set size");
      const index = fl.intTensor(Int32Array.from(order)).keep();
      for (let start = 0; start < s; start += c.batch_size) {
        const count = Math.min(c.batch_size, s - start);
        fl.train.trainStep(
          optimizer,
          () => {
            const batch = fl.F.gatherRows(probsT, index, start, count);
            // a deliberately wrong module for the power checks: the dense output used as weights untouched
            const logits = variant.skipTanh
              ? fl.F.weightedSum(model.dense.forward(fl.F.outer(fl.F.reshape(batch, [count, n * m]))), batch)
              : model.forward(batch);
            const y = fl.F.gatherRows(labelsT, index, start, count);
            return c.loss === "focal"
              ? fl.F.focalLoss(logits, y, { gamma: variant.gamma ?? c.gamma!, alpha: c.alpha! })
              : fl.F.crossEntropy(logits, y);
          },
          lossSum,
          1,
        );
        losses.push(await fl.train.takeEpochLoss(lossSum));
      }
      index.dispose();
    }
    const sd = await model.downloadStateDict();
    return {
      losses,
      weight: Float32Array.from(sd["dense.weight"].data as ArrayLike<number>),
      bias: Float32Array.from(sd["dense.bias"].data as ArrayLike<number>),
    };
  } finally {
    probsT.dispose();
    labelsT.dispose();
    lossSum.dispose();
    optimizer.dispose();
    model.dispose();
  }
}

function maxRelDiff(a: ArrayLike<number>, e: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < e.length; i++) worst = Math.max(worst, Math.abs(a[i] - e[i]) / Math.abs(e[i]));
  return worst;
}
function maxAbsDiff(a: ArrayLike<number>, e: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < e.length; i++) worst = Math.max(worst, Math.abs(a[i] - e[i]));
  return worst;
}

test("the trajectory fixture: 3 cases of 20 steps, focal (gamma 3, stage 2's default) and cross-entropy", () => {
  assertEquals(trajectories.cases.map((c) => c.name), [
    "focal_tanh_defaults",
    "ce_tanh_balanced_order",
    "focal_softmax_lr1e-2_wd",
  ]);
  for (const c of trajectories.cases) {
    assertEquals(c.losses.length, 20, `${c.name}: steps`);
    if (c.loss === "focal") {
      assertEquals(c.gamma, 3, `${c.name}: gamma`);
      // the fixture's alpha is what trainStage2 would use on these labels
      assertClose(c.alpha!, flannel.inverseFrequencyAlpha(c.labels, c.classes), { rtol: 1e-6, atol: 0 });
    }
  }
  const balanced = trajectories.cases[1];
  assert(
    balanced.orders.some((o) => new Set(o).size < o.length),
    "the balanced-order case repeats samples within an epoch",
  );
});

for (const c of trajectories.cases) {
  test(`NWM training trajectory matches PyTorch step by step: ${c.name}`, async () => {
    const run = await replay(c);
    const lossDiff = maxRelDiff(run.losses, c.losses);
    const finalWeight = float32FromBase64(c.final_dense_weight_f32);
    const weightDiff = maxAbsDiff(run.weight, finalWeight),
      biasDiff = maxAbsDiff(run.bias, c.final_dense_bias);
    console.log(
      `  ${c.name}: losses max rel diff ${lossDiff.toExponential(2)}, weights max abs diff ${
        weightDiff.toExponential(2)
      }, bias ${biasDiff.toExponential(2)}`,
    );
    for (let k = 0; k < c.losses.length; k++) {
      assertClose(run.losses[k], c.losses[k], {
        rtol: LOSS_RTOL,
        atol: 0,
        msg: `${c.name}: loss at step ${k}`,
      });
    }
    assertClose(run.weight, finalWeight, {
      rtol: WEIGHT_RTOL,
      atol: WEIGHT_ATOL,
      msg: `${c.name}: final dense.weight`,
    });
    assertClose(run.bias, c.final_dense_bias, {
      rtol: WEIGHT_RTOL,
      atol: WEIGHT_ATOL,
      msg: `${c.name}: final dense.bias`,
    });

    // The tolerances have power: the training moved the weights by far more than they allow, and the losses
    // a step later (one batch off) are far outside the loss tolerance.
    const initial = float32FromBase64(c.dense_weight_f32);
    assert(maxAbsDiff(finalWeight, initial) > 100 * WEIGHT_ATOL, `${c.name}: the weights barely moved`);
    const shifted = c.losses.slice(1).map((v, k) => Math.abs(v - c.losses[k]) / Math.abs(c.losses[k]));
    assert(Math.max(...shifted) > 100 * LOSS_RTOL, `${c.name}: consecutive losses too close to tell apart`);
  });
}

test("the trajectory checks catch a wrong focal gamma and a missing tanh", async () => {
  const focal = trajectories.cases[0];
  const wrongGamma = await replay(focal, { gamma: 2 }); // focalLoss's own default, not stage 2's
  const gammaDiff = maxRelDiff(wrongGamma.losses, focal.losses);
  assert(gammaDiff > 100 * LOSS_RTOL, `gamma 2 instead of 3 changes the losses by only ${gammaDiff}`);
  const noTanh = await replay(trajectories.cases[1], { skipTanh: true });
  const tanhDiff = maxRelDiff(noTanh.losses, trajectories.cases[1].losses);
  assert(tanhDiff > 100 * LOSS_RTOL, `dropping tanh changes the losses by only ${tanhDiff}`);
});
