// ResNet-152, ResNeXt-101 32x8d and VGG-19-BN against torchvision (fixtures written by
// tests/fixtures/make_resnet_vgg_goldens.py): parameter counts and state-dict keys/shapes of the full
// models, eval-mode logits and training-mode batch-norm updates of the tiny variants and of reduced-depth
// full-width copies after loading PyTorch's state dicts from safetensors, and a backward through the tiny
// factories. No full-size forward runs here (too slow on a CPU adapter).
import * as fl from "../mod.ts";
await fl.init();

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { assert, assertClose, assertEquals, test } from "./harness.ts";

type Shape = number[];
interface KeysFixture {
  full: Record<string, { num_classes: number; param_count: number; state_dict: [string, Shape][] }>;
  fixtures: Record<string, { kind: "resnet" | "vgg"; config: Record<string, unknown>; param_count: number }>;
}
const fixture: KeysFixture = JSON.parse(
  readFileSync(new URL("./fixtures/resnet_vgg_keys.json", import.meta.url), "utf8"),
);
const fixturePath = (name: string) =>
  fileURLToPath(new URL(`./fixtures/resnet_vgg_${name}.safetensors`, import.meta.url));

function keysAndShapes(m: fl.nn.Module): [string, Shape][] {
  return Object.entries(m.stateDict()).map(([k, t]) => [k, [...t.shape]]);
}

/** PyTorch saves num_batches_tracked with shape []; the library holds it as [1]. */
function normaliseShapes(entries: [string, Shape][]): [string, Shape][] {
  return entries.map(([k, s]) => [k, k.endsWith("num_batches_tracked") && s.length === 0 ? [1] : s]);
}

const FACTORIES = {
  resnet152: fl.models.resnet152,
  resnext101_32x8d: fl.models.resnext101_32x8d,
  vgg19_bn: fl.models.vgg19_bn,
} as const;

for (const [name, factory] of Object.entries(FACTORIES)) {
  test(`${name} (full, numClasses 4): parameter count and state-dict keys/shapes equal torchvision's`, () => {
    const expected = fixture.full[name];
    // init "default" skips torchvision's re-initialisation (half the random draws: this is the slow part).
    const model = factory({ numClasses: 4, generator: new fl.Generator(1), init: "default" });
    try {
      assertEquals(model.parameterCount(), expected.param_count, "parameter count");
      assertEquals(keysAndShapes(model), normaliseShapes(expected.state_dict), "state dict");
    } finally {
      model.dispose();
      fl.trimPool(); // hand the ~0.2-0.6 GB back to the device rather than keep it pooled
    }
  });
}

test("full-size parameter counts are the documented ones", () => {
  assertEquals(fixture.full.resnet152.param_count, 58_152_004);
  assertEquals(fixture.full.resnext101_32x8d.param_count, 86_750_532);
  assertEquals(fixture.full.vgg19_bn.param_count, 139_597_636);
});

function buildFixtureModel(name: string): fl.nn.Module {
  const { kind, config } = fixture.fixtures[name];
  return kind === "resnet"
    ? new fl.models.ResNet(config as unknown as fl.models.ResNetConfig, { generator: new fl.Generator(2) })
    : new fl.models.VGG(config as unknown as fl.models.VGGConfig, { generator: new fl.Generator(2) });
}

/** Relative tolerance against the largest reference magnitude (logits can be near zero). */
function assertCloseRel(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rtol: number,
  msg: string,
): void {
  let maxAbs = 0;
  for (let i = 0; i < expected.length; i++) maxAbs = Math.max(maxAbs, Math.abs(expected[i]));
  assertClose(actual, expected, { rtol, atol: rtol * maxAbs, msg });
}

for (const name of Object.keys(fixture.fixtures)) {
  test(`${name}: logits equal PyTorch's (eval) and a training forward updates BN stats as PyTorch`, async () => {
    const all = await fl.io.loadSafetensors(fixturePath(name));
    const state = Object.fromEntries(Object.entries(all).filter(([k]) => !k.startsWith("__")));
    const model = buildFixtureModel(name);
    try {
      assertEquals(model.parameterCount(), fixture.fixtures[name].param_count, "parameter count");
      model.loadStateDict(state);
      model.eval();
      const input = all.__input__;
      await fl.scope(async () => {
        const x = fl.tensor(input.data as Float32Array, input.shape);
        const logits = fl.noGrad(() => model.forward(x));
        assertEquals(logits.shape, all.__logits__.shape, "logits shape");
        assertCloseRel(await logits.toArray(), all.__logits__.data, 1e-3, "eval logits");
        model.train();
        const train = fl.noGrad(() => model.forward(x));
        if (all.__train_logits__) {
          assertCloseRel(await train.toArray(), all.__train_logits__.data, 1e-3, "train logits");
        }
      });
      const sd = model.stateDict();
      let checked = 0;
      for (const [k, v] of Object.entries(all)) {
        if (!k.startsWith("__after__.")) continue;
        const key = k.slice("__after__.".length);
        assertCloseRel(await sd[key].toArray(), v.data, 1e-3, key);
        checked++;
      }
      assert(checked > 0, "no running statistics checked");
      for (const [k, t] of Object.entries(sd)) {
        if (!k.endsWith("num_batches_tracked")) continue;
        assertEquals([...(await t.toInt32Array())], [Number(state[k].data[0]) + 1], k);
      }
    } finally {
      model.dispose();
    }
  });
}

const TINY: [string, () => fl.nn.Module, string][] = [
  [
    "resnet152",
    () => fl.models.resnet152({ numClasses: 4, scale: "tiny", generator: new fl.Generator(3) }),
    "resnet152_tiny",
  ],
  [
    "resnext101_32x8d",
    () => fl.models.resnext101_32x8d({ numClasses: 4, scale: "tiny", generator: new fl.Generator(3) }),
    "resnext101_tiny",
  ],
  [
    "vgg19_bn",
    () => fl.models.vgg19_bn({ numClasses: 4, scale: "tiny", generator: new fl.Generator(3) }),
    "vgg19_bn_tiny",
  ],
];

for (const [name, make, fixtureName] of TINY) {
  test(`${name} tiny: the fixture's architecture; forward [2, 3, 64, 64] and backward reach every parameter`, async () => {
    const model = make();
    try {
      const all = await fl.io.loadSafetensors(fixturePath(fixtureName));
      const expected = Object.entries(all)
        .filter(([k]) => !k.startsWith("__"))
        .map(([k, t]) => [k, t.shape] as [string, Shape]);
      const own = keysAndShapes(model);
      assertEquals(
        [...own].sort(([a], [b]) => (a < b ? -1 : 1)),
        normaliseShapes(expected).sort(([a], [b]) => (a < b ? -1 : 1)),
        "keys and shapes",
      );
      assertEquals(model.parameterCount(), fixture.fixtures[fixtureName].param_count, "parameter count");
      // Seeded torchvision init: the same generator seed gives the same weights; convs N(0, 2 / fan_out).
      const again = make();
      try {
        const conv = Object.entries(model.stateDict()).find(([k, t]) =>
          k.endsWith("weight") && t.rank === 4
        )!;
        const w = await conv[1].toArray();
        assertEquals([...w], [...await again.stateDict()[conv[0]].toArray()], "same seed, same init");
        const [out, , kh, kw] = conv[1].shape;
        const std = Math.sqrt(w.reduce((a, v) => a + v * v, 0) / w.length);
        assertClose(std, Math.sqrt(2 / (out * kh * kw)), { rtol: 0.1, msg: `${conv[0]} std` });
      } finally {
        again.dispose();
      }
      model.train();
      await fl.scope(async () => {
        const x = fl.randn([2, 3, 64, 64], { seed: 5 });
        const logits = model.forward(x);
        assertEquals(logits.shape, [2, 4]);
        const loss = fl.F.crossEntropy(logits, [0, 3]);
        const l = await loss.item();
        assert(Number.isFinite(l), `loss ${l}`);
        loss.backward();
        for (const [k, p] of model.namedParameters()) {
          assert(p.grad, `${k} has no gradient`);
          const g = await p.grad.toArray();
          assert(g.every(Number.isFinite), `${k}: non-finite gradient`);
          assert(g.some((v) => v !== 0), `${k}: gradient all zero`);
        }
      });
    } finally {
      model.dispose();
    }
  });
}
