// Stage 2 of FLANNEL: the Neural Weight Module and the baselines it is compared with (soft voting, MLP
// stacking with one and two layers). Every model maps learner probabilities [B, N, M] to class scores.
import * as fl from "../../mod.ts";

/** The input shape a stage-2 combiner is built for: probabilities [B, N, M]. */
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
  /** The method's name as Table 3 prints it ("FLANNEL", "Voting", "Ensemble_MLP_1", "Ensemble_MLP_2"). */
  abstract readonly name: string;
  /**
   * Records the shape; subclasses validate it before calling this.
   *
   * @param learners N, the base learners combined.
   * @param classes M, the classes of every learner's probabilities and of the output.
   */
  constructor(
    /** N: base learners combined. */
    readonly learners: number,
    /** M: classes. */
    readonly classes: number,
  ) {
    super();
  }

  /**
   * Class probabilities [B, M] for learner probabilities `p` [B, N, M]: the softmax of `forward`'s logits.
   *
   * @throws {Error} when `p` is not [B, N, M] with B > 0.
   */
  predictProba(p: fl.Tensor): fl.Tensor {
    return fl.F.softmax(this.forward(p), 1);
  }
}

/** Options of {@link NeuralWeightModule}: its shape, the weights' activation and the initialising generator. */
export interface NeuralWeightOptions extends EnsembleShape, fl.nn.InitOptions {
  /** "tanh" as in the paper; "softmax" as in the authors' code (weights sum to one). */
  activation?: "tanh" | "softmax";
}

/**
 * FLANNEL's Neural Weight Module: f = concat(P_i), w = act(Dense(flatten(f f^T))), logits = sum_i w_i P_i.
 * State dict: `dense.weight` [N, (N M)^2], `dense.bias` [N].
 */
export class NeuralWeightModule extends Ensemble {
  /** "FLANNEL", its row in Table 3. */
  readonly name = "FLANNEL";
  /** What maps the dense layer's output to learner weights (default "tanh"). */
  readonly activation: "tanh" | "softmax";
  /** The dense layer (N M)^2 -> N that scores the learners from the outer product of their outputs. */
  readonly dense: fl.nn.Linear;
  /**
   * A freshly initialised module (weights drawn from `options.generator`, else the global generator).
   *
   * @throws {Error} when learners < 1, classes < 2 or the activation is neither "tanh" nor "softmax".
   */
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

  /** Logits [B, M] = sum_i w_i P_i for learner probabilities `p` [B, N, M]. */
  forward(p: fl.Tensor): fl.Tensor {
    return fl.F.weightedSum(this.learnerWeights(p), p);
  }
}

/** Soft voting: the mean of the learners' probabilities (no parameters). */
export class SoftVoting extends Ensemble {
  /** "Voting", its row in Table 3. */
  readonly name = "Voting";
  /**
   * Soft voting over `options.learners` learners and `options.classes` classes.
   *
   * @throws {Error} when learners < 1 or classes < 2.
   */
  constructor(options: EnsembleShape) {
    checkEnsembleShape("SoftVoting", options);
    super(options.learners, options.classes);
  }

  /** Voting has no logits; its "forward" is the averaged probability itself. */
  forward(p: fl.Tensor): fl.Tensor {
    checkInput("SoftVoting", p, this);
    return fl.F.mean(p, 1);
  }

  /** The mean probabilities [B, M] as they are (no second softmax). */
  override predictProba(p: fl.Tensor): fl.Tensor {
    return this.forward(p);
  }
}

/** Options of {@link MLPStacking}: its shape, depth, hidden width and the initialising generator. */
export interface MLPStackingOptions extends EnsembleShape, fl.nn.InitOptions {
  /** 1: NM -> M; 2: NM -> hidden -> ReLU -> M. */
  layers: 1 | 2;
  /** Width of the hidden layer when `layers` is 2 (default 32); ignored for 1. */
  hidden?: number;
}

/** Stacking: an MLP on the concatenated learner probabilities (Ensemble_MLP_1 / _2 of the paper). */
export class MLPStacking extends Ensemble {
  /** "Ensemble_MLP_1" or "Ensemble_MLP_2", its row in Table 3. */
  readonly name: string;
  /** The MLP on the flattened probabilities [B, N M]; state-dict keys `net.0.*` (and `net.2.*` for two layers). */
  readonly net: fl.nn.Sequential;
  /**
   * A freshly initialised MLP (weights drawn from `options.generator`, else the global generator).
   *
   * @throws {Error} when learners < 1, classes < 2, layers is not 1 or 2, or hidden is not a positive integer.
   */
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

  /** Logits [B, M] for learner probabilities `p` [B, N, M]. */
  forward(p: fl.Tensor): fl.Tensor {
    checkInput(this.name, p, this);
    return this.net.forward(fl.F.reshape(p, [p.shape[0], this.learners * this.classes]));
  }
}
