// softmax and logSoftmax along any dim, stable (max subtracted), with fused backward kernels.
import { getEngine } from "../backend/device.ts";
import { kernelFamily } from "../backend/kernel.ts";
import { isFloat, Tensor } from "../autograd/tensor.ts";
import { record } from "../autograd/tape.ts";
import { normAxis } from "./shape.ts";
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

function run(v: Variant, x: Tensor, dim: number): Tensor {
  if (!isFloat(x.dtype)) throw new Error(`${v}: needs a float tensor, got ${x.dtype}`);
  const d = normAxis(dim, x.rank, v);
  const n = x.shape[d];
  const inner = x.shape.slice(d + 1).reduce((a, b) => a * b, 1);
  const rows = x.size / Math.max(n, 1);
  const engine = getEngine();
  const grid = engine.grid(Math.ceil(rows / 256));
  // float32 out of float16 too (autocast's rule for softmax): probabilities and logs need the precision
  const out = Tensor.empty([...x.shape]);
  if (n > 0) engine.dispatch(forwardKernel(v), [x.buffer, out.buffer], [rows, n, inner], grid);
  tracer?.node(v === "softmax" ? "Softmax" : "LogSoftmax", [x], out, { axis: d });
  return record(out, v, [x], (g) => {
    const dx = Tensor.empty([...x.shape], x.dtype);
    if (n > 0) engine.dispatch(backwardKernel(v), [g.buffer, out.buffer, dx.buffer], [rows, n, inner], grid);
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
