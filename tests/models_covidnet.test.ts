// COVID-Net small against its PyTorch definition (fixtures written by tests/fixtures/make_covidnet_goldens.py):
// the full model's parameter count and state-dict keys/shapes, and for a tiny and a partly full-width
// variant the logits and the gradients of sum(logits * weights) for the input and the parameters, after
// loading PyTorch's state dict from safetensors; the reference's block 4_1 wiring and the corrected one.
import * as fl from "../mod.ts";
await fl.init();

import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";

interface KeysFixture {
  full: { num_classes: number; param_count: number; state_dict: [string, number[]][] };
  fixtures: Record<string, { config: fl.models.CovidNetConfig; param_count: number }>;
}
const fixture: KeysFixture = JSON.parse(
  readFileSync(new URL("./fixtures/covidnet_keys.json", import.meta.url), "utf8"),
);
const fixturePath = (name: string) =>
  fileURLToPath(new URL(`./fixtures/covidnet_${name}.safetensors`, import.meta.url));

/** Within rtol of the largest reference magnitude. */
function assertCloseRel(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, msg: string) {
  let maxAbs = 0;
  for (let i = 0; i < expected.length; i++) maxAbs = Math.max(maxAbs, Math.abs(expected[i]));
  assert(maxAbs > 0, `${msg}: the reference is all zero`);
  assertClose(actual, expected, { rtol, atol: rtol * maxAbs, msg });
}

test("covidnet (full, numClasses 4): 29,117,972 parameters and the reference's state-dict keys and shapes", () => {
  const model = fl.models.covidnet({ numClasses: 4, generator: new fl.Generator(1) });
  try {
    assertEquals(fixture.full.param_count, 29_117_972);
    assertEquals(model.parameterCount(), fixture.full.param_count, "parameter count");
    const own = Object.entries(model.stateDict()).map(([k, t]) => [k, [...t.shape]]);
    assertEquals(own, fixture.full.state_dict, "state dict");
  } finally {
    model.dispose();
    fl.trimPool();
  }
});

for (const name of Object.keys(fixture.fixtures)) {
  test(`covidnet ${name}: logits and gradients (input and parameters) equal PyTorch's`, async () => {
    const { config, param_count } = fixture.fixtures[name];
    const all = await fl.io.loadSafetensors(fixturePath(name));
    const model = new fl.models.CovidNet(config, { generator: new fl.Generator(2) });
    try {
      assertEquals(model.parameterCount(), param_count, "parameter count");
      model.loadStateDict(Object.fromEntries(Object.entries(all).filter(([k]) => !k.startsWith("__"))));
      await fl.scope(async () => {
        const input = all.__input__;
        const x = fl.tensor(input.data as Float32Array, input.shape, { requiresGrad: true });
        const logits = model.forward(x);
        assertEquals(logits.shape, [2, 4], "logits shape");
        assertCloseRel(await logits.toArray(), all.__logits__.data, 1e-3, "logits");
        const weights = fl.tensor(all.__weights__.data as Float32Array, all.__weights__.shape);
        fl.F.sum(fl.F.mul(logits, weights)).backward();
        assertCloseRel(await x.grad!.toArray(), all["__grad__.__input__"].data, 1e-3, "input gradient");
        const params = Object.fromEntries(model.namedParameters());
        let checked = 0;
        for (const [k, g] of Object.entries(all)) {
          if (!k.startsWith("__grad__.") || k === "__grad__.__input__") continue;
          const key = k.slice("__grad__.".length);
          assertCloseRel(await params[key].grad!.toArray(), g.data, 1e-3, `gradient of ${key}`);
          checked++;
        }
        assert(checked >= 8, `only ${checked} parameter gradients checked`);
      });
    } finally {
      model.dispose();
    }
  });
}

test("covidnet tiny: the fixture's architecture; the reference wiring differs from the corrected one", async () => {
  const tiny = fixture.fixtures.tiny.config;
  const corrected = fl.models.covidnet({ numClasses: 4, scale: "tiny", generator: new fl.Generator(3) });
  const reference = fl.models.covidnet({
    numClasses: 4,
    scale: "tiny",
    wiring: "reference",
    generator: new fl.Generator(3),
  });
  try {
    for (const [k, v] of Object.entries(tiny)) {
      assertEquals(reference.config[k as keyof fl.models.CovidNetConfig], v, `tiny config ${k}`);
    }
    assertEquals(corrected.parameterCount(), fixture.fixtures.tiny.param_count, "parameter count");
    // Same seed, same weights: only block 4_1's input differs (p33 once against p32 twice).
    await fl.scope(async () => {
      const x = fl.randn([2, 3, 64, 64], { seed: 7 });
      const a = await fl.noGrad(() => corrected.forward(x)).toArray();
      const b = await fl.noGrad(() => reference.forward(x)).toArray();
      assert(a.every(Number.isFinite) && b.every(Number.isFinite), "finite logits");
      assert(a.some((v, i) => Math.abs(v - b[i]) > 1e-4 * Math.max(1, Math.abs(v))), "wirings agree");
    });
  } finally {
    corrected.dispose();
    reference.dispose();
  }
});

test("covidnet refuses inconsistent configs with a message that names the problem", () => {
  const base = {
    stemWidth: 8,
    widths: [16, 32, 64, 128],
    blocks: [3, 4, 6, 3],
    inputSize: 64,
    numClasses: 4,
  };
  assertThrows(
    () => new fl.models.CovidNet({ ...base, inputSize: 31 }),
    /inputSize must be an integer of at least 32/,
  );
  assertThrows(() => new fl.models.CovidNet({ ...base, blocks: [3, 4, 6] }), /4 stages/);
  assertThrows(
    () => new fl.models.CovidNet({ ...base, blocks: [3, 4, 5, 3], wiring: "reference" }),
    /reference wiring needs 6 blocks in stage 3/,
  );
  assertThrows(() => new fl.models.CovidNet({ ...base, stemWidth: 6 }), /multiple of 4, got 6/);
  assertThrows(() => fl.models.covidnet({ scale: "huge" as "tiny" }), /scale must be "full" or "tiny"/);
});

test("covidnet init: 'signal' keeps the image in the logits, the reference's PyTorch defaults lose it", async () => {
  const signal = fl.models.covidnet({ numClasses: 4, scale: "tiny", generator: new fl.Generator(4) });
  const reference = fl.models.covidnet({
    numClasses: 4,
    scale: "tiny",
    init: "default",
    generator: new fl.Generator(4),
  });
  try {
    // Weights N(0, gain / fan_in): the stem 2 (ReLU follows), each block's last projection 0.5, the rest 1.
    for (const [k, p] of signal.namedParameters()) {
      const v = await p.toArray();
      if (k.endsWith("bias")) {
        if (k.startsWith("classifier")) continue; // PyTorch's default, as the reference
        assert(v.every((x) => x === 0), `${k}: bias not zero`);
        continue;
      }
      if (k.startsWith("classifier") || v.length < 2000) continue; // too few draws to estimate a variance
      const gain = k === "conv1.weight" ? 2 : k.endsWith("network.4.weight") ? 0.5 : 1;
      const fanIn = p.shape.slice(1).reduce((a, b) => a * b, 1);
      const variance = v.reduce((s, x) => s + x * x, 0) / v.length;
      assertClose(variance, gain / fanIn, { rtol: 0.1, msg: `${k} variance` });
    }
    // Different images, different logits: their between-image rms against their rms at initialisation.
    const share = async (model: fl.nn.Module) =>
      await fl.scope(async () => {
        const a = await fl.noGrad(() => model.forward(fl.randn([8, 3, 64, 64], { seed: 9 }))).toArray();
        const mean = [0, 1, 2, 3].map((c) => a.filter((_, i) => i % 4 === c).reduce((s, x) => s + x, 0) / 8);
        const all = a.reduce((s, x) => s + x * x, 0),
          between = a.reduce((s, x, i) => s + (x - mean[i % 4]) ** 2, 0);
        return Math.sqrt(between / all);
      });
    const kept = await share(signal), lost = await share(reference);
    assert(kept > 0.1, `signal init: between-image share ${kept}`);
    assert(lost < 1e-4, `reference init: between-image share ${lost}`);
  } finally {
    signal.dispose();
    reference.dispose();
  }
});
