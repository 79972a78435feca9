// The command line: `deno task flannel <command>` or `bun run cli.ts <command>`, same behaviour.
import process from "node:process";
import { basename, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import * as fl from "./mod.ts";
import * as flannel from "./src/flannel/mod.ts";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";

const LEARNERS = ["InceptionV3", "VGG19-bn", "ResNeXt101-32x8d", "ResNet152", "DenseNet161"];

const IMAGE_RUN_HELP = `Options:
  --data DIR        a source folder or zip archive (repeat for several)
  --out DIR         output folder (required)
  --archs LIST      comma-separated learners and baselines (default all seven): the five learners
                    ${flannel.LEARNER_ARCHS.join(",")} (combined by stage 2)
                    and the paper's baselines ${flannel.BASELINE_ARCHS.join(",")} (COVID-Net, AI-Covid:
                    rows of Table 3 of their own)
  --scale S         tiny | full (default tiny: small variants of the same families, for CPUs)
  --size N          crop side (default 64 for tiny, 224 for full)
  --resize N        short side images are resized to before cropping (default size * 8 / 7: 72 or 256)
  --epochs N        epochs per learner and fold (default 3)
  --batch N         batch size (default 16)
  --accumulate N    run each batch as N micro-batches (gradients summed, one optimizer step; batch norm per
                    micro-batch, as PyTorch's accumulation loop), or auto (default: whole batches unless a
                    step would not fit the WebAssembly memory; then the fewest micro-batches that fit, said)
  --precision P     f32 (default) or f16: activations stored as float16 (about half their memory; every
                    kernel still computes in float32) with dynamic loss scaling; WebGPU with shader-f16
  --lr X            Adam learning rate (default 0.001)
  --folds K         cross-validation folds (default 5)
  --seed S          seed of split, initial weights and augmentation (default 0)
  --subsample SPEC  per-class subsampling by patient before the split, e.g. covid=0.5,normal=200
                    (a fraction of the class, or an image count)
  --pretrained DIR  start each learner from its ImageNet weights in DIR: torchvision's hub cache as it is
                    (~/.cache/torch/hub/checkpoints: resnet152-394f9c45.pth, densenet161-8d451a50.pth,
                    inception_v3_google-0cc3c7bd.pth, efficientnet_b4_rwightman-*.pth for AI-Covid, ...;
                    SHA-256 checked against the name) or DIR/<arch>.pth|.pt|.safetensors. No Python needed.
                    Every tensor but the 1000-class head is loaded (a line per learner says what); a
                    learner with no file is an error before anything trains; COVID-Net trains from scratch
  --resume          continue a run in OUT: finished learner/fold pairs are skipped, a started one
                    continues from its last checkpoint (after a crash or Ctrl-C)
  --recipe R        shared (default: every learner and baseline trained alike, a like-for-like Table 3) or
                    own (COVID-Net and AI-Covid with their published recipes: optimizer, lr, class
                    weights, covid share of batches, penalties, early stopping; not their augmentation)
  --augment MODE    stage-1 training augmentation: basic (default: random crop, flip and noise on the CPU),
                    paper (the paper's flips, crops and scaling: a random affine warp per image on the
                    device, zoom 0.9-1.1, rotation within 10 degrees, and the same noise) or none (centre
                    crop, no noise); --resume refuses a checkpoint trained with another
  --equalize        histogram-equalise every image after resizing (a mitigation of source shortcuts:
                    exposure and contrast differ between the data sources; predict and cam repeat it)
  --balance-sources on|off
                    on (default): negatives balanced by source: in every source with covid and non-covid
                    training images, the non-covid ones are drawn again (with replacement) until they
                    match its covid images, so that the source alone cannot tell covid apart (a
                    mitigation of source shortcuts; nothing changes where no source mixes the classes);
                    off: every training image once an epoch
  --backend NAME    auto | webgpu | wasm (default: $FLANNEL_BACKEND, else auto:
                    WebGPU on a GPU, else WebAssembly: also where the only
                    adapter is a CPU implementation such as lavapipe)`;

const HELP: Record<string, string> = {
  main: `flannel: FLANNEL (focal-loss neural-network ensemble for COVID-19 detection) on WebGPU

Usage: flannel <command> [options]     (the installed package: npx/bunx flannel, deno run -A npm:flannel-webgpu/cli;
                                        in this repository: deno task flannel, bun run cli.ts)

Commands:
  demo        the main job on the embedded default data, no arguments needed
  data        loads chest X-ray sources and prints the data set summary (Table 1)
  stage1      trains base learners on every cross-validation fold; writes their out-of-fold outputs
  experiment  the whole protocol on images: stage 1 on every fold, stage 2, Table 3 (results.json, report.md)
  predict     class probabilities of chest X-ray images (shipped weights, a bundle or an experiment), as CSV
  cam         class activation maps of each learner on images, as PNGs
  export      an experiment's trained models as one zip (predict and cam anywhere) or as one ONNX graph
  serve       the models on a web page at http://127.0.0.1:8080 (classify X-rays in a browser, no upload)
  build-web   the same page as static files for any web server
  plan        the experiment as independent jobs for a scheduler (Slurm, Kubernetes): OUT/plan.json
  job         run one job of a plan (index from --index, SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX)
  status      done / running / failed / pending per job of a plan
  help        this text; every command also takes --help

Run 'deno task flannel <command> --help' for a command's options.

Every command also takes --fast-math (anywhere on the line; the same as FLANNEL_FAST_MATH=1, which the
commands' own child processes inherit): the WebAssembly backend's kernels built with relaxed SIMD, whose
fused multiply-adds are faster where the CPU and engine have them but round differently, so results are no
longer the same bits in every runtime. Where the engine has no relaxed SIMD it says so and runs exact.`,
  demo: `flannel demo: the FLANNEL experiment end to end on the embedded synthetic chest X-rays

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
  --backend NAME    auto | webgpu | wasm (default: $FLANNEL_BACKEND, else auto:
                    WebGPU on a GPU, else WebAssembly: also where the only
                    adapter is a CPU implementation such as lavapipe)
  --help`,
  data: `flannel data: load chest X-ray sources and print the data set summary (the paper's Table 1)

Usage: deno task flannel data --data DIR [--data DIR...] [--json] [--decode]

Each DIR is one source, its kind detected from the folder (or a folder holding several sources); a zip
archive (e.g. Kaggle's download, or GitHub's of covid-chestxray-dataset) is read as it is, without unpacking:
  Kaggle chest-xray-pneumonia   chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg
  covid-chestxray-dataset       metadata.csv + images/ (frontal X-rays; findings mapped to the 4 classes)
  labels.csv + images/          columns file,label,source,patient_id,view,... (one row per image)
Prints images per source, view and class (covid, viral, bacterial, normal) and every skipped file with
its reason (CT rows, lateral views, findings outside the 4 classes, missing files).

Options:
  --data DIR   a source folder or zip archive (repeat for several)
  --json       print {"classes": {...}, "skipped": n, "images": n, "sources": {...}, "views": {...}, "table": [...]}
  --decode     also decode every image and skip the unreadable ones (slower)
  --help`,
  stage1: `flannel stage1: train the base learners on each cross-validation fold (stage 1)

Usage: deno task flannel stage1 --data DIR [--data DIR...] --out DIR [options]

Loads the sources (as 'flannel data'), decodes every image once (unreadable files are reported and left
out), makes or reloads a seeded, stratified, patient-disjoint 4:1 train/test split with K folds on the
training part (OUT/split.json, pinned to the data set's file list), then for every learner and fold trains
on the fold's training part (Adam, cross-entropy; the epoch kept is chosen on 10% of those patients) and
writes the learner's class probabilities on the held-out fold (out-of-fold, for stage 2) and on the test
part. Per learner and fold, in OUT/stage1/<arch>/fold<f>/: checkpoint.safetensors (+ .best), log.jsonl,
val.safetensors and test.safetensors (probs [S, 4], labels, files in the metadata).

${IMAGE_RUN_HELP}
  --fold LIST       comma-separated folds to run (default all)
  --help`,
  experiment: `flannel experiment: the FLANNEL protocol on chest X-ray images, end to end

Usage: deno task flannel experiment --data DIR [--data DIR...] --out DIR [options]

Everything 'flannel stage1' does, for every fold, then stage 2 on each fold: soft voting, MLP stacking
with 1 and 2 layers, FLANNEL with cross-entropy, with cross-entropy and class-balanced resampling, and
FLANNEL with focal loss, each trained on the fold's out-of-fold learner outputs (80%, epoch chosen on the
other 20%) and scored on the test part; the learners alone too. Writes OUT/results.json (per method and
fold: per-class precision, recall, F1, ROC-AUC, PR-AUC, macro-F1, accuracy, confusion matrix; mean and
std over folds) and OUT/report.md (Table 1, Table 3). A rerun with --resume skips finished stage-1 work.

${IMAGE_RUN_HELP}
  --stage2-epochs N stage-2 epochs per method and fold (default 20)
  --help`,
  predict: `flannel predict: class probabilities of chest X-ray images from trained models

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
  --backend NAME   auto | webgpu | wasm (default: $FLANNEL_BACKEND, else auto:
                    WebGPU on a GPU, else WebAssembly: also where the only
                    adapter is a CPU implementation such as lavapipe)
  --help`,
  cam: `flannel cam: class activation maps of each learner on chest X-ray images (Fig. 6)

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
  --out PATH       for one image, the PNG to write; for several, a folder (default: DIR/cam with --run,
                   else ./cam), each image's map as <image name>.png
  --backend NAME   auto | webgpu | wasm (default: $FLANNEL_BACKEND, else auto:
                    WebGPU on a GPU, else WebAssembly: also where the only
                    adapter is a CPU implementation such as lavapipe)
  --help`,
  plan:
    `flannel plan: the experiment as independent jobs for a scheduler (Slurm arrays, Kubernetes Indexed Jobs)

Usage: deno task flannel plan --data DIR [--data DIR...] --out DIR [experiment options]

Loads and decodes the data, makes the split (OUT/split.json) and writes OUT/plan.json: the options and the
jobs, one per (learner, fold) in the order 'experiment' runs them (jobs 0..N-1), then the final job N
(stage 2, results.json, report.md, figures) that needs them all. Run each job with 'flannel job --run OUT
--index I' on any machine that sees OUT (a shared folder); 'flannel status --run OUT' shows where they stand.
The jobs together give the same results.json as 'experiment' with the same options. Templates: deploy/.

${IMAGE_RUN_HELP}
  --stage2-epochs N stage-2 epochs per method and fold (default 20)
  --help`,
  job: `flannel job: run one job of a plan (see 'flannel plan')

Usage: deno task flannel job --run DIR [--index I]

The index comes from --index, else from SLURM_ARRAY_TASK_ID (Slurm job arrays) or JOB_COMPLETION_INDEX
(Kubernetes Indexed Jobs). A job takes the lock DIR/jobs/I.lock (a second copy started by a scheduler's retry
exits with status 3 and says who holds it; a dead job's lock is taken over: its process is gone on this host,
or its heartbeat is over 10 minutes old), resumes from its last checkpoint after a kill, writes every file
atomically, and records its outcome and time in DIR/jobs/I.json. A job already done exits at once. The final
job refuses to start, naming the missing ones, until every stage-1 job is done.

Options:
  --run DIR        the plan's folder
  --index I        the job (default: $SLURM_ARRAY_TASK_ID, else $JOB_COMPLETION_INDEX)
  --backend NAME   auto | webgpu | wasm (default: the plan's, else auto)
  --help`,
  status: `flannel status: where the jobs of a plan stand

Usage: deno task flannel status --run DIR [--json]

One line per job: done, running (a live lock), failed (with its error) or pending, with host and time.
Exits with status 0 when every job is done, 1 otherwise.

Options:
  --run DIR        the plan's folder
  --json           print [{"index", "kind", "arch", "fold", "state", "seconds", "host", "error"}, ...]
  --help`,
  export: `flannel export: an experiment's trained models as one zip for 'predict' anywhere, or as ONNX

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
  --backend NAME     auto | webgpu | wasm: where the models run while they are traced (default auto)
  --help`,
};

/**
 * SIGINT and SIGTERM (Ctrl-C, a scheduler's preemption) abort `stop`: training ends at its next step, after
 * the file being written, if any, is whole (file writes are synchronous and atomic, so a handler never runs in
 * the middle of one), and the process exits with 128 + the signal's number. A second signal ends it at once;
 * every file is still whole or absent.
 */
const stop = new AbortController();
const SIGNAL_EXIT_CODES = { SIGINT: 130, SIGTERM: 143 } as const;
type StopSignal = keyof typeof SIGNAL_EXIT_CODES;

function stopOnSignals(): void {
  for (const sig of Object.keys(SIGNAL_EXIT_CODES) as StopSignal[]) {
    process.on(sig, () => {
      if (stop.signal.aborted) process.exit(SIGNAL_EXIT_CODES[sig]);
      console.error(`flannel: ${sig}: stopping at the next training step (${sig} again stops at once)`);
      stop.abort(sig);
    });
  }
}

/** The commands that train, where a signal stops at the next step instead of killing the process. */
const STOPPABLE = new Set(["demo", "stage1", "experiment", "job"]);

function fail(message: string): never {
  console.error(`flannel: ${message}`);
  process.exit(2);
}

function intOption(values: Record<string, unknown>, key: string, fallback: number, min: number): number {
  const raw = values[key];
  if (raw === undefined) return fallback;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min) {
    fail(`--${key} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  }
  return v;
}

function reportMarkdown(result: flannel.Stage2ExperimentResult, adapter: string, seconds: number): string {
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
`;
}

async function demo(args: string[]): Promise<void> {
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
  if (values.help) return console.log(HELP.demo);
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
async function stage2Demo(out: string, seed: number, folds: number, backend?: string): Promise<void> {
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
    return console.log(
      JSON.stringify({ classes, skipped: nSkipped, images, sources, views, table }, null, 1),
    );
  }
  console.log(fl.data.formatSummary(summary));
  for (const s of skipped) console.log(`  skipped ${s.file}: ${s.reason}`);
}

function numberOption(values: Record<string, unknown>, key: string, fallback: number): number {
  const raw = values[key];
  if (raw === undefined) return fallback;
  const v = Number(raw);
  if (!(Number.isFinite(v) && v > 0)) fail(`--${key} must be a positive number, got ${JSON.stringify(raw)}`);
  return v;
}

function parseSubsample(spec: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of spec.split(",")) {
    const [name, value] = part.split("=");
    const v = Number(value);
    if (!name || value === undefined || !(v > 0)) {
      fail(`--subsample: expected class=count or class=fraction, got ${JSON.stringify(part)}`);
    }
    out[name.trim()] = v;
  }
  return out;
}

/** An on|off option (absent: `fallback`). */
function onOffOption(command: string, name: string, value: string | undefined, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (value === "on" || value === "off") return value === "on";
  return fail(`${command}: --${name} must be on or off, got ${JSON.stringify(value)}`);
}

/** --recipe: shared (default) or own. */
function recipeOption(command: string, value: string | undefined): "shared" | "own" {
  if (value === undefined || value === "shared" || value === "own") return value ?? "shared";
  return fail(`${command}: --recipe must be shared or own, got ${JSON.stringify(value)}`);
}

/** --augment: paper, basic (default) or none. */
function augmentOption(command: string, value: string | undefined): fl.data.AugmentMode {
  try {
    return fl.data.checkAugmentMode(value ?? "basic", `${command}: --augment`);
  } catch (err) {
    return fail((err as Error).message);
  }
}

function precisionOption(command: string, value: string | undefined): "f32" | "f16" {
  if (value === undefined || value === "f32" || value === "f16") return value ?? "f32";
  return fail(`${command}: --precision must be f32 or f16, got ${JSON.stringify(value)}`);
}

// Options that `stage1` and `experiment` share.
const IMAGE_RUN_OPTIONS = {
  data: { type: "string", multiple: true },
  out: { type: "string" },
  archs: { type: "string" },
  scale: { type: "string", default: "tiny" },
  size: { type: "string" },
  resize: { type: "string" },
  epochs: { type: "string" },
  batch: { type: "string" },
  lr: { type: "string" },
  folds: { type: "string" },
  seed: { type: "string" },
  subsample: { type: "string" },
  pretrained: { type: "string" },
  resume: { type: "boolean" },
  equalize: { type: "boolean" },
  "balance-sources": { type: "string" },
  recipe: { type: "string" },
  augment: { type: "string" },
  accumulate: { type: "string" },
  precision: { type: "string" },
  backend: { type: "string" },
  help: { type: "boolean" },
} as const;

// `experiment`'s options, which `plan` takes too.
const EXPERIMENT_OPTIONS = { ...IMAGE_RUN_OPTIONS, "stage2-epochs": { type: "string" } } as const;

type ImageRunValues = {
  [K in keyof typeof IMAGE_RUN_OPTIONS]?: (typeof IMAGE_RUN_OPTIONS)[K] extends { multiple: true } ? string[]
    : (typeof IMAGE_RUN_OPTIONS)[K] extends { type: "boolean" } ? boolean
    : string;
};

/**
 * What stage1 and experiment do first: read the options, load and decode the data (unreadable files
 * reported and left out), make the split or reload it from OUT/split.json, and the progress printers.
 */
async function prepareImageRun(command: string, values: ImageRunValues) {
  const dirs = values.data ?? [];
  if (dirs.length === 0) {
    fail(`${command}: give at least one --data DIR (see 'deno task flannel ${command} --help')`);
  }
  if (!values.out) fail(`${command}: give --out DIR`);
  const scale = values.scale;
  if (scale !== "tiny" && scale !== "full") {
    fail(`${command}: --scale must be tiny or full, got ${JSON.stringify(scale)}`);
  }
  const known = [...flannel.LEARNER_ARCHS, ...flannel.BASELINE_ARCHS];
  const archs = values.archs ? values.archs.split(",").map((a) => a.trim()) : known;
  for (const a of archs) {
    if (!flannel.isStage1Arch(a)) {
      fail(`${command}: unknown learner ${JSON.stringify(a)}; expected ${known.join(", ")}`);
    }
  }
  if (new Set(archs).size !== archs.length) fail(`${command}: --archs lists a learner twice`);
  const size = intOption(values, "size", scale === "tiny" ? 64 : 224, 8);
  const resize = intOption(values, "resize", Math.round((size * 8) / 7), size);
  const nFolds = intOption(values, "folds", 5, 2);
  const seed = intOption(values, "seed", 0, 0);
  const settings = {
    archs: archs as flannel.Stage1Arch[],
    scale: scale as "tiny" | "full",
    crop: size,
    resize,
    epochs: intOption(values, "epochs", 3, 1),
    batchSize: intOption(values, "batch", 16, 2),
    accumulate: values.accumulate === undefined || values.accumulate === "auto"
      ? "auto" as const
      : intOption(values, "accumulate", 1, 1),
    precision: precisionOption(command, values.precision),
    lr: numberOption(values, "lr", 1e-3),
    seed,
    resume: values.resume,
    pretrained: values.pretrained && resolve(values.pretrained),
    equalize: values.equalize ?? false,
    balanceSources: onOffOption(command, "balance-sources", values["balance-sources"], true),
    recipe: recipeOption(command, values.recipe),
    augment: augmentOption(command, values.augment),
  };
  const out = resolve(values.out);
  if (settings.pretrained) {
    let files: Map<flannel.Stage1Arch, string>;
    try {
      files = flannel.pretrainedFiles(settings.pretrained, settings.archs);
    } catch (err) {
      return fail(`${command}: ${(err as Error).message}`);
    }
    for (const arch of settings.archs) {
      console.log(`pretrained: ${arch} <- ${files.get(arch) ?? "no file: starts from its initialisation"}`);
    }
  }

  const info = await fl.init({ backend: values.backend as fl.InitOptions["backend"] });
  console.log(`backend: ${info.backend} on ${info.adapter} (${info.runtime})`);
  const loaded = fl.data.loadDataset(dirs);
  console.log(
    `data: ${loaded.records.length} images in ${
      dirs.join(", ")
    } (${loaded.skipped.length} rows skipped); decoding`,
  );
  const cache = new fl.data.ImageCache(resize, { equalize: values.equalize });
  const bar = new fl.train.ProgressBar();
  const decodeStart = performance.now();
  const readable = await cache.getReadable(
    loaded.records,
    (done, total) => bar.update("decode", done, total, done / ((performance.now() - decodeStart) / 1000)),
  );
  bar.done();
  for (const s of readable.skipped) console.log(`  unreadable, left out: ${s.reason}`);
  const records = readable.records;

  const splitPath = join(out, "split.json");
  let split: fl.data.PatientSplit;
  if (existsSync(splitPath)) {
    if (!values.resume) {
      fail(`${command}: ${splitPath} exists; pass --resume to continue that run, or use another --out`);
    }
    split = fl.data.loadSplit(splitPath, records);
    if (split.folds !== nFolds || split.seed !== seed) {
      fail(
        `${command}: ${splitPath} has ${split.folds} folds and seed ${split.seed}; this run asks for ${nFolds} and ${seed}`,
      );
    }
  } else {
    const subsample = values.subsample ? parseSubsample(values.subsample) : undefined;
    split = fl.data.patientSplit(records, { folds: nFolds, seed, subsample });
    fl.data.saveSplit(splitPath, split, records);
  }
  // Table 1 of the images the run uses (after any --subsample)
  const used = [...split.train, ...split.test].sort((a, b) => a - b).map((i) => records[i]);
  const summary = fl.data.summarize(used, [...loaded.skipped, ...readable.skipped]);
  console.log(fl.data.formatSummary(summary));
  const foldSizes = split.foldSplits.map((f) => f.val.length).join("/");
  console.log(
    `split: ${split.train.length} train (${split.folds} folds of ${foldSizes}), ${split.test.length} test, ` +
      `patient-disjoint, seed ${seed} -> ${splitPath}`,
  );
  const progress = {
    signal: stop.signal,
    onMessage: (m: string) => console.log(m),
    onBatch: (arch: string, f: number, p: flannel.Stage1BatchProgress) =>
      bar.update(`${arch} fold ${f} epoch ${p.epoch}/${p.epochs}`, p.done, p.total, p.imagesPerSecond),
    onEpoch: (arch: string, f: number, log: flannel.Stage1EpochLog) => {
      bar.done();
      console.log(
        `${arch} fold ${f} epoch ${log.epoch}: loss ${log.trainLoss.toFixed(4)}, selection macro-F1 ` +
          `${log.valMacroF1.toFixed(3)}, ${log.imagesPerSecond.toFixed(1)} images/s, ${
            log.seconds.toFixed(1)
          } s`,
      );
    },
  };
  return { info, out, records, images: readable.images, split, summary, settings, progress, outDir: out };
}

async function stage1(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { ...IMAGE_RUN_OPTIONS, fold: { type: "string" } },
    strict: true,
  });
  if (values.help) return console.log(HELP.stage1);
  const run = await prepareImageRun("stage1", values);
  const nFolds = run.split.folds;
  const folds = values.fold?.split(",").map((f) => {
    const v = Number(f);
    if (!Number.isInteger(v) || v < 0 || v >= nFolds) {
      fail(`--fold: ${JSON.stringify(f)} is not a fold of 0..${nFolds - 1}`);
    }
    return v;
  });
  const t0 = performance.now();
  const results = await flannel.runStage1Folds({ ...run, ...run.settings, ...run.progress, folds });
  console.log(
    "\n| learner | fold | held-out macro-F1 | test macro-F1 | test covid F1 |\n|---|---|---|---|---|",
  );
  for (const r of results) {
    const covid = r.test.perClass.covid.f1.toFixed(3);
    console.log(
      `| ${r.arch} | ${r.fold} | ${r.val.macroF1.toFixed(3)} | ${r.test.macroF1.toFixed(3)} | ${covid} |`,
    );
  }
  console.log(
    `\nstage 1 outputs in ${join(run.out, "stage1")} (${((performance.now() - t0) / 1000).toFixed(0)} s)`,
  );
}

async function experiment(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: EXPERIMENT_OPTIONS,
    strict: true,
  });
  if (values.help) return console.log(HELP.experiment);
  await runImageExperiment("experiment", values, intOption(values, "stage2-epochs", 20, 1));
}

/** The experiment and its outputs: results.json, the figures, report.md. */
async function runImageExperiment(
  command: string,
  values: ImageRunValues,
  stage2Epochs: number,
): Promise<void> {
  const run = await prepareImageRun(command, values);
  const t0 = performance.now();
  const result = await flannel.runExperiment({ ...run, ...run.settings, ...run.progress, stage2Epochs });
  const seconds = (performance.now() - t0) / 1000;
  const resultsPath = join(run.out, "results.json"), reportPath = join(run.out, "report.md");
  const machine = { data: values.data, adapter: run.info.adapter, runtime: run.info.runtime, seconds };
  fl.io.writeFileAtomic(
    resultsPath,
    JSON.stringify({ ...result, machine, table1: run.summary }, flannel.withoutProbabilities, 1),
  );
  const figures = flannel.writeFigures(run.out, result);
  // Fig. 6: the class activation maps of every learner on the first test image of each class
  for (const [c, name] of fl.metrics.CLASS_NAMES.entries()) {
    const first = run.split.test.find((i) => run.records[i].label === c);
    if (first === undefined) continue;
    const path = join(run.out, `fig6_cam_${name}.png`);
    fl.train.plots.savePNG(path, await flannel.camFigure(run.out, run.records[first].file));
    figures.push(path);
  }
  fl.io.writeFileAtomic(
    reportPath,
    experimentReport(result, run.summary, run.info.adapter, seconds, values.data ?? []),
  );
  console.log(`figures: ${figures.join(", ")}`);
  console.log(`\n${flannel.table3(result)}\n`);
  console.log(`wrote ${resultsPath} and ${reportPath} (${seconds.toFixed(0)} s)`);
}

function experimentReport(
  result: flannel.ExperimentResult,
  summary: fl.data.DatasetSummary,
  adapter: string,
  seconds: number,
  dataDirs: readonly string[],
): string {
  const settings = result.settings;
  const folds = [...new Set(result.stage1.map((r) => r.fold))].sort((a, b) => a - b);
  const stage1Rows = result.learners.map(({ arch, title }) => {
    const cells = folds.map((f) => {
      const r = result.stage1.find((x) => x.arch === arch && x.fold === f)!;
      return `${r.heldOutMacroF1.toFixed(3)} / ${r.testMacroF1.toFixed(3)}`;
    });
    return `| ${title} | ${cells.join(" | ")} |`;
  });
  return `# FLANNEL experiment

Data: ${dataDirs.join(", ")}${
    summary.sources.synthetic ? " (the project's synthetic chest X-ray generator, not real X-rays)" : ""
  }.

Learners: ${
    result.learners.map((l) => l.title).join(", ")
  } (${settings.scale} scale), crop ${settings.crop}, ` +
    `${settings.epochs} stage-1 epochs (batch ${settings.batchSize}), ${settings.stage2Epochs} stage-2 epochs, ` +
    `seed ${settings.seed}. ${result.samples.train} training images in ${result.folds} patient-disjoint folds, ` +
    `${result.samples.test} test images. Adapter: ${adapter}. Time: ${seconds.toFixed(0)} s.

Stage 2 of each fold trains on that fold's out-of-fold learner outputs (the learners never saw those
images; their epochs were chosen on a separate share of their training part) and every row is scored on
the test part with that fold's learners.

## Table 1: data

\`\`\`
${fl.data.formatSummary(summary)}
\`\`\`

## Table 3: F1 per class and macro-F1 on the test part, mean (std) over folds

${flannel.table3(result)}

## Figures

COVID F1 per method with fold error bars (Fig. 2), COVID-vs-rest ROC and precision-recall curves (Fig. 3),
FLANNEL's confusion matrix (Fig. 4):

![Fig. 2](fig2_covid_f1.png)
![Fig. 3 ROC](fig3_covid_roc.png) ![Fig. 3 PR](fig3_covid_pr.png)
![Fig. 4](fig4_confusion.png)

Class activation maps of each learner (fold 0) on the first test image of each class (Fig. 6):

${fl.metrics.CLASS_NAMES.map((c) => `![Fig. 6 ${c}](fig6_cam_${c}.png)`).join("\n")}

## What Table 3 hides: sources and noise

${flannel.auditMarkdown(result.audit)}
## Stage 1: macro-F1 per learner and fold (held-out fold / test part)

| learner | ${folds.map((f) => `fold ${f}`).join(" | ")} |
|---|${folds.map(() => "---").join("|")}|
${stage1Rows.join("\n")}
`;
}

const IMAGE_EXTENSIONS = /\.(png|jpe?g)$/i;

/** The image files of `paths` (files as given, folders' PNG and JPEG files sorted), absolute. */
function imageFiles(command: string, paths: string[]): string[] {
  if (paths.length === 0) fail(`${command}: give at least one --images PATH`);
  const files: string[] = [];
  for (const p of paths) {
    if (!existsSync(p)) fail(`${command}: ${p} does not exist`);
    if (statSync(p).isDirectory()) {
      const found = readdirSync(p).filter((f) => IMAGE_EXTENSIONS.test(f)).sort().map((f) => join(p, f));
      if (found.length === 0) fail(`${command}: ${p} holds no .png, .jpg or .jpeg files`);
      files.push(...found);
    } else files.push(p); // as given: the CSV names files the way the user did
  }
  return files;
}

/** Refuses --run with --model, and a --model that does not exist. */
function checkModelArgs(command: string, values: { run?: string; model?: string }): void {
  if (values.run && values.model) fail(`${command}: give --run DIR or --model FILE.zip, not both`);
  if (values.model && !existsSync(values.model)) fail(`${command}: ${values.model} does not exist`);
}

/** The trained models named by --run or --model, else the shipped bundle. */
function trainedModels(command: string, values: { run?: string; model?: string }): flannel.TrainedModels {
  checkModelArgs(command, values);
  if (values.run) return flannel.runFolderModels(resolve(values.run));
  if (values.model) return flannel.loadBundle(values.model);
  try {
    return flannel.loadBundle(flannel.SHIPPED_BUNDLE);
  } catch (err) {
    fail(
      `${command}: no --run or --model given, and the shipped weights cannot be used: ${
        (err as Error).message
      }`,
    );
  }
}

const MODEL_OPTIONS = {
  run: { type: "string" },
  model: { type: "string" },
  images: { type: "string", multiple: true },
  backend: { type: "string" },
  help: { type: "boolean" },
} as const;

/** parseArgs for predict and cam: `--images dir/*.png` arrives as `--images a.png b.png ...`, the paths after the first as positionals. */
function parseImageArgs(
  command: string,
  args: string[],
  options: Record<string, { type: "string"; default?: string }>,
): { values: Record<string, string | boolean | string[] | undefined>; paths: string[] } {
  const { values, positionals } = parseArgs({
    args,
    options: { ...MODEL_OPTIONS, ...options },
    strict: true,
    allowPositionals: true,
  });
  const images = (values as { images?: string[] }).images;
  if (positionals.length > 0 && !images) {
    fail(`${command}: ${positionals[0]} is not an option; images follow --images PATH`);
  }
  return { values, paths: [...(images ?? []), ...positionals] };
}

async function predict(args: string[]): Promise<void> {
  const { values, paths } = parseImageArgs("predict", args, {
    method: { type: "string", default: "FLANNEL" },
  });
  if (values.help) return console.log(HELP.predict);
  const files = imageFiles("predict", paths);
  const models = trainedModels("predict", values as { run?: string; model?: string });
  await fl.init({ backend: values.backend as fl.InitOptions["backend"] });
  const result = await flannel.predictFiles(models, files, { method: values.method as string });
  for (const s of result.skipped) console.error(`unreadable, left out: ${s.reason}`);
  process.stdout.write(flannel.predictionsCsv(result.files, result.probs));
}

async function cam(args: string[]): Promise<void> {
  const { values, paths } = parseImageArgs("cam", args, {
    image: { type: "string" },
    fold: { type: "string" },
    out: { type: "string" },
  });
  if (values.help) return console.log(HELP.cam);
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
    const png = await flannel.camFigure(models, file, { fold });
    const path = folder ? join(folder, `${basename(file).replace(/\.[^.]*$/, "")}.png`) : out!;
    fl.train.plots.savePNG(path, png);
    console.log(`wrote ${path}`);
  }
}

async function exportCommand(args: string[]): Promise<void> {
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
      backend: { type: "string" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  if (values.help) return console.log(HELP.export);
  if (!values.out && !values.onnx) fail("export: give --out NAME.zip (a bundle) or --onnx OUT.onnx");
  // Every argument is checked before anything is written.
  if (values.out && !values.run) fail("export: --out writes a bundle of an experiment: give --run DIR");
  const weights = values.weights.toUpperCase();
  if (weights !== "F32" && weights !== "F16") {
    fail(`export: --weights must be f32 or f16, not ${values.weights}`);
  }
  if (values.notes && !existsSync(values.notes)) fail(`export: ${values.notes} does not exist`);
  if (values.onnx) {
    const models = trainedModels("export", values);
    await fl.init({ backend: values.backend as fl.InitOptions["backend"] });
    const info = await flannel.exportOnnx(models, resolve(values.onnx), { method: values.method });
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

async function plan(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: EXPERIMENT_OPTIONS,
    strict: true,
  });
  if (values.help) return console.log(HELP.plan);
  if (values.resume) fail("plan: --resume is not an option of plan: every job resumes by itself");
  if (values.out && existsSync(join(values.out, "plan.json"))) {
    fail(`plan: ${join(values.out, "plan.json")} exists; use another --out`);
  }
  intOption(values, "stage2-epochs", 20, 1);
  const run = await prepareImageRun("plan", values);
  const { help: _help, ...rest } = values;
  const options = {
    ...rest,
    data: (values.data ?? []).map((d) => resolve(d)),
    out: run.out,
    ...(run.settings.pretrained ? { pretrained: run.settings.pretrained } : {}),
  };
  const jobs = flannel.planJobs(run.settings.archs, run.split.folds);
  flannel.savePlan(run.out, { format: flannel.PLAN_FORMAT, options, jobs });
  const last = jobs.length - 1;
  for (const j of jobs) {
    console.log(
      `job ${j.index}: ${
        j.kind === "stage1"
          ? `stage 1, ${j.arch} fold ${j.fold}`
          : `final: stage 2 and the report, after jobs 0-${last - 1}`
      } -> ${j.writes}`,
    );
  }
  console.log(
    `wrote ${join(run.out, "plan.json")}: ${last} stage-1 jobs (indices 0-${
      last - 1
    }) and the final job ${last}\n` +
      `run them: flannel job --run ${run.out} --index I (Slurm: sbatch --array=0-${
        last - 1
      } deploy/slurm.sbatch ${run.out}; ` +
      `then the final job; see deploy/)`,
  );
}

async function job(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      run: { type: "string" },
      index: { type: "string" },
      backend: { type: "string" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  if (values.help) return console.log(HELP.job);
  if (!values.run) fail("job: give --run DIR (a folder made by 'flannel plan')");
  const runDir = resolve(values.run);
  const thePlan = flannel.loadPlan(runDir);
  const index = flannel.jobIndex(thePlan, values.index, process.env);
  const theJob = thePlan.jobs[index];
  if (theJob.kind === "final") flannel.checkFinalReady(runDir, thePlan);
  const options = {
    ...thePlan.options,
    resume: true,
    backend: values.backend ?? thePlan.options.backend,
  } as ImageRunValues;
  let outcome: "ran" | "already done";
  try {
    outcome = await flannel.runJob(runDir, index, async () => {
      if (theJob.kind === "stage1") {
        const run = await prepareImageRun(`job ${index}`, options);
        await flannel.runStage1Folds({
          ...run,
          ...run.settings,
          ...run.progress,
          only: [theJob.arch],
          folds: [theJob.fold],
        });
      } else {
        await runImageExperiment(`job ${index}`, options, intOption(options, "stage2-epochs", 20, 1));
      }
    });
  } catch (err) {
    if (/is already running/.test((err as Error).message)) {
      console.error(`flannel: ${(err as Error).message}`);
      process.exit(3);
    }
    throw err;
  }
  console.log(outcome === "ran" ? `job ${index} done` : `job ${index} is already done; nothing to do`);
}

function status(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { run: { type: "string" }, json: { type: "boolean" }, help: { type: "boolean" } },
    strict: true,
  });
  if (values.help) return Promise.resolve(console.log(HELP.status));
  if (!values.run) fail("status: give --run DIR (a folder made by 'flannel plan')");
  const runDir = resolve(values.run);
  const states = flannel.jobStates(runDir, flannel.loadPlan(runDir));
  const rows = states.map(({ job: j, state, record }) => ({
    index: j.index,
    kind: j.kind,
    ...(j.kind === "stage1" ? { arch: j.arch, fold: j.fold } : {}),
    state,
    ...(record ? { seconds: Math.round(record.seconds), host: record.host } : {}),
    ...(record?.error && state === "failed" ? { error: record.error } : {}),
  }));
  if (values.json) console.log(JSON.stringify(rows));
  else {
    for (const r of rows) {
      const what = r.kind === "stage1" ? `${r.arch} fold ${r.fold}` : "final (stage 2, report)";
      const when = r.seconds !== undefined ? ` (${r.seconds} s on ${r.host})` : "";
      console.log(
        `${String(r.index).padStart(3)}  ${r.state.padEnd(8)} ${what}${when}${r.error ? `: ${r.error}` : ""}`,
      );
    }
    const count = (s: string) => rows.filter((r) => r.state === s).length;
    console.log(
      `${count("done")} done, ${count("running")} running, ${count("failed")} failed, ${
        count("pending")
      } pending`,
    );
  }
  process.exit(rows.every((r) => r.state === "done") ? 0 : 1);
}

const WEB_MODEL_HELP = `  --model FILE     a bundle written by 'flannel export' (default: the shipped one)
  --run DIR        an 'experiment' output folder instead (its bundle is made first, F32)
  --help`;

/**
 * The bundle a page serves: --model, or one exported from --run into a temporary folder, which `done`
 * removes (the page's files hold the model's bytes by then).
 */
async function webModel(
  command: string,
  values: { run?: string; model?: string },
): Promise<{ model: string | undefined; done: () => void }> {
  checkModelArgs(command, values);
  if (!values.run) return { model: values.model, done: () => {} };
  const dir = mkdtempSync(join(tmpdir(), "flannel-web-"));
  const done = () => rmSync(dir, { recursive: true, force: true });
  try {
    await flannel.exportBundle(resolve(values.run), join(dir, "model.zip"));
  } catch (err) {
    done();
    throw err;
  }
  return { model: join(dir, "model.zip"), done };
}

HELP.serve = `flannel serve: the models on a web page, classifying X-rays in the browser

Usage: deno task flannel serve [--model FILE.zip | --run DIR] [--port 8080] [--host 127.0.0.1]

Serves the page, its code and the model (nothing is uploaded: images are read and classified in the
browser, on WebGPU or WebAssembly) with the cross-origin isolation headers that WebAssembly threads need.
Open the printed address; ?backend=wasm or ?backend=webgpu forces a backend. Stop it with Ctrl-C.

Options:
  --port N         the port (default 8080; 0 picks a free one)
  --host NAME      the address to listen on (default 127.0.0.1: this machine only; browsers allow
                   WebGPU and threads only over https or on localhost)
${WEB_MODEL_HELP}`;

HELP["build-web"] = `flannel build-web: the web page as static files, for any web server

Usage: deno task flannel build-web --out DIR [--model FILE.zip | --run DIR]

Writes index.html, style.css, page.js, worker.js, model.zip and HEADERS.md (the headers a server should
send for WebAssembly threads) into DIR.

Options:
  --out DIR        the folder to write (created if missing)
${WEB_MODEL_HELP}`;

const WEB_OPTIONS = {
  model: { type: "string" },
  run: { type: "string" },
  help: { type: "boolean" },
} as const;

async function serve(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      ...WEB_OPTIONS,
      port: { type: "string", default: "8080" },
      host: { type: "string", default: "127.0.0.1" },
    },
    strict: true,
  });
  if (values.help) return console.log(HELP.serve);
  const port = intOption(values as Record<string, unknown>, "port", 8080, 0);
  if (port > 65535) fail(`serve: --port must be at most 65535, not ${port}`);
  const { model, done } = await webModel("serve", values);
  const { url, files } = await flannel.serveWebApp({ model, port, host: values.host }).finally(done);
  const size = (names: string[]) =>
    files.filter((f) => names.includes(f.name)).reduce((s, f) => s + f.bytes.length, 0);
  console.log(
    `flannel: serving ${url} (page ${
      (size(["index.html", "style.css", "page.js", "worker.js"]) / 1024).toFixed(0)
    } KiB, ` +
      `model ${(size([flannel.MODEL_FILE]) / 2 ** 20).toFixed(1)} MiB); Ctrl-C stops`,
  );
  await new Promise<never>(() => {}); // the server keeps the process alive until a signal ends it
}

async function buildWeb(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { ...WEB_OPTIONS, out: { type: "string" } }, strict: true });
  if (values.help) return console.log(HELP["build-web"]);
  if (!values.out) fail("build-web: give --out DIR");
  const { model, done } = await webModel("build-web", values);
  const files = await flannel.writeWebApp(resolve(values.out), { model }).finally(done);
  for (const f of files) console.log(`wrote ${join(values.out, f.name)} (${f.bytes.length} bytes)`);
}

const COMMANDS: Record<string, (args: string[]) => Promise<void>> = {
  demo,
  data,
  stage1,
  experiment,
  predict,
  cam,
  export: exportCommand,
  plan,
  job,
  status,
  serve,
  "build-web": buildWeb,
};

async function main(args: string[]): Promise<void> {
  // --fast-math applies to every command and to the child processes some of them start: as the variable.
  const argv = args.filter((a) => a !== "--fast-math");
  if (argv.length !== args.length) process.env.FLANNEL_FAST_MATH = "1";
  const [command, ...rest] = argv;
  if (!command || command === "help" || command === "--help" || command === "-h") {
    return console.log(HELP.main);
  }
  const run = COMMANDS[command];
  if (!run) fail(`unknown command ${JSON.stringify(command)}; run 'deno task flannel --help'`);
  if (STOPPABLE.has(command)) stopOnSignals();
  try {
    await run(rest);
  } catch (err) {
    if (stop.signal.aborted) {
      console.error(`flannel: ${(err as Error).message}`);
      process.exit(SIGNAL_EXIT_CODES[stop.signal.reason as StopSignal]);
    }
    fail((err as Error).message);
  }
}

await main(process.argv.slice(2));
process.exit(0);
