// Subgroup sums (src/kernels/group_sum.ts; opt-in: fl.init({ subgroups: true }), forced on here) where the
// WebGPU device offers `subgroups` (Bun's Dawn on lavapipe does; Deno's wgpu does not, and WebAssembly has
// none): batch norm's per-channel sums (forward statistics and the backward's two sums) and the one-workgroup
// reductions of `sum`, against the same kernels with the tree and against float64. They add in another
// order, so they agree within float32 rounding. Off by default: the suite's other runs use the tree.
import * as fl from "../mod.ts";
import { setSubgroupSums } from "../src/kernels/group_sum.ts";
import { assert, assertClose, skip, test } from "./harness.ts";
import * as ref from "./reference.ts";

await fl.init();
const needsSubgroups = () => {
  const info = fl.backendInfo()!;
  if (info.backend !== "webgpu") skip("WebAssembly has no subgroups: its twins sum in order");
  if (!info.features.includes("subgroups")) skip(`this adapter (${info.adapter}) offers no subgroups`);
};

/** Runs `fn` with subgroup sums on or off, under a profile; returns its result and the kernels it ran. */
async function run<T>(subgroups: boolean, fn: () => Promise<T>): Promise<{ value: T; kernels: string[] }> {
  const before = setSubgroupSums(subgroups);
  try {
    fl.startProfile();
    const value = await fn();
    return { value, kernels: (await fl.finishProfile()).map((r) => r.kernel) };
  } finally {
    setSubgroupSums(before);
  }
}

test("batch norm (training) with subgroup sums: statistics, output and the three gradients as with the tree, and as float64", async () => {
  needsSubgroups();
  // 2 x 5 x 33 x 31: 2,046 values a channel (the 64-thread group), and 3 x 4 x 50 x 50 (the 256-thread one)
  for (const shape of [[2, 5, 33, 31], [3, 4, 50, 50]]) {
    const [n, c, h, w] = shape, size = n * c * h * w;
    const x = Float32Array.from({ length: size }, (_, i) => 3 + Math.sin(0.37 * i) * (1 + (i % 7)));
    const g = Float32Array.from({ length: size }, (_, i) => Math.cos(0.11 * i));
    const pass = () =>
      fl.scope(() => {
        const xt = fl.tensor(x, shape, { requiresGrad: true });
        const weight = fl.tensor(Float32Array.from({ length: c }, (_, i) => 1 + 0.1 * i), [c], {
          requiresGrad: true,
        });
        const bias = fl.tensor(Float32Array.from({ length: c }, (_, i) => 0.2 * i), [c], {
          requiresGrad: true,
        });
        const y = fl.F.batchNorm2d(xt, fl.zeros([c]), fl.ones([c]), weight, bias, { training: true });
        fl.F.sum(fl.F.mul(y, fl.tensor(g, shape))).backward();
        return Promise.all([y, xt.grad!, weight.grad!, bias.grad!].map((t) => t.toArray())) as Promise<
          Float32Array[]
        >;
      });
    const sub = await run(true, pass), tree = await run(false, pass);
    assert(
      sub.kernels.some((k) => /^batchnorm_stats_\w+_subgroup$/.test(k)),
      `subgroup kernels: ${sub.kernels}`,
    );
    assert(
      sub.kernels.some((k) => /^batchnorm_grad_sums_\w+_subgroup$/.test(k)),
      `subgroup kernels: ${sub.kernels}`,
    );
    assert(!tree.kernels.some((k) => k.includes("subgroup")), `tree kernels: ${tree.kernels}`);
    const names = ["output", "dx", "dweight", "dbias"];
    sub.value.forEach((values, i) => {
      const scale = values.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      assertClose(Array.from(values), Array.from(tree.value[i]), {
        rtol: 0,
        atol: 2e-6 * scale,
        msg: `${shape}: ${names[i]}, subgroups against the tree`,
      });
    });
    // The output against float64: (x - mean) / sqrt(var + eps) * weight + bias per channel.
    const want = new Float64Array(size);
    for (let ch = 0; ch < c; ch++) {
      const values: number[] = [];
      for (let img = 0; img < n; img++) {
        for (let p = 0; p < h * w; p++) values.push(x[(img * c + ch) * h * w + p]);
      }
      const mean = values.reduce((s, v) => s + v, 0) / values.length;
      const variance = values.reduce((s, v) => s + (v - mean) ** 2, 0) / values.length;
      for (let img = 0; img < n; img++) {
        for (let p = 0; p < h * w; p++) {
          const i = (img * c + ch) * h * w + p;
          want[i] = (x[i] - mean) / Math.sqrt(variance + 1e-5) * (1 + 0.1 * ch) + 0.2 * ch;
        }
      }
    }
    assertClose(Array.from(sub.value[0]), Array.from(want), {
      rtol: 0,
      atol: 1e-5,
      msg: `${shape}: output, float64`,
    });
  }
});

test("sum over many values with subgroup sums equals the tree's and float64's within float32 rounding", async () => {
  needsSubgroups();
  const shape = [7, 3000];
  const x = Float32Array.from({ length: 21000 }, (_, i) => Math.sin(0.013 * i) + 0.5);
  const pass = () => fl.scope(() => fl.F.sum(fl.tensor(x, shape), 1).toArray()) as Promise<Float32Array>;
  const sub = await run(true, pass), tree = await run(false, pass);
  assert(sub.kernels.includes("reduce_sum_group_subgroup"), `kernels: ${sub.kernels}`);
  assert(tree.kernels.includes("reduce_sum_group"), `kernels: ${tree.kernels}`);
  const want = ref.sum(ref.arr(x, shape), [1]).data;
  assertClose(Array.from(sub.value), Array.from(want), {
    rtol: 1e-6,
    atol: 0,
    msg: "subgroups against float64",
  });
  assertClose(Array.from(sub.value), Array.from(tree.value), {
    rtol: 1e-6,
    atol: 0,
    msg: "subgroups against the tree",
  });
});

/**
 * Softmax and log-softmax (along the last dim, and along dim 1 of a 3-D tensor) and the cross-entropy and
 * focal losses over rows of 1,000 classes, with their gradients: long rows run a workgroup a row on WebGPU.
 * A logit of 100 in some rows makes exp overflow float32 unless the row's true maximum is subtracted. The
 * tolerance is relative to the largest output or 1, the inputs' scale: softmax's gradient at a row's
 * dominant class is g - sum(g p), a difference of two numbers near 1.
 */
function longRowPass(): Promise<Float32Array[]> {
  const [b, m] = [5, 1000];
  const logits = Float32Array.from(
    { length: b * m },
    (_, i) => 4 * Math.sin(0.37 * i) + (i % 13) * 0.3 + (i % 2000 === 321 ? 100 : 0),
  );
  const g = Float32Array.from({ length: b * m }, (_, i) => Math.cos(0.11 * i));
  const labels = [3, 999, 0, 512, 77];
  return fl.scope(() => {
    const outs: fl.Tensor[] = [];
    for (const f of [fl.F.softmax, fl.F.logSoftmax]) {
      for (const shape of [[b, m], [1, m, b]]) {
        const x = fl.tensor(logits, shape, { requiresGrad: true });
        const y = f(x, shape.length === 2 ? -1 : 1);
        fl.F.sum(fl.F.mul(y, fl.tensor(g, shape))).backward();
        outs.push(y, x.grad!);
      }
    }
    for (const loss of ["ce", "focal"]) {
      const x = fl.tensor(logits, [b, m], { requiresGrad: true });
      const l = loss === "ce" ? fl.F.crossEntropy(x, labels) : fl.F.focalLoss(x, labels, { gamma: 2 });
      l.backward();
      outs.push(l, x.grad!);
    }
    return Promise.all(outs.map((t) => t.toArray()));
  });
}

/** The float64 values of {@link longRowPass}'s outputs, in its order. */
function longRowReference(): Float64Array[] {
  const [b, m] = [5, 1000];
  const logits = Float64Array.from(
    { length: b * m },
    (_, i) => Math.fround(4 * Math.sin(0.37 * i) + (i % 13) * 0.3 + (i % 2000 === 321 ? 100 : 0)),
  );
  const g = Float64Array.from({ length: b * m }, (_, i) => Math.fround(Math.cos(0.11 * i)));
  const labels = [3, 999, 0, 512, 77];
  const out: Float64Array[] = [];
  for (const log of [false, true]) {
    for (const transposed of [false, true]) {
      // [1, m, b] along dim 1 holds row r at r + t * b: the same rows, interleaved
      const at = (r: number, t: number) => (transposed ? t * b + r : r * m + t);
      const y = new Float64Array(b * m), dx = new Float64Array(b * m);
      for (let r = 0; r < b; r++) {
        const row = Array.from({ length: m }, (_, t) => logits[at(r, t)]);
        const mx = Math.max(...row), lse = mx + Math.log(row.reduce((s, v) => s + Math.exp(v - mx), 0));
        const p = row.map((v) => Math.exp(v - lse));
        const gy = Array.from({ length: m }, (_, t) => g[at(r, t)]);
        const dot = log ? gy.reduce((s, v) => s + v, 0) : gy.reduce((s, v, t) => s + v * p[t], 0);
        for (let t = 0; t < m; t++) {
          y[at(r, t)] = log ? row[t] - lse : p[t];
          dx[at(r, t)] = log ? gy[t] - p[t] * dot : p[t] * (gy[t] - dot);
        }
      }
      out.push(y, dx);
    }
  }
  for (const gamma of [0, 2]) {
    let total = 0;
    const dx = new Float64Array(b * m);
    for (let r = 0; r < b; r++) {
      const row = Array.from(logits.subarray(r * m, (r + 1) * m));
      const mx = Math.max(...row), lse = mx + Math.log(row.reduce((s, v) => s + Math.exp(v - mx), 0));
      const lp = row[labels[r]] - lse, q = Math.exp(lp), omq = -Math.expm1(lp);
      total += -(omq ** gamma) * lp;
      // dL/dz_j = coeff (delta_yj - p_j), coeff = -[(1-q)^g - g (1-q)^(g-1) q log q] / B
      const coeff = -((omq ** gamma) - (gamma === 0 ? 0 : gamma * omq ** (gamma - 1) * q * lp)) / b;
      for (let t = 0; t < m; t++) {
        dx[r * m + t] = coeff * ((t === labels[r] ? 1 : 0) - Math.exp(row[t] - lse));
      }
    }
    out.push(Float64Array.of(total / b), dx);
  }
  return out;
}

const LONG_ROW_NAMES = [
  "softmax",
  "softmax dx",
  "softmax dim 1",
  "softmax dim 1 dx",
  "log-softmax",
  "log-softmax dx",
  "log-softmax dim 1",
  "log-softmax dim 1 dx",
  "cross-entropy",
  "cross-entropy dx",
  "focal",
  "focal dx",
];

test("rows of 1,000 classes run a workgroup a row on WebGPU: softmax, log-softmax, cross-entropy, focal and their gradients against float64", async () => {
  if (fl.backendInfo()!.backend !== "webgpu") skip("WebAssembly runs a thread a row at every length");
  const { value, kernels } = await run(false, longRowPass);
  for (const k of ["softmax_fwd_group", "softmax_bwd_group", "log_softmax_fwd_group", "focal_fwd_group"]) {
    assert(kernels.includes(k), `${k} in ${kernels}`);
  }
  const want = longRowReference();
  value.forEach((got, i) => {
    const scale = want[i].reduce((s, v) => Math.max(s, Math.abs(v)), 0);
    assertClose(Array.from(got), Array.from(want[i]), {
      rtol: 0,
      atol: 2e-6 * Math.max(scale, 1),
      msg: LONG_ROW_NAMES[i],
    });
  });
});

test("long rows with subgroup maxima and sums: the tree's values within float32 rounding", async () => {
  needsSubgroups();
  const sub = await run(true, longRowPass), tree = await run(false, longRowPass);
  for (
    const k of ["softmax_fwd_group_subgroup", "log_softmax_bwd_group_subgroup", "focal_bwd_group_subgroup"]
  ) {
    assert(sub.kernels.includes(k), `${k} in ${sub.kernels}`);
  }
  sub.value.forEach((got, i) => {
    const scale = tree.value[i].reduce((s, v) => Math.max(s, Math.abs(v)), 0);
    assertClose(Array.from(got), Array.from(tree.value[i]), {
      rtol: 0,
      atol: 2e-6 * Math.max(scale, 1),
      msg: `${LONG_ROW_NAMES[i]}: subgroups against the tree`,
    });
  });
});
