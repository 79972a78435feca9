// Stage 2 of FLANNEL: the Neural Weight Module and the baselines it is compared with (soft voting, MLP
// stacking with one and two layers). Every model maps learner probabilities [B, N, M] to class scores.
import * as fl from "../../mod.ts";

export interface EnsembleShape {
  /** N: base learners. */
  learners: number;
  /** M: classes. */
  classes: number;
}

function checkEnsembleShape(name: string, { learners, classes }: EnsembleShape): void {
  if (!Number.isInteger(learners) || learners < 1) {
    throw new Error(`${name}: learners must be a positive integer, got ${learners}`);
  }
  if (!Number.isInteger(classes) || classes < 2) {
    throw new Error(`${name}: classes must be an integer >= 2, got ${classes}`);
  }
}

function checkInput(name: string, p: fl.Tensor, { learners, classes }: EnsembleShape): void {
  if (p.rank !== 3 || p.shape[1] !== learners || p.shape[2] !== classes) {
    throw new Error(
      `${name}: input must be learner probabilities [batch, ${learners}, ${classes}], got [${
        p.shape.join(", ")
      }]`,
    );
  }
  if (p.shape[0] === 0) throw new Error(`${name}: empty batch`);
}

/** A stage-2 combiner: `forward` gives logits, `predictProba` class probabilities. */
export abstract class Ensemble extends fl.nn.Module {
  abstract readonly name: string;
  constructor(readonly learners: number, readonly classes: number) {
    super();
  }

  predictProba(p: fl.Tensor): fl.Tensor {
    return fl.F.softmax(this.forward(p), 1);
  }
}

export interface NeuralWeightOptions extends EnsembleShape, fl.nn.InitOptions {
  /** "tanh" as in the paper; "softmax" as in the authors' code (weights sum to one). */
  activation?: "tanh" | "softmax";
}

/**
 * FLANNEL's Neural Weight Module: f = concat(P_i), w = act(Dense(flatten(f f^T))), logits = sum_i w_i P_i.
 * State dict: `dense.weight` [N, (N M)^2], `dense.bias` [N].
 */
export class NeuralWeightModule extends Ensemble {
  readonly name = "FLANNEL";
  readonly activation: "tanh" | "softmax";
  readonly dense: fl.nn.Linear;
  constructor(options: NeuralWeightOptions) {
    checkEnsembleShape("NeuralWeightModule", options);
    super(options.learners, options.classes);
    this.activation = options.activation ?? "tanh";
    if (this.activation !== "tanh" && this.activation !== "softmax") {
      throw new Error(
        `NeuralWeightModule: activation must be "tanh" or "softmax", got ${JSON.stringify(this.activation)}`,
      );
    }
    const k = this.learners * this.classes;
    this.dense = this.registerModule("dense", new fl.nn.Linear(k * k, this.learners, options));
  }

  /** The learner weights w [B, N] for each sample (what the module attends to). */
  learnerWeights(p: fl.Tensor): fl.Tensor {
    checkInput("NeuralWeightModule", p, this);
    const f = fl.F.reshape(p, [p.shape[0], this.learners * this.classes]);
    const h = this.dense.forward(fl.F.outer(f));
    return this.activation === "tanh" ? fl.F.tanh(h) : fl.F.softmax(h, 1);
  }

  forward(p: fl.Tensor): fl.Tensor {
    return fl.F.weightedSum(this.learnerWeights(p), p);
  }
}

/** Soft voting: the mean of the learners' probabilities (no parameters). */
export class SoftVoting extends Ensemble {
  readonly name = "Voting";
  constructor(options: EnsembleShape) {
    checkEnsembleShape("SoftVoting", options);
    super(options.learners, options.classes);
  }

  /** Voting has no logits; its "forward" is the averaged probability itself. */
  forward(p: fl.Tensor): fl.Tensor {
    checkInput("SoftVoting", p, this);
    return fl.F.mean(p, 1);
  }

  override predictProba(p: fl.Tensor): fl.Tensor {
    return this.forward(p);
  }
}

export interface MLPStackingOptions extends EnsembleShape, fl.nn.InitOptions {
  /** 1: NM -> M; 2: NM -> hidden -> ReLU -> M. */
  layers: 1 | 2;
  hidden?: number;
}

/** Stacking: an MLP on the concatenated learner probabilities (Ensemble_MLP_1 / _2 of the paper). */
export class MLPStacking extends Ensemble {
  readonly name: string;
  readonly net: fl.nn.Sequential;
  constructor(options: MLPStackingOptions) {
    checkEnsembleShape("MLPStacking", options);
    super(options.learners, options.classes);
    const k = options.learners * options.classes;
    if (options.layers === 1) {
      this.net = new fl.nn.Sequential(new fl.nn.Linear(k, options.classes, options));
    } else if (options.layers === 2) {
      const hidden = options.hidden ?? 32;
      if (!Number.isInteger(hidden) || hidden < 1) {
        throw new Error(`MLPStacking: hidden must be a positive integer, got ${hidden}`);
      }
      this.net = new fl.nn.Sequential(
        new fl.nn.Linear(k, hidden, options),
        new fl.nn.ReLU(),
        new fl.nn.Linear(hidden, options.classes, options),
      );
    } else {
      throw new Error(`MLPStacking: layers must be 1 or 2, got ${options.layers}`);
    }
    this.registerModule("net", this.net);
    this.name = `Ensemble_MLP_${options.layers}`;
  }

  forward(p: fl.Tensor): fl.Tensor {
    checkInput(this.name, p, this);
    return this.net.forward(fl.F.reshape(p, [p.shape[0], this.learners * this.classes]));
  }
}
