// The optimisation step both training stages share: one batch inside a scope, the loss accumulated on the
// device so an epoch reads it back once.
import { scope, type Tensor } from "../autograd/tensor.ts";
import { axpyInPlace, fillInPlace } from "../kernels/basic.ts";

/** What {@linkcode trainStep} needs of an optimizer; every optimizer in `fl.optim` satisfies it. */
export interface Steppable {
  /** Clears the gradients of the parameters it updates. */
  zeroGrad(): void;
  /** Updates the parameters from their current gradients. */
  step(): void;
}

/** Forward (`computeLoss`), backward and an optimizer step; adds `weight * loss` into `lossSum`. */
export function trainStep(
  optimizer: Steppable,
  computeLoss: () => Tensor,
  lossSum: Tensor,
  weight: number,
): void {
  scope(() => {
    const loss = computeLoss();
    optimizer.zeroGrad();
    loss.backward();
    optimizer.step();
    axpyInPlace(lossSum, loss, weight);
  });
}

/** The epoch's accumulated loss, read back, with the accumulator reset for the next epoch. */
export async function takeEpochLoss(lossSum: Tensor): Promise<number> {
  const value = await lossSum.item();
  fillInPlace(lossSum, 0);
  return value;
}
