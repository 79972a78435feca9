// softmax and logSoftmax along any dim, stable (max subtracted), with fused backward kernels.
import { getEngine } from "../backend/device.ts";
import { kernelFamily } from "../backend/kernel.ts";
import { isFloat, Tensor } from "../autograd/tensor.ts";
import { record } from "../autograd/tape.ts";
import { normAxis } from "./shape.ts";
import {
  groupMaxes,
  type GroupSum,
  groupSum,
  groupSumBuiltins,
  groupSumEnables,
  groupSums,
} from "./group_sum.ts";
import { tracer } from "../onnx/trace.ts";

type Variant = "softmax" | "log_softmax";
const uniforms = [
  { name: "rows", type: "u32" as const },
  { name: "n", type: "u32" as const },
  { name: "inner", type: "u32" as const },
];
// A row is the `n` elements along the dim for one (outer, inner) pair: base + t * inner.
const ROW = `let row = flat_id(gid, nwg);
  if (row >= u.rows) { return; }
  let base = (row / u.inner) * u.n * u.inner + row % u.inner;`;

const forwardKernel = kernelFamily((v: Variant) => ({
  name: `${v}_fwd`,
  layout: "softmax_rows_fwd",
  storage: [{ name: "x", access: "read" }, { name: "y", access: "rw" }],
  uniforms,
  body:
    `@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  ${ROW}
  var mx = -0x1.fffffep+127f;
  for (var t = 0u; t < u.n; t++) { mx = max(mx, x[base + t * u.inner]); }
  var s = 0.0;
  for (var t = 0u; t < u.n; t++) { s += exp(x[base + t * u.inner] - mx); }
  ${
      v === "softmax"
        ? "let inv = 1.0 / s;\n  for (var t = 0u; t < u.n; t++) { let o = base + t * u.inner; y[o] = exp(x[o] - mx) * inv; }"
        // (x - max) - log(s), not x - (max + log(s)): the latter rounds log(s) to the ulp of max.
        : "let ls = log(s);\n  for (var t = 0u; t < u.n; t++) { let o = base + t * u.inner; y[o] = (x[o] - mx) - ls; }"
    }
}`,
}), ["softmax", "log_softmax"]);

// softmax: dx = y (g - sum(g y)); log_softmax: dx = g - exp(y) sum(g).
const backwardKernel = kernelFamily((v: Variant) => ({
  name: `${v}_bwd`,
  layout: "softmax_rows_bwd",
  storage: [{ name: "g", access: "read" }, { name: "y", access: "read" }, { name: "dx", access: "rw" }],
  uniforms,
  body:
    `@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  ${ROW}
  var s = 0.0;
  for (var t = 0u; t < u.n; t++) { let o = base + t * u.inner; s += ${
      v === "softmax" ? "g[o] * y[o]" : "g[o]"
    }; }
  for (var t = 0u; t < u.n; t++) {
    let o = base + t * u.inner;
    dx[o] = ${v === "softmax" ? "y[o] * (g[o] - s)" : "g[o] - exp(y[o]) * s"};
  }
}`,
}), ["softmax", "log_softmax"]);

/**
 * Rows at least this long run one workgroup a row on WebGPU: threads stride along the row and the row's
 * maximum and sum are taken across the workgroup (group_sum.ts: a tree, or subgroup operations where they
 * are on), instead of one thread walking the whole row. The same values within float32 rounding (the sum
 * adds in another order). WebAssembly keeps its one-thread-a-row twins.
 */
export const LONG_ROW = 256;

/** WGSL of the row a long-row kernel's workgroup takes (clamped: every thread reaches the barriers). */
const GROUP_ROW = `let row = wid.x + wid.y * nwg.x;
  let live = row < u.rows;
  let r = min(row, u.rows - 1u);
  let base = (r / u.inner) * u.n * u.inner + r % u.inner;`;
/** The workgroup arrays of {@link groupRowExpSum}, declared at module scope. */
export const GROUP_ROW_ARRAYS = `var<workgroup> row_max: array<f32, WG>;
var<workgroup> row_sum: array<f32, WG>;`;

/**
 * WGSL statements over a row of `count` elements, `element(t)` the t-th (threads of the workgroup striding
 * over t, `lid` in scope): they leave `top`, the row's maximum, and `row_sum[0]`, the sum of exp(element -
 * top), in every thread. The long-row kernels of softmax and of the losses share it.
 */
export function groupRowExpSum(sum: GroupSum, count: string, element: (t: string) => string): string {
  return `var mx = -0x1.fffffep+127f;
  for (var t = lid.x; t < ${count}; t += WG) { mx = max(mx, ${element("t")}); }
  ${groupMaxes(sum, ["row_max"], ["mx"])}
  let top = row_max[0];
  var acc = 0.0;
  for (var t = lid.x; t < ${count}; t += WG) { acc += exp(${element("t")} - top); }
  ${groupSums(sum, ["row_sum"], ["acc"])}`;
}

const GROUP_MAIN = (sum: GroupSum) =>
  `@compute @workgroup_size(WG) fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
    @builtin(num_workgroups) nwg: vec3u${groupSumBuiltins(sum)}) {
  ${GROUP_ROW}`;

type GroupKey = `${Variant} ${GroupSum}`;
const GROUP_KEYS: GroupKey[] = [
  "softmax tree",
  "softmax subgroup",
  "log_softmax tree",
  "log_softmax subgroup",
];
const groupName = (pass: string, key: GroupKey) => {
  const [v, sum] = key.split(" ");
  return `${v}_${pass}_group${sum === "tree" ? "" : `_${sum}`}`;
};

const groupForwardKernel = kernelFamily((key: GroupKey) => {
  const [v, sum] = key.split(" ") as [Variant, GroupSum];
  return {
    name: groupName("fwd", key),
    wasm: null,
    storage: [{ name: "x", access: "read" }, { name: "y", access: "rw" }],
    uniforms,
    workgroupSize: 64,
    enable: groupSumEnables(sum),
    body: `${GROUP_ROW_ARRAYS}
${GROUP_MAIN(sum)}
  ${groupRowExpSum(sum, "u.n", (t) => `x[base + ${t} * u.inner]`)}
  if (!live) { return; }
  ${
      v === "softmax"
        ? "let inv = 1.0 / row_sum[0];\n  for (var t = lid.x; t < u.n; t += WG) { let o = base + t * u.inner; y[o] = exp(x[o] - top) * inv; }"
        : "let ls = log(row_sum[0]);\n  for (var t = lid.x; t < u.n; t += WG) { let o = base + t * u.inner; y[o] = (x[o] - top) - ls; }"
    }
}`,
  };
}, GROUP_KEYS);

const groupBackwardKernel = kernelFamily((key: GroupKey) => {
  const [v, sum] = key.split(" ") as [Variant, GroupSum];
  return {
    name: groupName("bwd", key),
    wasm: null,
    storage: [{ name: "g", access: "read" }, { name: "y", access: "read" }, { name: "dx", access: "rw" }],
    uniforms,
    workgroupSize: 64,
    enable: groupSumEnables(sum),
    body: `var<workgroup> row_sum: array<f32, WG>;
${GROUP_MAIN(sum)}
  var acc = 0.0;
  for (var t = lid.x; t < u.n; t += WG) { let o = base + t * u.inner; acc += ${
      v === "softmax" ? "g[o] * y[o]" : "g[o]"
    }; }
  ${groupSums(sum, ["row_sum"], ["acc"])}
  if (!live) { return; }
  let s = row_sum[0];
  for (var t = lid.x; t < u.n; t += WG) {
    let o = base + t * u.inner;
    dx[o] = ${v === "softmax" ? "y[o] * (g[o] - s)" : "g[o] - exp(y[o]) * s"};
  }
}`,
  };
}, GROUP_KEYS);

function run(v: Variant, x: Tensor, dim: number): Tensor {
  if (!isFloat(x.dtype)) throw new Error(`${v}: needs a float tensor, got ${x.dtype}`);
  const d = normAxis(dim, x.rank, v);
  const n = x.shape[d];
  const inner = x.shape.slice(d + 1).reduce((a, b) => a * b, 1);
  const rows = x.size / Math.max(n, 1);
  const engine = getEngine();
  const long = engine.kind === "webgpu" && n >= LONG_ROW;
  const grid = long ? engine.grid(rows) : engine.grid(Math.ceil(rows / 256));
  const forward = long ? groupForwardKernel(`${v} ${groupSum()}`) : forwardKernel(v);
  const backward = () => (long ? groupBackwardKernel(`${v} ${groupSum()}`) : backwardKernel(v));
  // float32 out of float16 too (autocast's rule for softmax): probabilities and logs need the precision
  const out = Tensor.empty([...x.shape]);
  if (n > 0) engine.dispatch(forward, [x.buffer, out.buffer], [rows, n, inner], grid);
  tracer?.node(v === "softmax" ? "Softmax" : "LogSoftmax", [x], out, { axis: d });
  return record(out, v, [x], (g) => {
    const dx = Tensor.empty([...x.shape], x.dtype);
    if (n > 0) engine.dispatch(backward(), [g.buffer, out.buffer, dx.buffer], [rows, n, inner], grid);
    return [dx];
  });
}

/** softmax along `dim` (default the last), as torch.softmax; max-subtracted, so large logits don't overflow. */
export const softmax = (x: Tensor, dim = -1): Tensor => run("softmax", x, dim);
/**
 * log(softmax(x)) along `dim` (default the last), as torch.log_softmax, computed as (x - max) - log-sum-exp
 * for accuracy.
 */
export const logSoftmax = (x: Tensor, dim = -1): Tensor => run("log_softmax", x, dim);
