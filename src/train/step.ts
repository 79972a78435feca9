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
 */
export function trainStep(
  optimizer: Steppable,
  computeLoss: () => Tensor,
  lossSum: Tensor,
  weight: number,
  watch?: readonly Tensor[],
): StepHealth | null {
  return scope(() => {
    const loss = computeLoss();
    optimizer.zeroGrad();
    loss.backward();
    let health: StepHealth | null = null;
    if (watch) {
      health = noGrad(() => {
        const value = scale(loss, 1); // a copy outside the autograd graph, kept past the scope
        const grads = watch.flatMap((p) => (p.grad ? [p.grad] : []));
        const total = grads.reduce((acc, g) => add(acc, sum(scale(g, 0))), scale(loss, 1));
        return { loss: value.keep(), health: total.keep() };
      });
    }
    optimizer.step();
    axpyInPlace(lossSum, loss, weight);
    return health;
  });
}

/** The epoch's accumulated loss, read back, with the accumulator reset for the next epoch. */
export async function takeEpochLoss(lossSum: Tensor): Promise<number> {
  const value = await lossSum.item();
  fillInPlace(lossSum, 0);
  return value;
}
