// Gradient accumulation and the memory a step holds:
// - fl.train.trainStep with parts replays PyTorch's own accumulation loop (tests/fixtures/accumulation.json,
//   tests/fixtures/make_accumulation.py): a conv net with batch norm, class-weighted cross-entropy, Adam,
//   batches of 8 as 2 micro-batches of 4, three steps: the losses, the weights and batch norm's running
//   statistics (each micro-batch normalised by its own statistics, the running ones updated per micro-batch);
// - without batch statistics, accumulation equals the whole batch up to float32 summation order, in
//   trainStep and in trainStage1 (both augmentations: the CPU batch sliced, the device batch gathered);
// - trainStage1's accumulate is checked, saved with the checkpoint and refused on resume when it differs;
// - backward({ freeActivations }) frees a graph's intermediates and nothing else, with the same gradients;
// - stepPeakBytes leaves the model as it found it; planAccumulation's choices.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
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
  float32FromBase64,
  test,
} from "./harness.ts";

await fl.init();
const here = dirname(fileURLToPath(import.meta.url));
const golden = JSON.parse(readFileSync(join(here, "fixtures", "accumulation.json"), "utf8")) as {
  batch: number;
  parts: number;
  side: number;
  classWeights: number[];
  initial: Record<string, { shape: number[]; data: string }>;
  batches: { x: string; y: number[] }[];
  losses: number[];
  final: Record<string, { shape: number[]; data: string }>;
};

/** The fixture's net: Conv2d 3->4 3x3 pad 1 without bias, [BatchNorm2d], ReLU, global average pool, Linear 4->4. */
function smallNet(batchNorm: boolean): fl.nn.Sequential {
  const layers: fl.nn.Module[] = [new fl.nn.Conv2d(3, 4, 3, { padding: 1, bias: false })];
  if (batchNorm) layers.push(new fl.nn.BatchNorm2d(4));
  layers.push(new fl.nn.ReLU(), new fl.nn.AdaptiveAvgPool2d(1), new fl.nn.Flatten(), new fl.nn.Linear(4, 4));
  return new fl.nn.Sequential(...layers);
}

/** The fixture's initial weights, keyed for `net` (without batch norm the linear layer is index 4). */
function initialWeights(batchNorm: boolean): fl.nn.StateDict {
  const out: fl.nn.StateDict = {};
  for (const [key, { shape, data }] of Object.entries(golden.initial)) {
    const [index, name] = key.split(".");
    if (!batchNorm && index === "1") continue;
    const at = !batchNorm && index === "5" ? "4" : index;
    const values = float32FromBase64(data);
    out[`${at}.${name}`] = name === "num_batches_tracked"
      ? { dtype: "I32", shape, data: Int32Array.from(values) }
      : { dtype: "F32", shape, data: values };
  }
  return out;
}

/**
 * Trains `net` on the fixture's batches with trainStep: `parts` micro-batches, each part's weighted mean times
 * its share of the batch's class weight (as the fixture's loop). Returns the steps' losses.
 */
async function replay(net: fl.nn.Module, parts: number): Promise<number[]> {
  const optimizer = new fl.optim.Adam(net.parameters(), { lr: 1e-2, weightDecay: 1e-4 });
  const lossSum = fl.zeros([1]).keep();
  const w = golden.classWeights, side = golden.side;
  const losses: number[] = [];
  try {
    for (const batch of golden.batches) {
      const x = float32FromBase64(batch.x), y = Int32Array.from(batch.y);
      const ranges = fl.train.microBatches(y.length, parts);
      const whole = y.reduce((a, c) => a + w[c], 0);
      const health = fl.train.trainStep(
        optimizer,
        (part) => {
          const [start, end] = ranges[part];
          const image = 3 * side * side;
          const logits = net.forward(
            fl.tensor(x.subarray(start * image, end * image), [end - start, 3, side, side]),
          );
          const ys = y.subarray(start, end);
          const share = ys.reduce((a, c) => a + w[c], 0) / whole;
          return fl.F.scale(fl.F.crossEntropy(logits, ys, { weight: w }), share);
        },
        lossSum,
        1,
        net.parameters(),
        parts,
      )!;
      losses.push(await health.loss.item());
      assert(Number.isFinite(await health.health.item()), "the step's health is finite");
      health.loss.dispose();
      health.health.dispose();
    }
    assertClose(await lossSum.item(), losses.reduce((a, b) => a + b, 0), { rtol: 1e-6, msg: "lossSum" });
  } finally {
    optimizer.dispose();
    lossSum.dispose();
  }
  return losses;
}

// Tolerances: float32 forward and backward of a 27-term convolution and a 4-way softmax, against PyTorch's
// float32 CPU kernels (other summation orders), measured on wasm and WebGPU (lavapipe): losses within 1.8e-7
// relative, weights within 2.2e-7 after three Adam steps at lr 1e-2 (a step moves a weight by up to 1e-2).
// The bounds are about 10x that; whole batches instead of micro-batches land more than 30x the bound away
// (checked below). The library against itself, parts against whole batches without batch norm: 1.5e-8 measured
// in trainStep, 1.9e-9 in trainStage1; bound 3e-7.
const LOSS_RTOL = 2e-6, WEIGHT_ATOL = 2e-6, SELF_ATOL = 3e-7;

test("trainStep with parts replays PyTorch's accumulation loop: batch norm per micro-batch", async () => {
  await fl.scope(async () => {
    const net = smallNet(true);
    net.loadStateDict(initialWeights(true));
    net.train();
    const losses = await replay(net, golden.parts);
    assertClose(losses, golden.losses, { rtol: LOSS_RTOL, atol: 0, msg: "the steps' summed losses" });
    const got = await net.downloadStateDict();
    for (const [key, { data }] of Object.entries(golden.final)) {
      const want = float32FromBase64(data);
      assertClose(Array.from(got[key].data as ArrayLike<number>, Number), want, {
        atol: WEIGHT_ATOL,
        rtol: 0,
        msg: key,
      });
    }
    assertEquals(
      Number((got["1.num_batches_tracked"].data as Int32Array)[0]),
      golden.batches.length * golden.parts,
    );
    // the same steps on whole batches (batch norm over 8 images) land elsewhere: the comparison has power
    const whole = smallNet(true);
    whole.loadStateDict(initialWeights(true));
    await replay(whole, 1);
    const wholeWeights = await whole.downloadStateDict();
    const moved = Math.max(
      ...Array.from(
        wholeWeights["0.weight"].data as Float32Array,
        (v, i) => Math.abs(v - float32FromBase64(golden.final["0.weight"].data)[i]),
      ),
    );
    assert(moved > 30 * WEIGHT_ATOL, `whole batches moved the conv weights by only ${moved}`);
    net.dispose();
    whole.dispose();
  });
});

test("trainStep with parts: without batch statistics, the whole batch's step up to summation order", async () => {
  await fl.scope(async () => {
    const results: Record<string, fl.nn.TensorRecord>[] = [];
    const losses: number[][] = [];
    for (const parts of [1, 2, 4]) {
      const net = smallNet(false);
      net.loadStateDict(initialWeights(false));
      losses.push(await replay(net, parts));
      results.push(await net.downloadStateDict());
      net.dispose();
    }
    for (const k of [1, 2]) {
      assertClose(losses[k], losses[0], { rtol: 1e-6, atol: 0, msg: `losses, ${[1, 2, 4][k]} parts` });
      for (const key of Object.keys(results[0])) {
        assertClose(results[k][key].data as Float32Array, results[0][key].data as Float32Array, {
          atol: SELF_ATOL,
          rtol: 0,
          msg: `${key}, ${[1, 2, 4][k]} parts`,
        });
      }
    }
  });
});

test("backward({ freeActivations }): intermediates go, leaves, the root and kept tensors stay; same gradients", async () => {
  await fl.scope(async () => {
    const grads: Float32Array[] = [];
    for (const freeActivations of [false, true]) {
      const w = fl.tensor([0.5, -1, 2, 0.25], [2, 2], { requiresGrad: true });
      const x = fl.tensor([1, 2, 3, 4], [2, 2]);
      const h = fl.F.matmul(x, w);
      const r = fl.F.relu(h);
      const kept = fl.F.tanh(r).keep();
      const loss = fl.F.sum(fl.F.mul(kept, r));
      loss.backward({ freeActivations });
      assertEquals([h.disposed, r.disposed], [freeActivations, freeActivations], "the intermediates");
      assert(!kept.disposed && !loss.disposed && !w.disposed && !x.disposed, "kept, root and leaves stay");
      grads.push(await w.grad!.toArray() as Float32Array);
      kept.dispose();
    }
    assertEquals(Array.from(grads[1]), Array.from(grads[0]), "the gradients");
  });
});

test("stepPeakBytes: the peak grows with the images; the model is left as it was", async () => {
  await fl.scope(async () => {
    const net = smallNet(true);
    net.loadStateDict(initialWeights(true));
    const before = await net.downloadStateDict();
    const x = float32FromBase64(golden.batches[0].x), y = Int32Array.from(golden.batches[0].y);
    const side = golden.side, image = 3 * side * side;
    const peak = (n: number) =>
      fl.train.stepPeakBytes(
        net,
        () =>
          fl.F.crossEntropy(
            net.forward(fl.tensor(x.subarray(0, n * image), [n, 3, side, side])),
            y.subarray(0, n),
          ),
      );
    const live = fl.poolStats().liveBytes;
    const two = await peak(2), eight = await peak(8);
    assert(two > live && eight > two, `peaks ${two} (2 images) and ${eight} (8) over ${live} live before`);
    assertEquals(await net.downloadStateDict(), before, "weights and running statistics unchanged");
    for (const p of net.parameters()) {
      assert((await p.grad!.toArray()).every((v) => v === 0), "gradients zeroed");
    }
    net.dispose();
  });
});

test("planAccumulation: the fewest micro-batches that fit, micro-batches of two at least, an error past that", () => {
  assertEquals(fl.train.microBatches(10, 3), [[0, 4], [4, 7], [7, 10]]);
  assertEquals(fl.train.microBatches(8, 2), [[0, 4], [4, 8]]);
  assertThrows(() => fl.train.microBatches(2, 3), /3 parts of 2 rows/);
  // 100 fixed + 10 per image, reserve 20, limit 200 (180 usable): 16 images need 280; 6 per part fit (180)
  const probes = [{ images: 2, peakBytes: 120 }, { images: 4, peakBytes: 140 }] as const;
  const plan = fl.train.planAccumulation(16, probes, { limitBytes: 200, reserveBytes: 20 });
  assertEquals(plan, { parts: 3, microBatch: 6, predictedBytes: 180, wholeBatchBytes: 280 });
  assertEquals(fl.train.planAccumulation(16, probes, { limitBytes: 1000, reserveBytes: 20 }).parts, 1);
  // 15 kept free: 165 usable, so 5 per part (4 parts of 4: 160)
  assertEquals(
    fl.train.planAccumulation(16, probes, { limitBytes: 200, reserveBytes: 20, slackBytes: 15 }),
    { parts: 4, microBatch: 4, predictedBytes: 160, wholeBatchBytes: 280 },
  );
  assertThrows(
    () => fl.train.planAccumulation(16, probes, { limitBytes: 150, reserveBytes: 20 }),
    /even with micro-batches of 2 images/,
  );
});

// ---------------------------------------------------------------- trainStage1's accumulate

/** 16 gray 12x12 images of four classes (a class shifts the mean), reproducible. */
function grayImages(count: number): { images: fl.io.GrayImage[]; labels: Int32Array } {
  const gen = new fl.Generator(3);
  const labels = Int32Array.from({ length: count }, (_, i) => i % 4);
  const images = Array.from(labels, (c) => ({
    width: 12,
    height: 12,
    data: Float32Array.from({ length: 144 }, () => Math.min(1, Math.max(0, 0.2 * c + 0.3 * gen.uniform()))),
  }));
  return { images, labels };
}

/** Trains a small net (fixture weights) for two epochs of batches of 8 on `set`; its final weights. */
async function stage1Weights(
  set: { images: fl.io.GrayImage[]; labels: Int32Array },
  batchNorm: boolean,
  augment: fl.data.AugmentMode,
  accumulate: number,
): Promise<Record<string, fl.nn.TensorRecord>> {
  const net = smallNet(batchNorm);
  net.loadStateDict(initialWeights(batchNorm));
  try {
    const result = await flannel.trainStage1({
      model: net,
      train: set,
      val: set,
      epochs: 2,
      stopAfterEpoch: 2,
      batchSize: 8,
      crop: 8,
      augment,
      accumulate,
      recipe: { classWeights: [3, 1, 0.5, 2] },
    });
    assertEquals(result.accumulate, accumulate);
    return await net.downloadStateDict();
  } finally {
    net.dispose();
  }
}

test("trainStage1 accumulate: without batch statistics it equals whole batches, CPU and device batches", async () => {
  const set = grayImages(16);
  for (const augment of ["basic", "paper"] as const) {
    const whole = await stage1Weights(set, false, augment, 1);
    const parts = await stage1Weights(set, false, augment, 2);
    for (const key of Object.keys(whole)) {
      assertClose(parts[key].data as Float32Array, whole[key].data as Float32Array, {
        atol: SELF_ATOL,
        rtol: 0,
        msg: `${augment}: ${key}`,
      });
    }
  }
  // with batch norm the micro-batches' own statistics show: the batches did split
  const whole = await stage1Weights(set, true, "basic", 1),
    parts = await stage1Weights(set, true, "basic", 2);
  const moved = Math.max(
    ...Array.from(
      parts["0.weight"].data as Float32Array,
      (v, i) => Math.abs(v - (whole["0.weight"].data as Float32Array)[i]),
    ),
  );
  assert(moved > 100 * SELF_ATOL, `with batch norm, micro-batches moved the weights by only ${moved}`);
});

test("trainStage1 accumulate: checked, kept in the checkpoint, another refused on resume, auto adopts it", async () => {
  const set = grayImages(16);
  const dir = mkdtempSync(join(tmpdir(), "fl-accumulate-"));
  const notices: string[] = [];
  try {
    const run = (
      accumulate: number | "auto",
      options: { resume?: boolean; stopAfterEpoch?: number } = {},
    ) => {
      const net = smallNet(true);
      net.loadStateDict(initialWeights(true));
      return flannel.trainStage1({
        model: net,
        train: set,
        val: set,
        epochs: 2,
        batchSize: 8,
        crop: 8,
        accumulate,
        checkpointPath: join(dir, "ckpt.safetensors"),
        onNotice: (m) => notices.push(m),
        ...options,
      }).finally(() => net.dispose());
    };
    await assertRejects(() => run(5), /accumulate must be "auto" or an integer from 1 to 4 \(batch 8/);
    await assertRejects(() => run(0), /accumulate must be/);
    assertEquals((await run(2, { stopAfterEpoch: 1 })).accumulate, 2);
    await assertRejects(() => run(1, { resume: true }), /was trained with accumulate 2, this run has 1/);
    const resumed = await run("auto", { resume: true });
    assertEquals([resumed.accumulate, resumed.history.length], [2, 2]);
    // a fresh "auto" run of a small model fits whole: no probe splits it, nothing is said
    assertEquals((await run("auto")).accumulate, 1);
    assertEquals(notices, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
