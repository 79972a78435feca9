// Winograd against the direct convolution on the WebAssembly backend, per shape: the learners' 3x3 stride-1
// convolutions at batch 2, forward and input gradient, direct / F(2x2, 3x3) / F(4x4, 3x3) forced, with the
// choice "auto" makes (src/kernels/conv.ts winogradTile) and each tile's largest error against the direct
// product, relative to the largest output. Timed with tinybench (bench/timing.ts: 1 warmup, 3 measured), in 3
// rounds of the three in turn (the VM's speed drifts over minutes); a time is the median of the rounds'.
//   deno task bench:winograd          bun run bench/winograd.ts
import * as fl from "../mod.ts";
import { convPlan, setWasmConvAlgorithm, type WasmConvAlgorithm } from "../src/kernels/conv.ts";
import { medianOf, timeTasks } from "./timing.ts";

const info = await fl.init({ backend: "wasm" });
const ROUNDS = 3, STEPS = 3;
console.log(
  `${
    new Date().toISOString()
  }; ${info.runtime}, ${info.adapter}; batch 2; ms (median of ${ROUNDS} rounds of ` +
    `${STEPS}), error = max |diff| / max |direct|`,
);
// [learner, input channels, output channels, side (padding 1)]
const SHAPES: [string, number, number, number][] = [
  ["VGG19-bn", 64, 64, 224],
  ["VGG19-bn", 128, 128, 112],
  ["VGG19-bn", 256, 256, 56],
  ["VGG19-bn", 512, 512, 28],
  ["VGG19-bn", 512, 512, 14],
  ["ResNet152", 64, 64, 56],
  ["ResNet152", 128, 128, 28],
  ["ResNet152", 256, 256, 14],
  ["ResNet152", 512, 512, 7],
  ["DenseNet161", 192, 48, 56],
  ["DenseNet161", 192, 48, 7],
  ["InceptionV3", 64, 96, 35],
  ["InceptionV3", 384, 384, 8],
  // InceptionV3 at crop 224 (the bench:peers and bench:stage1 --full size): Conv2d_4a, Mixed_5b-d
  ["InceptionV3", 80, 192, 52],
  ["InceptionV3", 64, 96, 25],
  ["InceptionV3", 96, 96, 25],
];

const rows: string[] = [];
for (const [learner, c, o, side] of SHAPES) {
  const x = fl.randn([2, c, side, side], { seed: 1 }),
    w = fl.F.scale(fl.randn([o, c, 3, 3], { seed: 2 }), 0.05);
  const dy = fl.randn([2, o, side, side], { seed: 3 });
  const ms: Record<string, string> = {}, err: Record<string, string> = {};
  let direct: { y: Float32Array; dx: Float32Array } | null = null;
  const algorithms: WasmConvAlgorithm[] = ["direct", 2, 4];
  const times = new Map<WasmConvAlgorithm, number[]>(algorithms.map((a) => [a, []]));
  const forward = () => fl.scope(() => fl.noGrad(() => fl.F.conv2d(x, w, null, { padding: 1 })).toArray());
  for (let round = 0; round < ROUNDS; round++) {
    for (const algorithm of algorithms) {
      setWasmConvAlgorithm(algorithm);
      const t = await timeTasks({ forward: { fn: forward, time: 0, iterations: STEPS } });
      times.get(algorithm)!.push(t.forward.median);
    }
  }
  for (const algorithm of algorithms) {
    setWasmConvAlgorithm(algorithm);
    const backward = () =>
      fl.scope(async () => {
        const xr = fl.tensor(await x.toArray() as Float32Array, [2, c, side, side], { requiresGrad: true });
        fl.F.sum(fl.F.mul(fl.F.conv2d(xr, w, null, { padding: 1 }), dy)).backward();
        return await xr.grad!.toArray() as Float32Array;
      });
    const y = await forward() as Float32Array, dx = await backward();
    ms[algorithm] = medianOf(times.get(algorithm)!).toFixed(1);
    if (!direct) direct = { y, dx };
    else {
      const rel = (a: Float32Array, b: Float32Array) => {
        let d = 0, m = 0;
        for (let i = 0; i < a.length; i++) {
          (d = Math.max(d, Math.abs(a[i] - b[i])), m = Math.max(m, Math.abs(b[i])));
        }
        return (d / m).toExponential(1);
      };
      err[algorithm] = `${rel(y, direct.y)} / ${rel(dx, direct.dx)}`;
    }
  }
  setWasmConvAlgorithm("auto");
  const plan = convPlan(x, w, { padding: 1 }).winograd;
  rows.push(
    `| ${learner} | ${c}->${o} @${side} | ${ms.direct} | ${ms[2]} | ${ms[4]} | ${
      plan.forward ? `F(${plan.forward}x${plan.forward})` : "direct"
    } | ${err[2]} | ${err[4]} |`,
  );
  console.log(rows[rows.length - 1]);
  fl.trimPool();
}
console.log(
  "\n| learner | shape | direct ms | F(2x2) ms | F(4x4) ms | auto | F(2x2) error (y / dx) | F(4x4) error (y / dx) |",
);
console.log("|---|---|---|---|---|---|---|---|");
for (const r of rows) console.log(r);
