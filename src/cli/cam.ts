// `flannel cam`: class activation maps of each learner.
import { basename, join, resolve } from "node:path";
import * as fl from "../../mod.ts";
import * as flannel from "../flannel/mod.ts";
import {
  BACKEND_HELP,
  calibrationOption,
  imageFiles,
  intOption,
  parseImageArgs,
  trainedModels,
} from "./shared.ts";

/** `flannel cam --help`. */
export const HELP = `flannel cam: class activation maps of each learner on chest X-ray images (Fig. 6)

Usage: deno task flannel cam --images PATH [PATH...] [--model FILE.zip | --run DIR] [--fold F] [--out PATH]

Each learner (fold F's kept weights, default the first fold) classifies the image (centre crop, as in
evaluation); its Grad-CAM map for the predicted class is laid over the image as it saw it, one tile per
learner, captioned with the class and its probability. One PNG per image.

Options:
  --images PATH    an image or a folder of images (PNG or JPEG); several may follow, as --images dir/*.png
                   gives them (--image FILE is the same for one image)
  --model FILE     a bundle written by 'flannel export' (default: the shipped one)
  --run DIR        an 'experiment' output folder instead of a bundle
  --fold F         which fold's learners (default the first)
  --calibration C  temperature (default: each caption's probability scaled by its learner's temperature,
                   fitted when the models were trained) or none (raw)
  --out PATH       for one image, the PNG to write; for several, a folder (default: DIR/cam with --run,
                   else ./cam), each image's map as <image name>.png
  --backend NAME   ${BACKEND_HELP}
  --help`;

export async function cam(args: string[]): Promise<void> {
  const { values, paths } = parseImageArgs("cam", args, {
    image: { type: "string" },
    fold: { type: "string" },
    out: { type: "string" },
    calibration: { type: "string", default: "temperature" },
  });
  if (values.help) return console.log(HELP);
  const calibration = calibrationOption("cam", values);
  const files = imageFiles("cam", [...(values.image ? [values.image as string] : []), ...paths]);
  const models = trainedModels("cam", values as { run?: string; model?: string });
  const fold = values.fold === undefined
    ? undefined
    : intOption(values as Record<string, unknown>, "fold", 0, 0);
  await fl.init({ backend: values.backend as fl.InitOptions["backend"] });
  const out = values.out as string | undefined;
  const folder = files.length > 1 || out === undefined
    ? out ?? (values.run ? join(resolve(values.run as string), "cam") : resolve("cam"))
    : null;
  for (const file of files) {
    const png = await flannel.camFigure(models, file, { fold, calibration });
    const path = folder ? join(folder, `${basename(file).replace(/\.[^.]*$/, "")}.png`) : out!;
    fl.train.plots.savePNG(path, png);
    console.log(`wrote ${path}`);
  }
}
