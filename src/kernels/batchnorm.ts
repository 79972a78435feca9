// Batch normalisation over (N, H, W) per channel of an NCHW tensor, as PyTorch's F.batch_norm: batch
// statistics in training mode (running statistics updated in place on the device, the unbiased variance
// into the running variance), running statistics in eval mode; gradients to x, weight and bias in both.
import { getEngine } from "../backend/device.ts";
import { defineKernel, type KernelDef, kernelFamily, main1d, pointwiseKernel } from "../backend/kernel.ts";
import { type GroupSum, groupSum, groupSumBuiltins, groupSumEnables, groupSums } from "./group_sum.ts";
import { E } from "../backend/expr.ts";
import { isFloat, Tensor } from "../autograd/tensor.ts";
import { record } from "../autograd/tape.ts";
import { clone, dispatch1d } from "./basic.ts";
import { fmtShape, sameShape } from "./shape.ts";
import { add, relu as reluOp, reluGradFromOutput } from "./elementwise.ts";
import { BINARY_MAPS, reluOf } from "./maps.ts";
import { tracer, type TraceRecorder } from "../onnx/trace.ts";

/** Options of {@link batchNorm2d}, as torch.nn.functional.batch_norm's keyword arguments. */
export interface BatchNormOptions {
  /** Normalise with the batch statistics and update the running ones (default false). */
  training?: boolean;
  /** Weight of the batch statistic in the running average (default 0.1). */
  momentum?: number;
  /** Added to the variance before the square root (default 1e-5). */
  eps?: number;
  /** Added to the normalised output, before the ReLU (a ResNet block's shortcut); shaped as x. */
  residual?: Tensor | null;
  /** A ReLU last: relu(bn(x) + residual) (default false). */
  relu?: boolean;
}

/** What follows the normalisation in place, in the output's buffer: + residual, then ReLU. */
type Epilogue = "relu" | "residual" | "residual_relu";

// The epilogue, in place on the batch norm's output x (with the residual y): the same maps as add and relu, so
// the same bits as those ops in turn, without their two tensors.
const epilogueKernel = kernelFamily((v: Epilogue) => {
  const x = E.value("x"), sum = v === "relu" ? x : BINARY_MAPS.add;
  return pointwiseKernel({
    name: `batchnorm_epilogue_${v}`,
    storage: [
      { name: "x", access: "rw" as const },
      ...(v === "relu" ? [] : [{ name: "y", access: "read" as const }]),
    ],
    uniforms: [{ name: "n", type: "u32" as const }],
    program: { count: "n", lets: [], stores: [["x", v === "residual" ? sum : reluOf(sum)]] },
  });
}, ["relu", "residual", "residual_relu"]);

// Per-channel statistics: one workgroup per channel, threads striding over the N*H*W values of the
// channel, partial sums combined across the workgroup (group_sum.ts: a tree, or subgroup sums). Two passes over x (the mean, then the
// squared deviations from it) keep the variance accurate where the mean is large. Small maps (late
// layers, 1x1 maps) get a smaller workgroup, so that fewer threads idle.
type GroupSize = 64 | 256;
const groupSize = (count: number): GroupSize => (count <= 4096 ? 64 : 256);
const CHANNEL_ID = `let j = wid.x + wid.y * nwg.x;
  let c = min(j, u.c - 1u);
  let count = u.n * u.hw;`;
// Offset of value r (of N*H*W) of channel c.
const AT = "((r / u.hw) * u.c + c) * u.hw + r % u.hw";
const groupMain = (sum: GroupSum) =>
  `@compute @workgroup_size(WG) fn main(@builtin(workgroup_id) wid: vec3u,
    @builtin(local_invocation_id) lid: vec3u, @builtin(num_workgroups) nwg: vec3u${groupSumBuiltins(sum)}) {`;
/** A kernel variant's group size and how it sums: "64", "256", "64_subgroup", "256_subgroup". */
type Grouping = `${GroupSize}` | `${GroupSize}_subgroup`;
const GROUPINGS: Grouping[] = ["64", "256", "64_subgroup", "256_subgroup"];
const grouping = (count: number): Grouping => {
  const sum = groupSum();
  return sum === "tree" ? `${groupSize(count)}` : `${groupSize(count)}_${sum}`;
};
const sumOf = (g: Grouping): GroupSum => (g.endsWith("_subgroup") ? "subgroup" : "tree");

type StatsVariant = `${"track" | "plain"}_${Grouping}`;
/** stats[c] = batch mean, stats[C + c] = 1 / sqrt(biased var + eps); with "track" the running stats move. */
const statsKernel = kernelFamily(
  (v: StatsVariant) => statsDef(v, sumOf(v.slice(v.indexOf("_") + 1) as Grouping)),
  (
    ["track", "plain"] as const
  ).flatMap((t) => GROUPINGS.map((g): StatsVariant => `${t}_${g}`)),
);
function statsDef(v: StatsVariant, sum: GroupSum): KernelDef {
  return {
    name: `batchnorm_stats_${v}`,
    // One twin per binding layout: it loops over each channel's values whatever the WGSL's group size.
    wasm: `batchnorm_stats_${v.split("_")[0]}`,
    uniformBlock: "batchnorm_stats",
    storage: [
      { name: "x", access: "read" },
      { name: "stats", access: "rw" },
      ...(v.startsWith("track")
        ? [{ name: "rm", access: "rw" as const }, { name: "rv", access: "rw" as const }]
        : []),
    ],
    uniforms: [
      { name: "n", type: "u32" },
      { name: "c", type: "u32" },
      { name: "hw", type: "u32" },
      { name: "eps", type: "f32" },
      { name: "momentum", type: "f32" },
      { name: "unbias", type: "f32" },
    ],
    workgroupSize: Number(v.split("_")[1]),
    enable: groupSumEnables(sum),
    body: `var<workgroup> partial: array<f32, WG>;
${groupMain(sum)}
  ${CHANNEL_ID}
  var acc = 0.0;
  for (var r = lid.x; r < count; r += WG) { acc += x[${AT}]; }
  ${groupSums(sum, ["partial"], ["acc"])}
  let mean = partial[0] / f32(count);
  workgroupBarrier();
  acc = 0.0;
  for (var r = lid.x; r < count; r += WG) { let d = x[${AT}] - mean; acc += d * d; }
  ${groupSums(sum, ["partial"], ["acc"])}
  if (lid.x == 0u && j < u.c) {
    let variance = partial[0] / f32(count);
    stats[c] = mean;
    stats[u.c + c] = 1.0 / sqrt(variance + u.eps);
    ${
      v.startsWith("track")
        ? `rm[c] = (1.0 - u.momentum) * rm[c] + u.momentum * mean;
    rv[c] = (1.0 - u.momentum) * rv[c] + u.momentum * variance * u.unbias;`
        : ""
    }
  }
}`,
  };
}

/** Eval mode: the same stats layout from the running statistics. */
const runningStatsKernel = defineKernel({
  name: "batchnorm_running_stats",
  storage: [{ name: "rm", access: "read" }, { name: "rv", access: "read" }, { name: "stats", access: "rw" }],
  uniforms: [{ name: "c", type: "u32" }, { name: "eps", type: "f32" }],
  body: `${main1d("c", "u.c")}
  stats[c] = rm[c];
  stats[u.c + c] = 1.0 / sqrt(rv[c] + u.eps);
}`,
});

const elemUniforms = [
  { name: "total", type: "u32" as const },
  { name: "c", type: "u32" as const },
  { name: "hw", type: "u32" as const },
  { name: "count", type: "f32" as const },
];

/** y = (x - mean) * invstd (* weight + bias). */
const applyKernel = kernelFamily((affine: "affine" | "plain") => ({
  name: `batchnorm_apply_${affine}`,
  uniformBlock: "batchnorm_channels",
  storage: [
    { name: "x", access: "read" },
    { name: "stats", access: "read" },
    ...(affine === "affine"
      ? [{ name: "w", access: "read" as const }, { name: "b", access: "read" as const }]
      : []),
    { name: "y", access: "rw" },
  ],
  uniforms: elemUniforms,
  body: `${main1d("i", "u.total")}
  let c = (i / u.hw) % u.c;
  let xhat = (x[i] - stats[c]) * stats[u.c + c];
  y[i] = ${affine === "affine" ? "xhat * w[c] + b[c]" : "xhat"};
}`,
}), ["affine", "plain"]);

/** Per channel: sg = sum(g) (the bias gradient) and sgx = sum(g * xhat) (the weight gradient). */
const gradSumsKernel = kernelFamily((v: Grouping) => ({
  name: `batchnorm_grad_sums_${v}`,
  wasm: "batchnorm_grad_sums",
  storage: [
    { name: "g", access: "read" },
    { name: "x", access: "read" },
    { name: "stats", access: "read" },
    { name: "sg", access: "rw" },
    { name: "sgx", access: "rw" },
  ],
  uniforms: [{ name: "n", type: "u32" }, { name: "c", type: "u32" }, { name: "hw", type: "u32" }],
  workgroupSize: Number(v.split("_")[0]),
  enable: groupSumEnables(sumOf(v)),
  body: `var<workgroup> pg: array<f32, WG>;
var<workgroup> pgx: array<f32, WG>;
${groupMain(sumOf(v))}
  ${CHANNEL_ID}
  let mean = stats[c];
  let invstd = stats[u.c + c];
  var ag = 0.0;
  var agx = 0.0;
  for (var r = lid.x; r < count; r += WG) {
    let o = ${AT};
    ag += g[o];
    agx += g[o] * (x[o] - mean) * invstd;
  }
  ${groupSums(sumOf(v), ["pg", "pgx"], ["ag", "agx"])}
  if (lid.x == 0u && j < u.c) {
    sg[c] = pg[0];
    sgx[c] = pgx[0];
  }
}`,
}), GROUPINGS);

type DxVariant = `${"batch" | "running"}_${"affine" | "plain"}`;
/**
 * Batch statistics: dx = w invstd (g - sum(g)/M - xhat sum(g xhat)/M), the gradient through the mean and
 * variance too; running statistics (constants): dx = w invstd g.
 */
const dxKernel = kernelFamily((v: DxVariant) => {
  const affine = v.endsWith("affine");
  const batch = v.startsWith("batch");
  return {
    name: `batchnorm_dx_${v}`,
    uniformBlock: "batchnorm_channels",
    storage: [
      { name: "g", access: "read" },
      { name: "x", access: "read" },
      { name: "stats", access: "read" },
      ...(batch ? [{ name: "sg", access: "read" as const }, { name: "sgx", access: "read" as const }] : []),
      ...(affine ? [{ name: "w", access: "read" as const }] : []),
      { name: "dx", access: "rw" },
    ],
    uniforms: elemUniforms,
    body: `${main1d("i", "u.total")}
  let c = (i / u.hw) % u.c;
  let invstd = stats[u.c + c];
  let scale = invstd${affine ? " * w[c]" : ""};
  ${
      batch
        ? `let xhat = (x[i] - stats[c]) * invstd;
  dx[i] = scale * (g[i] - sg[c] / u.count - xhat * sgx[c] / u.count);`
        : "dx[i] = scale * g[i];"
    }
}`,
  };
}, ["batch_affine", "batch_plain", "running_affine", "running_plain"]);

const incrementKernel = defineKernel({
  name: "increment_i32",
  storage: [{ name: "t", access: "rw", type: "i32" }],
  body: `${main1d("i", "1u")}
  t[i] = t[i] + 1;
}`,
});

/** Adds 1 to element 0 of an int32 tensor on the device (BatchNorm's num_batches_tracked). */
export function incrementInPlace(t: Tensor): void {
  if (t.dtype !== "int32" || t.size < 1) throw new Error(`incrementInPlace: needs an int32 tensor, got ${t}`);
  getEngine().dispatch(incrementKernel, [t.buffer], [], [1]);
}

function checkVector(op: string, name: string, t: Tensor | null, channels: number): void {
  if (t === null) return;
  if (!(t instanceof Tensor)) throw new Error(`${op}: ${name} must be a Tensor or null, got ${typeof t}`);
  if (t.dtype !== "float32") throw new Error(`${op}: ${name} must be float32, got ${t.dtype}`);
  if (t.rank !== 1 || t.size !== channels) {
    throw new Error(
      `${op}: ${name} must have shape [${channels}] (one value per channel), got ${fmtShape(t.shape)}`,
    );
  }
}

/**
 * ONNX's BatchNormalization in inference mode (scale 1 and bias 0 where there is no affine transform).
 * Batch statistics are refused before anything runs: training mode would also update the running ones.
 */
function traceBatchNorm(
  t: TraceRecorder,
  x: Tensor,
  out: Tensor,
  runningMean: Tensor | null,
  runningVar: Tensor | null,
  weight: Tensor | null,
  bias: Tensor | null,
  training: boolean,
  eps: number,
): void {
  if (training) {
    throw new Error("batchNorm2d in training mode cannot be exported to ONNX: call model.eval() first");
  }
  if (!runningMean || !runningVar) {
    throw new Error("batchNorm2d without running statistics (batch statistics) cannot be exported to ONNX");
  }
  const c = x.shape[1];
  const scale = weight ?? t.constant(new Float32Array(c).fill(1), [c]);
  const shift = bias ?? t.constant(new Float32Array(c), [c]);
  t.node("BatchNormalization", [x, scale, shift, runningMean, runningVar], out, { epsilon: { float: eps } });
}

/**
 * PyTorch's F.batch_norm on an NCHW tensor. `weight`/`bias` null means no affine transform; null running
 * statistics mean batch statistics are always used (track_running_stats=False). In training mode with
 * running statistics, `runningMean`/`runningVar` are updated in place on the device.
 *
 * With `residual` and/or `relu`: relu(bn(x) + residual), the epilogue applied in place to the output, so the
 * op keeps x and its output for the backward pass, where batch norm, add and relu in turn keep three
 * tensors of x's size (what PyTorch's in-place add and ReLU save); the values are those ops' bits.
 */
export function batchNorm2d(
  x: Tensor,
  runningMean: Tensor | null,
  runningVar: Tensor | null,
  weight: Tensor | null = null,
  bias: Tensor | null = null,
  { training = false, momentum = 0.1, eps = 1e-5, residual = null, relu = false }: BatchNormOptions = {},
): Tensor {
  const op = "batchNorm2d";
  if (!(x instanceof Tensor)) throw new Error(`${op}: expected a Tensor, got ${typeof x}`);
  if (!isFloat(x.dtype)) throw new Error(`${op}: needs a float input, got ${x.dtype}`);
  if (x.rank !== 4) {
    throw new Error(`${op}: expected a 4-D [N, C, H, W] input, got shape ${fmtShape(x.shape)}`);
  }
  const [n, c, h, w] = x.shape;
  if ((runningMean === null) !== (runningVar === null)) {
    throw new Error(`${op}: runningMean and runningVar must both be tensors or both be null`);
  }
  checkVector(op, "runningMean", runningMean, c);
  checkVector(op, "runningVar", runningVar, c);
  checkVector(op, "weight", weight, c);
  checkVector(op, "bias", bias, c);
  if ((weight === null) !== (bias === null)) {
    throw new Error(`${op}: weight and bias must both be tensors or both be null`);
  }
  if (!Number.isFinite(eps) || eps < 0) throw new Error(`${op}: eps must be finite and >= 0, got ${eps}`);
  if (!Number.isFinite(momentum) || momentum < 0 || momentum > 1) {
    throw new Error(`${op}: momentum must be a number in [0, 1], got ${momentum}`);
  }
  const hw = h * w, count = n * hw;
  const useBatch = training || runningMean === null;
  if (training && count <= 1) {
    throw new Error(
      `${op}: expected more than 1 value per channel when training, got input size ${fmtShape(x.shape)}`,
    );
  }
  if (useBatch && count === 0) {
    throw new Error(`${op}: batch statistics of an empty input ${fmtShape(x.shape)}`);
  }
  if (residual && !(residual instanceof Tensor && sameShape(residual.shape, x.shape))) {
    throw new Error(
      `${op}: residual must be a Tensor shaped as x ${fmtShape(x.shape)}, got ${
        residual instanceof Tensor ? fmtShape(residual.shape) : typeof residual
      }`,
    );
  }
  const epilogue: Epilogue | null = residual ? (relu ? "residual_relu" : "residual") : relu ? "relu" : null;
  if (epilogue && tracer) {
    // ONNX has no such node: the three ops in turn
    const y = batchNorm2d(x, runningMean, runningVar, weight, bias, { training, momentum, eps });
    const s = residual ? add(y, residual) : y;
    return relu ? reluOp(s) : s;
  }
  const out = Tensor.empty([...x.shape], x.dtype);
  if (tracer) traceBatchNorm(tracer, x, out, runningMean, runningVar, weight, bias, training, eps);
  if (x.size === 0) return out;
  const engine = getEngine();
  const stats = Tensor.empty([2, c]);
  if (useBatch) {
    const track = training && runningMean !== null;
    const params = [n, c, hw, eps, momentum, count > 1 ? count / (count - 1) : 1];
    const buffers = [x.buffer, stats.buffer, ...(track ? [runningMean!.buffer, runningVar!.buffer] : [])];
    engine.dispatch(
      statsKernel(`${track ? "track" : "plain"}_${grouping(count)}`),
      buffers,
      params,
      engine.grid(c),
    );
  } else {
    dispatch1d(runningStatsKernel, [runningMean!, runningVar!, stats], [c, eps], c);
  }
  const affine = weight !== null && bias !== null;
  const elemParams = [x.size, c, hw, count];
  dispatch1d(
    applyKernel(affine ? "affine" : "plain"),
    [x, stats, ...(affine ? [weight!, bias!] : []), out],
    elemParams,
    x.size,
  );
  if (epilogue) {
    dispatch1d(epilogueKernel(epilogue), residual ? [out, residual] : [out], [x.size], x.size);
  }

  const inputs = [x, ...(affine ? [weight!, bias!] : []), ...(residual ? [residual] : [])];
  record(out, op, inputs, (gOut) => {
    // through the ReLU from the output (kept for this), to the residual as it is, then the batch norm's rule
    const g = relu ? reluGradFromOutput(gOut, out) : gOut;
    const gResidual = residual?.requiresGrad ? (relu ? g : clone(gOut)) : null;
    const needSums = useBatch || weight?.requiresGrad || bias?.requiresGrad;
    let sg: Tensor | null = null, sgx: Tensor | null = null;
    if (needSums) {
      sg = Tensor.empty([c]);
      sgx = Tensor.empty([c]);
      engine.dispatch(
        gradSumsKernel(grouping(count)),
        [g.buffer, x.buffer, stats.buffer, sg.buffer, sgx.buffer],
        [n, c, hw],
        engine.grid(c),
      );
    }
    let dx: Tensor | null = null;
    if (x.requiresGrad) {
      dx = Tensor.empty([...x.shape], x.dtype);
      const variant: DxVariant = `${useBatch ? "batch" : "running"}_${affine ? "affine" : "plain"}`;
      const buffers = [g, x, stats, ...(useBatch ? [sg!, sgx!] : []), ...(affine ? [weight!] : []), dx];
      dispatch1d(dxKernel(variant), buffers, elemParams, x.size);
    }
    // The graph runs backward once: the saved statistics are not needed afterwards.
    stats.dispose();
    const dw = affine && weight!.requiresGrad ? sgx : null;
    const db = affine && bias!.requiresGrad ? sg : null;
    if (sgx && sgx !== dw) sgx.dispose();
    if (sg && sg !== db) sg.dispose();
    return [dx, ...(affine ? [dw, db] : []), ...(residual ? [gResidual] : [])];
  });
  if (!out.node) stats.dispose();
  return out;
}

// Eval mode's batch norm after a convolution, as the per-channel scale and shift that the convolution's
// epilogue applies (conv2dFused): bn(conv(x) + b) = conv(x) * s + (beta + (b - mean) * s), s = gamma / sqrt(var + eps).
// With the convolution's bias b or without (a variant that binds none).
const foldKernel = kernelFamily((withBias: number) => {
  const [mean, variance, gamma, beta, b] = ["mean", "variance", "gamma", "beta", "b"].map(E.value);
  const s = E.value("s");
  return pointwiseKernel({
    name: withBias ? "batchnorm_fold_bias" : "batchnorm_fold",
    storage: [
      { name: "mean", access: "read" as const },
      { name: "variance", access: "read" as const },
      { name: "gamma", access: "read" as const },
      { name: "beta", access: "read" as const },
      ...(withBias ? [{ name: "b", access: "read" as const }] : []),
      { name: "scale", access: "rw" as const },
      { name: "shift", access: "rw" as const },
    ],
    uniforms: [{ name: "n", type: "u32" as const }, { name: "eps", type: "f32" as const }],
    program: {
      count: "n",
      lets: [["s", E.div(gamma, E.sqrt(E.add(variance, E.uniform("eps"))))]],
      stores: [["scale", s], ["shift", E.add(beta, E.mul(withBias ? E.sub(b, mean) : E.neg(mean), s))]],
    },
  });
}, [0, 1]);

/**
 * A batch norm in eval mode (running statistics, affine) that follows a convolution with bias `convBias`
 * (or none), as one per-channel scale and shift of the convolution's output: what conv2dFused's epilogue
 * takes to do both in one pass. Gives [scale, shift], each [C].
 */
export function foldBatchNorm(
  runningMean: Tensor,
  runningVar: Tensor,
  weight: Tensor,
  bias: Tensor,
  eps: number,
  convBias: Tensor | null,
): [Tensor, Tensor] {
  const c = runningMean.size;
  for (
    const [name, t] of [["runningVar", runningVar], ["weight", weight], ["bias", bias], [
      "convBias",
      convBias,
    ]] as const
  ) {
    checkVector("foldBatchNorm", name, t, c);
  }
  const scale = Tensor.empty([c]), shift = Tensor.empty([c]);
  const inputs = [runningMean, runningVar, weight, bias, ...(convBias ? [convBias] : [])];
  dispatch1d(foldKernel(convBias ? 1 : 0), [...inputs, scale, shift], [c, eps], c);
  return [scale, shift];
}
