// `flannel export`: a trained run as one bundle, or as ONNX.
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { existsSync, readFileSync, statSync } from "node:fs";
import * as fl from "../../mod.ts";
import * as flannel from "../flannel/mod.ts";
import { calibrationOption, fail, trainedModels } from "./shared.ts";

/** `flannel export --help`. */
export const HELP =
  `flannel export: an experiment's trained models as one zip for 'predict' anywhere, or as ONNX

Usage: deno task flannel export --run DIR --out NAME.zip [--weights f32|f16] [--notes FILE.md]
       deno task flannel export --run DIR --onnx OUT.onnx [--method NAME]
       deno task flannel export --model BUNDLE.zip --onnx OUT.onnx [--method NAME]

--out writes a zip (atomically) holding every fold's kept learner weights, every fold's trained combiners,
the preprocessing settings and class names (manifest.json, with each entry's size and SHA-256), the
experiment's results.json, and MODEL_CARD.md (intended use, data summary, Table 3, what Table 3 hides).
'predict --model NAME.zip' and 'cam --model NAME.zip' (and fl.flannel.loadBundle) run from it with no
experiment folder, in Deno or Bun, on either backend. Baselines (COVID-Net, AI-Covid) are not part of the
ensemble and are left out.

--onnx writes the whole ensemble as one ONNX graph (opset 17) that any ONNX runtime runs: every fold's
learners, the fold's combiner (FLANNEL unless --method names another) and the average over the folds,
exactly as 'predict' computes them. Input "input": the normalised centre crop [batch, 3, crop, crop]
(batch dynamic); output "probs" [batch, 4]. The file's metadata says how to make the input (resize,
crop, equalisation, mean and std, gray to 3 channels) and names the classes. Weights past 2 GB go to
OUT.onnx.data beside it (ONNX external data).

Options:
  --run DIR          a finished 'experiment' output folder
  --model FILE.zip   a bundle (for --onnx; default with neither: the shipped weights)
  --out NAME.zip     the bundle to write
  --weights W        f32 (default: the same probabilities as the folder) or f16 (half the size;
                     probabilities within about 1e-3)
  --notes FILE.md    markdown added to the model card (data provenance, licences, intended use)
  --onnx OUT.onnx    the ONNX file to write
  --method NAME      the combiner in the ONNX graph (default FLANNEL; also Voting, Ensemble_MLP_1,
                     Ensemble_MLP_2, "FLANNEL w/o focal", "FLANNEL w/o focal + sampling")
  --calibration C    temperature (default: the graph ends with predict's temperature scaling) or none
  --backend NAME     auto | webgpu | wasm: where the models run while they are traced (default auto)
  --help`;

export async function exportCommand(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      run: { type: "string" },
      model: { type: "string" },
      out: { type: "string" },
      weights: { type: "string", default: "f32" },
      notes: { type: "string" },
      onnx: { type: "string" },
      method: { type: "string", default: "FLANNEL" },
      calibration: { type: "string", default: "temperature" },
      backend: { type: "string" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  if (values.help) return console.log(HELP);
  if (!values.out && !values.onnx) fail("export: give --out NAME.zip (a bundle) or --onnx OUT.onnx");
  // Every argument is checked before anything is written.
  if (values.out && !values.run) fail("export: --out writes a bundle of an experiment: give --run DIR");
  const weights = values.weights.toUpperCase();
  if (weights !== "F32" && weights !== "F16") {
    fail(`export: --weights must be f32 or f16, not ${values.weights}`);
  }
  if (values.notes && !existsSync(values.notes)) fail(`export: ${values.notes} does not exist`);
  const calibration = calibrationOption("export", values);
  if (values.onnx) {
    const models = trainedModels("export", values);
    await fl.init({ backend: values.backend as fl.InitOptions["backend"] });
    const info = await flannel.exportOnnx(models, resolve(values.onnx), {
      method: values.method,
      calibration,
    });
    console.log(
      `wrote ${values.onnx} (${(info.bytes / 2 ** 20).toFixed(1)} MiB${
        info.externalDataPath
          ? ` + ${(info.externalDataBytes / 2 ** 20).toFixed(1)} MiB in ${info.externalDataPath}`
          : ""
      }): ${models.settings.archs.length} learners x ${models.settings.folds.length} folds, ${values.method}, ` +
        `${info.nodes} nodes, input "input" [batch, 3, ${models.settings.crop}, ${models.settings.crop}], output "probs"`,
    );
  }
  if (!values.out) return;
  const notes = values.notes ? readFileSync(values.notes, "utf8") : undefined;
  const manifest = await flannel.exportBundle(resolve(values.run!), resolve(values.out), { weights, notes });
  const size = statSync(values.out).size;
  console.log(
    `wrote ${values.out} (${
      (size / 2 ** 20).toFixed(1)
    } MiB): ${manifest.settings.archs.length} learners x ${manifest.folds.length} folds, ` +
      `combiners ${manifest.methods.join(", ")}, weights ${manifest.weights}`,
  );
}
