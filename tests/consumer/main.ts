// A user's script, as tests/consumer.ts runs it from a folder where the packed package was installed: it
// imports the library by its package name and trains a step (a loss and its gradients checked against a
// float64 reference computed here, then a tiny FLANNEL learner's forward, backward and two Adam steps), and
// exports the learner to ONNX, and classifies an image with the weights shipped in the package.
// It prints one JSON line for the comparison between runtimes and backends, and exits 1 on a wrong value.
//   deno run -A main.ts wasm|webgpu     bun main.ts wasm|webgpu     node main.js wasm
import process from "node:process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as fl from "flannel-webgpu";
import * as flannel from "flannel-webgpu/flannel";

const backend = process.argv[2] as "webgpu" | "wasm";
const info = await fl.init({ backend });
const problems: string[] = [];
const close = (what: string, got: number, want: number, tol: number) => {
  if (!(Math.abs(got - want) <= tol * Math.max(1, Math.abs(want)))) {
    problems.push(`${what}: ${got}, expected ${want}`);
  }
};

// Cross-entropy of a linear layer, and its gradient (softmax - onehot)^T x / N, against float64 here.
const N = 8, D = 3, C = 4;
const labels = [0, 1, 2, 3, 3, 2, 1, 0];
const x = fl.randn([N, D], { seed: 1 });
const w = fl.randn([C, D], { seed: 2, requiresGrad: true });
const xs = await x.toArray(), ws = await w.toArray();
const ce = await fl.scope(async () => {
  const loss = fl.F.crossEntropy(fl.F.linear(x, w), labels);
  loss.backward();
  return await loss.item();
});
const gw = await w.grad!.toArray();
let refLoss = 0;
const refGrad = new Float64Array(C * D);
for (let n = 0; n < N; n++) {
  const z = Array.from(
    { length: C },
    (_, c) => xs[n * D] * ws[c * D] + xs[n * D + 1] * ws[c * D + 1] + xs[n * D + 2] * ws[c * D + 2],
  );
  const m = Math.max(...z);
  const sum = z.reduce((s, v) => s + Math.exp(v - m), 0);
  refLoss += (Math.log(sum) + m - z[labels[n]]) / N;
  for (let c = 0; c < C; c++) {
    const p = Math.exp(z[c] - m) / sum - (c === labels[n] ? 1 : 0);
    for (let d = 0; d < D; d++) refGrad[c * D + d] += p * xs[n * D + d] / N;
  }
}
close("cross-entropy", ce, refLoss, 1e-5);
gw.forEach((g, i) => close(`dL/dw[${i}]`, g, refGrad[i], 1e-5));

// A tiny ResNet-152 learner of the FLANNEL application: forward, backward, two Adam steps on one batch.
const model = flannel.createLearner("resnet152", { scale: "tiny", seed: 7 });
const before = await model.parameters()[0].toArray();
const optimizer = new fl.optim.Adam(model.parameters(), { lr: 1e-3 });
const images = fl.randn([4, 3, 32, 32], { seed: 3 });
const losses: number[] = [];
for (let step = 0; step < 2; step++) {
  losses.push(
    await fl.scope(async () => {
      const loss = fl.F.crossEntropy(model.forward(images), [0, 1, 2, 3]);
      optimizer.zeroGrad();
      loss.backward();
      optimizer.step();
      return await loss.item();
    }),
  );
}
const after = await model.parameters()[0].toArray();
if (!losses.every(Number.isFinite)) problems.push(`learner losses not finite: ${losses}`);
// Adam's first step moves every parameter with a non-zero gradient by about lr.
const moved = before.reduce((m, v, i) => Math.max(m, Math.abs(v - after[i])), 0);
if (!(moved > 5e-4 && moved < 3e-3)) {
  problems.push(`first conv weight moved by ${moved} after two Adam steps of lr 1e-3`);
}

// The trained learner as ONNX (protobufjs is a dependency of the package): a ModelProto whose first field is
// ir_version 8 and whose producer is the package; its length does not depend on the values.
const onnx = await fl.onnx.exportModel(model, { input: [1, 3, 32, 32] });
if (
  onnx[0] !== 0x08 || onnx[1] !== fl.onnx.IR_VERSION ||
  !new TextDecoder().decode(onnx).includes("flannel-webgpu")
) {
  problems.push(`the ONNX export does not begin with ir_version ${fl.onnx.IR_VERSION} and name its producer`);
}

// The weights shipped in the package: a chest-X-ray-like gray PNG (a bright field with two dark lungs),
// classified by the five tiny learners x 5 folds and FLANNEL, with no training and no experiment folder.
const side = 96;
const pixels = Float32Array.from({ length: side * side }, (_, i) => {
  const x = (i % side) / side - 0.5, y = Math.floor(i / side) / side - 0.5;
  const lung = Math.min((x - 0.2) ** 2 + y ** 2 / 2, (x + 0.2) ** 2 + y ** 2 / 2) < 0.02;
  return lung ? 0.15 + 0.1 * y : 0.7 - 0.3 * Math.abs(x);
});
const png = join(mkdtempSync(join(tmpdir(), "xray-")), "xray.png");
writeFileSync(png, fl.io.encodePngGray({ width: side, height: side, data: pixels }));
const shipped = [...(await flannel.predictFiles(flannel.loadBundle(flannel.SHIPPED_BUNDLE), [png])).probs];
close("shipped weights: probabilities sum", shipped.reduce((a, b) => a + b, 0), 1, 1e-5);

console.log(
  JSON.stringify({
    runtime: info.runtime,
    backend: info.backend,
    ce,
    gradW: [...gw],
    losses,
    moved,
    onnxBytes: onnx.length,
    shipped,
  }),
);
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
