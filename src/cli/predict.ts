// `flannel predict`: class probabilities of X-ray images from trained models.
import process from "node:process";
import * as fl from "../../mod.ts";
import * as flannel from "../flannel/mod.ts";
import { BACKEND_HELP, calibrationOption, imageFiles, parseImageArgs, trainedModels } from "./shared.ts";

/** `flannel predict --help`. */
export const HELP = `flannel predict: class probabilities of chest X-ray images from trained models

Usage: deno task flannel predict --images PATH [PATH...] [--model FILE.zip | --run DIR] [--method NAME]

PATH is an image file (PNG or JPEG) or a folder (its .png, .jpg and .jpeg files, sorted). The models are a
bundle (--model, written by 'flannel export'), an experiment folder (--run), or with neither the bundle
shipped in the package (weights/flannel-chestxray-tiny.zip: tiny learners trained on 1052 public chest
X-rays; NOT for clinical use, see its model card). On each fold, the fold's learners give their
probabilities and the fold's trained combiner combines them; the folds' probabilities are averaged.
Prints CSV on stdout:
  file,covid,viral,bacterial,normal,predicted
Unreadable images are reported on stderr and left out.

Options:
  --images PATH    an image or a folder of images; several may follow (--images dir/*.png, as a shell
                   glob expands it) or the option may repeat
  --model FILE     a bundle written by 'flannel export' (default: the shipped one)
  --run DIR        an 'experiment' output folder instead of a bundle
  --method NAME    the combiner (default FLANNEL; also Voting, Ensemble_MLP_1, Ensemble_MLP_2,
                   "FLANNEL w/o focal", "FLANNEL w/o focal + sampling")
  --calibration C  temperature (default: the folds' averaged probabilities scaled by the mean of their
                   temperatures, fitted when the models were trained, so that a probability of 0.8 is
                   right about 80% of the time; the predicted class is the same) or none (raw)
  --backend NAME   ${BACKEND_HELP}
  --help`;

export async function predict(args: string[]): Promise<void> {
  const { values, paths } = parseImageArgs("predict", args, {
    method: { type: "string", default: "FLANNEL" },
    calibration: { type: "string", default: "temperature" },
  });
  if (values.help) return console.log(HELP);
  const calibration = calibrationOption("predict", values);
  const files = imageFiles("predict", paths);
  const models = trainedModels("predict", values as { run?: string; model?: string });
  await fl.init({ backend: values.backend as fl.InitOptions["backend"] });
  const result = await flannel.predictFiles(models, files, { method: values.method as string, calibration });
  for (const s of result.skipped) console.error(`unreadable, left out: ${s.reason}`);
  if (calibration === "temperature" && result.temperature === null) {
    console.error(
      `${models.source}: the models carry no temperature (trained before calibration): raw probabilities`,
    );
  }
  process.stdout.write(flannel.predictionsCsv(result.files, result.probs));
}
