// DenseNet-161 and Inception v3 against torchvision (fixtures written by
// tests/fixtures/make_densenet_inception_goldens.py): parameter counts and ordered state-dict keys/shapes of
// the full models, eval-mode logits and parameter gradients of the tiny and reduced-depth models after
// loading PyTorch's weights, and a tiny forward + backward in training mode.
import * as fl from "../mod.ts";
await fl.init();

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";

const fixtures = join(dirname(fileURLToPath(import.meta.url)), "fixtures");
const keysFixture = JSON.parse(
  readFileSync(join(fixtures, "densenet_inception_keys.json"), "utf8"),
) as Record<
  string,
  { params: number; keys: [string, number[]][] }
>;

function keyList(m: fl.nn.Module): [string, number[]][] {
  return Object.entries(m.stateDict()).map((
    [k, t],
  ) => [k, t.dtype === "int32" && t.size === 1 ? [] : t.shape]);
}

function checkFull(name: string, build: () => fl.nn.Module): void {
  const m = build();
  try {
    const want = keysFixture[name];
    assertEquals(m.parameterCount(), want.params, `${name} parameter count`);
    const got = keyList(m);
    assertEquals(got.length, want.keys.length, `${name} number of state-dict keys`);
    got.forEach(([k, s], i) => assertEquals([k, s], want.keys[i], `${name} state-dict entry ${i}`));
  } finally {
    m.dispose();
  }
}

test("densenet161: torchvision's parameter count and state-dict keys (numClasses 4)", () => {
  checkFull("densenet161", () => fl.models.densenet161({ numClasses: 4, generator: new fl.Generator(1) }));
});

test("inception_v3: torchvision's parameter counts and state-dict keys, with and without aux logits", () => {
  checkFull(
    "inception_v3_aux",
    () => fl.models.inception_v3({ numClasses: 4, generator: new fl.Generator(1) }),
  );
  checkFull(
    "inception_v3_noaux",
    () => fl.models.inception_v3({ numClasses: 4, auxLogits: false, generator: new fl.Generator(1) }),
  );
});

test("inception_v3: smallest inputs (full 75 / 299 with aux, tiny 39 / 55 with aux), errors below; tiny counts", async () => {
  const { INCEPTION_V3_CONFIGS, inceptionMinInputSize } = fl.models;
  assertEquals(inceptionMinInputSize(INCEPTION_V3_CONFIGS.full), 75);
  assertEquals(inceptionMinInputSize(INCEPTION_V3_CONFIGS.full, true), 299);
  assertEquals(inceptionMinInputSize(INCEPTION_V3_CONFIGS.tiny), 39);
  assertEquals(inceptionMinInputSize(INCEPTION_V3_CONFIGS.tiny, true), 55);
  const m = fl.models.inception_v3({ numClasses: 4, scale: "tiny" }).eval();
  try {
    await fl.scope(async () => {
      assertThrows(() => m.forward(fl.zeros([1, 3, 38, 38])), "at least 39x39");
      assertThrows(() => m.forwardWithAux(fl.zeros([1, 3, 54, 54])), "at least 55x55");
      const out = fl.noGrad(() => m.forward(fl.zeros([1, 3, 39, 39])));
      assertEquals(out.shape, [1, 4]);
      const both = fl.noGrad(() => m.forwardWithAux(fl.zeros([1, 3, 55, 55])));
      assertEquals(both.aux!.shape, [1, 4]);
      assert((await out.toArray()).every(Number.isFinite));
    });
  } finally {
    m.dispose();
  }
  assertThrows(() => fl.models.densenet161({ scale: "huge" as "tiny" }), 'scale must be "full" or "tiny"');
  for (
    const [build, count] of [
      [() => fl.models.densenet161({ numClasses: 4, scale: "tiny" }), 139_316],
      [() => fl.models.inception_v3({ numClasses: 4, scale: "tiny" }), 154_732],
      [() => fl.models.inception_v3({ numClasses: 4, scale: "tiny", auxLogits: false }), 151_048],
    ] as const
  ) {
    const t = build();
    assertEquals(t.parameterCount(), count, "tiny parameter count");
    t.dispose();
  }
});

type Golden = Record<string, { dtype: string; shape: number[]; data: Float32Array | Int32Array }>;

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** Loads the state dict, checks eval logits (and aux / train logits when present) and eval gradients. */
async function checkGolden(
  name: string,
  model: fl.nn.Module & { forwardWithAux?: (x: fl.Tensor) => { logits: fl.Tensor; aux: fl.Tensor | null } },
): Promise<void> {
  const all =
    (await fl.io.loadSafetensors(join(fixtures, `densenet_inception_${name}.safetensors`))) as Golden;
  const meta = await fl.io.readSafetensorsMetadata(join(fixtures, `densenet_inception_${name}.safetensors`));
  const state: Golden = {};
  for (const [k, v] of Object.entries(all)) if (!k.startsWith("__")) state[k] = v;
  const close = (got: Float32Array, want: ArrayLike<number>, msg: string) =>
    assertClose(got, want, { rtol: 1e-3, atol: 1e-4 * maxAbs(want), msg: `${name} ${msg}` });
  try {
    model.loadStateDict(state);
    model.eval();
    await fl.scope(async () => {
      const inp = all.__input__;
      const x = fl.tensor(inp.data as Float32Array, inp.shape);
      if (all.__aux__) {
        const { logits, aux } = fl.noGrad(() => model.forwardWithAux!(x));
        close(await aux!.toArray(), all.__aux__.data, "eval aux logits");
        close(await logits.toArray(), all.__logits__.data, "eval logits (forwardWithAux)");
      }
      const logits = model.forward(x);
      close(await logits.toArray(), all.__logits__.data, "eval logits");
      const r = fl.tensor(all.__R__.data as Float32Array, all.__R__.shape);
      fl.F.sum(fl.F.mul(logits, r)).backward();
      const params = Object.fromEntries(model.namedParameters());
      for (const k of meta.grads.split(",")) {
        const g = params[k].grad;
        assert(g, `${name}: no gradient for ${k}`);
        close(await g.toArray(), all[`__grad__.${k}`].data, `gradient of ${k}`);
      }
      if (all.__train_logits__) {
        model.train();
        const t = fl.noGrad(() => model.forward(x));
        close(await t.toArray(), all.__train_logits__.data, "training-mode logits");
        model.eval();
      }
    });
  } finally {
    for (const p of model.parameters()) p.grad?.dispose();
    model.dispose();
  }
}

test("densenet161 tiny: PyTorch's eval logits, gradients and training-mode logits after loadStateDict", async () => {
  await checkGolden("densenet_tiny", fl.models.densenet161({ numClasses: 4, scale: "tiny" }));
});

test("DenseNet at densenet161's widths, one layer per block: PyTorch's logits and gradients", async () => {
  const m = new fl.models.DenseNet({
    growthRate: 48,
    blockConfig: [1, 1, 1, 1],
    numInitFeatures: 96,
    bnSize: 4,
    numClasses: 4,
  });
  await checkGolden("densenet_reduced", m);
});

test("inception_v3 tiny (transformInput): PyTorch's eval logits, aux logits and gradients", async () => {
  await checkGolden(
    "inception_tiny",
    fl.models.inception_v3({ numClasses: 4, scale: "tiny", transformInput: true }),
  );
});

test("Inception3 at full widths, stem + Mixed_5b: PyTorch's logits and gradients", async () => {
  const m = new fl.models.Inception3({
    ...fl.models.INCEPTION_V3_CONFIGS.full,
    mixed: fl.models.INCEPTION_V3_CONFIGS.full.mixed.slice(0, 1),
    numClasses: 4,
    auxLogits: false,
    transformInput: false,
  });
  await checkGolden("inception_reduced", m);
});

async function trainStep(
  name: string,
  model: fl.nn.Module,
  lossOf: (m: fl.nn.Module, x: fl.Tensor, y: number[]) => fl.Tensor,
): Promise<void> {
  model.train();
  const x = fl.randn([16, 3, 64, 64], { seed: 7 });
  const y = Array.from({ length: 16 }, (_, i) => i % 4);
  try {
    // One untimed step compiles the pipelines.
    for (const timed of [false, true]) {
      await fl.scope(async () => {
        for (const p of model.parameters()) {
          p.grad?.dispose();
          p.grad = null;
        }
        const t0 = performance.now();
        const loss = lossOf(model, x, y);
        loss.backward();
        const v = await loss.item();
        await model.parameters()[0].grad!.toArray();
        if (timed) {
          console.log(
            `      ${name}: forward + backward on 16x3x64x64 in ${
              ((performance.now() - t0) / 1000).toFixed(2)
            } s`,
          );
        }
        assert(Number.isFinite(v), `${name}: loss ${v}`);
      });
    }
    for (const [k, p] of model.namedParameters()) assert(p.grad, `${name}: no gradient for ${k}`);
    const g = await model.parameters()[0].grad!.toArray();
    assert(g.every(Number.isFinite) && maxAbs(g) > 0, `${name}: first gradient is zero or not finite`);
  } finally {
    x.dispose();
    for (const p of model.parameters()) p.grad?.dispose();
    model.dispose();
  }
}

test("densenet161 tiny: training forward + backward on 16 images of 64x64", async () => {
  await trainStep(
    "densenet161 tiny",
    fl.models.densenet161({ numClasses: 4, scale: "tiny", generator: new fl.Generator(3) }),
    (m, x, y) => fl.F.crossEntropy(m.forward(x), y),
  );
});

test("inception_v3 tiny: training forward + backward with the aux loss on 16 images of 64x64", async () => {
  await trainStep(
    "inception_v3 tiny",
    fl.models.inception_v3({ numClasses: 4, scale: "tiny", generator: new fl.Generator(4) }),
    (m, x, y) => {
      const { logits, aux } = (m as InstanceType<typeof fl.models.Inception3>).forwardWithAux(x);
      assertEquals(aux!.shape, [16, 4]);
      return fl.F.add(fl.F.crossEntropy(logits, y), fl.F.scale(fl.F.crossEntropy(aux!, y), 0.4));
    },
  );
});
