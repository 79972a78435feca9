// EfficientNet-B4 and AI-Covid against torchvision (fixtures written by
// tests/fixtures/make_efficientnet_goldens.py): efficientnet_b4's parameter count and state-dict keys/shapes;
// for the tiny EfficientNet, B4's first three stages at full width and depth, and the tiny AI-Covid: logits
// and gradients (input and parameters) in eval mode, and in training mode (batch statistics, stochastic
// depth and dropout at 0) with the batch-norm running statistics after it; the factories' tiny variants.
import * as fl from "../mod.ts";
await fl.init();

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";

type Shape = number[];
interface KeysFixture {
  full: { efficientnet_b4: { num_classes: number; param_count: number; state_dict: [string, Shape][] } };
  fixtures: Record<string, {
    kind: "efficientnet" | "aicovid";
    config: fl.models.EfficientNetConfig | fl.models.AICovidConfig;
    param_count: number;
  }>;
}
const fixture: KeysFixture = JSON.parse(
  readFileSync(new URL("./fixtures/efficientnet_keys.json", import.meta.url), "utf8"),
);
const fixturePath = (name: string) =>
  fileURLToPath(new URL(`./fixtures/efficientnet_${name}.safetensors`, import.meta.url));

/** PyTorch saves num_batches_tracked with shape []; the library holds it as [1]. */
const normaliseShapes = (entries: [string, Shape][]): [string, Shape][] =>
  entries.map(([k, s]) => [k, k.endsWith("num_batches_tracked") && s.length === 0 ? [1] : s]);
const keysAndShapes = (m: fl.nn.Module): [string, Shape][] =>
  Object.entries(m.stateDict()).map(([k, t]) => [k, [...t.shape]]);

/**
 * Within rtol of the largest reference magnitude, that magnitude counting as at least `floor`: a gradient
 * that is zero in exact arithmetic (a bias followed by a training-mode batch norm) is float32 rounding noise.
 */
function assertCloseRel(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rtol: number,
  msg: string,
  floor = 0,
) {
  const maxAbs = largest(expected);
  assert(maxAbs > 0 || floor > 0, `${msg}: the reference is all zero`);
  assertClose(actual, expected, { rtol, atol: rtol * Math.max(maxAbs, floor), msg });
}

function largest(values: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < values.length; i++) m = Math.max(m, Math.abs(values[i]));
  return m;
}

test("efficientnet_b4 (full, 1000 classes): 19,341,616 parameters and torchvision's state-dict keys and shapes", () => {
  const expected = fixture.full.efficientnet_b4;
  const model = fl.models.efficientnet_b4({ generator: new fl.Generator(1), init: "default" });
  try {
    assertEquals(expected.param_count, 19_341_616);
    assertEquals(model.parameterCount(), expected.param_count, "parameter count");
    assertEquals(keysAndShapes(model), normaliseShapes(expected.state_dict), "state dict");
  } finally {
    model.dispose();
    fl.trimPool();
  }
});

/** The fixture's model; `deterministic` turns stochastic depth and dropout off (as the fixture's training pass). */
function build(name: string, deterministic: boolean): fl.nn.Module {
  const { kind, config } = fixture.fixtures[name];
  const init = { generator: new fl.Generator(2) };
  if (kind === "efficientnet") {
    const c = config as fl.models.EfficientNetConfig;
    return new fl.models.EfficientNet(deterministic ? { ...c, stochasticDepthProb: 0, dropout: 0 } : c, init);
  }
  const c = config as fl.models.AICovidConfig;
  return new fl.models.AICovid(
    deterministic ? { ...c, trunk: { ...c.trunk, stochasticDepthProb: 0 }, dropout: 0 } : c,
    init,
  );
}

/** Forward, loss sum(logits * weights), backward; compares logits and the stored gradients. */
async function checkPass(
  model: fl.nn.Module,
  all: Record<string, { data: ArrayLike<number>; shape: number[] }>,
  prefix: "__grad__" | "__train_grad__",
) {
  await fl.scope(async () => {
    const input = all.__input__;
    const x = fl.tensor(input.data as Float32Array, input.shape, { requiresGrad: true });
    const logits = model.forward(x);
    const what = prefix === "__grad__" ? "eval" : "training";
    assertCloseRel(
      await logits.toArray(),
      all[prefix.replace("grad", "logits")].data,
      1e-3,
      `${what} logits`,
    );
    fl.F.sum(fl.F.mul(logits, fl.tensor(all.__weights__.data as Float32Array, all.__weights__.shape)))
      .backward();
    assertCloseRel(await x.grad!.toArray(), all[`${prefix}.__input__`].data, 1e-3, `${what} input gradient`);
    const params = Object.fromEntries(model.namedParameters());
    const stored = Object.entries(all).filter(([k]) =>
      k.startsWith(`${prefix}.`) && k !== `${prefix}.__input__`
    );
    // Gradients under 1% of the largest one are compared at that 1% (see assertCloseRel).
    const floor = 0.01 * Math.max(...stored.map(([, g]) => largest(g.data)));
    let checked = 0;
    for (const [k, g] of stored) {
      const key = k.slice(prefix.length + 1);
      assertCloseRel(await params[key].grad!.toArray(), g.data, 1e-3, `${what} gradient of ${key}`, floor);
      checked++;
    }
    assert(checked >= 8, `only ${checked} ${what} parameter gradients checked`);
    for (const p of Object.values(params)) p.grad?.dispose(), (p.grad = null);
  });
}

for (const name of Object.keys(fixture.fixtures)) {
  test(`${name}: eval and training logits, gradients and batch-norm updates equal PyTorch's`, async () => {
    const all = await fl.io.loadSafetensors(fixturePath(name));
    const state = Object.fromEntries(Object.entries(all).filter(([k]) => !k.startsWith("__")));
    const model = build(name, false), deterministic = build(name, true);
    try {
      assertEquals(model.parameterCount(), fixture.fixtures[name].param_count, "parameter count");
      model.loadStateDict(state);
      model.eval();
      await checkPass(model, all, "__grad__");
      deterministic.loadStateDict(state);
      deterministic.train();
      await checkPass(deterministic, all, "__train_grad__");
      const sd = deterministic.stateDict();
      let checked = 0;
      for (const [k, v] of Object.entries(all)) {
        if (!k.startsWith("__after__.")) continue;
        const key = k.slice("__after__.".length);
        assertCloseRel(await sd[key].toArray(), v.data, 1e-3, key);
        checked++;
      }
      assert(checked > 10, `only ${checked} running statistics checked`);
    } finally {
      model.dispose();
      deterministic.dispose();
    }
  });
}

test("the tiny factories build the fixtures' architectures; a training step reaches every parameter", async () => {
  const cases: [fl.nn.Module, string][] = [
    [
      fl.models.efficientnet_b4({ numClasses: 4, scale: "tiny", generator: new fl.Generator(3) }),
      "efficientnet_tiny",
    ],
    [fl.models.aicovid({ numClasses: 4, scale: "tiny", generator: new fl.Generator(3) }), "aicovid_tiny"],
  ];
  for (const [model, name] of cases) {
    try {
      const all = await fl.io.loadSafetensors(fixturePath(name));
      const expected = Object.entries(all).filter(([k]) => !k.startsWith("__")).map(([k, t]) =>
        [k, t.shape] as [string, Shape]
      );
      const byKey = ([a]: [string, Shape], [b]: [string, Shape]) => (a < b ? -1 : 1);
      assertEquals(
        keysAndShapes(model).sort(byKey),
        normaliseShapes(expected).sort(byKey),
        `${name} keys and shapes`,
      );
      model.train();
      await fl.scope(async () => {
        const loss = fl.F.crossEntropy(model.forward(fl.randn([3, 3, 64, 64], { seed: 5 })), [0, 3, 1]);
        assert(Number.isFinite(await loss.item()), `${name}: loss`);
        loss.backward();
        for (const [k, p] of model.namedParameters()) {
          const g = await p.grad!.toArray();
          assert(g.every(Number.isFinite), `${name} ${k}: non-finite gradient`);
          assert(g.some((v) => v !== 0), `${name} ${k}: gradient all zero`);
        }
      });
    } finally {
      model.dispose();
    }
  }
});

test("AI-Covid and EfficientNet refuse bad configs; BatchNorm1d refuses bad inputs, naming the problem", () => {
  const trunk = { widthMult: 0.25, depthMult: 0.25 };
  assertThrows(
    () => new fl.models.AICovid({ trunk, hidden: [8, 8], inputSize: 64, numClasses: 4 }),
    /hidden must list 5/,
  );
  assertThrows(
    () => new fl.models.AICovid({ trunk, hidden: [8, 8, 8, 8, 8], inputSize: 0, numClasses: 4 }),
    /inputSize/,
  );
  assertThrows(
    () => fl.models.aicovid({ scale: "huge" as "tiny" }),
    /aicovid: scale must be "full" or "tiny"/,
  );
  const bn = new fl.nn.BatchNorm1d(3);
  try {
    assertThrows(() => bn.forward(fl.zeros([2, 4])), /BatchNorm1d: expected 3 features/);
    assertThrows(() => bn.forward(fl.zeros([2, 3, 1, 1])), /BatchNorm1d: expected a 2-D/);
    assertThrows(() => bn.forward(fl.zeros([1, 3])), /training needs more than 1 value per feature/);
    assertThrows(() => new fl.nn.BatchNorm1d(0), /BatchNorm1d: numFeatures/);
  } finally {
    bn.dispose();
  }
});

test("stochastic depth: whole samples dropped with probability p, the rest scaled by 1 / (1 - p), seeded", async () => {
  await fl.scope(async () => {
    const n = 4000, p = 0.3;
    const x = fl.ones([n, 2, 3], { requiresGrad: true });
    const y = fl.F.stochasticDepth(x, p, true, { seed: 9 });
    const v = await y.toArray();
    let dropped = 0;
    for (let i = 0; i < n; i++) {
      const sample = v.subarray(i * 6, (i + 1) * 6);
      assert(sample.every((e) => e === sample[0]), `sample ${i} is not dropped or kept whole`);
      if (sample[0] === 0) dropped++;
      else assertClose(sample[0], 1 / (1 - p), { rtol: 1e-6, msg: `sample ${i} scale` });
    }
    // Binomial(4000, 0.3): sd 29; 5 sd either side.
    assert(Math.abs(dropped - n * p) < 5 * Math.sqrt(n * p * (1 - p)), `${dropped} of ${n} dropped`);
    fl.F.sum(y).backward();
    assertEquals([...await x.grad!.toArray()], [...v], "the gradient is the mask");
    assertEquals([...await fl.F.stochasticDepth(x, p, true, { seed: 9 }).toArray()], [...v], "same seed");
    assert(fl.F.stochasticDepth(x, p, false) === x && fl.F.stochasticDepth(x, 0, true) === x, "identity");
    assertThrows(() => fl.F.stochasticDepth(x, 1, true), /p must be in \[0, 1\)/);
  });
});
