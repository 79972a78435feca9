// The optimisation step both training stages share: one batch inside a scope, the loss accumulated on the
// device so an epoch reads it back once.
import { noGrad, scope, type Tensor } from "../autograd/tensor.ts";
import { axpyInPlace, fillInPlace } from "../kernels/basic.ts";
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
  if (!Number.isInteger(parts) || parts < 1) {
    throw new Error(`trainStep: parts must be a positive integer, got ${parts}`);
  }
  return scope(() => {
    optimizer.zeroGrad();
    let loss: Tensor | null = null;
    for (let part = 0; part < parts; part++) {
      const partLoss = scope(() => {
        const l = computeLoss(part);
        l.backward({ freeActivations: true });
        return noGrad(() => scale(l, 1)); // the value, off the graph, past the part's scope
      });
      loss = loss ? add(loss, partLoss) : partLoss;
    }
    let health: StepHealth | null = null;
    if (watch) {
      health = noGrad(() => {
        const grads = watch.flatMap((p) => (p.grad ? [p.grad] : []));
        const total = grads.reduce((acc, g) => add(acc, sum(scale(g, 0))), scale(loss!, 1));
        return { loss: scale(loss!, 1).keep(), health: total.keep() };
      });
    }
    optimizer.step();
    axpyInPlace(lossSum, loss!, weight);
    return health;
  });
}

/** The epoch's accumulated loss, read back, with the accumulator reset for the next epoch. */
export async function takeEpochLoss(lossSum: Tensor): Promise<number> {
  const value = await lossSum.item();
  fillInPlace(lossSum, 0);
  return value;
}
