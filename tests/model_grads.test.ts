// Full-model gradients against PyTorch (float64) for the five learners at full width and reduced depth, in
// eval and in training mode: the gradient of sum(logits * R) with respect to every parameter and to the
// input. Fixture: tests/fixtures/model_grads.safetensors, written by tests/fixtures/make_model_grads.py from
// the reduced fixtures of make_resnet_vgg_goldens.py and make_densenet_inception_goldens.py. Per tensor the
// file holds a strided sample of the gradient (at most 256 elements, positions floor(k * n / m)) and the
// full gradient's L2 norm and max |g|.
import * as fl from "../mod.ts";
await fl.init();

import { fileURLToPath } from "node:url";
import { assert, assertClose, assertEquals, test } from "./harness.ts";

const fixturePath = (file: string) => fileURLToPath(new URL(`./fixtures/${file}`, import.meta.url));
const GRADS_FILE = fixturePath("model_grads.safetensors");
const SAMPLES = 256;

type Kind = "resnet" | "vgg" | "densenet" | "inception";
interface ModelEntry {
  kind: Kind;
  /** The fixture file (state dict and __input__) the gradients were computed from. */
  source: string;
  /** The library's config of that architecture (VGG and Inception with dropout 0). */
  config: Record<string, unknown>;
  /** Parameter names in PyTorch's named_parameters() order. */
  params: string[];
  param_count: number;
}
const models = JSON.parse((await fl.io.readSafetensorsMetadata(GRADS_FILE)).models) as Record<
  string,
  ModelEntry
>;
const grads = await fl.io.loadSafetensors(GRADS_FILE);

function build(entry: ModelEntry): fl.nn.Module {
  const init = { generator: new fl.Generator(2) };
  switch (entry.kind) {
    case "resnet":
      return new fl.models.ResNet(entry.config as unknown as fl.models.ResNetConfig, init);
    case "vgg":
      return new fl.models.VGG(entry.config as unknown as fl.models.VGGConfig, init);
    case "densenet":
      return new fl.models.DenseNet(entry.config as unknown as fl.models.DenseNetConfig, init);
    case "inception":
      return new fl.models.Inception3(entry.config as unknown as fl.models.InceptionConfig, init);
  }
}

/** The positions the fixture sampled: floor(k * n / m), k < m = min(n, 256) (exact: n * k < 2^53). */
function samplePositions(n: number): number[] {
  const m = Math.min(n, SAMPLES);
  return Array.from({ length: m }, (_, k) => Math.floor((k * n) / m));
}

/**
 * One tensor's gradient against the fixture: the sampled elements (rtol 1e-3, atol 1e-4 x the full
 * gradient's max |g|: float32 accumulation over up to ~10^5 terms cancels where a gradient is near zero),
 * then the L2 norm and max |g| of the whole gradient, both to 1e-3 relative. `scale` raises the atol's
 * reference magnitude where the gradient is a cancellation (see the caller). Each bound is widened by the
 * fixture's ReLU-tie allowance: what flipping the ReLU inputs within float32 rounding of zero (~10-60 of the
 * ~10^6 in a model) changes in that gradient, computed in float64 (see make_model_grads.py; zero where no
 * tie reaches the tensor).
 */
function checkGradient(
  label: string,
  got: Float32Array,
  key: string,
  scale: number,
  modelScale: number,
): void {
  const sample = grads[`${key}.sample`].data as Float32Array;
  const [norm, maxAbs, tieNorm, tieMax] = grads[`${key}.stats`].data as Float32Array;
  const tie = grads[`${key}.tie_allowance`]?.data as Float32Array | undefined;
  assert(maxAbs > 0, `${label}: the reference gradient is all zero (the fixture checks nothing)`);
  if (maxAbs < 1e-9 * modelScale) {
    // Analytically zero, float64 roundoff in the reference: a conv bias feeding a batch-statistics BN (the
    // BN subtracts the channel mean, so the bias cancels). float32 leaves sums of ~10^4 cancelling terms.
    let max = 0;
    for (const v of got) max = Math.max(max, Math.abs(v));
    assert(
      max <= 1e-5 * modelScale,
      `${label}: gradient should vanish (reference max ${maxAbs}), got max |g| ${max} > 1e-5 x ${modelScale}`,
    );
    return;
  }
  const positions = samplePositions(got.length);
  assertEquals(positions.length, sample.length, `${label}: number of sampled elements`);
  // assertClose's atol is one number: fold each element's tie allowance into the value compared instead.
  const sampled = positions.map((i, k) => {
    const v = got[i], slack = tie ? tie[k] : 0;
    return Math.abs(v - sample[k]) <= slack ? sample[k] : v - Math.sign(v - sample[k]) * slack;
  });
  assertClose(sampled, sample, {
    rtol: 1e-3,
    atol: 1e-4 * Math.max(maxAbs, scale),
    msg: `${label}: sampled elements (at positions floor(k * ${got.length} / ${sample.length}), ` +
      `each moved toward the reference by its tie allowance)`,
  });
  let sumSq = 0, max = 0;
  for (const v of got) {
    sumSq += v * v;
    max = Math.max(max, Math.abs(v));
  }
  assertClose(Math.sqrt(sumSq), norm, {
    rtol: 1e-3,
    atol: tieNorm,
    msg: `${label}: L2 norm of the gradient`,
  });
  assertClose(max, maxAbs, { rtol: 1e-3, atol: tieMax, msg: `${label}: max |g|` });
}

async function checkModelGrads(name: string, mode: "eval" | "train"): Promise<void> {
  const entry = models[name];
  assert(entry, `no fixture ${name} in model_grads.safetensors`);
  const all = await fl.io.loadSafetensors(fixturePath(entry.source));
  const state = Object.fromEntries(Object.entries(all).filter(([k]) => !k.startsWith("__")));
  const model = build(entry);
  let x: fl.Tensor | null = null;
  try {
    assertEquals(model.parameterCount(), entry.param_count, `${name}: parameter count`);
    model.loadStateDict(state);
    // train(): BatchNorm normalises with the batch statistics, as PyTorch's training mode.
    if (mode === "train") model.train();
    else model.eval();
    const input = all.__input__;
    x = fl.tensor(input.data as Float32Array, input.shape, { requiresGrad: true });
    fl.scope(() => {
      const r = grads[`${name}.R`];
      const logits = model.forward(x!);
      assertEquals(logits.shape, r.shape, `${name}: logits shape`);
      fl.F.sum(fl.F.mul(logits, fl.tensor(r.data as Float32Array, r.shape))).backward();
    });
    const named = model.namedParameters();
    assertEquals(
      named.map(([k]) => k),
      entry.params,
      `${name}: parameter names and order equal PyTorch's named_parameters()`,
    );
    const maxOf = (k: string) => grads[`${name}.${mode}.${k}.stats`]?.data[1] ?? 0;
    const modelScale = Math.max(...entry.params.map(maxOf));
    let checked = 0;
    for (const [k, p] of named) {
      assert(p.grad, `${name} ${mode}: no gradient for ${k}`);
      // A BN weight's gradient sum(dy * xhat) sums the same terms as its bias's sum(dy): its rounding
      // scales with the bias gradient too. In training mode a later batch-statistics BN makes the loss
      // invariant to scaling (weight, bias) of a channel together, so weight * dL/dweight = -bias *
      // dL/dbias and with |bias| ~0.1 the weight's gradient is the small result of a cancellation
      // (densenet_reduced's norm0: max 8e-4 against 1e-2 for its bias; PyTorch's own float32 misses
      // it by 2x the per-tensor atol).
      const sibling = k.endsWith(".weight") && p.rank === 1 ? k.replace(/weight$/, "bias") : null;
      const scale = sibling && entry.params.includes(sibling) ? maxOf(sibling) : 0;
      checkGradient(
        `${name} ${mode} ${k}`,
        await p.grad.toArray(),
        `${name}.${mode}.${k}`,
        scale,
        modelScale,
      );
      checked++;
    }
    assertEquals(checked, model.parameters().length, `${name}: every parameter checked`);
    assert(x.grad, `${name} ${mode}: no gradient for the input`);
    checkGradient(
      `${name} ${mode} input`,
      await x.grad.toArray(),
      `${name}.${mode}.__input__`,
      0,
      modelScale,
    );
  } finally {
    x?.grad?.dispose();
    x?.dispose();
    for (const p of model.parameters()) p.grad?.dispose();
    model.dispose();
  }
}

const DESCRIPTIONS: Record<string, string> = {
  resnet_fullwidth: "ResNet-152 stem + layer1..2 (one Bottleneck each, full width)",
  resnext_fullwidth: "ResNeXt-101 32x8d stem + layer1 (one block, 32 groups)",
  vgg_fullwidth: "VGG-19-BN first two stages, AdaptiveAvgPool2d(7), classifier 6272-16-16-4",
  densenet_reduced: "DenseNet at densenet161's widths, one layer per block",
  inception_reduced: "Inception v3 at full widths, stem + Mixed_5b, no aux",
};

for (const name of Object.keys(DESCRIPTIONS)) {
  for (const mode of ["eval", "train"] as const) {
    const how = mode === "eval" ? "eval mode (running statistics)" : "training mode (batch statistics)";
    test(`${DESCRIPTIONS[name]}: every parameter's and the input's gradient equal PyTorch's, ${how}`, async () => {
      await checkModelGrads(name, mode);
    });
  }
}

test("model_grads.safetensors covers the five learners, in both modes, every parameter", () => {
  assertEquals(Object.keys(models).sort(), Object.keys(DESCRIPTIONS).sort());
  for (const [name, entry] of Object.entries(models)) {
    for (const mode of ["eval", "train"]) {
      for (const k of [...entry.params, "__input__"]) {
        assert(grads[`${name}.${mode}.${k}.sample`], `missing ${name}.${mode}.${k}.sample`);
      }
    }
  }
});
