// The ONNX export of a FLANNEL ensemble of full-size learners (224x224), past protobuf's 2 GB: the five
// learners with seeded weights on each of `--folds` folds (default 2: about 2.7 GB) and a seeded Neural
// Weight Module per fold, exported with flannel.exportOnnx (the weights go to OUT.onnx.data), then run in
// onnxruntime on real X-rays and compared with flannel.predictFiles on the same models. Prints the file
// sizes, the times and the largest difference; exits 1 when it passes 1e-4. Needs a few GB of disk in the
// temporary folder and about 8 GB of memory.
//   deno task bench:onnx [--folds N] [--images N]
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import process from "node:process";
import * as ort from "onnxruntime-node";
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";

const arg = (name: string, fallback: number) => {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? Number(process.argv[at + 1]) : fallback;
};
const folds = Array.from({ length: arg("folds", 2) }, (_, f) => f), count = arg("images", 4);
const info = await fl.init();
const dataDir = resolve(import.meta.dirname ?? ".", "..", "..", "shared", "data", "chestxray", "images");
const files = readdirSync(dataDir).filter((f) => f.endsWith(".png")).sort().slice(0, count)
  .map((f) => join(dataDir, f));
const archs = [...flannel.LEARNER_ARCHS];
const classes = fl.metrics.CLASS_NAMES.length;

// A run's trained models as predict and exportOnnx read them, with seeded weights instead of trained ones.
const models: flannel.TrainedModels = {
  source: "seeded full-size learners",
  settings: {
    archs,
    baselines: [],
    scale: "full",
    crop: 224,
    resize: 256,
    equalize: false,
    lungCrop: false,
    folds,
  },
  loadLearner: (arch, fold) =>
    Promise.resolve(
      flannel.createLearner(arch, { scale: "full", seed: 10 * fold + (archs as string[]).indexOf(arch) }),
    ),
  async loadCombiner(fold, method) {
    const config: flannel.Stage2Config = { method: "flannel" };
    const nwm = flannel.buildEnsemble(config, archs.length, classes, new fl.Generator(100 + fold));
    try {
      const state: Record<string, fl.nn.TensorRecord> = {};
      for (const [k, t] of Object.entries(nwm.stateDict())) {
        state[k] = { dtype: "F32", shape: t.shape, data: await t.toArray() };
      }
      return { method, config, state, temperature: null }; // untrained: nothing to calibrate
    } finally {
      nwm.dispose();
    }
  },
  learnerTemperature: () => null,
};

const dir = mkdtempSync(join(tmpdir(), "fl-onnx-ensemble-"));
try {
  const path = join(dir, "ensemble.onnx");
  let t0 = performance.now();
  const saved = await flannel.exportOnnx(models, path);
  const exportS = (performance.now() - t0) / 1000;
  console.log(
    `${archs.length} full-size learners x ${folds.length} folds (${info.runtime}, ${info.backend}): exported in ${
      exportS.toFixed(1)
    } s: ${path} ${(saved.bytes / 2 ** 20).toFixed(2)} MiB + ${
      (saved.externalDataBytes / 2 ** 30).toFixed(2)
    } GiB in ${saved.externalDataPath} (${saved.nodes} nodes, ${saved.initializers} initializers)`,
  );
  t0 = performance.now();
  const want = await flannel.predictFiles(models, files);
  const predictS = (performance.now() - t0) / 1000;
  const images = await fl.data.loadImages(want.files.map((file) => ({ file })), { resize: 256 });
  const x = fl.data.makeBatch(images, Int32Array.from(images.keys()), { crop: 224, train: false });
  t0 = performance.now();
  const session = await ort.InferenceSession.create(path);
  const loadS = (performance.now() - t0) / 1000;
  t0 = performance.now();
  const out = await session.run({ input: new ort.Tensor("float32", x, [images.length, 3, 224, 224]) });
  const runS = (performance.now() - t0) / 1000;
  await session.release();
  const got = out.probs.data as Float32Array;
  let diff = 0;
  for (let i = 0; i < got.length; i++) diff = Math.max(diff, Math.abs(got[i] - want.probs[i]));
  console.log(
    `${images.length} X-rays: predict ${predictS.toFixed(1)} s, onnxruntime load ${
      loadS.toFixed(1)
    } s + run ${runS.toFixed(1)} s; max |predict - onnxruntime| = ${diff.toExponential(2)}`,
  );
  if (!(diff <= 1e-4)) process.exitCode = 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
