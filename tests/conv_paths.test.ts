// conv2d against PyTorch (float64, tests/fixtures/make_conv_paths.py) on cases big enough to reach every path
// the convolution can take (src/kernels/conv.ts `convPlan`), and a check that they do: on WebGPU every
// streamed GEMM tile shape (4 or 8 rows a thread, one or several rows of threads, one or two vec4 columns)
// and the staged tile, the 1x1 loaders, and the weight gradient split along K; on WebAssembly the 1x1 and
// window packers and the weight gradient summed over slices of the batch. The other conv tests use shapes
// too small for the split and slice paths.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as fl from "../mod.ts";
import { convPlan } from "../src/kernels/conv.ts";
import { type GemmChoice, type GemmTile, setGemmChoice } from "../src/kernels/gemm.ts";
import { assertClose, assertEquals, test } from "./harness.ts";
import { formula } from "./conv_data.ts";

await fl.init();
const onWebGpu = fl.backendInfo()?.backend === "webgpu";

interface Summary {
  shape: number[];
  sample: number[];
  l2: number;
  max: number;
}
interface Case {
  name: string;
  x: number[];
  w: number[];
  stride: number;
  padding: number | [number, number];
  dilation: number;
  groups: number;
  y: Summary;
  dx: Summary;
  dw: Summary;
}
const here = dirname(fileURLToPath(import.meta.url));
const { cases } = JSON.parse(readFileSync(join(here, "fixtures", "conv_paths.json"), "utf8")) as {
  cases: Case[];
};

// The fixture's input formulas (see make_conv_paths.py), rounded to float32: conv_data.ts formula.
const size = (shape: number[]) => shape.reduce((p, d) => p * d, 1);

/** The tensor against the fixture's summary: its shape, sampled elements, L2 norm and max |v|. */
function check(got: Float32Array, shape: number[], want: Summary, what: string) {
  assertEquals(shape, want.shape, `${what}: shape`);
  const n = got.length, m = Math.min(n, 256);
  const sample = Array.from({ length: m }, (_, k) => got[Math.floor((k * n) / m)]);
  assertClose(sample, want.sample, { rtol: 1e-4, atol: 1e-4 * want.max, msg: `${what}: sampled elements` });
  let l2 = 0, max = 0;
  for (const v of got) {
    l2 += v * v;
    max = Math.max(max, Math.abs(v));
  }
  assertClose(Math.sqrt(l2), want.l2, { rtol: 1e-4, msg: `${what}: L2 norm` });
  assertClose(max, want.max, { rtol: 1e-4, msg: `${what}: max |v|` });
}

const tileName = (t: GemmTile) =>
  t.shared ? "staged" : `${t.rows} rows, ${t.wy > 1 ? "several rows" : "one row"} of threads, ${t.vecs} vec4`;

/** Runs every case with the given GEMM (WebGPU) and checks it; returns the paths the cases took. */
async function runCases(choice: GemmChoice): Promise<Set<string>> {
  const paths = new Set<string>();
  const before = setGemmChoice(choice);
  try {
    for (const c of cases) {
      await fl.scope(async () => {
        const x = fl.tensor(formula(size(c.x), 0.7, 0.3), c.x, { requiresGrad: true });
        const w = fl.tensor(formula(size(c.w), 1.3, 0.1, 0.2, Math.cos), c.w, { requiresGrad: true });
        const b = fl.tensor(formula(c.w[0], 1, 0, 0.1), [c.w[0]]);
        const options = { stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups };
        const plan = convPlan(x, w, options);
        paths.add(plan.pointwise ? "1x1 loaders" : "window loaders");
        paths.add(plan.weightGradParts > 1 ? "weight gradient in parts" : "weight gradient in one product");
        for (const t of Object.values(plan.tiles ?? {})) paths.add(tileName(t));
        const y = fl.F.conv2d(x, w, b, options);
        const r = fl.tensor(formula(size(y.shape), 0.11, 1), y.shape);
        fl.F.sum(fl.F.mul(y, r)).backward();
        const what = `${c.name}${onWebGpu ? ` (${choice} GEMM)` : ""}`;
        check(await y.toArray(), y.shape, c.y, `${what}: output`);
        check(await x.grad!.toArray(), x.shape, c.dx, `${what}: input gradient`);
        check(await w.grad!.toArray(), w.shape, c.dw, `${what}: weight gradient`);
      });
    }
  } finally {
    setGemmChoice(before);
  }
  return paths;
}

test("conv2d on every path equals PyTorch: output, input and weight gradients (sampled, L2 norm, max)", async () => {
  assertEquals(cases.length, 11, "cases in conv_paths.json");
  const common = [
    "1x1 loaders",
    "window loaders",
    "weight gradient in parts",
    "weight gradient in one product",
  ];
  if (!onWebGpu) {
    assertEquals([...await runCases("auto")].sort(), common.sort(), "paths reached");
    return;
  }
  const tiles = [4, 8].flatMap((rows) =>
    ["one row", "several rows"].flatMap((wy) =>
      [1, 2].map((v) => `${rows} rows, ${wy} of threads, ${v} vec4`)
    )
  );
  assertEquals(
    [...await runCases("streamed")].sort(),
    [...common, ...tiles].sort(),
    "paths reached (streamed)",
  );
  const staged = await runCases("staged");
  assertEquals([...staged].sort(), [...common, "staged"].sort(), "paths reached (staged)");
});
