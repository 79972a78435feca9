// A trained ensemble as one ONNX graph: what `predict` computes, traced op by op (fl.onnx.Trace) so that any
// ONNX runtime gives the same probabilities. For each fold: each learner's softmax on the normalised crop,
// the learners stacked [B, N, M] in the order the combiner was trained with, the fold's combiner's
// probabilities; then the mean over the folds, temperature-scaled as predict does. Learners are traced one at
// a time and their weights read out before the next is loaded, so an ensemble of full-size learners never
// sits in memory whole; each step is recorded in a scope that frees its activations.
import * as fl from "../../mod.ts";
import {
  type Calibration,
  checkCalibration,
  ensembleTemperature,
  runFolderModels,
  type TrainedModels,
} from "./predict.ts";
import { buildEnsemble } from "./stage2.ts";

/** Options of {@link exportOnnx}. */
export interface ExportOnnxOptions {
  /** The combiner (a Table 3 method name; default "FLANNEL"). */
  method?: string;
  /**
   * "temperature" (default): the graph ends with predict's temperature scaling (softmax(ln p / T), T the
   * folds' mean temperature, where the models carry one); "none": the raw average.
   */
  calibration?: Calibration;
  /** Weights in `<path>.data` beside the graph: "auto" (default) past protobuf's 2 GB, or always / never. */
  externalData?: boolean | "auto";
}

/**
 * Writes the ensemble of `models` (an experiment folder or {@link TrainedModels} such as a bundle) to `path`
 * as one ONNX graph, opset 17: input `input` [batch, 3, crop, crop], the normalised centre crop as
 * `fl.data.makeBatch` makes it (batch dynamic); output `probs` [batch, classes], the probabilities
 * `predictFiles` gives for the same images. The metadata properties name the classes and the preprocessing
 * (resize, crop, equalisation, gray to 3 channels, mean, std), the learners, the folds and the method.
 *
 * @throws {Error} when the models lack a fold's learner or combiner, or an op cannot be exported.
 */
export async function exportOnnx(
  models: string | TrainedModels,
  path: string,
  { method = "FLANNEL", externalData = "auto", calibration = "temperature" }: ExportOnnxOptions = {},
): Promise<fl.onnx.SaveInfo> {
  checkCalibration("export", calibration);
  const source = typeof models === "string" ? runFolderModels(models) : models;
  const { settings } = source;
  const { archs, folds, crop } = settings;
  const trace = new fl.onnx.Trace({
    inputs: [{ name: "input", shape: [1, 3, crop, crop], dynamicBatch: true }],
  });
  const [x] = trace.inputs;
  const classes = fl.metrics.CLASS_NAMES.length;
  const kept: fl.Tensor[] = [];
  // One recorded step: its activations freed with its scope, its result kept until the graph is saved.
  const traced = (fn: () => fl.Tensor, options?: fl.onnx.RecordOptions): fl.Tensor => {
    const t = fl.scope(() => trace.record(fn, options));
    kept.push(t);
    return t;
  };
  try {
    let sum: fl.Tensor | null = null;
    const temperatures: (number | null)[] = [];
    for (const fold of folds) {
      const combiner = await source.loadCombiner(fold, method);
      temperatures.push(combiner.temperature);
      const perLearner: fl.Tensor[] = [];
      for (const arch of archs) {
        const learner = await source.loadLearner(arch, fold);
        try {
          learner.eval();
          perLearner.push(traced(
            () => fl.F.reshape(fl.F.softmax(learner.forward(x), -1), [x.shape[0], 1, classes]),
            { names: learner, prefix: `fold${fold}.${arch}.` },
          ));
          await trace.flush();
        } finally {
          learner.dispose();
        }
      }
      const ensemble = buildEnsemble(combiner.config, archs.length, classes, new fl.Generator(0));
      try {
        ensemble.loadStateDict(combiner.state);
        ensemble.eval();
        const names = { names: ensemble, prefix: `fold${fold}.${method}.` };
        const probs = traced(() => ensemble.predictProba(fl.F.cat(perLearner, 1)), names);
        await trace.flush();
        const before: fl.Tensor | null = sum;
        sum = before ? traced(() => fl.F.add(before, probs)) : probs;
      } finally {
        ensemble.dispose();
      }
    }
    // predict sums the folds' probabilities and divides by their count
    const total = sum!;
    const mean = traced(() => fl.F.div(total, fl.full([1], folds.length)));
    const temperature = ensembleTemperature(temperatures, calibration, `${source.source}: ${method}`);
    // ln max(p, 1e-12) as predict's: in float32, p + 1e-12 is p for every p above 1e-5.
    const probs = temperature === null
      ? mean
      : traced(() => fl.F.softmax(fl.F.scale(fl.F.log(fl.F.addScalar(mean, 1e-12)), 1 / temperature), -1));
    await trace.flush();
    const { resize, equalize, lungCrop } = settings;
    return await trace.save(path, {
      outputs: [{ name: "probs", tensor: probs }],
      externalData,
      metadata: {
        classes: fl.metrics.CLASS_NAMES.join(","),
        method,
        learners: archs.join(","),
        folds: folds.join(","),
        temperature: temperature === null ? "none" : String(temperature),
        scale: settings.scale,
        preprocess: `decode to gray in [0, 1]; ${
          lungCrop ? "crop to the lung fields (flannel-webgpu's fl.data.lungFieldBox); " : ""
        }resize the short side to ${resize} px (PIL BILINEAR, as torchvision's Resize)${
          equalize ? "; histogram-equalise" : ""
        }; centre crop ${crop}x${crop}; repeat the gray channel 3 times; (x - mean) / std per channel`,
        resize: String(resize),
        crop: String(crop),
        equalize: String(equalize),
        lungCrop: String(lungCrop),
        mean: fl.data.IMAGENET_MEAN.join(","),
        std: fl.data.IMAGENET_STD.join(","),
        input: "input: float32 [batch, 3, crop, crop], NCHW",
        output: "probs: float32 [batch, classes], the classes in the order of 'classes'",
      },
    });
  } finally {
    for (const t of kept) t.dispose();
    trace.dispose();
  }
}
