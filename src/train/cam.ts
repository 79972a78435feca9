// Class activation maps of a base learner (the paper's Fig. 6), by Grad-CAM (Selvaraju et al. 2017): the
// last feature maps A_k weighted by the spatial mean of d logit_c / d A_k, summed, through a ReLU. For the
// learners whose head is global average pooling and one Linear (ResNet, ResNeXt, DenseNet, Inception) this
// is the original CAM of Zhou et al. up to a constant; for VGG, whose head has three Linear layers, it is
// the gradient-weighted generalisation that still applies.
import { noGrad, scope, type Tensor } from "../autograd/tensor.ts";
import { tensor } from "../kernels/basic.ts";
import { mul } from "../kernels/elementwise.ts";
import { sum } from "../kernels/reduce.ts";
import { softmax } from "../functional.ts";
import type { GrayImage } from "../io/images.ts";
import type { Module } from "../nn/module.ts";
import { makeBatch } from "../data/preprocess.ts";

/** A classifier split where a class activation map looks: feature maps, then the head. */
export interface CamModel extends Module {
  /** [B, C, h, w] */
  featureMaps(x: Tensor): Tensor;
  /** logits [B, classes] of feature maps */
  classify(maps: Tensor): Tensor;
}

/** Whether the model has the `featureMaps`/`classify` split that {@linkcode classActivationMap} needs. */
export function isCamModel(model: Module): model is CamModel {
  const m = model as unknown as Partial<Pick<CamModel, "featureMaps" | "classify">>;
  return typeof m.featureMaps === "function" && typeof m.classify === "function";
}

/** The result of {@linkcode classActivationMap}. */
export interface ClassActivationMap {
  /** the model's class probabilities for the image */
  probs: Float32Array;
  /** the class the map explains (the predicted one unless asked for another) */
  classIndex: number;
  /** at the feature maps' resolution, scaled to [0, 1] (all 0 when nothing supports the class) */
  map: GrayImage;
}

/** Grad-CAM of one image, centre-cropped to `crop` as in evaluation. The model's weights are untouched. */
export async function classActivationMap(
  model: Module,
  image: GrayImage,
  { crop = 224, classIndex }: { crop?: number; classIndex?: number } = {},
): Promise<ClassActivationMap> {
  if (!isCamModel(model)) throw new Error("classActivationMap: the model has no featureMaps/classify split");
  const wasTraining = model.training;
  const trainable = model.parameters().map((p) => p.requiresGrad);
  model.eval();
  // frozen, so the backward pass reaches the feature maps and no parameter gradient is made
  for (const p of model.parameters()) p.requiresGrad = false;
  try {
    return await scope(async () => {
      const x = tensor(makeBatch([image], [0], { crop, train: false }), [1, 3, crop, crop]);
      const maps = noGrad(() => model.featureMaps(x));
      maps.requiresGrad = true;
      const logits = model.classify(maps);
      const probs = await noGrad(() => softmax(logits, -1)).toArray() as Float32Array;
      const m = probs.length;
      const c = classIndex ?? probs.indexOf(Math.max(...probs));
      if (!Number.isInteger(c) || c < 0 || c >= m) {
        throw new Error(`classActivationMap: class ${classIndex} is outside 0..${m - 1}`);
      }
      const onehot = tensor(Float32Array.from({ length: m }, (_, j) => (j === c ? 1 : 0)), [1, m]);
      sum(mul(logits, onehot)).backward();
      const [, channels, h, w] = maps.shape;
      const a = await maps.toArray(), g = await maps.grad!.toArray();
      const plane = h * w;
      const cam = new Float32Array(plane);
      for (let k = 0; k < channels; k++) {
        let weight = 0;
        for (let i = 0; i < plane; i++) weight += g[k * plane + i];
        weight /= plane;
        for (let i = 0; i < plane; i++) cam[i] += weight * a[k * plane + i];
      }
      let top = 0;
      for (let i = 0; i < plane; i++) top = Math.max(top, cam[i] = Math.max(cam[i], 0));
      if (top > 0) { for (let i = 0; i < plane; i++) cam[i] /= top; }
      return { probs, classIndex: c, map: { width: w, height: h, data: cam } };
    });
  } finally {
    model.parameters().forEach((p, i) => (p.requiresGrad = trainable[i]));
    model.train(wasTraining);
  }
}
