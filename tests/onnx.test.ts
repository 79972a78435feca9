// ONNX export (fl.onnx) checked by a real ONNX runtime (onnxruntime-node, its CPU build): the seven stage-1
// learners (tiny, crop 64: the shipped bundle's trained weights for the five FLANNEL learners, seeded ones
// with random BN statistics for COVID-Net and AI-Covid) exported at batch 1 and run at batch 8 on real
// X-rays of ../shared/data give the library's logits within 1e-4; every op translation against the library
// on odd shapes (ceil-mode pooling, transposed products, reductions); the file's header (opset, IR version,
// dynamic batch, metadata, producer); refusals (an op without translation, training-mode BN, random draws);
// external data, the spill file, and a graph of two learners and three combiners from the Trace API.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as ort from "onnxruntime-node";
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";
import { protobuf } from "../src/npm.ts";
import { ONNX_PROTO } from "../src/onnx/onnx_proto.ts";
import { assert, assertEquals, AssertionError, assertRejects, assertThrows, test } from "./harness.ts";
import { PYTHON, pythonImports, startCli } from "./cli_children.ts";

await fl.init();
const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const dataDir = resolve(repo, "..", "shared", "data", "chestxray");
const tmp = mkdtempSync(join(tmpdir(), "fl-onnx-"));
const CROP = 64, BATCH = 8;
/** The largest difference allowed between the library's logits and onnxruntime's. */
const TOLERANCE = 1e-4;

/** ModelProto decoded with the embedded schema, int64s as numbers. */
// deno-lint-ignore no-explicit-any
function decodeModel(bytes: Uint8Array): any {
  const type = protobuf.parse(ONNX_PROTO).root.lookupType("onnx.ModelProto");
  return type.toObject(type.decode(bytes), { longs: Number, bytes: Array, defaults: false });
}

/** Runs an ONNX model (file or bytes) in onnxruntime on float32 inputs; returns its outputs by name. */
async function runOnnx(
  model: string | Uint8Array,
  feeds: Record<string, { data: Float32Array; dims: number[] }>,
): Promise<Record<string, { data: Float32Array; dims: readonly number[] }>> {
  // A path lets onnxruntime find an external data file beside the model; the two are separate overloads.
  const session = typeof model === "string"
    ? await ort.InferenceSession.create(model)
    : await ort.InferenceSession.create(model);
  try {
    const inputs = Object.fromEntries(
      Object.entries(feeds).map(([name, { data, dims }]) => [name, new ort.Tensor("float32", data, dims)]),
    );
    const outputs = await session.run(inputs);
    return Object.fromEntries(
      Object.entries(outputs).map(([name, t]) => [name, { data: t.data as Float32Array, dims: t.dims }]),
    );
  } finally {
    await session.release();
  }
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new AssertionError(`lengths ${a.length} and ${b.length} differ`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return Number.isNaN(worst) ? Infinity : worst;
}

const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);

/** The library's output of `model` on `x` [B, 3, CROP, CROP], in eval mode and without gradients. */
function libraryForward(model: fl.nn.Module, x: Float32Array, batch: number): Promise<Float32Array> {
  model.eval();
  return fl.scope(() => fl.noGrad(() => model.forward(fl.tensor(x, [batch, 3, CROP, CROP]))).toArray());
}

/** 8 real X-rays (2 per class), resized to 73 and centre-cropped to 64 as stage 1 does for the bundle. */
let batchCache: Float32Array | null = null;
/** The files of {@link xrayBatch}, in its order. */
let xrayFiles: string[] = [];
async function xrayBatch(): Promise<Float32Array> {
  if (batchCache) return batchCache;
  if (!existsSync(join(dataDir, "labels.csv"))) {
    throw new AssertionError(
      `test data missing: ${dataDir} (these tests need ../shared/data next to the repo; see its README)`,
    );
  }
  const { records } = fl.data.loadDataset([dataDir]);
  const picked = fl.metrics.CLASS_NAMES.flatMap((_, c) => records.filter((r) => r.label === c).slice(0, 2));
  assertEquals(picked.length, BATCH);
  xrayFiles = picked.map((r) => r.file);
  const images = await fl.data.loadImages(picked, { resize: 73 });
  batchCache = fl.data.makeBatch(images, Int32Array.from(images.keys()), { crop: CROP, train: false });
  return batchCache;
}

/** Running statistics drawn away from (0, 1), so that eval-mode BN is not an identity to the test. */
function randomizeRunningStats(model: fl.nn.Module, seed: number): void {
  const gen = new fl.Generator(seed);
  const dict: fl.nn.StateDict = {};
  for (const [name, t] of model.namedBuffers()) {
    const stat = name.endsWith("running_mean") ? "mean" : name.endsWith("running_var") ? "var" : null;
    if (!stat) continue;
    const data = Float32Array.from(
      { length: t.size },
      () => stat === "mean" ? (gen.uniform() - 0.5) * 0.2 : 0.5 + gen.uniform(),
    );
    dict[name] = { dtype: "F32", shape: [...t.shape], data };
  }
  model.loadStateDict(dict, { strict: false });
}

const bundle = flannel.loadBundle(flannel.SHIPPED_BUNDLE);

/** The learner as tests export it: the bundle's fold-0 weights where it ships them, else seeded. */
async function learner(arch: flannel.Stage1Arch): Promise<fl.nn.Module> {
  if ((bundle.settings.archs as readonly string[]).includes(arch)) {
    return await bundle.loadLearner(arch, 0);
  }
  const model = flannel.createLearner(arch, { scale: "tiny", crop: CROP, seed: 1 });
  randomizeRunningStats(model, 2);
  return model;
}

test("the embedded onnx.proto is ONNX's file verbatim; the producer version is the package's", () => {
  assertEquals(
    createHash("sha256").update(ONNX_PROTO).digest("hex"),
    "9fa5aa32d49d358a1cc8f661af67d9e674e246aa95fcaa5d2f552baf44be875b",
  );
  const deno = JSON.parse(readFileSync(join(repo, "deno.json"), "utf8"));
  assertEquals(fl.onnx.PRODUCER, { name: "flannel-webgpu", version: deno.version });
  assertEquals([fl.onnx.OPSET, fl.onnx.IR_VERSION], [17, 8]);
});

/** Max |library - onnxruntime| per learner, printed at the end. */
const measured: Record<string, { maxDiff: number; maxLogit: number; bytes: number }> = {};

for (const arch of [...flannel.LEARNER_ARCHS, ...flannel.BASELINE_ARCHS]) {
  test(
    `${arch} (tiny): exported at batch 1, run in onnxruntime at batch ${BATCH} on real X-rays: logits within ${TOLERANCE}`,
    async () => {
      const x = await xrayBatch();
      const model = await learner(arch);
      try {
        model.train();
        const path = join(tmp, `${arch}.onnx`);
        const live = fl.liveTensorCount();
        const info = await fl.onnx.exportModel(model, {
          input: [1, 3, CROP, CROP],
          path,
          metadata: { arch, crop: String(CROP) },
        });
        assertEquals(fl.liveTensorCount(), live, "tensors left alive by the export");
        assert(model.training, "the training flag is restored");
        assertEquals(info.bytes, statSync(path).size);
        assertEquals([info.external, info.externalDataPath], [false, null]);
        assertEquals(readdirSync(tmp).filter((f) => f.endsWith(".tmp")), [], "no temporary file left");

        const expected = await libraryForward(model, x, BATCH);
        const { logits } = await runOnnx(path, { input: { data: x, dims: [BATCH, 3, CROP, CROP] } });
        assertEquals(logits.dims, [BATCH, 4]);
        const maxDiff = maxAbsDiff(logits.data, expected), maxLogit = maxAbs(expected);
        measured[arch] = { maxDiff, maxLogit, bytes: info.bytes };
        assert(maxDiff <= TOLERANCE, `${arch}: max |library - onnxruntime| = ${maxDiff}`);
        assert(maxLogit > 0.01, `${arch}: logits up to ${maxLogit} are too small to compare`);

        const proto = decodeModel(readFileSync(path));
        assertEquals([proto.irVersion, proto.opsetImport], [8, [{ domain: "", version: 17 }]]);
        assertEquals([proto.producerName, proto.producerVersion], [
          fl.onnx.PRODUCER.name,
          fl.onnx.PRODUCER.version,
        ]);
        assertEquals(proto.metadataProps, [{ key: "arch", value: arch }, { key: "crop", value: "64" }]);
        const [input] = proto.graph.input, [output] = proto.graph.output;
        assertEquals(input.name, "input");
        assertEquals(input.type.tensorType.shape.dim, [
          { dimParam: "batch" },
          ...[3, CROP, CROP].map((d) => ({ dimValue: d })),
        ]);
        assertEquals(output.type.tensorType.shape.dim, [{ dimParam: "batch" }, { dimValue: 4 }]);
        assertEquals(info.nodes, proto.graph.node.length);
        // Parameters and buffers keep their state-dict names (BN running statistics included).
        const initializers = new Set(proto.graph.initializer.map((i: { name: string }) => i.name));
        const stateNames = Object.keys(model.stateDict()).filter((k) => !k.endsWith("num_batches_tracked"));
        assertEquals(stateNames.filter((k) => !initializers.has(k)), [], "state-dict entries missing");
      } finally {
        model.dispose();
      }
    },
    { timeoutS: 600 },
  );
}

test.afterAll(() => {
  console.log(`ONNX vs library, batch ${BATCH} on real X-rays (${fl.backendInfo()?.backend}):`);
  for (const [arch, m] of Object.entries(measured)) {
    console.log(
      `  ${arch}: max diff ${m.maxDiff.toExponential(2)}, max |logit| ${
        m.maxLogit.toFixed(3)
      }, ${m.bytes} bytes`,
    );
  }
  rmSync(tmp, { recursive: true, force: true });
});

/** Every op translation on one odd-sized input: the graph's outputs against the library's, at batch 2. */
function opCases(x: fl.Tensor, w: Record<string, fl.Tensor>): Record<string, fl.Tensor> {
  const F = fl.F;
  const positive = F.addScalar(F.abs(x), 0.5);
  const pooled = F.mean(x, [2, 3]); // [B, 3]
  const rows = F.reshape(x, [x.shape[0], 30, 11]);
  const probs = F.softmax(F.reshape(F.adaptiveAvgPool2d(x, [5, 1]), [x.shape[0], 3, 5]), 2);
  return {
    conv: F.conv2d(x, w.conv, w.convBias, { stride: [2, 1], padding: [1, 2], dilation: [1, 2], groups: 3 }),
    bnPlain: F.batchNorm2d(x, w.mean, w.var, null, null, { eps: 1e-3 }),
    bnAffine: F.batchNorm2d(x, w.mean, w.var, w.mean, w.var),
    maxCeil: F.maxPool2d(x, { kernelSize: 3, stride: 2, ceilMode: true }),
    maxPadDilated: F.maxPool2d(x, { kernelSize: [3, 2], stride: [2, 1], padding: 1, dilation: [2, 1] }),
    maxCeilPad: F.maxPool2d(x, { kernelSize: 3, stride: 2, padding: 1, ceilMode: true }),
    avgCeil: F.avgPool2d(x, { kernelSize: 3, stride: 2, ceilMode: true }),
    avgCeilPadExcluded: F.avgPool2d(x, {
      kernelSize: 3,
      stride: 2,
      padding: 1,
      ceilMode: true,
      countIncludePad: false,
    }),
    avgPadIncluded: F.avgPool2d(x, { kernelSize: 3, stride: 1, padding: 1 }),
    adaptiveGlobal: F.adaptiveAvgPool2d(x, 1),
    adaptiveDividing: F.adaptiveAvgPool2d(x, [5, 1]),
    gemm: F.linear(F.flatten(x), w.linear, w.linearBias),
    gemmNoBias: F.linear(pooled, w.small),
    matmulTransB: F.matmul(rows, w.right, false, true),
    matmulTransA: F.matmul(rows, w.left, true, false),
    sumKeep: F.sum(x, [1, 3], true),
    sumAll: F.sum(x),
    mean: F.mean(x, -1),
    softmax: F.softmax(x, 1),
    logSoftmax: F.logSoftmax(x, -1),
    arithmetic: F.div(F.sub(F.mul(x, F.reshape(w.mean, [1, 3, 1, 1])), F.scale(x, -0.5)), positive),
    unary: F.cat([F.relu(x), F.tanh(x), F.sigmoid(x), F.silu(x), F.neg(x), F.exp(x)], 1),
    positiveUnary: F.cat([F.log(positive), F.sqrt(positive)], 3),
    flattenMiddle: F.flatten(x, 2),
    outer: F.outer(pooled),
    weightedSum: F.weightedSum(F.tanh(pooled), probs),
    dropoutEval: F.dropout(F.stochasticDepth(x, 0.5, false), 0.5, false),
  };
}

test("every op translation matches the library at batch 2 (ceil-mode pools, transposes, reductions, ...)", async () => {
  const live = fl.liveTensorCount();
  const gen = new fl.Generator(11);
  const randn = (shape: number[]) => fl.randn(shape, { generator: gen }).keep();
  const w: Record<string, fl.Tensor> = {
    conv: randn([6, 1, 3, 2]),
    convBias: randn([6]),
    mean: randn([3]),
    var: fl.scope(() => fl.F.addScalar(fl.F.abs(fl.randn([3], { generator: gen })), 0.5)).keep(),
    linear: randn([5, 330]),
    linearBias: randn([5]),
    small: randn([2, 3]),
    right: randn([4, 11]),
    left: randn([30, 4]),
  };
  const trace = new fl.onnx.Trace({ inputs: [{ name: "x", shape: [1, 3, 10, 11] }] });
  const x2 = fl.randn([2, 3, 10, 11], { seed: 12 }).keep();
  try {
    await fl.scope(async () => {
      const traced = trace.record(() => opCases(trace.inputs[0], w));
      const outputs = Object.entries(traced).map(([name, tensor]) => ({
        name,
        tensor,
        dynamicBatch: name !== "sumAll",
      }));
      const bytes = await trace.save(undefined, { outputs });
      const got = await runOnnx(bytes, { x: { data: await x2.toArray(), dims: [2, 3, 10, 11] } });
      const wrong: string[] = [];
      for (const [name, t] of Object.entries(fl.noGrad(() => opCases(x2, w)))) {
        const expected = await t.toArray(), g = got[name];
        const diff = g && g.data.length === expected.length ? maxAbsDiff(g.data, expected) : Infinity;
        if (!(diff <= 1e-5 * Math.max(1, maxAbs(expected))) || String(g.dims) !== String(t.shape)) {
          wrong.push(`${name}: dims ${g?.dims} vs ${t.shape}, max diff ${diff}`);
        }
      }
      assertEquals(wrong, []);
    });
  } finally {
    for (const t of [...Object.values(w), x2]) t.dispose();
    trace.dispose();
  }
  assertEquals(fl.liveTensorCount(), live, "tensors left alive");
});

test("refusals: an op without translation, random draws, uneven adaptive pools, BN on batch statistics", async () => {
  const trace = new fl.onnx.Trace({ inputs: [{ name: "x", shape: [2, 4] }] });
  const [x] = trace.inputs;
  const index = fl.intTensor([1, 0]);
  try {
    fl.scope(() => {
      // crossEntropy's kernel is the focal loss's (gamma 0): the tape knows it by that name.
      assertThrows(
        () => trace.record(() => fl.F.crossEntropy(x, [0, 1])),
        "focal cannot be exported to ONNX yet",
      );
      assertThrows(
        () => trace.record(() => fl.F.gatherRows(x, index, 0, 2)),
        "gatherRows cannot be exported",
      );
      assertThrows(
        () => trace.record(() => fl.F.dropout(x, 0.5, true)),
        /random draws .* cannot be exported/,
      );
      assertThrows(
        () => trace.record(() => fl.F.adaptiveAvgPool2d(fl.F.reshape(x, [1, 1, 2, 4]), [1, 3])),
        "adaptiveAvgPool2d from 2x4 to 1x3: not exportable to ONNX (the output does not divide the input)",
      );
      assertThrows(
        () =>
          trace.record(() =>
            fl.F.avgPool2d(fl.F.reshape(x, [1, 1, 2, 4]), {
              kernelSize: 3,
              stride: 2,
              padding: 1,
              ceilMode: true,
            })
          ),
        "countIncludePad with padding and ceil-mode windows past it is not exportable",
      );
      assertThrows(() => trace.record(() => trace.record(() => x)), "cannot run inside another record()");
    });
  } finally {
    index.dispose();
    trace.dispose();
  }
  const images = new fl.onnx.Trace({ inputs: [{ name: "x", shape: [2, 2, 3, 3] }] });
  const training = new fl.nn.BatchNorm2d(2), noStats = new fl.nn.BatchNorm2d(2, { trackRunningStats: false });
  try {
    noStats.eval();
    fl.scope(() => {
      const shifted = (x: fl.Tensor) => training.forward(fl.F.addScalar(x, 1));
      assertThrows(
        () => images.record(() => shifted(images.inputs[0]), { names: training }),
        "batchNorm2d in training mode cannot be exported to ONNX: call model.eval() first",
      );
      assertThrows(
        () => images.record(() => noStats.forward(images.inputs[0])),
        "without running statistics",
      );
    });
    assertEquals([...await training.runningMean!.toArray()], [0, 0], "refused before the running mean moved");
  } finally {
    for (const m of [training, noStats]) m.dispose();
    images.dispose();
  }
});

test("external data: every initializer in <path>.data (aligned, atomic), onnxruntime runs the file from its path", async () => {
  const x = await xrayBatch();
  const model = await learner("aicovid"); // BatchNorm1d's reshapes: int64 shape constants
  try {
    const path = join(tmp, "external", "aicovid.onnx");
    const info = await fl.onnx.exportModel(model, { input: [1, 3, CROP, CROP], path, externalData: true });
    assertEquals([info.external, info.externalDataPath], [true, `${path}.data`]);
    assertEquals([statSync(path).size, statSync(info.externalDataPath!).size], [
      info.bytes,
      info.externalDataBytes,
    ]);
    assert(
      info.bytes < 40_000 && info.externalDataBytes > 500_000,
      `model ${info.bytes} bytes, data ${info.externalDataBytes}`,
    );
    const proto = decodeModel(readFileSync(path));
    let inside = 0;
    for (const init of proto.graph.initializer) {
      if (init.dataType === 7) { // INT64: a Reshape's shape, which shape inference reads from the model
        assert(init.rawData?.length === 8 * init.dims.reduce((a: number, b: number) => a * b, 1), init.name);
        inside++;
        continue;
      }
      assertEquals([init.dataLocation, init.rawData], [1, undefined], `${init.name} is external`);
      const where = Object.fromEntries(
        init.externalData.map((e: { key: string; value: string }) => [e.key, e.value]),
      );
      assertEquals(where.location, "aicovid.onnx.data");
      assertEquals(Number(where.offset) % 64, 0, `${init.name} offset ${where.offset} aligned`);
    }
    assert(inside > 0 && inside < proto.graph.initializer.length / 4, `${inside} int64 constants inside`);
    const { logits } = await runOnnx(path, { input: { data: x, dims: [BATCH, 3, CROP, CROP] } });
    const diff = maxAbsDiff(logits.data, await libraryForward(model, x, BATCH));
    assert(diff <= TOLERANCE, `max |library - onnxruntime| = ${diff}`);
    assertEquals(readdirSync(dirname(path)).sort(), ["aicovid.onnx", "aicovid.onnx.data"]);
    await assertRejects(
      () => fl.onnx.exportModel(model, { input: [1, 3, CROP, CROP], externalData: true }),
      "external data needs a path",
    );
  } finally {
    model.dispose();
  }
});

test("Trace: two learners and three stage-2 combiners in one graph; flush moves values to a spill file", async () => {
  const x = await xrayBatch();
  const archs = ["resnet152", "densenet161"] as const;
  const learners = await Promise.all(archs.map(learner));
  const shape = { learners: archs.length, classes: 4 };
  const combiners = {
    flannel: new flannel.NeuralWeightModule({ ...shape, generator: new fl.Generator(3) }),
    voting: new flannel.SoftVoting(shape),
    mlp: new flannel.MLPStacking({ ...shape, layers: 2, hidden: 8, generator: new fl.Generator(4) }),
  };
  const models = [...learners, ...Object.values(combiners)];
  const spillDir = join(tmp, "spill");
  mkdirSync(spillDir);
  const trace = new fl.onnx.Trace({
    inputs: [{ name: "image", shape: [1, 3, CROP, CROP] }],
    memoryLimit: 0,
    tempDir: spillDir,
  });
  /** A learner's probabilities as [B, 1, classes], ready to be stacked. */
  const probsOf = (m: fl.nn.Module, input: fl.Tensor) =>
    fl.F.reshape(fl.F.softmax(m.forward(input), 1), [input.shape[0], 1, shape.classes]);
  const combine = (p: fl.Tensor) => ({
    flannel: combiners.flannel.predictProba(p),
    voting: combiners.voting.predictProba(p),
    mlp: combiners.mlp.predictProba(p),
  });
  const kept: fl.Tensor[] = [];
  try {
    for (const m of models) m.eval();
    const perLearner = learners.map((m, i) =>
      fl.scope(() => trace.record(() => probsOf(m, trace.inputs[0]), { names: m, prefix: `${archs[i]}.` }))
    );
    kept.push(...perLearner);
    await trace.flush();
    assertEquals(readdirSync(spillDir).length, 1, "the values moved to a spill folder");
    const names = new Map(
      Object.entries(combiners).flatMap(([c, m]) =>
        m.namedParameters(`${c}.`).map(([k, t]) => [t, k] as const)
      ),
    );
    const combined = fl.scope(() => trace.record(() => combine(fl.F.cat(perLearner, 1)), { names }));
    kept.push(...Object.values(combined));
    const outputs = [
      ...Object.entries(combined).map(([name, tensor]) => ({ name, tensor })),
      { name: "resnet152_probs", tensor: perLearner[0] }, // also read by the Concat: renamed there too
      { name: "voting_again", tensor: combined.voting }, // a value output twice: an Identity
    ];
    const path = join(tmp, "two.onnx"), externalPath = join(tmp, "two_external.onnx");
    const info = await trace.save(path, { outputs, metadata: { learners: archs.join(",") } });
    const external = await trace.save(externalPath, { outputs, externalData: true });
    const bytes = await trace.save(undefined, { outputs, metadata: { learners: archs.join(",") } });
    assertEquals([info.external, external.external, bytes.length], [false, true, info.bytes]);
    const proto = decodeModel(bytes);
    const initNames = proto.graph.initializer.map((i: { name: string }) => i.name);
    for (
      const name of [
        "resnet152.conv1.weight",
        "densenet161.features.norm0.running_var",
        "flannel.dense.weight",
      ]
    ) {
      assert(initNames.includes(name), `initializer ${name} (of ${initNames.length})`);
    }
    assertEquals(proto.graph.output.map((o: { name: string }) => o.name), outputs.map((o) => o.name));

    const expected: Record<string, Float32Array> = await fl.scope(async () => {
      const out = fl.noGrad(() => {
        const p = learners.map((m) => probsOf(m, fl.tensor(x, [BATCH, 3, CROP, CROP])));
        return { ...combine(fl.F.cat(p, 1)), resnet152_probs: p[0] };
      });
      return Object.fromEntries(
        await Promise.all(Object.entries(out).map(async ([k, t]) => [k, await t.toArray()])),
      );
    });
    expected.voting_again = expected.voting;
    for (const file of [path, externalPath]) {
      const got = await runOnnx(file, { image: { data: x, dims: [BATCH, 3, CROP, CROP] } });
      for (const [name, values] of Object.entries(expected)) {
        const diff = maxAbsDiff(got[name].data, values);
        assert(diff <= TOLERANCE, `${basename(file)} ${name}: max |library - onnxruntime| = ${diff}`);
      }
    }
  } finally {
    for (const t of kept) t.dispose();
    trace.dispose();
    for (const m of models) m.dispose();
  }
  assertEquals(readdirSync(spillDir), [], "dispose removes the spill folder");
});

// FLANNEL's whole trained ensemble (the shipped bundle: 5 learners x 5 folds and their combiners) as one graph.
test(
  "exportOnnx: every fold's learners, combiner and the fold average in onnxruntime give predict's probabilities",
  async () => {
    const x = await xrayBatch();
    assertEquals([bundle.settings.resize, bundle.settings.crop, bundle.settings.equalize], [73, CROP, false]);
    const sizes: string[] = [];
    let flannelTemperature: number | null = null;
    for (const method of bundle.manifest.methods) {
      const path = join(tmp, `ensemble-${method.replaceAll(" ", "_")}.onnx`);
      const info = await flannel.exportOnnx(bundle, path, { method });
      assertEquals([info.path, info.external, info.bytes], [path, false, statSync(path).size]);
      const want = await flannel.predictFiles(bundle, xrayFiles, { method });
      assertEquals(want.files, xrayFiles);
      if (method === "FLANNEL") flannelTemperature = want.temperature;
      const got = await runOnnx(path, { input: { data: x, dims: [BATCH, 3, CROP, CROP] } });
      assertEquals(got.probs.dims, [BATCH, 4]);
      const diff = maxAbsDiff(got.probs.data, want.probs);
      assert(diff <= TOLERANCE, `${method}: max |predict - onnxruntime| = ${diff}`);
      const spread = maxAbsDiff(want.probs, new Float32Array(BATCH * 4).fill(0.25));
      assert(spread > 0.01, `${method}: probabilities within ${spread} of uniform`);
      const one = await runOnnx(path, {
        input: { data: x.subarray(0, 3 * CROP * CROP), dims: [1, 3, CROP, CROP] },
      });
      assert(maxAbsDiff(one.probs.data, want.probs.subarray(0, 4)) <= TOLERANCE, `${method}: batch 1`);
      sizes.push(
        `${method} ${(info.bytes / 2 ** 20).toFixed(1)} MiB, ${info.nodes} nodes, diff ${
          diff.toExponential(1)
        }`,
      );
    }
    console.log(`  ensembles (${fl.backendInfo()?.backend}): ${sizes.join("; ")}`);
    const proto = decodeModel(readFileSync(join(tmp, "ensemble-FLANNEL.onnx")));
    const meta = Object.fromEntries(
      proto.metadataProps.map((p: { key: string; value: string }) => [p.key, p.value]),
    );
    assertEquals(
      [
        meta.classes,
        meta.method,
        meta.learners,
        meta.folds,
        meta.temperature,
        meta.resize,
        meta.crop,
        meta.equalize,
        meta.mean,
        meta.std,
      ],
      [
        "covid,viral,bacterial,normal",
        "FLANNEL",
        bundle.settings.archs.join(","),
        "0,1,2,3,4",
        String(flannelTemperature ?? "none"),
        "73",
        "64",
        "false",
        fl.data.IMAGENET_MEAN.join(","),
        fl.data.IMAGENET_STD.join(","),
      ],
    );
    assertEquals(proto.graph.input.map((i: { name: string }) => i.name), ["input"]);
    assertEquals(proto.graph.input[0].type.tensorType.shape.dim[0].dimParam, "batch");
    await assertRejects(
      () => flannel.exportOnnx(bundle, join(tmp, "none.onnx"), { method: "Nope" }),
      "Nope",
    );
    assert(!existsSync(join(tmp, "none.onnx")), "a failed export leaves no file");
  },
  { timeoutS: 600 },
);

// The CLI runs on WebAssembly whatever this run's backend: once per runtime is enough.
test.when(fl.backendInfo()?.backend === "wasm", "the CLI check runs in the WebAssembly runs")(
  "CLI: export --onnx (the shipped bundle by default) writes the API's bytes; bad arguments exit 2",
  async () => {
    const path = join(tmp, "cli.onnx");
    const run = await startCli(["export", "--onnx", path, "--backend", "wasm"]).done;
    assertEquals(run.code, 0, run.output);
    const size = (statSync(path).size / 2 ** 20).toFixed(1);
    assert(
      run.output.includes(
        `wrote ${path} (${size} MiB): 5 learners x 5 folds, FLANNEL, `,
      ) && run.output.includes(`input "input" [batch, 3, 64, 64], output "probs"`),
      run.output,
    );
    assertEquals(
      readFileSync(path),
      readFileSync(join(tmp, "ensemble-FLANNEL.onnx")),
      "the same bytes as the API's",
    );
    for (
      const [args, message] of [
        [["export"], "flannel: export: give --out NAME.zip (a bundle) or --onnx OUT.onnx"],
        [
          ["export", "--model", join(tmp, "a.zip"), "--out", join(tmp, "b.zip")],
          "flannel: export: --out writes a bundle of an experiment: give --run DIR",
        ],
        [
          ["export", "--run", tmp, "--model", join(tmp, "a.zip"), "--onnx", join(tmp, "c.onnx")],
          "flannel: export: give --run DIR or --model FILE.zip, not both",
        ],
      ] as const
    ) {
      const bad = await startCli([...args]).done;
      assertEquals(bad.code, 2, bad.output);
      assertEquals(bad.output.trim(), message);
    }
  },
  { timeoutS: 600 },
);

// ONNX's own checker (Debian's python3-onnx), independent of onnxruntime: the schema of every node, the
// graph's topology, and with full_check its shape inference through every node.
test.when(pythonImports("onnx"), `${PYTHON} cannot import onnx (Debian's python3-onnx)`)(
  "every file written above passes onnx.checker.check_model(full_check=True)",
  () => {
    const files = readdirSync(tmp, { recursive: true }).map(String).filter((f) => f.endsWith(".onnx")).sort();
    assert(files.length >= 16, `files to check: ${files.join(", ")}`);
    const script = "import onnx, sys\n" +
      "for f in sys.argv[1:]: onnx.checker.check_model(onnx.load(f), full_check=True)\n" +
      "print(onnx.__version__, len(sys.argv) - 1)";
    const r = spawnSync(PYTHON, ["-c", script, ...files.map((f) => join(tmp, f))], { encoding: "utf8" });
    assertEquals(r.status, 0, `onnx.checker: ${r.stderr}`);
    console.log(`  onnx ${r.stdout.trim().split(" ")[0]} checker: ${files.length} files pass`);
  },
  { timeoutS: 600 },
);
