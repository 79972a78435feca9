// Checkpoints: model + optimizer state + metadata in one safetensors file; resuming from one continues
// training bit for bit (Adam, SGD with momentum), and loading into the wrong model or optimizer fails.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as fl from "../mod.ts";
import { assert, assertEquals, assertRejects, assertThrows, test } from "./harness.ts";

await fl.init();
const dir = mkdtempSync(join(tmpdir(), "fl-ckpt-"));

function mlp(seed: number): fl.nn.Module {
  const generator = new fl.Generator(seed);
  return new fl.nn.Sequential(
    new fl.nn.Linear(4, 8, { generator }),
    new fl.nn.ReLU(),
    new fl.nn.Linear(8, 3, { generator }),
  );
}

function convNet(seed: number): fl.nn.Module {
  const generator = new fl.Generator(seed);
  return new fl.nn.Sequential(
    new fl.nn.Conv2d(1, 2, 3, { generator }),
    new fl.nn.BatchNorm2d(2),
    new fl.nn.ReLU(),
    new fl.nn.Flatten(),
    new fl.nn.Linear(18, 3, { generator }),
  );
}

type Opt = fl.optim.Adam | fl.optim.SGD;

async function trainSteps(
  model: fl.nn.Module,
  opt: Opt,
  x: Float32Array,
  xShape: number[],
  labels: number[],
  steps: number,
) {
  for (let s = 0; s < steps; s++) {
    await fl.scope(async () => {
      opt.zeroGrad();
      const loss = fl.F.crossEntropy(model.forward(fl.tensor(x, xShape)), labels);
      loss.backward();
      opt.step();
      await loss.item();
    });
  }
}

async function snapshot(model: fl.nn.Module): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const [k, t] of Object.entries(model.stateDict())) {
    out[k] = Array.from(t.dtype === "int32" ? await t.toInt32Array() : await t.toArray());
  }
  return out;
}

function assertBitEqual(a: Record<string, number[]>, b: Record<string, number[]>): void {
  assertEquals(Object.keys(a), Object.keys(b), "state keys");
  for (const k of Object.keys(a)) {
    const x = new Float32Array(a[k]), y = new Float32Array(b[k]);
    const xb = new Uint32Array(x.buffer), yb = new Uint32Array(y.buffer);
    for (let i = 0; i < xb.length; i++) {
      if (xb[i] !== yb[i]) throw new Error(`${k}[${i}]: ${x[i]} (uninterrupted) != ${y[i]} (resumed)`);
    }
  }
}

function data(n: number, per: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from(
    { length: n * per },
    () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1,
  );
}

async function resumeCase(
  name: string,
  build: (seed: number) => fl.nn.Module,
  makeOpt: (m: fl.nn.Module) => Opt,
  x: Float32Array,
  xShape: number[],
  labels: number[],
): Promise<void> {
  const a = build(3), optA = makeOpt(a);
  await trainSteps(a, optA, x, xShape, labels, 6);
  const uninterrupted = await snapshot(a);

  const b = build(3), optB = makeOpt(b);
  await trainSteps(b, optB, x, xShape, labels, 3);
  const path = join(dir, `${name}.safetensors`);
  const meta = {
    arch: name,
    config: { lr: 0.01, hidden: [8] },
    epoch: 3,
    seed: 3,
    metrics: { loss: 0.5, f1: [0.1, 0.2] },
  };
  await fl.io.saveCheckpoint(path, { model: b, optimizer: optB, meta });
  b.dispose();
  optB.dispose();

  const c = build(99), optC = makeOpt(c); // other initial weights: everything must come from the file
  const restored = await fl.io.loadCheckpoint(path, { model: c, optimizer: optC });
  assertEquals(restored, meta, "metadata");
  assertEquals(optC.stepCount, 3, "step count");
  await trainSteps(c, optC, x, xShape, labels, 3);
  assertBitEqual(uninterrupted, await snapshot(c));

  // Control: the model alone with a fresh optimizer does not continue the same trajectory.
  const d = build(99), optD = makeOpt(d);
  await fl.io.loadCheckpoint(path, { model: d });
  await trainSteps(d, optD, x, xShape, labels, 3);
  let same = true;
  try {
    assertBitEqual(uninterrupted, await snapshot(d));
  } catch {
    same = false;
  }
  assert(!same, "resuming without the optimizer state should differ");
  for (const t of [a, c, d]) t.dispose();
  for (const o of [optA, optC, optD]) o.dispose();
}

test("Adam: 3 steps + checkpoint + 3 steps equals 6 steps bit for bit (MLP)", async () => {
  const live = fl.liveTensorCount();
  await resumeCase(
    "mlp_adam",
    mlp,
    (m) => new fl.optim.Adam(m.parameters(), { lr: 0.01, weightDecay: 1e-3 }),
    data(6, 4, 1),
    [6, 4],
    [0, 1, 2, 0, 1, 2],
  );
  assertEquals(fl.liveTensorCount(), live, "live tensors");
});

test("SGD with momentum: resume bit for bit (conv net with batch norm buffers)", async () => {
  const live = fl.liveTensorCount();
  await resumeCase(
    "conv_sgd",
    convNet,
    (m) => new fl.optim.SGD(m.parameters(), { lr: 0.05, momentum: 0.9, weightDecay: 1e-4 }),
    data(2, 25, 7),
    [2, 1, 5, 5],
    [2, 0],
  );
  await resumeCase(
    "mlp_nesterov",
    mlp,
    (m) => new fl.optim.SGD(m.parameters(), { lr: 0.1, momentum: 0.8, nesterov: true }),
    data(6, 4, 2),
    [6, 4],
    [2, 2, 1, 0, 1, 0],
  );
  assertEquals(fl.liveTensorCount(), live, "live tensors");
});

test("checkpoint layout: model.*, optim.* keys and JSON metadata", async () => {
  const m = mlp(1), opt = new fl.optim.Adam(m.parameters());
  await trainSteps(m, opt, data(2, 4, 3), [2, 4], [0, 1], 1);
  const path = join(dir, "layout.safetensors");
  await fl.io.saveCheckpoint(path, { model: m, optimizer: opt, meta: { epoch: 1 } });
  const tensors = await fl.io.loadSafetensors(path);
  const keys = Object.keys(tensors);
  for (
    const k of [
      "model.0.weight",
      "model.0.bias",
      "model.2.weight",
      "model.2.bias",
      "optim.step_count",
      "optim.state.0.exp_avg",
      "optim.state.3.exp_avg_sq",
      "optim.state.1.step",
      "optim.hyper.lr",
    ]
  ) {
    assert(keys.includes(k), `missing ${k} in ${keys.join(", ")}`);
  }
  assertEquals(Object.keys(tensors).every((k) => k.startsWith("model.") || k.startsWith("optim.")), true);
  const md = await fl.io.readSafetensorsMetadata(path);
  assertEquals(md.epoch, "1");
  assertEquals(JSON.parse(md["checkpoint.optimizer"]).type, "Adam");
  m.dispose();
  opt.dispose();
});

test("loading into another model or optimizer fails with the mismatches", async () => {
  const m = mlp(1), opt = new fl.optim.Adam(m.parameters());
  const path = join(dir, "strict.safetensors");
  await fl.io.saveCheckpoint(path, { model: m, optimizer: opt, meta: {} });
  const other = convNet(1);
  await assertRejects(
    () => fl.io.loadCheckpoint(path, { model: other }),
    /loadStateDict into Sequential: missing keys: .*unexpected keys: .*/,
  );
  const wider = new fl.nn.Sequential(new fl.nn.Linear(4, 9), new fl.nn.ReLU(), new fl.nn.Linear(9, 3));
  await assertRejects(
    () => fl.io.loadCheckpoint(path, { model: wider }),
    /shape mismatches: 0\.weight: checkpoint \[8, 4\], model \[9, 4\]/,
  );
  const sgd = new fl.optim.SGD(m.parameters(), { momentum: 0.9 });
  await assertRejects(
    () => fl.io.loadCheckpoint(path, { model: m, optimizer: sgd }),
    "holds Adam state, not SGD",
  );
  const fewer = new fl.optim.Adam(m.parameters().slice(1));
  await assertRejects(
    () => fl.io.loadCheckpoint(path, { model: m, optimizer: fewer }),
    "optimizer state for 4 parameters, the optimizer has 3",
  );
  fewer.dispose();
  await assertRejects(
    () => fl.io.saveCheckpoint(path, { model: m, meta: { n: 1n } }),
    "not JSON-serialisable",
  );
  await assertRejects(
    () => fl.io.saveCheckpoint(path, { model: m, meta: { f: () => 1 } }),
    "not JSON-serialisable",
  );
  const modelOnly = join(dir, "model_only.safetensors");
  await fl.io.saveCheckpoint(modelOnly, { model: m });
  await assertRejects(
    () => fl.io.loadCheckpoint(modelOnly, { model: m, optimizer: opt }),
    "holds no optimizer state",
  );
  assertEquals(await fl.io.loadCheckpoint(modelOnly, { model: m }), {});
  const plain = join(dir, "plain.safetensors");
  await fl.io.saveSafetensors(plain, m.stateDict());
  await assertRejects(() => fl.io.loadCheckpoint(plain, { model: m }), "is not a checkpoint");
  await assertRejects(
    () => fl.io.saveCheckpoint(plain, { model: m, meta: { "checkpoint.format": 1 } }),
    "reserved",
  );
  for (const t of [m, other, wider]) t.dispose();
  opt.dispose();
  sgd.dispose();
});

test("optimizer loadStateDict checks keys and shapes, and restores changed hyper-parameters", async () => {
  const m = mlp(1), opt = new fl.optim.Adam(m.parameters(), { lr: 0.5 });
  await trainSteps(m, opt, data(2, 4, 3), [2, 4], [0, 1], 2);
  const state = await opt.stateDict();
  assertEquals(state["state.0.step"].data[0], 2);
  assertEquals(state["state.0.exp_avg"].shape, [8, 4]);
  const fresh = new fl.optim.Adam(m.parameters(), { lr: 0.001 });
  assertThrows(
    () => fresh.loadStateDict({ ...state, "state.9.exp_avg": state["state.0.exp_avg"] }),
    "unexpected key state.9.exp_avg",
  );
  assertThrows(
    () => fresh.loadStateDict({ ...state, "state.1.exp_avg": state["state.0.exp_avg"] }),
    "state.1.exp_avg: shape [8, 4] does not fit parameter 1 of shape [8]",
  );
  const { ["state.2.exp_avg_sq"]: _drop, ...partial } = state;
  assertThrows(() => fresh.loadStateDict(partial), "state.2: incomplete");
  fresh.loadStateDict(state);
  assertEquals(fresh.hyper.lr, 0.5);
  assertEquals(fresh.stepCount, 2);
  const again = await fresh.stateDict();
  assertEquals(Array.from(again["state.3.exp_avg_sq"].data), Array.from(state["state.3.exp_avg_sq"].data));
  m.dispose();
  opt.dispose();
  fresh.dispose();
});

test.afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});
