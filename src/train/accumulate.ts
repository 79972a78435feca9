// Gradient accumulation's arithmetic: how a batch splits into micro-batches, and how many micro-batches a
// step needs to fit the backend's memory, from the measured peaks of two small probe steps.
import { noGrad, scope, type Tensor } from "../autograd/tensor.ts";
import { clone, copyInto, fillInPlace } from "../kernels/basic.ts";
import type { Module } from "../nn/module.ts";
import { poolStats, resetPoolPeak, syncDevice, trimPool } from "../backend/stats.ts";

/** `parts` consecutive, near-equal slices [start, end) of `count` rows (the first ones one row longer). */
export function microBatches(count: number, parts: number): [number, number][] {
  if (!Number.isInteger(parts) || parts < 1 || parts > count) {
    throw new Error(`microBatches: ${parts} parts of ${count} rows`);
  }
  return Array.from({ length: parts }, (_, i) => {
    const start = i * Math.floor(count / parts) + Math.min(i, count % parts);
    return [start, start + Math.floor(count / parts) + (i < count % parts ? 1 : 0)];
  });
}

/**
 * The pool's peak live bytes over the forward (`computeLoss`) and backward pass of one step of `model`,
 * without an optimizer step; the model is left as it was: its buffers (batch norm's running statistics,
 * which a training forward updates) are restored and its gradients zeroed.
 */
export async function stepPeakBytes(model: Module, computeLoss: () => Tensor): Promise<number> {
  const buffers = model.namedBuffers().map(([, t]) => t);
  const saved = noGrad(() => buffers.map((t) => clone(t).keep()));
  try {
    resetPoolPeak();
    scope(() => computeLoss().backward({ freeActivations: true }));
    await syncDevice();
    return poolStats().peakLiveBytes;
  } finally {
    buffers.forEach((t, i) => copyInto(t, saved[i]));
    saved.forEach((t) => t.dispose());
    for (const p of model.parameters()) if (p.grad) fillInPlace(p.grad, 0);
  }
}

/** A step's peak bytes measured at one micro-batch size. */
export interface PeakProbe {
  /** Images in the probe's micro-batch. */
  images: number;
  /** The pool's peak live bytes over the probe's forward and backward pass. */
  peakBytes: number;
}

/** What {@link planAccumulation} decided. */
export interface AccumulationPlan {
  /** Micro-batches per step (1: the whole batch at once). */
  parts: number;
  /** The largest micro-batch's images. */
  microBatch: number;
  /** Predicted peak bytes of a step at `microBatch`, the optimizer's state to come included. */
  predictedBytes: number;
  /** The whole batch's predicted peak bytes. */
  wholeBatchBytes: number;
}

/** Share of the memory limit a plan may use: the pool's blocks fragment the memory a little. */
export const ACCUMULATION_HEADROOM = 0.9;

/** What {@link planAccumulation} plans against. */
export interface AccumulationBudget {
  /** The bytes tensors can hold (`fl.poolStats().limitBytes`); a plan uses {@link ACCUMULATION_HEADROOM} of it. */
  limitBytes: number;
  /** Bytes the step will hold that the probes did not: the optimizer's state still to be made. */
  reserveBytes: number;
  /**
   * Bytes kept free beyond the predicted peak, for the memory's fragmentation (fitStepToMemory: the largest
   * parameter's size); default 0.
   */
  slackBytes?: number;
  /** The smallest micro-batch (default 2: batch norm needs two images). */
  minMicroBatch?: number;
}

/**
 * The fewest micro-batches (of at least `minMicroBatch` images) whose step fits the budget: a step's peak
 * grows linearly with its images (weights, gradients and optimizer state stay, activations scale), so two
 * probes at different sizes give the line, to which `reserveBytes` is added; a plan fits when that and
 * `slackBytes` are within {@link ACCUMULATION_HEADROOM} of `limitBytes`.
 *
 * @throws {Error} when even micro-batches of `minMicroBatch` images would not fit.
 */
export function planAccumulation(
  batch: number,
  probes: readonly [PeakProbe, PeakProbe],
  { limitBytes, reserveBytes, slackBytes = 0, minMicroBatch = 2 }: AccumulationBudget,
): AccumulationPlan {
  const [a, b] = probes;
  if (a.images === b.images) throw new Error("planAccumulation: the two probes need different sizes");
  const perImage = Math.max(0, (b.peakBytes - a.peakBytes) / (b.images - a.images));
  const predict = (images: number) => a.peakBytes + (images - a.images) * perImage + reserveBytes;
  const budget = ACCUMULATION_HEADROOM * limitBytes - slackBytes;
  const wholeBatchBytes = predict(batch);
  const maxParts = Math.max(1, Math.floor(batch / minMicroBatch));
  for (let parts = 1; parts <= maxParts; parts++) {
    const microBatch = Math.ceil(batch / parts);
    if (predict(microBatch) <= budget) {
      return { parts, microBatch, predictedBytes: predict(microBatch), wholeBatchBytes };
    }
  }
  const gb = (bytes: number) => (bytes / 1e9).toFixed(2);
  throw new Error(
    `a training step needs about ${gb(predict(Math.min(batch, minMicroBatch)))} GB even with micro-batches ` +
      `of ${minMicroBatch} images (the whole batch of ${batch}: ${gb(wholeBatchBytes)} GB), past the ` +
      `${
        gb(budget)
      } GB this backend's memory holds for tensors; use a smaller model or crop, or the WebGPU ` +
      "backend",
  );
}

/** What {@link fitStepToMemory} needs of an optimizer; Adam and SGD satisfy it. */
export interface PreparableOptimizer {
  /** See Optimizer.pendingStateBytes. */
  pendingStateBytes(): number;
  /** See Optimizer.prepareState. */
  prepareState(): void;
}

/**
 * How to run a step of `batch` images within the backend's memory: null where the memory has no known limit
 * (WebGPU) or the batch is under 4 images (nothing to split); else a plan from two probe passes
 * (`computeLoss(2)` and `computeLoss(4)`: the loss of that many images, with {@link stepPeakBytes}, which
 * leaves the model as it was; after a first pass at 2 images that makes the gradients), the optimizer's
 * state still to come, and room kept free for one more tensor as large as the largest parameter. Then the
 * optimizer's state is made (prepareState) over the probes' freed memory, so that the steps' activations do
 * not fragment around it.
 *
 * @throws {Error} as {@link planAccumulation} when even micro-batches of 2 images would not fit.
 */
export async function fitStepToMemory(
  model: Module,
  optimizer: PreparableOptimizer,
  batch: number,
  computeLoss: (images: number) => Tensor,
): Promise<AccumulationPlan | null> {
  const limit = poolStats().limitBytes;
  if (!Number.isFinite(limit) || batch < 4) return null;
  const probe = async (images: number) => ({
    images,
    peakBytes: await stepPeakBytes(model, () => computeLoss(images)),
  });
  // A first pass makes the gradients during its backward pass, as its activations go: its peak holds fewer of
  // them than a step's does. Measured after it, both probes start with every gradient made.
  await probe(2);
  const probes = [await probe(2), await probe(4)] as const;
  // A step frees and makes tensors of many sizes, and the memory cannot be compacted: measured with VGG19-bn,
  // a plan at 90% of the limit failed when a gradient the size of the largest weight (411 MB) found no hole
  // in the 600 MB left. That much more is kept free.
  const plan = planAccumulation(batch, probes, {
    limitBytes: limit,
    reserveBytes: optimizer.pendingStateBytes(),
    slackBytes: Math.max(...model.parameters().map((p) => p.size * 4)),
  });
  trimPool(); // the probes' freed blocks, merged: room for the state in one piece
  optimizer.prepareState();
  return plan;
}
