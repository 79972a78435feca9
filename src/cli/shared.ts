// What several commands share: option parsing, the image runs' data loading and split, the trained models' flags, and the stop signal.
import process from "node:process";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { existsSync, readdirSync, statSync } from "node:fs";
import * as fl from "../../mod.ts";
import * as flannel from "../flannel/mod.ts";

/**
 * SIGINT and SIGTERM (Ctrl-C, a scheduler's preemption) abort `stop`: training ends at its next step, after
 * the file being written, if any, is whole (file writes are synchronous and atomic, so a handler never runs in
 * the middle of one), and the process exits with 128 + the signal's number. A second signal ends it at once;
 * every file is still whole or absent.
 */
export const stop = new AbortController();

export function fail(message: string): never {
  console.error(`flannel: ${message}`);
  process.exit(2);
}

export function intOption(
  values: Record<string, unknown>,
  key: string,
  fallback: number,
  min: number,
): number {
  const raw = values[key];
  if (raw === undefined) return fallback;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min) {
    fail(`--${key} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  }
  return v;
}

export function numberOption(values: Record<string, unknown>, key: string, fallback: number): number {
  const raw = values[key];
  if (raw === undefined) return fallback;
  const v = Number(raw);
  if (!(Number.isFinite(v) && v > 0)) fail(`--${key} must be a positive number, got ${JSON.stringify(raw)}`);
  return v;
}

export function parseSubsample(spec: string): Record<string, number> {
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
export function onOffOption(
  command: string,
  name: string,
  value: string | undefined,
  fallback: boolean,
): boolean {
  if (value === undefined) return fallback;
  if (value === "on" || value === "off") return value === "on";
  return fail(`${command}: --${name} must be on or off, got ${JSON.stringify(value)}`);
}

/** --recipe: shared (default) or own. */
export function recipeOption(command: string, value: string | undefined): "shared" | "own" {
  if (value === undefined || value === "shared" || value === "own") return value ?? "shared";
  return fail(`${command}: --recipe must be shared or own, got ${JSON.stringify(value)}`);
}

/** --augment: paper, basic (default) or none. */
export function augmentOption(command: string, value: string | undefined): fl.data.AugmentMode {
  try {
    return fl.data.checkAugmentMode(value ?? "basic", `${command}: --augment`);
  } catch (err) {
    return fail((err as Error).message);
  }
}

export function precisionOption(command: string, value: string | undefined): "f32" | "f16" {
  if (value === undefined || value === "f32" || value === "f16") return value ?? "f32";
  return fail(`${command}: --precision must be f32 or f16, got ${JSON.stringify(value)}`);
}

/** The --backend option's description, after its name, in every command's help. */
export const BACKEND_HELP = `auto | webgpu | wasm (default: $FLANNEL_BACKEND, else auto:
                    WebGPU on a GPU, else WebAssembly: also where the only
                    adapter is a CPU implementation such as lavapipe)`;

export const IMAGE_RUN_HELP = `Options:
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
  --lung-crop       crop every image to its lung fields before resizing (found from its intensity
                    profiles: fl.data.lungFieldBox; a mitigation of source shortcuts: markers, labels
                    and framing sit outside the lungs; predict and cam repeat it)
  --balance-sources on|off
                    on (default): negatives balanced by source: in every source with covid and non-covid
                    training images, the non-covid ones are drawn again (with replacement) until they
                    match its covid images, so that the source alone cannot tell covid apart (a
                    mitigation of source shortcuts; nothing changes where no source mixes the classes);
                    off: every training image once an epoch
  --backend NAME    ${BACKEND_HELP}`;

// Options that `stage1` and `experiment` share.
export const IMAGE_RUN_OPTIONS = {
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
  "lung-crop": { type: "boolean" },
  "balance-sources": { type: "string" },
  recipe: { type: "string" },
  augment: { type: "string" },
  accumulate: { type: "string" },
  precision: { type: "string" },
  backend: { type: "string" },
  help: { type: "boolean" },
} as const;

// `experiment`'s options, which `plan` takes too.
export const EXPERIMENT_OPTIONS = { ...IMAGE_RUN_OPTIONS, "stage2-epochs": { type: "string" } } as const;

/** The help of {@link EXPERIMENT_OPTIONS} (`experiment` and `plan`). */
export const EXPERIMENT_HELP = `${IMAGE_RUN_HELP}
  --stage2-epochs N stage-2 epochs per method and fold (default 20)
  --help`;

export type ImageRunValues = {
  [K in keyof typeof IMAGE_RUN_OPTIONS]?: (typeof IMAGE_RUN_OPTIONS)[K] extends { multiple: true } ? string[]
    : (typeof IMAGE_RUN_OPTIONS)[K] extends { type: "boolean" } ? boolean
    : string;
};

/**
 * What stage1 and experiment do first: read the options, load and decode the data (unreadable files
 * reported and left out), make the split or reload it from OUT/split.json, and the progress printers.
 */
export async function prepareImageRun(command: string, values: ImageRunValues) {
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
    lungCrop: values["lung-crop"] ?? false,
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
  const cache = new fl.data.ImageCache(resize, { equalize: settings.equalize, lungCrop: settings.lungCrop });
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

export const IMAGE_EXTENSIONS = /\.(png|jpe?g)$/i;

/** The image files of `paths` (files as given, folders' PNG and JPEG files sorted), absolute. */
export function imageFiles(command: string, paths: string[]): string[] {
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
export function checkModelArgs(command: string, values: { run?: string; model?: string }): void {
  if (values.run && values.model) fail(`${command}: give --run DIR or --model FILE.zip, not both`);
  if (values.model && !existsSync(values.model)) fail(`${command}: ${values.model} does not exist`);
}

/** The trained models named by --run or --model, else the shipped bundle. */
export function trainedModels(
  command: string,
  values: { run?: string; model?: string },
): flannel.TrainedModels {
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

export const MODEL_OPTIONS = {
  run: { type: "string" },
  model: { type: "string" },
  images: { type: "string", multiple: true },
  backend: { type: "string" },
  help: { type: "boolean" },
} as const;

/** parseArgs for predict and cam: `--images dir/*.png` arrives as `--images a.png b.png ...`, the paths after the first as positionals. */
export function parseImageArgs(
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

/** The --calibration option of predict, cam and export, checked (temperature or none). */
export function calibrationOption(command: string, values: Record<string, unknown>): flannel.Calibration {
  const calibration = values.calibration as flannel.Calibration;
  if (!flannel.CALIBRATIONS.includes(calibration)) {
    fail(`${command}: --calibration must be ${flannel.CALIBRATIONS.join(" or ")}, not ${calibration}`);
  }
  return calibration;
}
