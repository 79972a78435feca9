// Winograd convolution on the WebAssembly backend (src/kernels/winograd.ts, src/kernels/wasm/winograd.ts):
// F(2x2, 3x3) and F(4x4, 3x3) forced on, forward (with the fused epilogue) and input gradient against the
// float64 direct convolution of tests/reference.ts, on maps whose sides are not multiples of the tile and with
// padding 0, 1 and 2; the per-shape choice of "auto"; and a result written for tests/both.ts, which checks
// that Deno and Bun give the same bits.
import * as fl from "../mod.ts";
import { convPlan, type WasmConvAlgorithm } from "../src/kernels/conv.ts";
import { formula, largest, usingConvAlgorithm as using } from "./conv_data.ts";
import { assert, assertClose, assertEquals, skip, test, writeArtifact } from "./harness.ts";
import * as ref from "./reference.ts";

await fl.init();
const onWasm = fl.backendInfo()?.backend === "wasm";

// F(4x4)'s matrices hold 8 and 1/24: its rounding is about ten times F(2x2)'s (README, "Winograd").
const TOLERANCE = { 2: 2e-6, 4: 2e-5 } as const;
const CASES = [
  { n: 2, c: 5, oc: 7, h: 9, w: 11, padding: 1 },
  { n: 1, c: 6, oc: 4, h: 10, w: 7, padding: 0 },
  { n: 1, c: 3, oc: 5, h: 6, w: 13, padding: 2 },
  // Wide enough for the transforms' four tiles at once, inside the map and across its edges.
  { n: 2, c: 5, oc: 6, h: 11, w: 19, padding: 1 },
  { n: 1, c: 4, oc: 5, h: 12, w: 22, padding: 0 },
];

for (const tile of [2, 4] as const) {
  for (const g of CASES) {
    const name = `${g.n}x${g.c}->${g.oc} ${g.h}x${g.w} padding ${g.padding}`;
    test(`Winograd F(${tile}x${tile}, 3x3) equals the float64 direct convolution: forward with epilogue, input gradient (${name})`, async () => {
      if (!onWasm) skip("Winograd runs on the WebAssembly backend only");
      const x = formula(g.n * g.c * g.h * g.w, 0.37, 0.1), w = formula(g.oc * g.c * 9, 0.71, 0.3, 0.3);
      const want = ref.conv2d(ref.arr(x, [g.n, g.c, g.h, g.w]), ref.arr(w, [g.oc, g.c, 3, 3]), g);
      const [, , oh, ow] = want.shape, plane = oh * ow;
      const scale = formula(g.oc, 1.3, 0.5, 1.5), bias = formula(g.oc, 2.1, 0.2, 0.3);
      const residual = formula(want.data.length, 0.53, 0.9, 0.5);
      const dy = formula(want.data.length, 0.29, 0.4);
      const wantDx = ref.conv2dInputGrad(ref.arr(dy, want.shape), ref.arr(w, [g.oc, g.c, 3, 3]), [
        g.n,
        g.c,
        g.h,
        g.w,
      ], g);
      const { y, dx, plan } = await using(tile, () =>
        fl.scope(async () => {
          const xt = fl.tensor(x, [g.n, g.c, g.h, g.w], { requiresGrad: true });
          const wt = fl.tensor(w, [g.oc, g.c, 3, 3]);
          const fused = fl.noGrad(() =>
            fl.F.conv2dFused(xt, wt, {
              scale: fl.tensor(scale, [g.oc]),
              bias: fl.tensor(bias, [g.oc]),
              residual: fl.tensor(residual, want.shape),
              relu: true,
            }, { padding: g.padding })
          );
          fl.F.sum(fl.F.mul(fl.F.conv2d(xt, wt, null, { padding: g.padding }), fl.tensor(dy, want.shape)))
            .backward();
          return {
            y: await fused.toArray() as Float32Array,
            dx: await xt.grad!.toArray() as Float32Array,
            plan: convPlan(xt, wt, { padding: g.padding }),
          };
        }));
      assertEquals(plan.winograd, { forward: tile, inputGrad: tile }, "the path taken");
      const epilogue = Array.from(want.data, (v, i) => {
        const o = Math.floor(i / plane) % g.oc;
        return Math.max(0, v * scale[o] + bias[o] + residual[i]);
      });
      assertClose(Array.from(y), epilogue, {
        rtol: 0,
        atol: TOLERANCE[tile] * largest(epilogue),
        msg: "forward",
      });
      assertClose(Array.from(dx), Array.from(wantDx.data), {
        rtol: 0,
        atol: TOLERANCE[tile] * largest(wantDx.data),
        msg: "input gradient",
      });
    });
  }
}

test("Winograd's per-shape choice: F(4x4) from 24x24 maps, F(2x2) from 14x14, direct on small maps, few channels, groups, strides", () => {
  if (!onWasm) skip("Winograd runs on the WebAssembly backend only");
  const plan = (c: number, oc: number, hw: number, options: fl.F.Conv2dOptions = { padding: 1 }) =>
    fl.scope(() =>
      convPlan(fl.zeros([1, c, hw, hw]), fl.zeros([oc, c / (options.groups ?? 1), 3, 3]), options)
    ).winograd;
  assertEquals(plan(64, 64, 56), { forward: 4, inputGrad: 4 });
  assertEquals(plan(64, 96, 25), { forward: 4, inputGrad: 4 });
  assertEquals(plan(256, 256, 23), { forward: 2, inputGrad: 2 });
  assertEquals(plan(256, 256, 14), { forward: 2, inputGrad: 2 });
  assertEquals(plan(512, 512, 7), { forward: null, inputGrad: null });
  assertEquals(plan(32, 64, 56), { forward: null, inputGrad: null });
  assertEquals(plan(64, 64, 56, { padding: 1, groups: 2 }), { forward: null, inputGrad: null });
  assertEquals(plan(64, 64, 56, { padding: 1, stride: 2 }), { forward: null, inputGrad: null });
  assertEquals(plan(64, 64, 56, { padding: 3 }), { forward: 4, inputGrad: null });
});

test("Winograd's transforms give the same bits in every lane and in a group at the row's end: a map repeating every tile has equal output tiles", async () => {
  if (!onWasm) skip("Winograd runs on the WebAssembly backend only");
  for (const m of [2, 4] as const) {
    // Padding 0 and width 5m + 2: five tiles a row, four in one group, the fifth in a group of its own; the map repeats
    // every m columns, so every tile sees the same patch.
    const c = 3, oc = 2, h = 2 * m + 2, w = 5 * m + 2, x = new Float32Array(c * h * w);
    for (let i = 0; i < x.length; i++) x[i] = Math.sin(1.7 * (Math.floor(i / w) + 1) + 0.9 * (i % w % m));
    const y = await using(
      m,
      () =>
        fl.scope(() =>
          fl.noGrad(() =>
            fl.F.conv2d(fl.tensor(x, [1, c, h, w]), fl.tensor(formula(oc * c * 9, 0.71, 0.3), [oc, c, 3, 3]))
          )
            .toArray()
        ),
    ) as Float32Array;
    const ow = w - 2, oh = h - 2;
    for (let o = 0; o < oc * oh; o++) {
      for (let j = 0; j < m; j++) {
        const alone = y[o * ow + 4 * m + j];
        for (let tx = 0; tx < 4; tx++) {
          assertEquals(y[o * ow + tx * m + j], alone, `F(${m}x${m}): row ${o}, tile ${tx} column ${j}`);
        }
      }
    }
  }
});

test("Winograd on a learner's shape (ResNet-152's 3x3 64->64 at 56x56, F(4x4)): within 2e-5 of the direct product; its bits for the runtime comparison", async () => {
  if (!onWasm) skip("Winograd runs on the WebAssembly backend only");
  const x = fl.randn([1, 64, 56, 56], { seed: 1 }),
    w = fl.F.scale(fl.randn([64, 64, 3, 3], { seed: 2 }), 0.05);
  const run = (algorithm: WasmConvAlgorithm) =>
    using(
      algorithm,
      () => fl.scope(() => fl.noGrad(() => fl.F.conv2d(x, w, null, { padding: 1 })).toArray()),
    );
  const direct = await run("direct") as Float32Array, winograd = await run("auto") as Float32Array;
  assert(convPlan(x, w, { padding: 1 }).winograd.forward === 4, "auto takes F(4x4) here");
  assertClose(Array.from(winograd), Array.from(direct), { rtol: 0, atol: 2e-5 * largest(direct) });
  writeArtifact("winograd", { sample: Array.from(winograd.subarray(0, 4096)) });
});
