// Inference fusion (src/nn/cnn_layers.ts convBatchNorm, src/kernels/conv.ts conv2dFused): a batch norm in
// eval mode folded into a per-channel scale and shift that the convolution's GEMM applies with the residual
// and the ReLU. Checked against a float64 direct convolution (tests/reference.ts) (shapes that reach the GEMM's edge
// tiles, several K chunks, groups, stride and the 1x1 path), against the unfused layers on the learners, and
// for what it refuses.
import * as fl from "../mod.ts";
import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";
import * as ref from "./reference.ts";
import { formula } from "./conv_data.ts";

await fl.init();

interface ConvCase {
  name: string;
  n: number;
  c: number;
  h: number;
  w: number;
  oc: number;
  k: number;
  stride: number;
  padding: number;
  groups: number;
}
// M (channels per group) off the 4-row tile, N (pixels) off the 8-column tile, K over the 256-row chunk.
const CASES: ConvCase[] = [
  {
    name: "3x3, K 270 (two chunks), edges",
    n: 2,
    c: 30,
    h: 7,
    w: 5,
    oc: 6,
    k: 3,
    stride: 1,
    padding: 1,
    groups: 1,
  },
  { name: "3x3 stride 2, 2 groups", n: 1, c: 8, h: 9, w: 11, oc: 10, k: 3, stride: 2, padding: 1, groups: 2 },
  { name: "1x1 (strided loaders)", n: 3, c: 20, h: 4, w: 6, oc: 13, k: 1, stride: 1, padding: 0, groups: 1 },
];

/** relu(conv(x, w) * scale + bias + residual) in float64, from tests/reference.ts's direct convolution. */
function reference(
  g: ConvCase,
  x: Float32Array,
  w: Float32Array,
  scale: Float32Array,
  bias: Float32Array,
  residual: Float32Array,
): { out: Float64Array; oh: number; ow: number } {
  const y = ref.conv2d(ref.arr(x, [g.n, g.c, g.h, g.w]), ref.arr(w, [g.oc, g.c / g.groups, g.k, g.k]), g);
  const [, , oh, ow] = y.shape, plane = oh * ow;
  const out = y.data.map((v, i) =>
    Math.max(0, v * scale[Math.floor(i / plane) % g.oc] + bias[Math.floor(i / plane) % g.oc] + residual[i])
  );
  return { out, oh, ow };
}

for (const g of CASES) {
  test(`conv2dFused equals a float64 direct convolution with scale, bias, residual and ReLU: ${g.name}`, async () => {
    const x = formula(g.n * g.c * g.h * g.w, 0.37, 0.1);
    const w = formula(g.oc * (g.c / g.groups) * g.k * g.k, 0.71, 0.3, 0.2);
    const scale = formula(g.oc, 1.3, 0.5, 1.5), bias = formula(g.oc, 2.1, 0.2, 0.3);
    const oh = Math.floor((g.h + 2 * g.padding - g.k) / g.stride) + 1;
    const ow = Math.floor((g.w + 2 * g.padding - g.k) / g.stride) + 1;
    const residual = formula(g.n * g.oc * oh * ow, 0.53, 0.9, 0.5);
    const want = reference(g, x, w, scale, bias, residual).out;
    const got = await fl.scope(() =>
      fl.F.conv2dFused(fl.tensor(x, [g.n, g.c, g.h, g.w]), fl.tensor(w, [g.oc, g.c / g.groups, g.k, g.k]), {
        scale: fl.tensor(scale, [g.oc]),
        bias: fl.tensor(bias, [g.oc]),
        residual: fl.tensor(residual, [g.n, g.oc, oh, ow]),
        relu: true,
      }, { stride: g.stride, padding: g.padding, groups: g.groups })
    ).toArray() as Float32Array;
    assertClose(Array.from(got), Array.from(want), { rtol: 1e-5, atol: 1e-5, msg: g.name });
    // Both signs occur, so the ReLU is tested, not vacuous.
    assert(
      want.some((v) => v === 0) && want.some((v) => v > 0.1),
      "the reference clips some outputs and not others",
    );
  });
}

test("conv2dFused: each part of the epilogue alone (scale only, bias only, ReLU only)", async () => {
  const g = CASES[0];
  const x = formula(g.n * g.c * g.h * g.w, 0.37, 0.1), w = formula(g.oc * g.c * 9, 0.71, 0.3, 0.2);
  const scale = formula(g.oc, 1.3, 0.5, 1.5), bias = formula(g.oc, 2.1, 0.2, 0.3);
  const xt = fl.tensor(x, [g.n, g.c, g.h, g.w]), wt = fl.tensor(w, [g.oc, g.c, 3, 3]);
  const plain = await fl.F.conv2d(xt, wt, null, { padding: 1 }).toArray() as Float32Array;
  const hw = g.h * g.w;
  const parts = [
    { epilogue: { scale: fl.tensor(scale, [g.oc]) }, f: (v: number, o: number) => v * scale[o] },
    { epilogue: { bias: fl.tensor(bias, [g.oc]) }, f: (v: number, o: number) => v + bias[o] },
    { epilogue: { relu: true }, f: (v: number) => Math.max(0, v) },
  ];
  for (const { epilogue, f } of parts) {
    const got = await fl.F.conv2dFused(xt, wt, epilogue, { padding: 1 }).toArray() as Float32Array;
    const want = Array.from(plain, (v, i) => f(v, Math.floor(i / hw) % g.oc));
    assertClose(Array.from(got), want, { rtol: 1e-6, atol: 1e-6, msg: Object.keys(epilogue)[0] });
  }
});

test("foldBatchNorm: scale gamma / sqrt(var + eps), shift beta + (b - mean) * scale, with a conv bias and without", async () => {
  const c = 5;
  const mean = formula(c, 0.9, 0.1), variance = Float32Array.from(formula(c, 1.7, 0.2), (v) => v * v + 0.1);
  const gamma = formula(c, 0.4, 1.1, 2), beta = formula(c, 1.3, 0.7), b = formula(c, 2.2, 0.4);
  const eps = 1e-3;
  const t = (a: Float32Array) => fl.tensor(a, [c]);
  for (const withBias of [true, false]) {
    const [scale, shift] = fl.F.foldBatchNorm(
      t(mean),
      t(variance),
      t(gamma),
      t(beta),
      eps,
      withBias ? t(b) : null,
    );
    const s = Array.from(gamma, (g, i) => g / Math.sqrt(variance[i] + eps));
    assertClose(Array.from(await scale.toArray() as Float32Array), s, { rtol: 1e-6, msg: "scale" });
    assertClose(
      Array.from(await shift.toArray() as Float32Array),
      s.map((si, i) => beta[i] + ((withBias ? b[i] : 0) - mean[i]) * si),
      { rtol: 1e-6, atol: 1e-6, msg: `shift, conv bias ${withBias}` },
    );
  }
});

test("conv2dFused refuses a wrong residual, a wrong scale and a recorded gradient, naming the problem", () => {
  const x = fl.randn([1, 4, 5, 5], { seed: 1 }), w = fl.randn([3, 4, 3, 3], { seed: 2, requiresGrad: true });
  assertThrows(
    () => fl.F.conv2dFused(x, w, { residual: fl.zeros([1, 3, 5, 5]) }),
    /residual must be \[1, ?3, ?3, ?3\].*got \[1, ?3, ?5, ?5\]/,
  );
  assertThrows(
    () => fl.noGrad(() => fl.F.conv2dFused(x, w, { scale: fl.zeros([4]) })),
    /scale must be \[3\]/,
  );
  assertThrows(() => fl.F.conv2dFused(x, w, { relu: true }), /no gradient: call it under noGrad/);
});

// The learners whose every convolution is followed by a batch norm, in eval mode under noGrad: fused against
// the same model with fusion off, after a training-mode forward has moved the running statistics off their
// initial values. The profile shows which path ran: no batch-norm apply pass, the scale and shift folded once
// per convolution.
const LEARNERS: [string, () => fl.nn.Module, number][] = [
  [
    "ResNet-152",
    () => fl.models.resnet152({ scale: "tiny", numClasses: 4, generator: new fl.Generator(3) }),
    0,
  ],
  [
    "ResNeXt-101",
    () => fl.models.resnext101_32x8d({ scale: "tiny", numClasses: 4, generator: new fl.Generator(3) }),
    0,
  ],
  ["VGG19-bn", () => fl.models.vgg19_bn({ scale: "tiny", numClasses: 4, generator: new fl.Generator(3) }), 0],
  [
    "Inception v3",
    () =>
      fl.models.inception_v3({
        scale: "tiny",
        numClasses: 4,
        generator: new fl.Generator(3),
        auxLogits: false,
      }),
    0,
  ],
  // DenseNet's norm1 and transitions' norms follow a concatenation or pooling, not a convolution: they stay.
  [
    "DenseNet-161",
    () => fl.models.densenet161({ scale: "tiny", numClasses: 4, generator: new fl.Generator(3) }),
    -1,
  ],
];
for (const [name, make, applyPasses] of LEARNERS) {
  test(`${name} in eval mode: fused inference equals the unfused layers and skips the batch-norm passes`, async () => {
    const model = make();
    const x = fl.randn([2, 3, 64, 64], { seed: 5 });
    fl.scope(() => void fl.noGrad(() => model.forward(x)));
    model.eval();
    const run = async (fused: boolean) => {
      const previous = fl.nn.setFusedInference(fused);
      fl.startProfile();
      try {
        const logits = await fl.scope(() => fl.noGrad(() => model.forward(x))).toArray() as Float32Array;
        return { logits, profile: fl.stopProfile() };
      } finally {
        fl.nn.setFusedInference(previous);
      }
    };
    const fused = await run(true), plain = await run(false);
    const max = Math.max(...Array.from(plain.logits, Math.abs));
    assertClose(Array.from(fused.logits), Array.from(plain.logits), {
      rtol: 1e-5,
      atol: 1e-5 * max,
      msg: name,
    });
    const calls = (rows: fl.ProfileRow[], prefix: string) =>
      rows.filter((r) => r.kernel.startsWith(prefix)).reduce((s, r) => s + r.calls, 0);
    const convs = calls(plain.profile, "batchnorm_apply");
    assert(convs > 0, "the unfused forward runs batch-norm passes");
    if (applyPasses === 0) {
      assertEquals(calls(fused.profile, "batchnorm_apply"), 0, "batch-norm passes when fused");
    } else assert(calls(fused.profile, "batchnorm_apply") < convs, "fewer batch-norm passes when fused");
    assert(calls(fused.profile, "batchnorm_fold") > 0, "the fused forward folds the batch norms");
    model.dispose?.();
  });
}
