// The five base learners of FLANNEL by name: one place that maps the names the command line, the
// experiment's files and the benches use to the model factories.
import * as fl from "../../mod.ts";

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

/** The paper's names for the learners, as Table 3 prints them. */
export const LEARNER_TITLES: Record<LearnerArch, string> = {
  inception_v3: "InceptionV3",
  vgg19_bn: "VGG19-bn",
  resnext101_32x8d: "ResNeXt101-32x8d",
  resnet152: "ResNet152",
  densenet161: "DenseNet161",
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
}

/** Whether `name` is one of {@link LEARNER_ARCHS} (narrows it to {@link LearnerArch}). */
export function isLearnerArch(name: string): name is LearnerArch {
  return (LEARNER_ARCHS as readonly string[]).includes(name);
}

/**
 * A base learner with `numClasses` outputs (default 4), freshly initialised from `options.seed`; its
 * forward maps images [B, 3, H, W] to logits [B, numClasses]. InceptionV3 is built without its auxiliary
 * head: stage 1 trains every learner on its main logits alone, so all five share one training step.
 *
 * @throws {Error} when `arch` is not one of {@link LEARNER_ARCHS}.
 */
export function createLearner(arch: string, options: LearnerOptions = {}): fl.nn.Module {
  if (!isLearnerArch(arch)) {
    throw new Error(`unknown learner "${arch}"; expected one of ${LEARNER_ARCHS.join(", ")}`);
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
  }
}
