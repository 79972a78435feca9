// In-place initialisers as torch.nn.init, for the model zoo's torchvision-style initialisation.
import { noGrad, type Tensor } from "../autograd/tensor.ts";
import { copyInto } from "../kernels/basic.ts";
import { type Generator, rand, randn } from "../kernels/random.ts";

/** torch.nn.init.normal_(t, 0, std): overwrites `t` with seeded normal draws. */
export function normal_(t: Tensor, std: number, generator?: Generator): void {
  noGrad(() => {
    const draws = randn([...t.shape], { std, generator });
    copyInto(t, draws);
    draws.dispose();
  });
}

/** torch.nn.init.uniform_(t, low, high): overwrites `t` with seeded uniform draws on [low, high). */
export function uniform_(t: Tensor, low: number, high: number, generator?: Generator): void {
  noGrad(() => {
    const draws = rand([...t.shape], { low, high, generator });
    copyInto(t, draws);
    draws.dispose();
  });
}

/**
 * torch.nn.init.kaiming_normal_ with ReLU's gain (sqrt 2): std = sqrt(2 / fan), fan over a conv or linear
 * weight [out, in / groups, ...window] counted on its inputs ("fan_in") or outputs ("fan_out").
 */
export function kaimingNormal_(weight: Tensor, mode: "fan_in" | "fan_out", generator?: Generator): void {
  normal_(weight, Math.sqrt(2 / fan(weight, mode)), generator);
}

/** A conv or linear weight's [out, in / groups, ...window] fan, counted on its inputs or its outputs. */
export function fan(weight: Tensor, mode: "fan_in" | "fan_out"): number {
  const receptive = weight.shape.slice(2).reduce((a, b) => a * b, 1);
  return (mode === "fan_in" ? weight.shape[1] : weight.shape[0]) * receptive;
}
