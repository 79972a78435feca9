// fastMath (InitOptions.fastMath, FLANNEL_FAST_MATH=1, the CLI's --fast-math): the WebAssembly kernels' relaxed-
// SIMD build, in a child process of the same runtime (one backend per process): where the engine validates
// relaxed SIMD it runs and says so, and a GEMM and a convolution stay within float rounding of the exact build;
// where it does not, the exact kernels run and stderr says why.
import { spawnSync } from "node:child_process";
import process from "node:process";
import { isBun, repo } from "./cli_children.ts";
import { assert, assertClose, assertEquals, test } from "./harness.ts";

const CHILD = `
import * as fl from ${JSON.stringify(`${repo}/mod.ts`)};
const info = await fl.init({ backend: "wasm" });
const a = fl.randn([96, 300], { seed: 1 }), b = fl.randn([300, 70], { seed: 2 });
const x = fl.randn([2, 16, 20, 20], { seed: 3 }), w = fl.randn([24, 16, 3, 3], { seed: 4 });
const gemm = Array.from(await fl.F.matmul(a, b).toArray());
const conv = Array.from(await fl.F.conv2d(x, w, null, { padding: 1 }).toArray());
console.log(JSON.stringify({ fastMath: info.fastMath, adapter: info.adapter, gemm, conv }));
`;

function child(fastMath: boolean) {
  const args = isBun ? ["-e", CHILD] : ["eval", CHILD];
  const env = { ...process.env, FLANNEL_FAST_MATH: fastMath ? "1" : "" };
  const r = spawnSync(process.execPath, args, { encoding: "utf8", env, maxBuffer: 1 << 26 });
  assertEquals(r.status, 0, `child failed: ${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split("\n").pop()!) as {
    fastMath: boolean;
    adapter: string;
    gemm: number[];
    conv: number[];
  };
  return { ...out, stderr: r.stderr };
}

test("fastMath: the relaxed-SIMD kernels where the engine has them, within float rounding of the exact ones", () => {
  const exact = child(false), fast = child(true);
  assertEquals(exact.fastMath, false);
  assert(!/relaxed/.test(exact.adapter), `exact adapter: ${exact.adapter}`);
  if (fast.fastMath) {
    assert(/relaxed SIMD \(fastMath\)/.test(fast.adapter), `fastMath adapter: ${fast.adapter}`);
  } else {assert(
      /fastMath: this engine has no relaxed SIMD/.test(fast.stderr),
      `no reason given: ${fast.stderr}`,
    );}
  for (const what of ["gemm", "conv"] as const) {
    const max = exact[what].reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    assertClose(fast[what], exact[what], { rtol: 0, atol: 1e-5 * max, msg: what });
  }
});
