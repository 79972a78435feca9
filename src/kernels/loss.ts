// Classification losses from logits: multi-class focal loss and (weighted) cross-entropy, both through
// a log-softmax for stability and both from one per-sample kernel (cross-entropy is focal with gamma 0).
import { getEngine } from "../backend/device.ts";
import { defineKernel, type KernelDef, kernelFamily, main1d } from "../backend/kernel.ts";
import { type GroupSum, groupSum, groupSumBuiltins, groupSumEnables } from "./group_sum.ts";
import { GROUP_ROW_ARRAYS, groupRowExpSum, LONG_ROW } from "./softmax.ts";
import { E } from "../backend/expr.ts";
import { Tensor } from "../autograd/tensor.ts";
import { record } from "../autograd/tape.ts";
import { intTensor, tensor } from "./basic.ts";
import { abs, add, mul, scale } from "./elementwise.ts";
import { sum } from "./reduce.ts";
import { fmtShape } from "./shape.ts";

const uniforms = [{ name: "B", type: "u32" as const }, { name: "M", type: "u32" as const }, {
  name: "gamma",
  type: "f32" as const,
}];

const one = E.c(1), zero = E.c(0);

/** 1 - exp(lp) for lp <= 0, as -expm1(lp) by its series near 0: confident rows keep their small 1 - p_y. */
const oneMinusExp = E.fn("one_minus_exp", ["lp"], (lp) => ({
  result: E.select(
    E.sub(one, E.exp(lp)),
    E.mul(E.neg(lp), E.add(one, E.mul(lp, E.add(E.c(0.5), E.div(lp, E.c(6)))))),
    E.gt(lp, E.c(Math.fround(-1e-3))),
  ),
}));

/** x^g for x >= 0, with x^0 = 1 (also at x = 0). */
const powNonneg = E.fn("pow_nonneg", ["x", "g"], (x, g) => ({
  result: E.select(E.select(E.pow(x, g), zero, E.le(x, zero)), one, E.eq(g, zero)),
}));

/** The focal loss of a row from lp = log p_y: -alpha_y (1 - p_y)^gamma lp. */
const focalLossOfRow = E.fn("focal_loss", ["lp", "alpha_y", "gamma"], (lp, alphaY, gamma) => ({
  result: E.mul(E.mul(E.neg(alphaY), E.call(powNonneg, E.call(oneMinusExp, lp), gamma)), lp),
}));

/**
 * The row's gradient coefficient: dL/dz_j = coeff (delta_yj - p_j), coeff =
 * -alpha_y [ (1-q)^g - g (1-q)^(g-1) q log q ] dL, q = p_y.
 */
const focalCoeffOfRow = E.fn(
  "focal_coeff",
  ["lp", "alpha_y", "gamma", "dloss"],
  (lp, alphaY, gamma, dloss) => {
    const [q, omq, t1] = ["q", "omq", "t1"].map(E.value);
    return {
      lets: [
        ["q", E.exp(lp)],
        ["omq", E.call(oneMinusExp, lp)],
        [
          "t1",
          E.select(
            zero,
            E.mul(E.mul(E.mul(gamma, E.pow(omq, E.sub(gamma, one))), q), lp),
            E.and(E.ne(gamma, zero), E.gt(omq, zero)),
          ),
        ],
      ],
      result: E.mul(E.mul(E.neg(alphaY), E.sub(E.call(powNonneg, omq, gamma), t1)), dloss),
    };
  },
);

// Per row: lp = log p_y from a max-shifted log-sum-exp.
const ROW_STATS = `
// (max, log sum exp(x - max)) of row b. log p_m is (x_m - max) - lse.y: exact in the shift, whereas
// x_m - (max + log s) would round log s to the ulp of max (a 9% error in log p at logits ~100).
fn row_lse(b: u32) -> vec2f {
  var mx = -0x1.fffffep+127f;
  for (var m = 0u; m < u.M; m++) { mx = max(mx, logits[b * u.M + m]); }
  var s = 0.0;
  for (var m = 0u; m < u.M; m++) { s += exp(logits[b * u.M + m] - mx); }
  return vec2f(mx, log(s));
}`;

// One thread per row b with target y: lse = (max, log-sum-exp shift) and lp = log p_y.
const ROW_PROLOGUE = `${main1d("b", "u.B")}
  let y = u32(labels[b]);
  let lse = row_lse(b);
  let lp = (logits[b * u.M + y] - lse.x) - lse.y;`;

const FORWARD_STORAGE: KernelDef["storage"] = [
  { name: "logits", access: "read" },
  { name: "labels", access: "read", type: "i32" },
  { name: "alpha", access: "read" },
  { name: "loss", access: "rw" },
];
const BACKWARD_STORAGE: KernelDef["storage"] = [
  { name: "logits", access: "read" },
  { name: "labels", access: "read", type: "i32" },
  { name: "alpha", access: "read" },
  { name: "gout", access: "read" },
  { name: "dlogits", access: "rw" },
];

const forwardKernel = defineKernel({
  name: "focal_fwd",
  storage: FORWARD_STORAGE,
  uniforms,
  functions: [focalLossOfRow],
  body: `${ROW_STATS}
${ROW_PROLOGUE}
  loss[b] = focal_loss(lp, alpha[y], u.gamma);
}`,
});

// dL/dz_j = coeff (delta_yj - p_j) (see focal_coeff); one thread per row.
const backwardKernel = defineKernel({
  name: "focal_bwd",
  storage: BACKWARD_STORAGE,
  uniforms,
  functions: [focalCoeffOfRow],
  body: `${ROW_STATS}
${ROW_PROLOGUE}
  let coeff = focal_coeff(lp, alpha[y], u.gamma, gout[b]);
  for (var m = 0u; m < u.M; m++) {
    let p = exp((logits[b * u.M + m] - lse.x) - lse.y);
    dlogits[b * u.M + m] = coeff * (select(0.0, 1.0, m == y) - p);
  }
}`,
});

/**
 * Rows of at least LONG_ROW classes (softmax.ts) run one workgroup a row on WebGPU: the row's max and
 * log-sum-exp across the workgroup (group_sum.ts), threads striding over the classes.
 */
const GROUP_PROLOGUE = (sum: GroupSum) =>
  `${GROUP_ROW_ARRAYS}
@compute @workgroup_size(WG) fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
    @builtin(num_workgroups) nwg: vec3u${groupSumBuiltins(sum)}) {
  let row = wid.x + wid.y * nwg.x;
  let live = row < u.B;
  let b = min(row, u.B - 1u); // clamped: every thread reaches the barriers
  ${groupRowExpSum(sum, "u.M", (m) => `logits[b * u.M + ${m}]`)}
  if (!live) { return; }
  let lse = vec2f(top, log(row_sum[0]));
  let y = u32(labels[b]);
  let lp = (logits[b * u.M + y] - lse.x) - lse.y;`;

type GroupKey = `${"fwd" | "bwd"} ${GroupSum}`;
/** The long-row forward (the loss) and backward (dL/dlogits) kernels, per way of summing. */
const groupKernel = kernelFamily((key: GroupKey) => {
  const [pass, sum] = key.split(" ") as ["fwd" | "bwd", GroupSum];
  return {
    name: `focal_${pass}_group${sum === "tree" ? "" : `_${sum}`}`,
    wasm: null,
    storage: pass === "fwd" ? FORWARD_STORAGE : BACKWARD_STORAGE,
    uniforms,
    workgroupSize: 64,
    enable: groupSumEnables(sum),
    functions: [pass === "fwd" ? focalLossOfRow : focalCoeffOfRow],
    body: `${GROUP_PROLOGUE(sum)}
  ${
      pass === "fwd"
        ? "if (lid.x == 0u) { loss[b] = focal_loss(lp, alpha[y], u.gamma); }"
        : `let coeff = focal_coeff(lp, alpha[y], u.gamma, gout[b]);
  for (var m = lid.x; m < u.M; m += WG) {
    let p = exp((logits[b * u.M + m] - lse.x) - lse.y);
    dlogits[b * u.M + m] = coeff * (select(0.0, 1.0, m == y) - p);
  }`
    }
}`,
  };
}, ["fwd tree", "fwd subgroup", "bwd tree", "bwd subgroup"]);

/** How per-sample losses become one scalar: their mean (see each loss for weighting) or their sum. */
export type Reduction = "mean" | "sum";
/**
 * Class indices, one per sample in 0..M-1: on the CPU (range-checked by the loss), or an int32 [B] tensor
 * already on the device (not range-checked: whoever uploaded it checks it, as the stage-2 trainer does once
 * for the whole data set).
 */
export type Targets = Int32Array | readonly number[] | Tensor;

function checkInputs(
  op: string,
  logits: Tensor,
  target: Targets,
  perClass: readonly number[] | undefined,
  what: string,
) {
  if (!(logits instanceof Tensor) || logits.rank !== 2) {
    throw new Error(
      `${op}: logits must be a [batch, classes] tensor, got ${
        logits instanceof Tensor ? fmtShape(logits.shape) : typeof logits
      }`,
    );
  }
  const [b, m] = logits.shape;
  if (b === 0) throw new Error(`${op}: empty batch (0 samples)`);
  if (m === 0) throw new Error(`${op}: logits have 0 classes`);
  if (target instanceof Tensor) {
    if (target.dtype !== "int32" || target.rank !== 1 || target.size !== b) {
      throw new Error(
        `${op}: target tensor must be int32 [${b}], got ${target.dtype} ${fmtShape(target.shape)}`,
      );
    }
  } else if (!target || target.length !== b) {
    throw new Error(`${op}: ${target?.length ?? 0} targets for a batch of ${b}`);
  }
  for (let i = 0; !(target instanceof Tensor) && i < b; i++) {
    const y = target[i];
    if (!Number.isInteger(y) || y < 0 || y >= m) {
      throw new Error(`${op}: target ${i} is ${y}, outside the class range 0..${m - 1}`);
    }
  }
  if (perClass !== undefined) {
    if (perClass.length !== m) {
      throw new Error(`${op}: ${what} has ${perClass.length} entries for ${m} classes`);
    }
    if (perClass.some((v) => !Number.isFinite(v) || v < 0)) {
      throw new Error(`${op}: ${what} must be finite and non-negative, got [${perClass.join(", ")}]`);
    }
  }
}

/** Per-sample -alpha[y] (1 - p_y)^gamma log p_y as a [B] tensor. */
function perSample(logits: Tensor, target: Targets, alphaValues: readonly number[], gamma: number): Tensor {
  const [b, m] = logits.shape;
  const ownTargets = !(target instanceof Tensor);
  const targetT = target instanceof Tensor ? target : intTensor(target as ArrayLike<number>);
  const alphaT = tensor(alphaValues as number[]);
  const out = Tensor.empty([b]);
  const engine = getEngine();
  const long = engine.kind === "webgpu" && m >= LONG_ROW;
  const grid = long ? engine.grid(b) : engine.grid(Math.ceil(b / 256));
  engine.dispatch(
    long ? groupKernel(`fwd ${groupSum()}`) : forwardKernel,
    [logits.buffer, targetT.buffer, alphaT.buffer, out.buffer],
    [b, m, gamma],
    grid,
  );
  const result = record(out, "focal", [logits], (g) => {
    const d = Tensor.empty([b, m], logits.dtype);
    engine.dispatch(long ? groupKernel(`bwd ${groupSum()}`) : backwardKernel, [
      logits.buffer,
      targetT.buffer,
      alphaT.buffer,
      g.buffer,
      d.buffer,
    ], [
      b,
      m,
      gamma,
    ], grid);
    release();
    return [d];
  });
  function release() {
    if (ownTargets) targetT.dispose();
    alphaT.dispose();
  }
  // Without a graph nothing will read the targets again.
  if (!result.node) release();
  return result;
}

function checkReduction(reduction: Reduction, op: string): void {
  if (reduction !== "mean" && reduction !== "sum") {
    throw new Error(`${op}: reduction must be "mean" or "sum", got ${JSON.stringify(reduction)}`);
  }
}

function reduce(losses: Tensor, reduction: Reduction, divisor: number, op: string): Tensor {
  checkReduction(reduction, op);
  const total = sum(losses);
  return reduction === "sum" ? total : scale(total, 1 / divisor);
}

/** Options of {@link focalLoss}. */
export interface FocalOptions {
  /** Focusing exponent, finite and >= 0 (default 2); 0 gives (alpha-weighted) cross-entropy. */
  gamma?: number;
  /** Per-class weights, one finite non-negative value per class (default all 1). */
  alpha?: readonly number[];
  /** Default "mean": the mean over samples (divided by the batch size, not by the alpha weights). */
  reduction?: Reduction;
}

/**
 * Multi-class focal loss (Lin et al.): mean (or sum) over samples of -alpha[y] (1 - p_y)^gamma log p_y with
 * p = softmax(logits). gamma 0 and alpha of ones is cross-entropy.
 *
 * `logits` is float32 [B, M]; `target` holds B class indices in 0..M-1. Returns a scalar tensor (shape
 * []); differentiable in `logits` only. Throws on a bad shape, an empty batch, an out-of-range target or
 * an invalid option, before anything is allocated.
 */
export function focalLoss(logits: Tensor, target: Targets, options: FocalOptions = {}): Tensor {
  const { gamma = 2, alpha, reduction = "mean" } = options;
  checkInputs("focalLoss", logits, target, alpha, "alpha");
  // Checked before any tensor is made, so that a bad call leaves nothing behind.
  checkReduction(reduction, "focalLoss");
  if (!Number.isFinite(gamma) || gamma < 0) {
    throw new Error(`focalLoss: gamma must be finite and >= 0, got ${gamma}`);
  }
  const m = logits.shape[1];
  return reduce(
    perSample(logits, target, alpha ?? new Array(m).fill(1), gamma),
    reduction,
    logits.shape[0],
    "focalLoss",
  );
}

/** Options of {@link crossEntropy}. */
export interface CrossEntropyOptions {
  /** Per-class weights, one finite non-negative value per class, as PyTorch's `weight` (default all 1). */
  weight?: readonly number[];
  /** Default "mean"; with `weight` the mean divides by the sum of the targets' weights. */
  reduction?: Reduction;
}

/**
 * Cross-entropy from logits, as torch.nn.functional.cross_entropy with class-index targets; with
 * `weight`, "mean" divides by the sum of the targets' weights (PyTorch).
 *
 * `logits` is float32 [B, M]; `target` holds B class indices in 0..M-1. Returns a scalar tensor (shape
 * []); differentiable in `logits` only. A weighted mean needs CPU targets (it throws for a target
 * tensor), and throws when the targets' weights sum to 0.
 */
export function crossEntropy(logits: Tensor, target: Targets, options: CrossEntropyOptions = {}): Tensor {
  const { weight, reduction = "mean" } = options;
  checkInputs("crossEntropy", logits, target, weight, "weight");
  checkReduction(reduction, "crossEntropy");
  const m = logits.shape[1];
  let divisor = logits.shape[0];
  if (weight && reduction === "mean") {
    if (target instanceof Tensor) {
      throw new Error("crossEntropy: a weighted mean needs the targets on the CPU");
    }
    divisor = 0;
    for (let i = 0; i < target.length; i++) divisor += weight[target[i]];
    if (reduction === "mean" && divisor === 0) throw new Error("crossEntropy: the targets' weights sum to 0");
  }
  return reduce(
    perSample(logits, target, weight ?? new Array(m).fill(1), 0),
    reduction,
    divisor,
    "crossEntropy",
  );
}

/** Weights of the penalties of {@link l1l2Penalty} (Keras's l1_l2 regularizer). */
export interface PenaltyOptions {
  /** Weight of the sum of absolute values (default 0). */
  l1?: number;
  /** Weight of the sum of squares (default 0). */
  l2?: number;
}

/**
 * l1 sum |w| + l2 sum w^2 over every element of `weights`, a scalar to add to a loss (Keras's
 * `regularizers.l1_l2`, which AI-Covid puts on its dense kernels). Differentiable; 0 when both are 0.
 * @throws Error when a weight is negative or not finite, or `weights` is empty.
 */
export function l1l2Penalty(weights: readonly Tensor[], options: PenaltyOptions): Tensor {
  const { l1 = 0, l2 = 0 } = options;
  for (const [name, v] of [["l1", l1], ["l2", l2]] as const) {
    if (!Number.isFinite(v) || v < 0) {
      throw new Error(`l1l2Penalty: ${name} must be finite and >= 0, got ${v}`);
    }
  }
  if (weights.length === 0) throw new Error("l1l2Penalty: no weights");
  const terms = weights.flatMap((w) => [
    ...(l1 > 0 ? [scale(sum(abs(w)), l1)] : []),
    ...(l2 > 0 ? [scale(sum(mul(w, w)), l2)] : []),
  ]);
  return terms.length === 0 ? tensor([0], []) : terms.slice(1).reduce((a, t) => add(a, t), terms[0]);
}
