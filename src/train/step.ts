// The optimisation step both training stages share: one batch inside a scope, the loss accumulated on the
// device so an epoch reads it back once.
import { noGrad, scope, type Tensor } from "../autograd/tensor.ts";
import { axpyInPlace, fillInPlace, scaleInPlace } from "../kernels/basic.ts";
import { add, scale } from "../kernels/elementwise.ts";
import { sum } from "../kernels/reduce.ts";

/** What {@linkcode trainStep} needs of an optimizer; every optimizer in `fl.optim` satisfies it. */
export interface Steppable {
  /** Clears the gradients of the parameters it updates. */
  zeroGrad(): void;
  /** Updates the parameters from their current gradients. */
  step(): void;
}

/** A step's loss and its health, kept past the step (the caller disposes both). */
export interface StepHealth {
  /** The step's loss, a scalar. */
  loss: Tensor;
  /**
   * The loss plus 0 x every element of the watched parameters' gradients: finite exactly when the loss and
   * every gradient element are (x * 0 is 0 for a finite x and NaN for NaN or ±Infinity). One number to read
   * back per step, instead of every gradient.
   */
  health: Tensor;
}

/**
 * Forward (`computeLoss`), backward and an optimizer step; adds `weight * loss` into `lossSum`. With `watch`
 * (parameters), also returns the step's {@link StepHealth}, so a caller can stop a diverging run at its first
 * non-finite step.
 *
 * With `parts` > 1 the step accumulates gradients (a batch as `parts` micro-batches): `computeLoss(part)`
 * for part 0 .. parts - 1 each runs forward and backward in a scope of its own, so only one micro-batch's
 * activations are live at a time; the gradients add up in the parameters' `.grad` and the optimizer steps
 * once. Each part's loss must be weighted so that they sum to the batch's loss (a mean over the batch: a
 * micro-batch's mean times its share of the batch), and the step's loss is that sum. Each part's forward
 * activations are freed while its backward pass runs (`freeActivations`): nothing but the loss is read.
 */
export function trainStep(
  optimizer: Steppable,
  computeLoss: (part: number) => Tensor,
  lossSum: Tensor,
  weight: number,
  watch?: readonly Tensor[],
  parts = 1,
): StepHealth | null {
  return scope(() => {
    optimizer.zeroGrad();
    const loss = backwardParts(computeLoss, parts, 1);
    let health: StepHealth | null = null;
    if (watch) {
      health = noGrad(() => ({ loss: scale(loss, 1).keep(), health: finiteProbe(loss, watch).keep() }));
    }
    optimizer.step();
    axpyInPlace(lossSum, loss, weight);
    return health;
  });
}

/**
 * Forward and backward of `parts` micro-batches (see {@link trainStep}), each part's loss multiplied by
 * `lossScale` before its backward pass; returns the sum of the parts' unscaled losses, off the graph.
 */
function backwardParts(computeLoss: (part: number) => Tensor, parts: number, lossScale: number): Tensor {
  if (!Number.isInteger(parts) || parts < 1) {
    throw new Error(`trainStep: parts must be a positive integer, got ${parts}`);
  }
  let loss: Tensor | null = null;
  for (let part = 0; part < parts; part++) {
    const partLoss = scope(() => {
      const l = computeLoss(part);
      if (lossScale === 1) {
        l.backward({ freeActivations: true });
        return noGrad(() => scale(l, 1)); // the value, off the graph, past the part's scope
      }
      const value = noGrad(() => scale(l, 1)); // before backward frees l, an intermediate of the scaled root
      scale(l, lossScale).backward({ freeActivations: true });
      return value;
    });
    loss = loss ? add(loss, partLoss) : partLoss;
  }
  return loss!;
}

/** `loss` plus 0 x every element of the parameters' gradients: finite exactly when all of them are. */
function finiteProbe(loss: Tensor, params: readonly Tensor[]): Tensor {
  // a scope of its own: the gradients' zeroed copies and partial sums go, the probe stays
  return scope(() =>
    noGrad(() => params.reduce((acc, p) => (p.grad ? add(acc, sum(scale(p.grad, 0))) : acc), scale(loss, 1)))
  );
}

/** Options of {@link LossScaler}; the defaults are PyTorch's GradScaler's. */
export interface LossScalerOptions {
  /** The first scale (default 2^16). */
  initScale?: number;
  /** Factor the scale grows by after `growthInterval` finite steps in a row (default 2). */
  growthFactor?: number;
  /** Factor the scale shrinks by at a step with a non-finite gradient (default 0.5). */
  backoffFactor?: number;
  /** Finite steps in a row before the scale grows (default 2000). */
  growthInterval?: number;
}

/**
 * Dynamic loss scaling for float16 training ({@link trainStepScaled}; PyTorch's GradScaler): the loss is
 * multiplied by `scale` before backward so that small float16 gradients do not flush to zero, and the
 * parameters' float32 gradients are divided by it before the optimizer steps. A step whose gradients
 * overflowed (Infinity or NaN) is skipped and the scale halved; after `growthInterval` good steps in a row
 * it doubles.
 */
export class LossScaler {
  /** The factor the next step's loss is multiplied by. */
  scale: number;
  /** Finite steps since the last overflow or growth. */
  goodSteps = 0;
  /** Steps skipped so far because a gradient overflowed. */
  skippedSteps = 0;
  /** See {@link LossScalerOptions.growthFactor}. */
  readonly growthFactor: number;
  /** See {@link LossScalerOptions.backoffFactor}. */
  readonly backoffFactor: number;
  /** See {@link LossScalerOptions.growthInterval}. */
  readonly growthInterval: number;

  /** A scaler at `options.initScale`; throws on a non-positive factor, or growth <= 1 or backoff >= 1. */
  constructor(options: LossScalerOptions = {}) {
    const { initScale = 2 ** 16, growthFactor = 2, backoffFactor = 0.5, growthInterval = 2000 } = options;
    const positive = (name: string, v: number) => {
      if (!(Number.isFinite(v) && v > 0)) {
        throw new Error(`LossScaler: ${name} must be finite and > 0, got ${v}`);
      }
    };
    positive("initScale", initScale);
    positive("growthFactor", growthFactor);
    positive("backoffFactor", backoffFactor);
    if (!(growthFactor > 1 && backoffFactor < 1)) {
      throw new Error(
        `LossScaler: needs growthFactor > 1 and backoffFactor < 1, got ${growthFactor}, ${backoffFactor}`,
      );
    }
    if (!(Number.isInteger(growthInterval) && growthInterval >= 1)) {
      throw new Error(`LossScaler: growthInterval must be a positive integer, got ${growthInterval}`);
    }
    this.scale = initScale;
    this.growthFactor = growthFactor;
    this.backoffFactor = backoffFactor;
    this.growthInterval = growthInterval;
  }

  /** Adjusts the scale after a step whose gradients were finite or not. */
  update(finite: boolean): void {
    if (!finite) {
      this.scale *= this.backoffFactor;
      this.goodSteps = 0;
      this.skippedSteps++;
    } else if (++this.goodSteps >= this.growthInterval) {
      this.scale *= this.growthFactor;
      this.goodSteps = 0;
    }
  }
}

/** What {@linkcode trainStepScaled} did. */
export interface ScaledStep {
  /** Whether the optimizer stepped: false when a gradient overflowed at this step's scale. */
  stepped: boolean;
  /** The scale the step ran with. */
  scale: number;
  /** The step's (unscaled) loss; NaN or ±Infinity when the forward pass itself overflowed. */
  loss: number;
}

/**
 * {@link trainStep} with dynamic loss scaling, for float16 activations (`fl.autocast("float16", ...)` inside
 * `computeLoss`): backward runs on the loss times `scaler.scale`; the gradients of `watch` are checked on the
 * device and read back as one number; where all are finite the gradients of `params` (every parameter the
 * optimizer updates) are divided by the scale and the optimizer steps, else the step is skipped (the
 * gradients are zeroed by the next step). The scaler then adapts. `weight * loss` is added into `lossSum`
 * only for a step taken. Waits for the device once per step. `watch` defaults to the first and the last of
 * `params`, which is enough for a network: an overflow in the float16 activation gradients carries down to
 * the first layer's gradient (through batch norm's sums, every element of it), and one at the loss reaches
 * the last layer's. (Summing every gradient would also bind each whole: a gradient past the storage-binding
 * limit, VGG19-bn's 411 MB classifier, cannot be.)
 */
export async function trainStepScaled(
  optimizer: Steppable,
  computeLoss: (part: number) => Tensor,
  lossSum: Tensor,
  weight: number,
  scaler: LossScaler,
  params: readonly Tensor[],
  parts = 1,
  watch: readonly Tensor[] = params.length > 2 ? [params[0], params[params.length - 1]] : params,
): Promise<ScaledStep> {
  const stepScale = scaler.scale;
  const loss = scope(() => {
    optimizer.zeroGrad();
    return backwardParts(computeLoss, parts, stepScale);
  });
  try {
    const probe = finiteProbe(loss, watch);
    const [checked, value] = await Promise.all([probe.item(), loss.item()]).finally(() => probe.dispose());
    const stepped = Number.isFinite(checked);
    if (stepped) {
      scope(() =>
        noGrad(() => {
          for (const p of params) if (p.grad) scaleInPlace(p.grad, 1 / stepScale);
          optimizer.step();
          axpyInPlace(lossSum, loss, weight);
        })
      );
    }
    scaler.update(stepped);
    return { stepped, scale: stepScale, loss: value };
  } finally {
    loss.dispose();
  }
}

/** The epoch's accumulated loss, read back, with the accumulator reset for the next epoch. */
export async function takeEpochLoss(lossSum: Tensor): Promise<number> {
  const value = await lossSum.item();
  fillInPlace(lossSum, 0);
  return value;
}
