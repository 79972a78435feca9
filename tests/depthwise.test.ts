// The depthwise convolution kernel of the WebAssembly backend (src/kernels/depthwise.ts,
// src/kernels/wasm/depthwise.ts): the forward pass with the fused epilogue and the stride-1 input gradient
// against tests/reference.ts's float64 direct convolution, over 3x3 and 5x5 windows, strides 1 to 3, padding,
// dilation and rows whose width is not a multiple of four; the forward's bits equal the implicit GEMM's (it
// sums the taps in the GEMM's order); what "auto" gives it and what goes to the GEMM; and a result written
// for tests/both.ts, which checks that Deno and Bun give the same bits.
import * as fl from "../mod.ts";
import { convPlan, type WasmConvAlgorithm } from "../src/kernels/conv.ts";
import { formula, largest, usingConvAlgorithm as using } from "./conv_data.ts";
import { assertClose, assertEquals, skip, test, writeArtifact } from "./harness.ts";
import * as ref from "./reference.ts";

await fl.init();
const onWasm = fl.backendInfo()?.backend === "wasm";

const CASES = [
  { n: 2, c: 5, h: 9, w: 11, k: 3, stride: 1, padding: 1, dilation: 1 },
  { n: 1, c: 7, h: 13, w: 10, k: 5, stride: 2, padding: 2, dilation: 1 },
  { n: 2, c: 3, h: 12, w: 17, k: 3, stride: 2, padding: 1, dilation: 1 },
  { n: 1, c: 4, h: 15, w: 15, k: 3, stride: 1, padding: 2, dilation: 2 },
  { n: 1, c: 4, h: 8, w: 5, k: 5, stride: 1, padding: 0, dilation: 1 },
  { n: 1, c: 6, h: 16, w: 16, k: 3, stride: 3, padding: 0, dilation: 1 },
  { n: 3, c: 2, h: 3, w: 2, k: 3, stride: 1, padding: 1, dilation: 1 },
];

for (const g of CASES) {
  const name =
    `${g.n}x${g.c} ${g.h}x${g.w}, ${g.k}x${g.k} stride ${g.stride} padding ${g.padding} dilation ${g.dilation}`;
  test(`depthwise kernel equals the float64 direct convolution: forward with epilogue, input gradient (${name})`, async () => {
    if (!onWasm) skip("the depthwise kernel runs on the WebAssembly backend only");
    const options = { stride: g.stride, padding: g.padding, dilation: g.dilation, groups: g.c };
    const x = formula(g.n * g.c * g.h * g.w, 0.37, 0.1), w = formula(g.c * g.k * g.k, 0.71, 0.3, 0.3);
    const want = ref.conv2d(ref.arr(x, [g.n, g.c, g.h, g.w]), ref.arr(w, [g.c, 1, g.k, g.k]), options);
    const [, , oh, ow] = want.shape, plane = oh * ow;
    const scale = formula(g.c, 1.3, 0.5, 1.5), bias = formula(g.c, 2.1, 0.2, 0.3);
    const residual = formula(want.data.length, 0.53, 0.9, 0.5), dy = formula(want.data.length, 0.29, 0.4);
    const wantDx = ref.conv2dInputGrad(
      ref.arr(dy, want.shape),
      ref.arr(w, [g.c, 1, g.k, g.k]),
      [g.n, g.c, g.h, g.w],
      options,
    );
    const { y, plain, gemm, dx, plan } = await fl.scope(async () => {
      const xt = fl.tensor(x, [g.n, g.c, g.h, g.w], { requiresGrad: true });
      const wt = fl.tensor(w, [g.c, 1, g.k, g.k]);
      const fused = fl.noGrad(() =>
        fl.F.conv2dFused(xt, wt, {
          scale: fl.tensor(scale, [g.c]),
          bias: fl.tensor(bias, [g.c]),
          residual: fl.tensor(residual, want.shape),
          relu: true,
        }, options)
      );
      const out = fl.F.conv2d(xt, wt, null, options);
      fl.F.sum(fl.F.mul(out, fl.tensor(dy, want.shape))).backward();
      const direct = await using(
        "direct",
        () => fl.noGrad(() => fl.F.conv2d(xt, wt, null, options)).toArray(),
      );
      return {
        y: await fused.toArray() as Float32Array,
        plain: await out.toArray() as Float32Array,
        gemm: direct as Float32Array,
        dx: await xt.grad!.toArray() as Float32Array,
        plan: convPlan(xt, wt, options),
      };
    });
    assertEquals(plan.depthwise, { forward: true, inputGrad: g.stride === 1 }, "the path taken");
    const epilogue = Array.from(want.data, (v, i) => {
      const o = Math.floor(i / plane) % g.c;
      return Math.max(0, v * scale[o] + bias[o] + residual[i]);
    });
    assertClose(Array.from(y), epilogue, { rtol: 0, atol: 1e-6 * largest(epilogue), msg: "forward" });
    assertEquals(Array.from(plain), Array.from(gemm), "the forward's bits are the implicit GEMM's");
    assertClose(Array.from(dx), Array.from(wantDx.data), {
      rtol: 0,
      atol: 1e-6 * largest(wantDx.data),
      msg: "input gradient",
    });
  });
}

test("depthwise: what auto gives the kernel (one filter per channel, a plane that fits in scratch) and what stays on the GEMM", () => {
  if (!onWasm) skip("the depthwise kernel runs on the WebAssembly backend only");
  const plan = (c: number, oc: number, hw: number, options: fl.F.Conv2dOptions) =>
    fl.scope(() =>
      convPlan(fl.zeros([1, c, hw, hw]), fl.zeros([oc, c / (options.groups ?? 1), 3, 3]), options)
    ).depthwise;
  assertEquals(plan(32, 32, 112, { padding: 1, groups: 32 }), { forward: true, inputGrad: true });
  assertEquals(plan(32, 32, 112, { padding: 1, stride: 2, groups: 32 }), { forward: true, inputGrad: false });
  // two filters per channel, groups of two channels, no groups: the GEMM
  assertEquals(plan(32, 64, 56, { padding: 1, groups: 32 }), { forward: false, inputGrad: false });
  assertEquals(plan(32, 16, 56, { padding: 1, groups: 16 }), { forward: false, inputGrad: false });
  assertEquals(plan(32, 32, 56, { padding: 1 }), { forward: false, inputGrad: false });
  // a 600x600 plane with its padding is over a thread's 1 MiB of scratch
  assertEquals(plan(2, 2, 600, { padding: 1, groups: 2 }), { forward: false, inputGrad: false });
  // padding past (k - 1) d: the input gradient's padding would be negative
  assertEquals(plan(4, 4, 20, { padding: 3, groups: 4 }), { forward: true, inputGrad: false });
});

test("depthwise on a learner's shape (AI-Covid's 5x5 over 960 channels at 14x14): the GEMM's bits; for the runtime comparison", async () => {
  if (!onWasm) skip("the depthwise kernel runs on the WebAssembly backend only");
  const x = fl.randn([2, 960, 14, 14], { seed: 1 }),
    w = fl.F.scale(fl.randn([960, 1, 5, 5], { seed: 2 }), 0.2);
  const options = { padding: 2, groups: 960 };
  const run = (algorithm: WasmConvAlgorithm) =>
    using(algorithm, () => fl.scope(() => fl.noGrad(() => fl.F.conv2d(x, w, null, options)).toArray()));
  const gemm = await run("direct") as Float32Array, depthwise = await run("auto") as Float32Array;
  assertEquals(convPlan(x, w, options).depthwise.forward, true, "auto takes the depthwise kernel here");
  let differ = 0;
  for (let i = 0; i < gemm.length; i++) if (!Object.is(gemm[i], depthwise[i])) differ++;
  assertEquals(differ, 0, "outputs that differ from the GEMM's");
  writeArtifact("depthwise", { sample: Array.from(depthwise.subarray(0, 4096)) });
});
