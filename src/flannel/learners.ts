// The five base learners of FLANNEL and the paper's two other baselines (COVID-Net, AI-Covid) by name: one
// place that maps the names the command line, the experiment's files and the benches use to the model
// factories. Stage 1 trains both kinds alike; only the five learners feed the ensembles of stage 2, the
// baselines are rows of Table 3 of their own.
import * as fl from "../../mod.ts";
import type { Stage1Recipe } from "./stage1.ts";

/**
 * The five base learners by their torchvision names, in the paper's order (the order of Table 3's
 * single-learner rows and of the N axis of stage 2's inputs [S, N, M]).
 */
export const LEARNER_ARCHS = [
  "inception_v3",
  "vgg19_bn",
  "resnext101_32x8d",
  "resnet152",
  "densenet161",
] as const;
/** The name of one of the five base learners (an element of {@link LEARNER_ARCHS}). */
export type LearnerArch = typeof LEARNER_ARCHS[number];

/**
 * The paper's other baselines, published COVID-19 models trained like the learners but not combined: COVID-Net
 * (small, as the FLANNEL authors ran it) and AI-Covid (EfficientNet-B4 with its dense head).
 */
export const BASELINE_ARCHS = ["covidnet", "aicovid"] as const;
/** The name of one of the baselines (an element of {@link BASELINE_ARCHS}). */
export type BaselineArch = typeof BASELINE_ARCHS[number];
/** Anything stage 1 trains: a learner or a baseline. */
export type Stage1Arch = LearnerArch | BaselineArch;

/** The paper's names for the learners and baselines, as Table 3 prints them. */
export const LEARNER_TITLES: Record<Stage1Arch, string> = {
  inception_v3: "InceptionV3",
  vgg19_bn: "VGG19-bn",
  resnext101_32x8d: "ResNeXt101-32x8d",
  resnet152: "ResNet152",
  densenet161: "DenseNet161",
  covidnet: "COVID-Net",
  aicovid: "AI-Covid",
};

/** Options of {@link createLearner}. */
export interface LearnerOptions {
  /**
   * "full": the torchvision architecture (fed 224x224 crops); "tiny": the same layer types and state-dict
   * key names with far fewer channels and blocks, for CPU runs and tests (usually fed 64x64 crops).
   * Default "full".
   */
  scale?: "full" | "tiny";
  /** Outputs of the classifier head (default 4: covid, viral, bacterial, normal). */
  numClasses?: number;
  /** Seeds the initial weights (default 0). */
  seed?: number;
  /**
   * The crop side the model is fed (default 224): COVID-Net and AI-Covid flatten their last feature map into
   * a dense layer, so their size depends on it. The five learners pool and take any size.
   */
  crop?: number;
}

/** Whether `name` is one of {@link LEARNER_ARCHS} (narrows it to {@link LearnerArch}). */
export function isLearnerArch(name: string): name is LearnerArch {
  return (LEARNER_ARCHS as readonly string[]).includes(name);
}

/** Whether `name` is one of {@link BASELINE_ARCHS} (narrows it to {@link BaselineArch}). */
export function isBaselineArch(name: string): name is BaselineArch {
  return (BASELINE_ARCHS as readonly string[]).includes(name);
}

/** Whether stage 1 can train `name`: a learner or a baseline. */
export function isStage1Arch(name: string): name is Stage1Arch {
  return isLearnerArch(name) || isBaselineArch(name);
}

/**
 * A base learner or baseline with `numClasses` outputs (default 4), freshly initialised from
 * `options.seed`; its forward maps images [B, 3, crop, crop] to logits [B, numClasses]. InceptionV3 is built
 * without its auxiliary head: stage 1 trains every learner on its main logits alone, so all share one
 * training step.
 *
 * @throws {Error} when `arch` is not one of {@link LEARNER_ARCHS} or {@link BASELINE_ARCHS}.
 */
export function createLearner(arch: string, options: LearnerOptions = {}): fl.nn.Module {
  if (!isStage1Arch(arch)) {
    throw new Error(
      `unknown learner "${arch}"; expected one of ${[...LEARNER_ARCHS, ...BASELINE_ARCHS].join(", ")}`,
    );
  }
  const common = {
    numClasses: options.numClasses ?? 4,
    scale: options.scale ?? "full",
    generator: new fl.Generator(options.seed ?? 0),
  };
  switch (arch) {
    case "inception_v3":
      return fl.models.inception_v3({ ...common, auxLogits: false });
    case "vgg19_bn":
      return fl.models.vgg19_bn(common);
    case "resnext101_32x8d":
      return fl.models.resnext101_32x8d(common);
    case "resnet152":
      return fl.models.resnet152(common);
    case "densenet161":
      return fl.models.densenet161(common);
    case "covidnet":
      return fl.models.covidnet({ ...common, inputSize: options.crop ?? 224 });
    case "aicovid":
      return fl.models.aicovid({ ...common, inputSize: options.crop ?? 224 });
  }
}

/** A baseline's own training settings, as its authors published them (see {@link ownRecipe}). */
export interface OwnRecipe {
  /** Learning rate. */
  lr: number;
  /** Weight decay of the optimizer (0: the recipes regularise otherwise). */
  weightDecay: number;
  /** Batch size, where the recipe fixes one. */
  batchSize?: number;
  /** Optimizer, class weights, batch composition, penalty, early stopping. */
  recipe: Stage1Recipe;
}

/**
 * The published recipe of a baseline, for a model and its training labels (the shared recipe of the five
 * learners is the default, so that Table 3 compares like with like):
 * - COVID-Net (Wang et al.): Adam lr 2e-5, batch 8, class weights with covid 12, batches re-balanced so
 *   that about 30% are covid.
 * - AI-Covid (Bai et al.): SGD lr 1e-4 with Nesterov momentum 0.9, class weights N / count, L1 and L2 0.01
 *   on the dense kernels, early stopping on the validation loss with patience 7.
 * Their augmentations (COVID-Net: translation, rotation, flip, intensity shift, zoom; AI-Covid: shear, zoom,
 * flips) are not reproduced: every learner gets the trainer's crops, flips and noise.
 */
export function ownRecipe(arch: BaselineArch, model: fl.nn.Module, labels: ArrayLike<number>): OwnRecipe {
  const classes = fl.metrics.CLASS_NAMES.length;
  if (arch === "covidnet") {
    return {
      lr: 2e-5,
      weightDecay: 0,
      batchSize: 8,
      recipe: { classWeights: [12, ...new Array(classes - 1).fill(1)], covidShare: 0.3 },
    };
  }
  const counts = new Array(classes).fill(0);
  for (let i = 0; i < labels.length; i++) counts[labels[i]]++;
  const dense = [...model.namedParameters()].filter(([k, p]) => k.startsWith("head.") && p.rank === 2)
    .map(([k]) => k);
  return {
    lr: 1e-4,
    weightDecay: 0,
    recipe: {
      optimizer: "sgd",
      momentum: 0.9,
      classWeights: counts.map((c) => (c > 0 ? labels.length / c : 0)),
      penalty: { l1: 0.01, l2: 0.01, parameters: dense },
      patience: 7,
    },
  };
}
