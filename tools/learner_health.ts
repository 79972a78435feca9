// Why a learner does or does not train: its signal at initialisation and its first steps, on real images.
//   deno task health [--data DIR] [--archs LIST] [--steps N] [--lr X] [--batch N] [--seed S]
//                    [--covidnet-init signal|default] [--aicovid-dropout P] [--backend wasm|webgpu]
// Per learner (tiny, crop 64, 4 classes), on a class-balanced batch of the data's images (centre crops):
// - each convolution's and linear layer's output at initialisation (training mode, as the first step sees
//   it): its rms, and its between-image rms (the rms of the output less its mean over the batch: what
//   depends on the image). A network whose between-image rms falls to nothing gives every image the same
//   logits, and its gradients cannot tell the classes apart;
// - each weight's gradient norm after one backward pass of the cross-entropy, against the weight's norm;
// - dropout noise: two training-mode passes of the same batch differ only by their dropout and
//   stochastic-depth draws; the rms of that difference (over sqrt 2) against the logits' between-image rms
//   (near 1: the masks move the logits as much as the images do);
// - the loss curve of the first N Adam steps (default 120: about the README's experiment's 3 epochs) (the trainer's: lr, weight decay 1e-4, the basic augmentation)
//   on batches of the training images, then eval-mode accuracy, macro-F1 and the classes predicted on the
//   test part of the experiment's split (patient-disjoint, seed --seed).
// Layers are listed at most 14 a model, evenly spaced from the first to the last.
// --covidnet-init default: COVID-Net with PyTorch's layer defaults (the reference's, before issue 29);
// --aicovid-dropout 0.5: the tiny AI-Covid with the full model's dropout (before issue 29).
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    data: { type: "string", default: "../shared/data/chestxray64" },
    archs: { type: "string", default: "covidnet,aicovid" },
    steps: { type: "string", default: "120" },
    lr: { type: "string", default: "0.003" },
    batch: { type: "string", default: "16" },
    seed: { type: "string", default: "0" },
    "covidnet-init": { type: "string", default: "signal" },
    "aicovid-dropout": { type: "string" },
    backend: { type: "string", default: "wasm" },
  },
});
const steps = Number(values.steps), lr = Number(values.lr), batch = Number(values.batch);
const seed = Number(values.seed), crop = 64, rows = 14;
if (!(batch >= 4 && batch % 4 === 0)) throw new Error(`--batch must be a multiple of 4, got ${values.batch}`);
const covidnetInit = values["covidnet-init"];
if (covidnetInit !== "signal" && covidnetInit !== "default") {
  throw new Error(`--covidnet-init must be signal or default, got ${JSON.stringify(covidnetInit)}`);
}
const info = await fl.init({ backend: values.backend as "wasm" | "webgpu" });
console.log(`backend: ${info.backend} (${info.adapter ?? info.runtime})`);

const dataset = fl.data.loadDataset([values.data]);
const cache = new fl.data.ImageCache(Math.round(crop * 8 / 7));
const images = await cache.getAll(dataset.records);
const labels = dataset.records.map((r) => r.label);
// The experiment's patient-disjoint split: the probe batch (batch / 4 images of each class) and the Adam
// steps' batches come from the training part, the accuracy after them is the test part's.
const split = fl.data.patientSplit(dataset.records, { seed });
const trainIds = split.train, heldOut = split.test;
const probe = [0, 1, 2, 3].flatMap((c) => trainIds.filter((i) => labels[i] === c).slice(0, batch / 4));
const centre = (ids: number[]) =>
  fl.tensor(fl.data.makeBatch(images, ids, { crop, train: false }), [ids.length, 3, crop, crop]);

function build(arch: string): fl.nn.Module {
  const common = { numClasses: 4, scale: "tiny" as const, generator: new fl.Generator(seed) };
  if (arch === "covidnet") {
    return fl.models.covidnet({ ...common, inputSize: crop, init: covidnetInit as "signal" });
  }
  if (arch === "aicovid" && values["aicovid-dropout"] !== undefined) {
    return fl.models.aicovid({ ...common, inputSize: crop, dropout: Number(values["aicovid-dropout"]) });
  }
  return flannel.createLearner(arch, { scale: "tiny", crop, seed });
}

/** rms of `a` [n, ...] and rms of `a` less its mean over the n rows. */
function spread(a: Float32Array, n: number): [number, number] {
  const per = a.length / n, mean = new Float64Array(per);
  for (let i = 0; i < a.length; i++) mean[i % per] += a[i] / n;
  let all = 0, between = 0;
  for (let i = 0; i < a.length; i++) (all += a[i] * a[i], between += (a[i] - mean[i % per]) ** 2);
  return [Math.sqrt(all / a.length), Math.sqrt(between / a.length)];
}

const norm = (a: Float32Array) => Math.sqrt(a.reduce((s, v) => s + v * v, 0));
const spaced = <T>(xs: T[]) =>
  xs.length <= rows
    ? xs
    : Array.from({ length: rows }, (_, i) => xs[Math.round((i * (xs.length - 1)) / (rows - 1))]);
const e = (v: number) => v.toExponential(2);

for (const arch of values.archs.split(",")) {
  const model = build(arch);
  console.log(
    `\n## ${flannel.LEARNER_TITLES[arch as flannel.Stage1Arch] ?? arch}, tiny, crop ${crop}, batch ${batch}`,
  );
  // Every Conv2d and Linear records its output during one training-mode pass.
  const outputs: [string, fl.Tensor][] = [];
  const restore: (() => void)[] = [];
  const hook = (m: fl.nn.Module, name: string) => {
    for (const [k, child] of m.namedChildren()) hook(child, name ? `${name}.${k}` : k);
    if (m instanceof fl.nn.Conv2d || m instanceof fl.nn.Linear) {
      const forward = m.forward;
      m.forward = (x: fl.Tensor) => {
        const y = forward.call(m, x);
        outputs.push([name, y]);
        return y;
      };
      restore.push(() => (m.forward = forward));
    }
  };
  hook(model, "");
  await fl.scope(async () => {
    model.train();
    const x = centre(probe);
    const loss = fl.F.crossEntropy(model.forward(x), probe.map((i) => labels[i]));
    loss.backward();
    console.log(`initial loss ${(await loss.item()).toFixed(3)} (ln 4 = 1.386)`);
    console.log("| layer | output | rms | between-image rms | share |\n|---|---|---|---|---|");
    for (const [name, y] of spaced(outputs)) {
      const [all, between] = spread(await y.toArray(), y.shape[0]);
      console.log(
        `| ${name} | ${y.shape.join("x")} | ${e(all)} | ${e(between)} | ${(between / all).toFixed(3)} |`,
      );
    }
    console.log("\n| weight | gradient norm | weight norm | ratio |\n|---|---|---|---|");
    const weights = [...model.namedParameters()].filter(([k, p]) => k.endsWith("weight") && p.rank >= 2);
    for (const [name, p] of spaced(weights)) {
      const g = norm(await p.grad!.toArray()), w = norm(await p.toArray());
      console.log(`| ${name} | ${e(g)} | ${e(w)} | ${e(g / w)} |`);
    }
    const [a, b] = [await model.forward(x).toArray(), await model.forward(x).toArray()];
    const noise = Math.sqrt(a.reduce((s, v, i) => s + (v - b[i]) ** 2, 0) / a.length / 2);
    const [, signal] = spread(a, probe.length);
    console.log(
      `\ndropout noise of the logits ${e(noise)}, their between-image rms ${e(signal)}: ratio ${
        (noise / signal).toFixed(2)
      }`,
    );
  });
  restore.forEach((r) => r());

  const optimizer = new fl.optim.Adam(model.trainableParameters(), { lr, weightDecay: 1e-4 });
  const generator = new fl.Generator(seed + 1);
  const curve: string[] = [];
  model.train();
  for (let step = 1; step <= steps; step++) {
    const ids = Array.from(
      { length: batch },
      () => trainIds[Math.floor(generator.uniform() * trainIds.length)],
    );
    const loss = await fl.scope(async () => {
      optimizer.zeroGrad();
      const x = fl.tensor(fl.data.makeBatch(images, ids, { crop, train: true, generator }), [
        batch,
        3,
        crop,
        crop,
      ]);
      const l = fl.F.crossEntropy(model.forward(x), ids.map((i) => labels[i]));
      l.backward();
      optimizer.step();
      return await l.item();
    });
    if (step % Math.max(1, Math.round(steps / 10)) === 0 || step === 1) {
      curve.push(`${step}: ${loss.toFixed(3)}`);
    }
  }
  model.eval();
  const probs = await fl.scope(() =>
    fl.noGrad(() => fl.F.softmax(model.forward(centre(heldOut)), 1)).toArray()
  );
  const report = fl.metrics.classificationReport(heldOut.map((i) => labels[i]), probs);
  const predicted = new Set(fl.metrics.argmaxRows(probs, 4));
  console.log(`\nloss over ${steps} Adam steps (lr ${lr}): ${curve.join(", ")}`);
  console.log(
    `test part after them (${heldOut.length} images): accuracy ${report.accuracy.toFixed(3)}, macro-F1 ${
      report.macroF1.toFixed(3)
    }, classes predicted ${[...predicted].sort().map((c) => fl.metrics.CLASS_NAMES[c]).join(", ")}`,
  );
  optimizer.dispose();
  model.dispose();
}
