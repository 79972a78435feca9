// FLANNEL's stage 2: the Neural Weight Module against PyTorch, the baselines, the trainer's promises
// (determinism, best epoch, focal loss on imbalanced data), and its errors on bad input.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";
import {
  assert,
  assertClose,
  assertEquals,
  assertRejects,
  assertThrows,
  test,
  writeArtifact,
} from "./harness.ts";

await fl.init();
const here = dirname(fileURLToPath(import.meta.url));

interface T {
  shape: number[];
  data: number[];
}
interface NwmCase {
  name: string;
  activation: "tanh" | "softmax";
  P: T;
  dense_weight: T;
  dense_bias: T;
  logits: T;
  target: number[];
  alpha: number[];
  gamma: number;
  loss: number;
  grad_dense_weight: T;
  grad_dense_bias: T;
  grad_P: T;
}
const goldens = JSON.parse(readFileSync(join(here, "fixtures", "goldens.json"), "utf8")) as {
  nwm: NwmCase[];
};

for (const c of goldens.nwm) {
  test(`NeuralWeightModule forward and gradients match PyTorch: ${c.name}`, async () => {
    const [, n, m] = c.P.shape;
    const model = new flannel.NeuralWeightModule({ learners: n, classes: m, activation: c.activation });
    model.loadStateDict({
      "dense.weight": { dtype: "F32", shape: c.dense_weight.shape, data: c.dense_weight.data },
      "dense.bias": { dtype: "F32", shape: c.dense_bias.shape, data: c.dense_bias.data },
    });
    await fl.scope(async () => {
      const p = fl.tensor(c.P.data, c.P.shape, { requiresGrad: true });
      const logits = model.forward(p);
      assertEquals(logits.shape, c.logits.shape);
      assertClose(await logits.toArray(), c.logits.data, { rtol: 1e-5, atol: 1e-6, msg: "logits" });
      const loss = fl.F.focalLoss(logits, c.target, { gamma: c.gamma, alpha: c.alpha });
      assertClose(await loss.item(), c.loss, { rtol: 1e-5, msg: "loss" });
      loss.backward();
      assertClose(await model.dense.weight.grad!.toArray(), c.grad_dense_weight.data, {
        rtol: 1e-5,
        atol: 1e-7,
        msg: "dense.weight grad",
      });
      assertClose(await model.dense.bias!.grad!.toArray(), c.grad_dense_bias.data, {
        rtol: 1e-5,
        atol: 1e-7,
        msg: "dense.bias grad",
      });
      assertClose(await p.grad!.toArray(), c.grad_P.data, { rtol: 1e-5, atol: 1e-7, msg: "P grad" });
    });
    model.dispose();
  });
}

test("NeuralWeightModule state dict has PyTorch's keys and shapes", () => {
  const model = new flannel.NeuralWeightModule({ learners: 5, classes: 4 });
  const sd = model.stateDict();
  assertEquals(Object.keys(sd), ["dense.weight", "dense.bias"]);
  assertEquals(sd["dense.weight"].shape, [5, 400]);
  assertEquals(sd["dense.bias"].shape, [5]);
  assertEquals(model.parameterCount(), 5 * 400 + 5);
  model.dispose();
});

test("loadStateDict lists every missing key, unexpected key and shape mismatch in one error", () => {
  const model = new flannel.MLPStacking({ learners: 5, classes: 4, layers: 2, hidden: 8 });
  assertEquals(Object.keys(model.stateDict()), ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]);
  assertThrows(
    () =>
      model.loadStateDict({
        "net.0.weight": { dtype: "F32", shape: [8, 21], data: new Float32Array(168) },
        "net.9.bias": { dtype: "F32", shape: [4], data: new Float32Array(4) },
      }),
    /missing keys: net\.0\.bias, net\.2\.weight, net\.2\.bias \| unexpected keys: net\.9\.bias \| shape mismatches: net\.0\.weight: checkpoint \[8, 21\], model \[8, 20\]/,
  );
  model.dispose();
});

test("soft voting is the mean of the learners' probabilities", async () => {
  const data = flannel.syntheticLearnerOutputs({ samples: 7, seed: 4 });
  const voting = new flannel.SoftVoting({ learners: 5, classes: 4 });
  const probs = await flannel.predictStage2(voting, data);
  const expected = new Float32Array(7 * 4);
  for (let s = 0; s < 7; s++) {
    for (let m = 0; m < 4; m++) {
      let acc = 0;
      for (let i = 0; i < 5; i++) acc += data.probs[(s * 5 + i) * 4 + m];
      expected[s * 4 + m] = acc / 5;
    }
  }
  assertClose(probs, expected, { rtol: 1e-6 });
});

test("MLP stacking with 1 and 2 layers: shapes, parameter counts, probabilities summing to one", async () => {
  const data = flannel.syntheticLearnerOutputs({ samples: 9, seed: 5 });
  for (const [layers, params] of [[1, 20 * 4 + 4], [2, 20 * 16 + 16 + 16 * 4 + 4]] as const) {
    const model = new flannel.MLPStacking({ learners: 5, classes: 4, layers, hidden: 16 });
    assertEquals(model.parameterCount(), params);
    const probs = await flannel.predictStage2(model, data);
    for (let s = 0; s < 9; s++) {
      assertClose(probs.slice(s * 4, s * 4 + 4).reduce((a, b) => a + b, 0), 1, { rtol: 1e-6 });
    }
    model.dispose();
  }
});

test("the tanh Neural Weight Module's output is sum_i w_i P_i with |w_i| <= 1", async () => {
  const data = flannel.syntheticLearnerOutputs({ samples: 6, seed: 6 });
  const model = new flannel.NeuralWeightModule({ learners: 5, classes: 4, generator: new fl.Generator(1) });
  await fl.scope(async () => {
    const p = fl.tensor(data.probs, [6, 5, 4]);
    const w = await model.learnerWeights(p).toArray();
    const logits = await model.forward(p).toArray();
    assert(w.every((v) => Math.abs(v) <= 1), "tanh weights within [-1, 1]");
    for (let s = 0; s < 6; s++) {
      for (let m = 0; m < 4; m++) {
        let acc = 0;
        for (let i = 0; i < 5; i++) acc += w[s * 5 + i] * data.probs[(s * 5 + i) * 4 + m];
        assertClose(logits[s * 4 + m], acc, { rtol: 1e-5, atol: 1e-6 });
      }
    }
  });
  model.dispose();
});

// The paper's imbalance (covid ~1.7%): focal loss with inverse-frequency alpha should serve the minority
// class better than plain cross-entropy. Seeded, so the comparison is reproducible.
test("on imbalanced learner outputs FLANNEL with focal loss beats cross-entropy on covid F1", async () => {
  const train = flannel.syntheticLearnerOutputs({ samples: 2000, seed: 1 });
  const val = flannel.syntheticLearnerOutputs({ samples: 500, seed: 2 });
  const test = flannel.syntheticLearnerOutputs({ samples: 2000, seed: 3 });
  const covidF1 = async (loss: "focal" | "ce") => {
    const run = await flannel.trainStage2(train, val, { method: "flannel", loss, epochs: 8, seed: 7 });
    const report = fl.metrics.classificationReport(
      test.labels,
      await flannel.predictStage2(run.model, test),
    );
    run.model.dispose();
    return report.perClass.covid.f1;
  };
  const focal = await covidF1("focal"), ce = await covidF1("ce");
  assert(
    focal > ce,
    `covid F1 with focal loss ${focal.toFixed(4)} should exceed cross-entropy's ${ce.toFixed(4)}`,
  );
});

test("stage 2 training is deterministic for a seed, keeps its best epoch, and every method runs", async () => {
  const train = flannel.syntheticLearnerOutputs({ samples: 400, seed: 11 });
  const val = flannel.syntheticLearnerOutputs({ samples: 150, seed: 12 });
  const summary: Record<string, unknown> = {};
  for (
    const config of [
      { method: "voting" },
      { method: "mlp1", loss: "ce" },
      { method: "mlp2", loss: "ce" },
      { method: "flannel", loss: "ce" },
      { method: "flannel", loss: "ce", resample: true },
      { method: "flannel", loss: "focal" },
      { method: "flannel", loss: "focal", activation: "softmax" },
    ] as flannel.Stage2Config[]
  ) {
    const runs = [];
    for (let r = 0; r < 2; r++) {
      const run = await flannel.trainStage2(train, val, { ...config, epochs: 4, batchSize: 32, seed: 3 });
      runs.push({
        history: run.history,
        f1: run.valReport.macroF1,
        best: run.bestEpoch,
        probs: await flannel.predictStage2(run.model, val),
      });
      run.model.dispose();
    }
    const name = JSON.stringify(config);
    assertEquals(runs[1].history, runs[0].history, `${name} history`);
    assertClose(runs[1].probs, runs[0].probs, { rtol: 0, atol: 0, msg: `${name} probabilities` });
    if (config.method !== "voting") {
      const bestF1 = Math.max(...runs[0].history.map((h) => h.valMacroF1));
      assertEquals(runs[0].f1, bestF1, `${name}: the kept epoch has the best validation macro-F1`);
      assertEquals(runs[0].history[runs[0].best - 1].valMacroF1, bestF1);
      assert(
        runs[0].history.every((h) => Number.isFinite(h.trainLoss) && h.trainLoss > 0),
        `${name}: finite losses`,
      );
    }
    summary[name] = {
      history: runs[0].history,
      f1: runs[0].f1,
      probsHead: Array.from(runs[0].probs.slice(0, 8)),
    };
  }
  // tests/both.ts compares this file between Deno and Bun: one seeded run must agree in both runtimes.
  writeArtifact("stage2", summary);
});

test("inverse-frequency alpha sums to M and weights rare classes up; absent classes get 0", () => {
  const alpha = flannel.inverseFrequencyAlpha([0, 1, 1, 1, 2, 2, 2, 2, 2, 2], 4);
  assertClose(alpha.reduce((a, b) => a + b, 0), 4, { rtol: 1e-12 });
  assertClose(alpha, [
    4 * 1 / (1 + 1 / 3 + 1 / 6),
    4 * (1 / 3) / (1 + 1 / 3 + 1 / 6),
    4 * (1 / 6) / (1 + 1 / 3 + 1 / 6),
    0,
  ], { rtol: 1e-12 });
});

test("stage 2 rejects bad input with a message that names the problem", async () => {
  const good = flannel.syntheticLearnerOutputs({ samples: 20, seed: 1 });
  const withProbs = (f: (p: Float32Array) => void) => {
    const probs = good.probs.slice();
    f(probs);
    return { ...good, probs };
  };
  const run = (train: flannel.LearnerOutputs, config: Partial<flannel.Stage2Config> = {}) =>
    flannel.trainStage2(train, good, { method: "flannel", epochs: 1, ...config });
  await assertRejects(
    () => run(withProbs((p) => (p[13] = NaN))),
    /probability NaN at sample 0, learner 3, class 1/,
  );
  await assertRejects(() => run(withProbs((p) => (p[0] = 1.5))), /not in \[0, 1\]/);
  await assertRejects(
    () => run({ ...good, labels: good.labels.map((y, i) => (i === 4 ? 7 : y)) }),
    /label 7 of sample 4 is outside 0\.\.3/,
  );
  await assertRejects(
    () => run({ ...good, probs: good.probs.subarray(0, 10) }),
    /probs hold 10 values, expected/,
  );
  await assertRejects(
    () => run({ probs: new Float32Array(0), labels: new Int32Array(0), learners: 5, classes: 4 }),
    /empty/,
  );
  await assertRejects(() => run(good, { method: "boosting" as "flannel" }), /unknown method "boosting"/);
  await assertRejects(() => run(good, { epochs: -1 }), /epochs must be a non-negative integer/);
  const model = new flannel.NeuralWeightModule({ learners: 5, classes: 4 });
  assertThrows(
    () => model.forward(fl.zeros([2, 4, 4])),
    /learner probabilities \[batch, 5, 4\], got \[2, 4, 4\]/,
  );
  assertThrows(() => model.forward(fl.zeros([0, 5, 4])), /empty batch/);
  assertThrows(
    () => new flannel.NeuralWeightModule({ learners: 5, classes: 4, activation: "relu" as "tanh" }),
    /activation must be/,
  );
  model.dispose();
});

// A training loop must reuse pooled buffers: after warm-up, 200 more steps allocate nothing new.
test("200 training steps: the pool's live bytes and device buffers do not grow", async () => {
  const model = new flannel.NeuralWeightModule({ learners: 5, classes: 4, generator: new fl.Generator(2) });
  const opt = new fl.optim.Adam(model.parameters(), { lr: 1e-3 });
  const data = flannel.syntheticLearnerOutputs({ samples: 32, seed: 9 });
  const x = fl.tensor(data.probs, [32, 5, 4]).keep();
  const step = () =>
    fl.scope(() => {
      const loss = fl.F.focalLoss(model.forward(x), data.labels, { gamma: 3, alpha: [1, 1, 1, 1] });
      opt.zeroGrad();
      loss.backward();
      opt.step();
    });
  for (let i = 0; i < 5; i++) step();
  await fl.syncDevice();
  const before = fl.poolStats(), tensorsBefore = fl.liveTensorCount();
  for (let i = 0; i < 200; i++) step();
  await fl.syncDevice();
  const after = fl.poolStats();
  assertEquals(after.liveBytes, before.liveBytes, "live bytes");
  assertEquals(after.created, before.created, "device buffers created");
  assertEquals(fl.liveTensorCount(), tensorsBefore, "live tensors");
  assert(
    after.submits - before.submits < 20,
    `200 steps took ${after.submits - before.submits} submits (batched: expected few)`,
  );
  x.dispose();
  opt.dispose();
  model.dispose();
});
