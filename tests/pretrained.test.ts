// Pretrained weights from a folder such as torchvision's hub cache: which file each learner takes, the hash in
// a hub name, DenseNet's old keys (a torch.save file with the key pattern of torchvision's published
// densenet161 file, against PyTorch's features), Inception's transform_input folded into the weights (an
// invariant: the same logits as the model that applies it), a file of another architecture, and the CLI's
// check before anything trains.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";
import { assert, assertClose, assertEquals, assertRejects, assertThrows, test } from "./harness.ts";
import { chestxray64, startCli } from "./cli_children.ts";

await fl.init();
const fixtures = join(dirname(fileURLToPath(import.meta.url)), "fixtures");
const legacyPth = join(fixtures, "pretrained_densenet_legacy.pth");
const golden = JSON.parse(readFileSync(join(fixtures, "pretrained_densenet_legacy.json"), "utf8")) as {
  keys: number;
  renamed: number;
  input: { shape: number[]; data: number[] };
  features: { shape: number[]; data: number[] };
};
const dir = mkdtempSync(join(tmpdir(), "fl-pretrained-"));
test.afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** `name` in a new folder, with `bytes`; returns the folder. */
function folderWith(files: Record<string, Uint8Array | string>): string {
  const d = mkdtempSync(join(dir, "d-"));
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(d, name), bytes);
  return d;
}

const sha8 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex").slice(0, 8);

test("findPretrained: <arch>.safetensors, .pth, .pt in that order, else torchvision's hub names", () => {
  const d = folderWith({
    "resnet152-394f9c45.pth": "x",
    "densenet161.pt": "x",
    "densenet161-8d451a50.pth": "x",
    "inception_v3_google-0cc3c7bd.pth": "x",
    "efficientnet_b4_rwightman-23ab8bcd.pth": "x",
    "vgg19_bn.safetensors": "x",
    "vgg19_bn.pth": "x",
    "resnext101_32x8d-8ba56ff5.pth": "x",
    "resnext101_32x8d-110c445d.pth": "x",
  });
  assertEquals(flannel.findPretrained(d, "resnet152"), join(d, "resnet152-394f9c45.pth"));
  assertEquals(flannel.findPretrained(d, "densenet161"), join(d, "densenet161.pt"));
  assertEquals(flannel.findPretrained(d, "inception_v3"), join(d, "inception_v3_google-0cc3c7bd.pth"));
  assertEquals(flannel.findPretrained(d, "aicovid"), join(d, "efficientnet_b4_rwightman-23ab8bcd.pth"));
  assertEquals(flannel.findPretrained(d, "vgg19_bn"), join(d, "vgg19_bn.safetensors"));
  assertEquals(flannel.findPretrained(d, "covidnet"), null);
  assertThrows(
    () => flannel.findPretrained(d, "resnext101_32x8d"),
    `pretrained weights: 2 files in ${d} fit resnext101_32x8d (resnext101_32x8d-110c445d.pth, ` +
      "resnext101_32x8d-8ba56ff5.pth); keep one, or name the one to use resnext101_32x8d.pth",
  );
});

test("pretrainedFiles: a learner without a file is an error naming what was looked for; baselines may lack one", () => {
  const d = folderWith({ "resnet152-394f9c45.pth": "x" });
  const found = flannel.pretrainedFiles(d, ["resnet152", "covidnet", "aicovid"]);
  assertEquals([...found.entries()], [["resnet152", join(d, "resnet152-394f9c45.pth")]]);
  assertThrows(
    () => flannel.pretrainedFiles(d, ["resnet152", "densenet161", "inception_v3"]),
    `pretrained weights: ${d} has no file for densenet161 (densenet161.safetensors, densenet161.pth, ` +
      "densenet161.pt, densenet161-<hash>.pth); inception_v3 (inception_v3.safetensors, inception_v3.pth, " +
      "inception_v3.pt, inception_v3_google-<hash>.pth)",
  );
  assertThrows(
    () => flannel.pretrainedFiles(join(d, "nope"), ["resnet152"]),
    `${join(d, "nope")} is not a folder`,
  );
});

test("DenseNet: torchvision's old keys are renamed; the features equal PyTorch's; the other head is dropped", async () => {
  const bytes = readFileSync(legacyPth);
  const d = folderWith({ [`densenet161-${sha8(bytes)}.pth`]: bytes });
  const path = flannel.findPretrained(d, "densenet161")!;
  const model = fl.models.densenet161({ scale: "tiny", numClasses: 4 });
  try {
    const load = await flannel.loadPretrained(model, path);
    assertEquals(load.notes, [
      `renamed ${golden.renamed} keys of torchvision's old DenseNet pattern (norm.1 -> norm1)`,
    ]);
    assertEquals(load.unused, ["classifier.weight [10, 136]", "classifier.bias [10]"]);
    assertEquals(load.loaded, golden.keys - 2);
    assertEquals(load.kept.filter((k) => !k.endsWith("num_batches_tracked")), [
      "classifier.weight",
      "classifier.bias",
    ]);
    assertEquals(
      flannel.pretrainedMessage("densenet161", path, load),
      `densenet161: ${
        golden.keys - 2
      } tensors from ${path}; renamed ${golden.renamed} keys of torchvision's old ` +
        "DenseNet pattern (norm.1 -> norm1); dropped from the file: classifier.weight [10, 136], classifier.bias [10]; " +
        "fresh head: classifier.weight, classifier.bias",
    );
    model.eval();
    const features = await fl.scope(() =>
      fl.noGrad(() => {
        const x = fl.tensor(Float32Array.from(golden.input.data), golden.input.shape);
        const maps = fl.F.relu(model.features.forward(x));
        return fl.F.flatten(fl.F.adaptiveAvgPool2d(maps, [1, 1]), 1);
      }).toArray()
    );
    assertClose(features, golden.features.data, { rtol: 1e-4, atol: 1e-5, msg: "features against PyTorch" });
  } finally {
    model.dispose();
  }
});

test("a hub-named file whose SHA-256 disagrees with its name is refused", async () => {
  const d = folderWith({ "densenet161-0badc0de.pth": readFileSync(legacyPth) });
  const model = fl.models.densenet161({ scale: "tiny", numClasses: 4 });
  try {
    await assertRejects(
      () => flannel.loadPretrained(model, join(d, "densenet161-0badc0de.pth")),
      `pretrained weights: ${join(d, "densenet161-0badc0de.pth")} is damaged: its SHA-256 begins ${
        sha8(readFileSync(legacyPth))
      }, its name says 0badc0de (an interrupted download? fetch it again)`,
    );
  } finally {
    model.dispose();
  }
});

test("a file of another architecture is refused, naming the tensors that do not fit", async () => {
  const model = fl.models.resnet152({ scale: "tiny", numClasses: 4 });
  try {
    await assertRejects(
      () => flannel.loadPretrained(model, legacyPth),
      new RegExp(
        `^pretrained weights: ${legacyPth.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} does not fit the model ` +
          "\\(another architecture\\?\\): \\d+ of its \\d+ tensors are missing or of another shape: conv1.weight " +
          "\\[8, 3, 7, 7\\]: not in the file; ",
      ),
    );
  } finally {
    model.dispose();
  }
});

test("Inception: transform_input folded into the weights gives the logits of the model that applies it", async () => {
  const withTransform = fl.models.inception_v3({
    scale: "tiny",
    numClasses: 4,
    auxLogits: false,
    transformInput: true,
    generator: new fl.Generator(5),
  });
  const learner = flannel.createLearner("inception_v3", { scale: "tiny", seed: 9 });
  try {
    // batch-norm statistics other than 0 and 1, so that the running mean's shift matters
    const state = Object.fromEntries(
      await Promise.all(
        Object.entries(withTransform.stateDict()).map(async ([k, t]) => {
          const data = t.dtype === "int32" ? await t.toInt32Array() : await t.toArray();
          if (k.endsWith("running_mean")) data.forEach((_, i) => (data[i] = Math.sin(i + 1) * 0.3));
          if (k.endsWith("running_var")) data.forEach((_, i) => (data[i] = 1 + Math.cos(i) * 0.4));
          return [k, { dtype: t.dtype === "int32" ? "I32" : "F32", shape: t.shape, data }];
        }),
      ),
    );
    withTransform.loadStateDict(state);
    const path = join(dir, "inception_v3.safetensors");
    await fl.io.saveSafetensors(path, state);
    const load = await flannel.loadPretrained(learner, path);
    assertEquals(load.notes, ["folded torchvision's transform_input into Conv2d_1a_3x3"]);
    const x = fl.randn([2, 3, 96, 96], { seed: 3 });
    for (const mode of ["eval", "train"] as const) {
      // training mode: batch statistics (which remove the folded shift), without the head's random dropout
      for (const m of [withTransform, learner as fl.models.Inception3]) {
        m.train(mode === "train").dropout.eval();
      }
      const [a, b] = await fl.scope(() => {
        const [ya, yb] = fl.noGrad(() => [withTransform.forward(x), learner.forward(x)]);
        return Promise.all([ya.toArray(), yb.toArray()]);
      });
      assertClose(b, a, { rtol: 1e-4, atol: 1e-5, msg: `${mode} mode` });
      assert(a.some((v) => Math.abs(v) > 1e-3), "logits far from zero");
    }
    x.dispose();
  } finally {
    withTransform.dispose();
    learner.dispose();
  }
});

// The CLI runs on WebAssembly whatever this run's backend: once per runtime is enough.
test.when(fl.backendInfo()?.backend === "wasm", "the CLI check runs in the WebAssembly runs")(
  "CLI: --pretrained with a learner lacking a file stops before anything trains; a hub file is taken",
  async () => {
    const bytes = readFileSync(legacyPth);
    const hub = join(dir, "hub");
    mkdirSync(hub);
    const densenetFile = join(hub, `densenet161-${sha8(bytes)}.pth`);
    copyFileSync(legacyPth, densenetFile);
    const common = [
      "--data",
      chestxray64,
      "--subsample",
      "covid=20,viral=20,bacterial=20,normal=20",
      "--folds",
      "2",
    ];
    const missing = await startCli([
      "stage1",
      ...common,
      ...["--archs", "densenet161,resnet152", "--out", join(dir, "run-missing"), "--pretrained", hub],
    ]).done;
    assertEquals(missing.code, 2, missing.output);
    assert(
      missing.output.includes(
        `flannel: stage1: pretrained weights: ${hub} has no file for resnet152 (resnet152.safetensors, ` +
          "resnet152.pth, resnet152.pt, resnet152-<hash>.pth)",
      ),
      missing.output,
    );
    const run = await startCli([
      "stage1",
      ...common,
      ...["--archs", "densenet161", "--epochs", "1", "--out", join(dir, "run"), "--pretrained", hub],
      ...["--backend", "wasm"],
    ]).done;
    assertEquals(run.code, 0, run.output);
    assert(run.output.includes(`pretrained: densenet161 <- ${densenetFile}`), run.output);
    assert(
      run.output.includes(
        `densenet161: ${golden.keys - 2} tensors from ${densenetFile}; renamed ${golden.renamed}`,
      ),
      run.output,
    );
  },
  { timeoutS: 600 },
);

test("strict loadStateDict takes a file without num_batches_tracked (torchvision's published weights), nothing else missing", async () => {
  const model = fl.models.densenet161({ scale: "tiny", numClasses: 10 });
  try {
    const { dict } = fl.models.renameLegacyDenseNetKeys(await fl.io.loadTorch(legacyPth));
    const { missing } = model.loadStateDict(dict);
    assert(missing.length > 0 && missing.every((k) => k.endsWith("num_batches_tracked")), missing.join(", "));
    const { "classifier.bias": _, ...withoutBias } = dict;
    assertThrows(
      () => model.loadStateDict(withoutBias),
      /^loadStateDict into DenseNet: missing keys: classifier\.bias$/,
    );
  } finally {
    model.dispose();
  }
});
