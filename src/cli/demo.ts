// `flannel demo`: the FLANNEL experiment end to end on the embedded synthetic X-rays (or --stage2-only).
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import * as fl from "../../mod.ts";
import * as flannel from "../flannel/mod.ts";
import { runImageExperiment } from "./experiment.ts";
import { BACKEND_HELP, intOption } from "./shared.ts";

/** `flannel demo --help`. */
export const HELP = `flannel demo: the FLANNEL experiment end to end on the embedded synthetic chest X-rays

Usage: deno task demo    (or: deno task flannel demo [options], bun run cli.ts demo [options])

The embedded default data set is the project's deterministic generator of synthetic 4-class chest
X-ray images (not real X-rays: drawn anatomy with covid, viral, bacterial and normal patterns; 800 images
of 72x72 by default, covid 64, viral 188, bacterial 348, normal 200; patients with 1-3 images). They are
written as PNG + labels.csv to OUT/data, and the whole protocol runs on them as 'experiment' would: a
patient-disjoint 4:1 split with 5 folds, the five base learners and the paper's two baselines (COVID-Net,
AI-Covid; tiny variants: 64x64 crops) trained on every fold, every stage-2 method of Table 3 on the
out-of-fold outputs, Table 1, Table 3 (13 rows) and the figures in OUT. About 4 minutes on a 2-core CPU (WebAssembly backend); a rerun reuses finished work.
--data DIR runs the same on real data instead.

Options:
  --out DIR         output folder (default runs/demo)
  --data DIR        real data instead of the synthetic set (as 'experiment --data')
  --images N        synthetic images (default 800)
  --epochs N        stage-1 epochs per learner and fold (default 3)
  --folds K         cross-validation folds (default 5)
  --seed S          seed of data, split and training (default 0)
  --stage2-only     only stage 2, on synthetic learner outputs (5508 samples with the paper's imbalance,
                    about 2 minutes): the quick look at the ensembles
  --backend NAME    ${BACKEND_HELP}
  --help`;

export const LEARNERS = ["InceptionV3", "VGG19-bn", "ResNeXt101-32x8d", "ResNet152", "DenseNet161"];

export function reportMarkdown(
  result: flannel.Stage2ExperimentResult,
  adapter: string,
  seconds: number,
): string {
  const counts = result.classNames.map((c, i) => `${c} ${result.samples.classCounts[i]}`).join(", ");
  return `# FLANNEL stage 2 on synthetic learner outputs

Data: the embedded synthetic generator (5 learners x 4 classes; ${counts}); ${result.samples.train} training
and ${result.samples.test} test samples (stratified 4:1 split), ${result.folds}-fold cross-validation on the
training part, ${result.epochs} epochs per fold, seed ${result.seed}. Adapter: ${adapter}. Time: ${
    seconds.toFixed(0)
  } s.

The learner rows are the synthetic learners' own probabilities on the test part (fixed, hence std 0).

## Table 3: F1 per class and macro-F1 on the test part, mean (std) over folds

${flannel.table3(result)}

## Calibration on the test part, mean (std) over folds: raw and temperature-scaled "(T)"

${flannel.calibrationTable(result)}
`;
}

export async function demo(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      out: { type: "string", default: "runs/demo" },
      data: { type: "string", multiple: true },
      images: { type: "string" },
      epochs: { type: "string" },
      folds: { type: "string" },
      seed: { type: "string" },
      "stage2-only": { type: "boolean" },
      backend: { type: "string" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  if (values.help) return console.log(HELP);
  const seed = intOption(values, "seed", 0, 0);
  const out = resolve(values.out!);
  if (values["stage2-only"]) return stage2Demo(out, seed, intOption(values, "folds", 5, 2), values.backend);
  let dataDirs = values.data ?? [];
  if (dataDirs.length === 0) {
    const total = intOption(values, "images", flannel.DEFAULT_SYNTHETIC_TOTAL, 40);
    const dir = join(out, "data");
    const dataset = flannel.syntheticXrayDataset({ total, seed });
    const counts = fl.metrics.CLASS_NAMES.map((c, i) =>
      `${c} ${dataset.records.filter((r) => r.label === i).length}`
    );
    console.log(
      `data: the embedded synthetic chest X-ray generator (not real X-rays), ${total} images of ` +
        `${flannel.DEFAULT_SYNTHETIC_SIZE}x${flannel.DEFAULT_SYNTHETIC_SIZE}, ${
          counts.join(", ")
        }, seed ${seed}; ` +
        `written to ${dir}`,
    );
    flannel.writeSyntheticPngs(dir, dataset);
    dataDirs = [dir];
  } else console.log(`data: ${dataDirs.join(", ")} (real data, as given by --data)`);
  // a rerun continues: finished learners and folds are kept (the same seed gives the same work)
  await runImageExperiment("demo", {
    data: dataDirs,
    out,
    scale: "tiny",
    size: "64",
    resize: String(flannel.DEFAULT_SYNTHETIC_SIZE),
    epochs: values.epochs ?? "3",
    lr: "0.003",
    folds: values.folds,
    seed: String(seed),
    resume: true,
    backend: values.backend,
  }, 20);
}

/** The quick demo: stage 2 alone on synthetic learner outputs with the paper's imbalance. */
export async function stage2Demo(out: string, seed: number, folds: number, backend?: string): Promise<void> {
  const samples = 5508, epochs = 20;
  const info = await fl.init({ backend: backend as fl.InitOptions["backend"] });
  console.log(`backend: ${info.backend} on ${info.adapter} (${info.runtime})`);
  console.log(
    `data: embedded synthetic learner outputs, ${samples} samples, paper class imbalance (seed ${seed})`,
  );
  const data = flannel.syntheticLearnerOutputs({ samples, seed });
  const t0 = performance.now();
  const result = await flannel.runStage2Experiment(data, {
    learnerNames: LEARNERS.map((n) => `${n} (synthetic)`),
    folds,
    epochs,
    seed,
    onProgress: (m) => console.log(m),
  });
  const seconds = (performance.now() - t0) / 1000;
  const resultsPath = join(out, "stage2-only", "results.json"),
    reportPath = join(out, "stage2-only", "report.md");
  fl.io.writeFileAtomic(
    resultsPath,
    JSON.stringify({ data: "synthetic", adapter: info.adapter, ...result }, flannel.withoutProbabilities, 1),
  );
  fl.io.writeFileAtomic(reportPath, reportMarkdown(result, info.adapter, seconds));
  console.log(`\n${flannel.table3(result)}\n`);
  console.log(`wrote ${resultsPath} and ${reportPath} (${seconds.toFixed(0)} s)`);
}
