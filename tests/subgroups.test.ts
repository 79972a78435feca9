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
