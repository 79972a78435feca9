// The staged (workgroup-memory) GEMM that WebGPU runs on a GPU, forced on this suite's CPU adapter so that
// it is tested where the suite runs: matmul against float64, and every convolution pass (forward, input and
// weight gradient, split K included) against the streamed GEMM that the other tests check. WebGPU runs only:
// the WebAssembly backend has its own GEMM.
import * as fl from "../mod.ts";
import { matmul as refMatmul } from "./reference.ts";
import { setGemmChoice } from "../src/kernels/gemm.ts";
import { rng, toDevice } from "./opcheck.ts";
import { assert, assertClose, test } from "./harness.ts";

await fl.init();

/** Runs `fn` with the given GEMM forced, putting the earlier choice back after. */
async function withGemm<T>(choice: "staged" | "streamed", fn: () => Promise<T>): Promise<T> {
  const before = setGemmChoice(choice);
  fl.startProfile();
  try {
    return await fn();
  } finally {
    setGemmChoice(before);
    // Every GEMM dispatched ran the kernel asked for (the profile names them).
    const gemms = fl.stopProfile().filter((r) => /^(matmul|conv2d)_/.test(r.kernel));
    assert(gemms.length > 0, "no GEMM dispatched");
    const wrong = gemms.filter((r) => r.kernel.endsWith("_staged") !== (choice === "staged"));
    assert(wrong.length === 0, `${choice} asked for, ran ${wrong.map((r) => r.kernel).join(", ")}`);
  }
}

const webgpuTest = test.when(
  fl.backendInfo()?.backend === "webgpu",
  "the staged GEMM is a WGSL kernel: WebGPU only",
);
webgpuTest("staged GEMM: matmul of odd sizes, transposed and batched operands equals float64", async () => {
  const cases: { a: number[]; b: number[]; tA?: boolean; tB?: boolean }[] = [
    { a: [70, 17], b: [17, 33] },
    { a: [130, 65], b: [65, 129] },
    { a: [65, 130], b: [129, 65], tA: true, tB: true },
    { a: [3, 40, 50], b: [50, 70] },
    { a: [64, 16], b: [2, 16, 64] },
    { a: [1, 1], b: [1, 1] },
  ];
  let seed = 4000;
  for (const c of cases) {
    await withGemm("staged", () =>
      fl.scope(async () => {
        const a = rng(seed++).randn(c.a), b = rng(seed++).randn(c.b);
        const got = await fl.F.matmul(toDevice(a), toDevice(b), c.tA, c.tB).toArray();
        const want = refMatmul(a, b, c.tA, c.tB);
        assertClose(got, want.data, { rtol: 1e-5, atol: 1e-5, msg: `matmul ${JSON.stringify(c)}` });
      }));
  }
});

webgpuTest("staged GEMM: conv2d forward, input and weight gradients equal the streamed GEMM's", async () => {
  const convs = [
    { x: [2, 8, 13, 11], w: [40, 8, 3, 3], padding: 1, stride: 1, groups: 1 },
    { x: [2, 64, 9, 9], w: [72, 64, 1, 1], padding: 0, stride: 1, groups: 1 },
    { x: [2, 16, 15, 15], w: [64, 8, 3, 3], padding: 1, stride: 2, groups: 2 },
    { x: [1, 3, 40, 40], w: [64, 3, 7, 7], padding: 3, stride: 2, groups: 1 },
    // A weight gradient split along K: 8 x 48 x 48 output pixels, 36 x 36 outputs.
    { x: [8, 4, 48, 48], w: [36, 4, 3, 3], padding: 1, stride: 1, groups: 1 },
  ];
  let seed = 4100;
  for (const c of convs) {
    const xa = rng(seed++).randn(c.x), wa = rng(seed++).randn(c.w);
    const run = (choice: "staged" | "streamed") =>
      withGemm(choice, () =>
        fl.scope(async () => {
          const x = toDevice(xa, true), w = toDevice(wa, true);
          const y = fl.F.conv2d(x, w, null, { padding: c.padding, stride: c.stride, groups: c.groups });
          const r = toDevice(rng(seed + 50).randn(y.shape));
          fl.F.sum(fl.F.mul(y, r)).backward();
          return [await y.toArray(), await x.grad!.toArray(), await w.grad!.toArray()];
        }));
    const staged = await run("staged"), streamed = await run("streamed");
    ["forward", "input gradient", "weight gradient"].forEach((what, i) => {
      assert(staged[i].length === streamed[i].length, what);
      assertClose(staged[i], streamed[i], {
        rtol: 1e-4,
        atol: 1e-4,
        msg: `${what} of ${JSON.stringify(c)}`,
      });
    });
  }
});
