// The command line: `deno task flannel <command>` or `bun run cli.ts <command>`, same behaviour.
import process from "node:process";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import * as fl from "./mod.ts";
import { writeFileAtomic } from "./src/io/files.ts";
import { runStage2Experiment, type Stage2ExperimentResult, table3 } from "./src/train/stage2_experiment.ts";

const LEARNERS = ["InceptionV3", "VGG19-bn", "ResNeXt101-32x8d", "ResNet152", "DenseNet161"];

const HELP: Record<string, string> = {
  main: `flannel: FLANNEL (focal-loss neural-network ensemble for COVID-19 detection) on WebGPU

Usage: deno task flannel <command> [options]    (or: bun run cli.ts <command> [options])

Commands:
  demo        the main job on the embedded default data, no arguments needed
  data        loads chest X-ray sources and prints the data set summary (Table 1)
  help        this text; every command also takes --help

Run 'deno task flannel <command> --help' for a command's options.`,
  demo: `flannel demo: FLANNEL's stage 2 end to end on the embedded synthetic data set

The embedded default is a deterministic generator of the five base learners' class probabilities with the
paper's class imbalance (covid about 1.7% of samples). The demo runs the paper's protocol on it: a 4:1
train/test split, 5-fold cross-validation on the training part, and every stage-2 method of Table 3
(soft voting, MLP stacking with 1 and 2 layers, FLANNEL without focal loss, with resampling, and FLANNEL
with focal loss), reported as mean (std) over folds on the test part.

Options:
  --out DIR        where results.json and report.md go (default runs/demo)
  --samples N      synthetic samples (default 5508, the paper's data set size)
  --epochs N       stage-2 epochs per fold (default 20)
  --folds K        cross-validation folds (default 5)
  --seed S         seed of data, splits and training (default 0)
  --backend NAME   auto | webgpu (default auto)
  --help`,
  data: `flannel data: load chest X-ray sources and print the data set summary (the paper's Table 1)

Usage: deno task flannel data --data DIR [--data DIR...] [--json] [--decode]

Each DIR is one source, its kind detected from the folder (or a folder holding several sources):
  Kaggle chest-xray-pneumonia   chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg
  covid-chestxray-dataset       metadata.csv + images/ (frontal X-rays; findings mapped to the 4 classes)
  labels.csv + images/          columns file,label,source,patient_id,view,... (as ../shared/data/chestxray)
Prints images per source, view and class (covid, viral, bacterial, normal) and every skipped file with
its reason (CT rows, lateral views, findings outside the 4 classes, missing files).

Options:
  --data DIR   a source folder (repeat for several)
  --json       print {"classes": {...}, "skipped": n, "images": n, "sources": {...}, "views": {...}, "table": [...]}
  --decode     also decode every image and skip the unreadable ones (slower)
  --help`,
};

function fail(message: string): never {
  console.error(`flannel: ${message}`);
  process.exit(2);
}

function intOption(values: Record<string, unknown>, key: string, fallback: number, min: number): number {
  const raw = values[key];
  if (raw === undefined) return fallback;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min) fail(`--${key} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  return v;
}

function reportMarkdown(result: Stage2ExperimentResult, adapter: string, seconds: number): string {
  const counts = result.classNames.map((c, i) => `${c} ${result.samples.classCounts[i]}`).join(", ");
  return `# FLANNEL stage 2 on synthetic learner outputs

Data: the embedded synthetic generator (5 learners x 4 classes; ${counts}); ${result.samples.train} training
and ${result.samples.test} test samples (stratified 4:1 split), ${result.folds}-fold cross-validation on the
training part, ${result.epochs} epochs per fold, seed ${result.seed}. Adapter: ${adapter}. Time: ${seconds.toFixed(0)} s.

The learner rows are the synthetic learners' own probabilities on the test part (fixed, hence std 0).

## Table 3: F1 per class and macro-F1 on the test part, mean (std) over folds

${table3(result)}
`;
}

async function demo(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      out: { type: "string", default: "runs/demo" },
      samples: { type: "string" },
      epochs: { type: "string" },
      folds: { type: "string" },
      seed: { type: "string" },
      backend: { type: "string", default: "auto" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  if (values.help) return console.log(HELP.demo);
  const samples = intOption(values, "samples", 5508, 50);
  const epochs = intOption(values, "epochs", 20, 1);
  const folds = intOption(values, "folds", 5, 2);
  const seed = intOption(values, "seed", 0, 0);
  const info = await fl.init({ backend: values.backend as "auto" });
  console.log(`backend: ${info.backend} on ${info.adapter} (${info.runtime})`);
  console.log(`data: embedded synthetic learner outputs, ${samples} samples, paper class imbalance (seed ${seed})`);
  const data = fl.train.syntheticLearnerOutputs({ samples, seed });
  const t0 = performance.now();
  const result = await runStage2Experiment(data, {
    learnerNames: LEARNERS.map((n) => `${n} (synthetic)`),
    folds,
    epochs,
    seed,
    onProgress: (m) => console.log(m),
  });
  const seconds = (performance.now() - t0) / 1000;
  const out = resolve(values.out!);
  writeFileAtomic(join(out, "results.json"), JSON.stringify({ data: "synthetic", adapter: info.adapter, ...result }, null, 1));
  writeFileAtomic(join(out, "report.md"), reportMarkdown(result, info.adapter, seconds));
  console.log(`\n${table3(result)}\n`);
  console.log(`wrote ${join(out, "results.json")} and ${join(out, "report.md")} (${seconds.toFixed(0)} s)`);
}

async function data(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      data: { type: "string", multiple: true },
      json: { type: "boolean" },
      decode: { type: "boolean" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  if (values.help) return console.log(HELP.data);
  const dirs = values.data ?? [];
  if (dirs.length === 0) fail("data: give at least one --data DIR (see 'deno task flannel data --help')");
  const loaded = fl.data.loadDataset(dirs);
  let { records, skipped } = loaded;
  if (values.decode) {
    const checked = await fl.data.validateImages(records);
    records = checked.records;
    skipped = [...skipped, ...checked.skipped];
  }
  const summary = fl.data.summarize(records, skipped);
  if (values.json) {
    const { classes, skipped: nSkipped, images, sources, views, table } = summary;
    return console.log(JSON.stringify({ classes, skipped: nSkipped, images, sources, views, table }, null, 1));
  }
  console.log(fl.data.formatSummary(summary));
  for (const s of skipped) console.log(`  skipped ${s.file}: ${s.reason}`);
}

const COMMANDS: Record<string, (args: string[]) => Promise<void>> = { demo, data };

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (!command || command === "help" || command === "--help" || command === "-h") return console.log(HELP.main);
  const run = COMMANDS[command];
  if (!run) fail(`unknown command ${JSON.stringify(command)}; run 'deno task flannel --help'`);
  try {
    await run(rest);
  } catch (err) {
    fail((err as Error).message);
  }
}

await main(process.argv.slice(2));
process.exit(0);
