// Class activation maps: Grad-CAM equals the original CAM (fc weights times feature maps) on a learner
// whose head is global average pooling and one Linear; the model is left as it was; every learner has the
// feature-map split.
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";
import { assert, assertClose, assertEquals, assertRejects, test } from "./harness.ts";

await fl.init();

function image(size: number, seed: number): fl.io.GrayImage {
  const gen = new fl.Generator(seed);
  return { width: size, height: size, data: Float32Array.from({ length: size * size }, () => gen.uniform()) };
}

test("Grad-CAM of a tiny ResNet = CAM of Zhou et al.: relu(sum_k W[c,k] A_k), scaled to [0, 1]", async () => {
  const model = fl.models.resnet152({ numClasses: 4, scale: "tiny", generator: new fl.Generator(2) });
  model.train();
  const img = image(64, 5);
  let supported = 0;
  for (const classIndex of [undefined, 0, 1, 2, 3]) {
    const cam = await fl.train.classActivationMap(model, img, { crop: 64, classIndex });
    // the reference: feature maps and fc weights read back, the map made on the CPU
    const x = fl.tensor(fl.data.makeBatch([img], [0], { crop: 64, train: false }), [1, 3, 64, 64]);
    model.eval();
    const maps = fl.noGrad(() => model.featureMaps(x));
    const a = await maps.toArray(), wFc = await model.fc.weight.toArray();
    const logits = await fl.noGrad(() => model.forward(x)).toArray();
    model.train();
    const [, channels, h, w] = maps.shape;
    const predicted = Array.from(logits).indexOf(Math.max(...logits));
    const c = classIndex ?? predicted;
    assertEquals(cam.classIndex, c);
    const ref = new Float64Array(h * w);
    for (let k = 0; k < channels; k++) {
      for (let i = 0; i < h * w; i++) ref[i] += wFc[c * channels + k] * a[k * h * w + i];
    }
    const top = Math.max(...ref.map((v) => Math.max(v, 0)));
    assertEquals([cam.map.width, cam.map.height], [w, h]);
    assertClose(cam.map.data, Array.from(ref, (v) => (top > 0 ? Math.max(v, 0) / top : 0)), { atol: 1e-5 });
    if (top > 0) supported++;
    const sumP = cam.probs.reduce((s, p) => s + p, 0);
    assertClose(sumP, 1, { atol: 1e-5 });
  }
  assert(supported > 0, "no class has positive support anywhere: the comparison would be vacuous");
  // the model is as it was: training mode, parameters trainable, no gradients left behind
  assert(model.training, "training mode restored");
  assert(model.parameters().every((p) => p.requiresGrad && p.grad === null), "parameters untouched");
  await assertRejects(
    () => fl.train.classActivationMap(model, img, { crop: 64, classIndex: 4 }),
    /class 4 is outside 0..3/,
  );
  model.dispose();
});

test("every learner has the featureMaps/classify split, and forward = classify(featureMaps)", async () => {
  for (const arch of flannel.LEARNER_ARCHS) {
    const model = flannel.createLearner(arch, { scale: "tiny", seed: 1 });
    model.eval();
    assert(fl.train.isCamModel(model), arch);
    const x = fl.tensor(fl.data.makeBatch([image(64, 1)], [0], { crop: 64, train: false }), [1, 3, 64, 64]);
    const direct = await fl.noGrad(() => model.forward(x)).toArray();
    const split = await fl.noGrad(() => model.classify(model.featureMaps(x))).toArray();
    assertClose(split, direct, { msg: arch });
    const cam = await fl.train.classActivationMap(model, image(64, 1), { crop: 64 });
    assert(cam.map.data.every((v) => v >= 0 && v <= 1), arch);
    model.dispose();
  }
});
