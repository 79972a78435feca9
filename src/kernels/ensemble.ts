// The two ops of FLANNEL's Neural Weight Module: the batched outer product of the concatenated learner
// probabilities, and the weighted combination of the learners' probabilities.
import { getEngine } from "../backend/device.ts";
import { defineKernel, main1d } from "../backend/kernel.ts";
import { Tensor } from "../autograd/tensor.ts";
import { record } from "../autograd/tape.ts";
import { dispatch1d } from "./basic.ts";
import { fmtShape } from "./shape.ts";
import { tracer } from "../onnx/trace.ts";

const outerKernel = defineKernel({
  name: "outer_fwd",
  storage: [{ name: "f", access: "read" }, { name: "out", access: "rw" }],
  uniforms: [{ name: "n", type: "u32" }, { name: "K", type: "u32" }],
  body: `${main1d("e", "u.n")}
  let kk = u.K * u.K;
  let b = e / kk;
  let ij = e % kk;
  out[e] = f[b * u.K + ij / u.K] * f[b * u.K + ij % u.K];
}`,
});

// d f_i = sum_j G[i, j] f_j + sum_j G[j, i] f_j, one thread per (b, i).
const outerGradKernel = defineKernel({
  name: "outer_bwd",
  storage: [{ name: "g", access: "read" }, { name: "f", access: "read" }, { name: "df", access: "rw" }],
  uniforms: [{ name: "n", type: "u32" }, { name: "K", type: "u32" }],
  body: `${main1d("e", "u.n")}
  let b = e / u.K;
  let i = e % u.K;
  let gb = b * u.K * u.K;
  var acc = 0.0;
  for (var j = 0u; j < u.K; j++) {
    let fj = f[b * u.K + j];
    acc += (g[gb + i * u.K + j] + g[gb + j * u.K + i]) * fj;
  }
  df[e] = acc;
}`,
});

/** Batched outer product: [B, K] -> [B, K*K], element i*K+j = f_i * f_j. */
export function outer(f: Tensor): Tensor {
  if (f.rank !== 2) throw new Error(`outer: input must be [batch, K], got ${fmtShape(f.shape)}`);
  const [b, k] = f.shape;
  const out = Tensor.empty([b, k * k]);
  dispatch1d(outerKernel, [f, out], [out.size, k], out.size);
  if (tracer) {
    // [B, K, 1] * [B, 1, K] -> [B, K, K], then [B, K*K] (the 0 keeps the batch dim dynamic).
    const products = tracer.node("Mul", [
      tracer.node("Unsqueeze", [f, tracer.int64s([2])]),
      tracer.node("Unsqueeze", [f, tracer.int64s([1])]),
    ]);
    tracer.node("Reshape", [products, tracer.int64s([0, k * k])], out);
  }
  return record(out, "outer", [f], (g) => {
    const df = Tensor.empty([b, k]);
    dispatch1d(outerGradKernel, [g, f, df], [f.size, k], f.size);
    return [df];
  });
}

const combineKernel = defineKernel({
  name: "weighted_sum_fwd",
  storage: [{ name: "w", access: "read" }, { name: "p", access: "read" }, { name: "out", access: "rw" }],
  uniforms: [{ name: "n", type: "u32" }, { name: "N", type: "u32" }, { name: "M", type: "u32" }],
  body: `${main1d("e", "u.n")}
  let b = e / u.M;
  let m = e % u.M;
  var acc = 0.0;
  for (var i = 0u; i < u.N; i++) { acc += w[b * u.N + i] * p[(b * u.N + i) * u.M + m]; }
  out[e] = acc;
}`,
});

// dw[b, i] = sum_m G[b, m] P[b, i, m]; dP[b, i, m] = w[b, i] G[b, m]. One thread per (b, i).
const combineGradKernel = defineKernel({
  name: "weighted_sum_bwd",
  storage: [
    { name: "g", access: "read" },
    { name: "w", access: "read" },
    { name: "p", access: "read" },
    { name: "dw", access: "rw" },
    { name: "dp", access: "rw" },
  ],
  uniforms: [{ name: "n", type: "u32" }, { name: "N", type: "u32" }, { name: "M", type: "u32" }],
  body: `${main1d("e", "u.n")}
  let b = e / u.N;
  let wi = w[e];
  var acc = 0.0;
  for (var m = 0u; m < u.M; m++) {
    let gm = g[b * u.M + m];
    acc += gm * p[e * u.M + m];
    dp[e * u.M + m] = wi * gm;
  }
  dw[e] = acc;
}`,
});

/** sum_i w[b, i] * P[b, i, :]: weights [B, N] and learner probabilities [B, N, M] -> [B, M]. */
export function weightedSum(w: Tensor, p: Tensor): Tensor {
  if (p.rank !== 3 || w.rank !== 2 || w.shape[0] !== p.shape[0] || w.shape[1] !== p.shape[1]) {
    throw new Error(
      `weightedSum: weights ${fmtShape(w.shape)} must be [B, N] for probabilities ${
        fmtShape(p.shape)
      } [B, N, M]`,
    );
  }
  const [b, n, m] = p.shape;
  const out = Tensor.empty([b, m]);
  dispatch1d(combineKernel, [w, p, out], [out.size, n, m], out.size);
  if (tracer) {
    // w [B, N, 1] * P [B, N, M], summed over N.
    const weighted = tracer.node("Mul", [tracer.node("Unsqueeze", [w, tracer.int64s([2])]), p]);
    tracer.node("ReduceSum", [weighted, tracer.int64s([1])], out, { keepdims: 0 });
  }
  return record(out, "weightedSum", [w, p], (g) => {
    const dw = Tensor.empty([b, n]);
    const dp = Tensor.empty([b, n, m]);
    const engine = getEngine();
    engine.dispatch(
      combineGradKernel,
      [g.buffer, w.buffer, p.buffer, dw.buffer, dp.buffer],
      [w.size, n, m],
      engine.grid(Math.ceil(w.size / 256)),
    );
    return [dw, dp];
  });
}
