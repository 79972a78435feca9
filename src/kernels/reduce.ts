// Sums over any set of axes: sum/mean along a dim or over everything, and the reduction of a broadcast
// gradient back to its input's shape.
import { getEngine } from "../backend/device.ts";
import { defineKernel, kernelFamily, main1d } from "../backend/kernel.ts";
import { type GroupSum, groupSum, groupSumBuiltins, groupSumEnables, groupSums } from "./group_sum.ts";
import { shapeSize, Tensor } from "../autograd/tensor.ts";
import { record } from "../autograd/tape.ts";
import {
  broadcastDecode,
  broadcastParams,
  broadcastShapes,
  broadcastUniforms,
  MAX_RANK,
  normAxis,
  padShape,
  sameShape,
} from "./shape.ts";
import { clone, dispatch1d } from "./basic.ts";
import { toWgsl } from "../backend/expr.ts";
import { BINARY_MAPS } from "./maps.ts";
import { tracer, type TraceRecorder } from "../onnx/trace.ts";

const dims = [...Array(MAX_RANK).keys()];
const UNIFORMS = [
  { name: "n_out", type: "u32" as const },
  { name: "n_red", type: "u32" as const },
  { name: "scale", type: "f32" as const },
  // Kept axes (k*) and reduced axes (r*), each as (size, input stride), innermost last; unused are size 1.
  ...dims.flatMap((
    d,
  ) => [{ name: `ks${d}`, type: "u32" as const }, { name: `kt${d}`, type: "u32" as const }]),
  ...dims.flatMap((
    d,
  ) => [{ name: `rs${d}`, type: "u32" as const }, { name: `rt${d}`, type: "u32" as const }]),
];

const DECODE = `
fn kept_offset(j: u32) -> u32 {
  var rem = j; var off = 0u;
  ${
  dims.slice().reverse().map((d) => `off += (rem % u.ks${d}) * u.kt${d}; rem = rem / u.ks${d};`).join("\n  ")
}
  return off;
}
fn reduced_offset(r: u32) -> u32 {
  var rem = r; var off = 0u;
  ${
  dims.slice().reverse().map((d) => `off += (rem % u.rs${d}) * u.rt${d}; rem = rem / u.rs${d};`).join("\n  ")
}
  return off;
}`;

/** One thread per output: for many outputs with short reductions. */
const reduceThreadKernel = defineKernel({
  name: "reduce_sum_thread",
  wasm: "reduce_sum",
  storage: [{ name: "x", access: "read" }, { name: "out", access: "rw" }],
  uniforms: UNIFORMS,
  body: `${DECODE}
${main1d("j", "u.n_out")}
  let base = kept_offset(j);
  var acc = 0.0;
  for (var r = 0u; r < u.n_red; r++) { acc += x[base + reduced_offset(r)]; }
  out[j] = acc * u.scale;
}`,
});

/** One workgroup per output, threads striding over the reduction, summed across the group (group_sum.ts). */
const REDUCE_WG = 64;
const reduceGroupKernel = kernelFamily((sum: GroupSum) => ({
  name: sum === "tree" ? "reduce_sum_group" : `reduce_sum_group_${sum}`,
  wasm: "reduce_sum",
  storage: [{ name: "x", access: "read" }, { name: "out", access: "rw" }],
  uniforms: UNIFORMS,
  workgroupSize: REDUCE_WG,
  enable: groupSumEnables(sum),
  body: `${DECODE}
var<workgroup> partial: array<f32, WG>;
@compute @workgroup_size(WG) fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
    @builtin(num_workgroups) nwg: vec3u${groupSumBuiltins(sum)}) {
  let j = wid.x + wid.y * nwg.x;
  let base = kept_offset(min(j, u.n_out - 1u));
  var acc = 0.0;
  for (var r = lid.x; r < u.n_red; r += WG) { acc += x[base + reduced_offset(r)]; }
  ${groupSums(sum, ["partial"], ["acc"])}
  if (lid.x == 0u && j < u.n_out) { out[j] = partial[0] * u.scale; }
}`,
}), ["tree", "subgroup"]);

/**
 * Sums `x` over the axes where `keep` is false, times `scale`; the output keeps the kept axes in order.
 * Non-differentiable building block of the ops below.
 */
function reduceRaw(x: Tensor, keep: boolean[], outShape: number[], scale: number): Tensor {
  const shape = padShape(x.shape);
  const keepPadded = [...new Array(MAX_RANK - x.rank).fill(true), ...keep];
  const strides = new Array(MAX_RANK);
  for (let d = MAX_RANK - 1, s = 1; d >= 0; d--) {
    strides[d] = s;
    s *= shape[d];
  }
  const kept: [number, number][] = [], reduced: [number, number][] = [];
  for (let d = 0; d < MAX_RANK; d++) (keepPadded[d] ? kept : reduced).push([shape[d], strides[d]]);
  const pad = (list: [number, number][]) =>
    [...new Array(MAX_RANK - list.length).fill([1, 0]), ...list].flat();
  const nOut = kept.reduce((a, [s]) => a * s, 1);
  const nRed = reduced.reduce((a, [s]) => a * s, 1);
  const out = Tensor.empty(outShape);
  const engine = getEngine();
  const params = [nOut, nRed, scale, ...pad(kept), ...pad(reduced)];
  if (nRed >= 4 * REDUCE_WG || nOut < 256) {
    engine.dispatch(reduceGroupKernel(groupSum()), [x.buffer, out.buffer], params, engine.grid(nOut));
  } else {
    engine.dispatch(reduceThreadKernel, [x.buffer, out.buffer], params, engine.grid(Math.ceil(nOut / 256)));
  }
  return out;
}

function resolveDims(x: Tensor, dim: number | number[] | undefined, op: string): boolean[] {
  if (dim === undefined) return x.shape.map(() => false);
  const list = (Array.isArray(dim) ? dim : [dim]).map((d) => normAxis(d, x.rank, op));
  return x.shape.map((_, i) => !list.includes(i));
}

/**
 * ReduceMean takes its axes as an attribute and ReduceSum as an input at opset 17; no axes there means all,
 * here none (a copy).
 */
function traceReduce(
  t: TraceRecorder,
  x: Tensor,
  out: Tensor,
  keep: boolean[],
  keepDim: boolean,
  mean: boolean,
) {
  const axes = keep.flatMap((kept, i) => (kept ? [] : [i]));
  const keepdims = keepDim ? 1 : 0;
  if (axes.length === 0) t.node("Identity", [x], out);
  else if (mean) t.node("ReduceMean", [x], out, { axes, keepdims });
  else t.node("ReduceSum", [x, t.int64s(axes)], out, { keepdims });
}

function reduceOp(
  x: Tensor,
  dim: number | number[] | undefined,
  keepDim: boolean,
  mean: boolean,
  op: string,
): Tensor {
  if (x.dtype === "int32") throw new Error(`${op}: needs a float tensor, got int32`);
  const keep = resolveDims(x, dim, op);
  const count = x.shape.reduce((a, s, i) => (keep[i] ? a : a * s), 1);
  if (mean && count === 0) throw new Error(`${op}: mean over an empty dimension`);
  const outShape = keepDim ? x.shape.map((s, i) => (keep[i] ? s : 1)) : x.shape.filter((_, i) => keep[i]);
  const scale = mean ? 1 / count : 1;
  const out = reduceRaw(x, keep, outShape, scale);
  if (tracer) traceReduce(tracer, x, out, keep, keepDim, mean);
  return record(out, op, [x], (g) => {
    const gKeep = g.view(x.shape.map((s, i) => (keep[i] ? s : 1)));
    const expanded = expandTo(gKeep, x.shape, scale);
    gKeep.dispose();
    return [expanded];
  });
}

/**
 * Sum over `dim` (a dim, a list, or every element when omitted), as torch.sum; negative dims count from
 * the end. The reduced dims are dropped, or kept with size 1 when `keepDim`. float32 only; the gradient
 * broadcasts back to `x`'s shape.
 */
export function sum(x: Tensor, dim?: number | number[], keepDim = false): Tensor {
  return reduceOp(x, dim, keepDim, false, "sum");
}

/**
 * Mean over `dim` (a dim, a list, or every element when omitted), as torch.mean; dims and `keepDim` as in
 * {@link sum}. Throws for a mean over an empty dimension.
 */
export function mean(x: Tensor, dim?: number | number[], keepDim = false): Tensor {
  return reduceOp(x, dim, keepDim, true, "mean");
}

const expandKernel = defineKernel({
  name: "expand",
  storage: [{ name: "a", access: "read" }, { name: "out", access: "rw" }],
  uniforms: [...broadcastUniforms(["a"]), { name: "scale", type: "f32" }],
  body: `${main1d("i", "u.n")}
  ${broadcastDecode(["a"])}
  let x = a[oa];
  out[i] = ${toWgsl(BINARY_MAPS.scale)};
}`,
});

/** `a` broadcast to `shape` times `scale`: the gradient of a sum (no gradient of its own). */
export function expandTo(a: Tensor, shape: number[], scale = 1): Tensor {
  broadcastShapes(a.shape, shape, "expand");
  const out = Tensor.empty([...shape]);
  dispatch1d(expandKernel, [a, out], [...broadcastParams(shape, [a.shape]), scale], out.size);
  return out;
}

/** Sums a broadcast gradient back to `shape` (the input's shape before broadcasting). */
export function sumToShape(g: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(g.shape, shape)) return clone(g);
  const lead = g.rank - shape.length;
  const keep = g.shape.map((s, i) => i >= lead && shape[i - lead] === s);
  const reduced = reduceRaw(g, keep, [...shape], 1);
  if (shapeSize(shape) !== reduced.size) throw new Error("sumToShape: internal shape error");
  return reduced;
}
