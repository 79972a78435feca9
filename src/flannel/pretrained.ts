// Pretrained (ImageNet) weights for the learners, from a folder such as torchvision's hub cache
// (~/.cache/torch/hub/checkpoints): its own file names (resnet152-394f9c45.pth: the name ends with the first
// hex digits of the file's SHA-256, which is checked as torch.hub checks it), or <arch>.pth, <arch>.pt or
// <arch>.safetensors. PyTorch files are read by fl.io.loadTorch, with no Python. What torchvision itself
// does when it loads its files is done here too: DenseNet's old key names are renamed, and Inception's
// transform_input (on in every torchvision checkpoint, off in FLANNEL's learner) is folded into the weights.
import {
  basename,
  closeSync,
  existsSync,
  extname,
  join,
  openSync,
  readdirSync,
  readSync,
  sha256,
  statSync,
} from "../platform/runtime.ts";
import * as fl from "../../mod.ts";
import { isLearnerArch, type Stage1Arch } from "./learners.ts";

// torchvision's file name stems of each learner's ImageNet weights (COVID-Net has none).
const TORCHVISION_STEMS: Partial<Record<Stage1Arch, readonly string[]>> = {
  inception_v3: ["inception_v3_google"],
  vgg19_bn: ["vgg19_bn"],
  resnext101_32x8d: ["resnext101_32x8d"],
  resnet152: ["resnet152"],
  densenet161: ["densenet161"],
  aicovid: ["efficientnet_b4_rwightman", "efficientnet_b4"],
};
const OWN_NAME_EXTENSIONS = [".safetensors", ".pth", ".pt"];

/** A hub-cache name: `<stem>-<hex digits of the SHA-256>.pth`; null for other names. */
function hubName(file: string): { stem: string; hash: string } | null {
  const m = /^(.+)-([0-9a-f]{6,64})\.pth$/.exec(file);
  return m ? { stem: m[1], hash: m[2] } : null;
}

/**
 * The file in `dir` that `arch` starts from: `<arch>.safetensors`, `<arch>.pth` or `<arch>.pt` (in that
 * order), else torchvision's own name for it (resnet152-394f9c45.pth, inception_v3_google-0cc3c7bd.pth,
 * efficientnet_b4_rwightman-<hash>.pth for AI-Covid, ...); null when there is none.
 *
 * @throws {Error} when several torchvision-named files fit `arch` (two versions of its weights).
 */
export function findPretrained(dir: string, arch: Stage1Arch): string | null {
  for (const ext of OWN_NAME_EXTENSIONS) {
    const path = join(dir, arch + ext);
    if (existsSync(path)) return path;
  }
  const stems = TORCHVISION_STEMS[arch] ?? [];
  const hub = readdirSync(dir).filter((f) => stems.includes(hubName(f)?.stem ?? "")).sort();
  if (hub.length > 1) {
    throw new Error(
      `pretrained weights: ${hub.length} files in ${dir} fit ${arch} (${
        hub.join(", ")
      }); keep one, or name the one to use ${arch}.pth`,
    );
  }
  return hub.length === 1 ? join(dir, hub[0]) : null;
}

/**
 * The pretrained file of every learner and baseline of `archs` in `dir` ({@link findPretrained}); a baseline
 * without one (COVID-Net never has one) is left out and trains from its initialisation.
 *
 * @throws {Error} before anything trains: `dir` is not a folder, or a learner has no file (the message lists
 * the names looked for).
 */
export function pretrainedFiles(dir: string, archs: readonly Stage1Arch[]): Map<Stage1Arch, string> {
  if (!fl.io.isFolder(dir)) throw new Error(`pretrained weights: ${dir} is not a folder`);
  const found = new Map<Stage1Arch, string>();
  const missing: string[] = [];
  for (const arch of archs) {
    const path = findPretrained(dir, arch);
    if (path) found.set(arch, path);
    else if (isLearnerArch(arch)) {
      const names = [
        ...OWN_NAME_EXTENSIONS.map((e) => arch + e),
        ...(TORCHVISION_STEMS[arch] ?? []).map((s) => `${s}-<hash>.pth`),
      ];
      missing.push(`${arch} (${names.join(", ")})`);
    }
  }
  if (missing.length > 0) {
    throw new Error(`pretrained weights: ${dir} has no file for ${missing.join("; ")}`);
  }
  return found;
}

// Files whose hash was checked (path, size and modification time): stage 1 loads a learner's file once per fold.
const checkedFiles = new Set<string>();

/** Checks that the SHA-256 of a hub-named file starts with the hex digits of its name, as torch.hub does. */
function checkHubHash(path: string): void {
  const name = hubName(basename(path));
  if (!name) return;
  const { size, mtimeMs } = statSync(path);
  const stamp = `${path}\0${size}\0${mtimeMs}`;
  if (checkedFiles.has(stamp)) return;
  const hash = sha256(), chunk = new Uint8Array(8 << 20), fd = openSync(path, "r");
  try {
    for (let at = 0, n; (n = readSync(fd, chunk, 0, chunk.length, at)) > 0; at += n) {
      hash.update(chunk.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  const digest = hash.hex();
  if (!digest.startsWith(name.hash)) {
    throw new Error(
      `pretrained weights: ${path} is damaged: its SHA-256 begins ${
        digest.slice(0, name.hash.length)
      }, its name says ${name.hash} (an interrupted download? fetch it again)`,
    );
  }
  checkedFiles.add(stamp);
}

/** What {@link loadPretrained} did. */
export interface PretrainedLoad {
  /** Tensors loaded into the model. */
  loaded: number;
  /** The model's tensors that keep their initialisation: its head's and batch norms' counters, by name. */
  kept: string[];
  /** The file's tensors that went unused, by name: a head of another shape (ImageNet's 1000 classes), an aux head. */
  unused: string[];
  /** One line per adaptation made: keys renamed, a prefix stripped, transform_input folded. */
  notes: string[];
}

/** Options of {@link loadPretrained}. */
export interface LoadPretrainedOptions {
  /**
   * For an Inception3 built without transform_input (FLANNEL's learner): fold torchvision's transform_input
   * into the file's weights (fl.models.foldTransformInput), since every torchvision Inception checkpoint
   * expects it (default true; false for a file of a model trained without it).
   */
  foldTransformInput?: boolean;
}

const describe = (name: string, shape: readonly number[]) => `${name} [${shape.join(", ")}]`;

/**
 * Starts `model` from pretrained weights: a safetensors file, or a PyTorch file (`torch.save`, PyTorch 1.6 or
 * newer; a torchvision checkpoint) read by fl.io.loadTorch. DataParallel's `module.` prefix is stripped,
 * torchvision's old DenseNet keys are renamed and Inception's transform_input is folded (see
 * {@link LoadPretrainedOptions}). Every tensor of the model must be loaded except those of its head (its last
 * child module: the 1000-class ImageNet head against FLANNEL's 4 classes) and batch norms' counters; a
 * hub-named file's SHA-256 is checked against its name first.
 *
 * @throws {Error} when `path` does not exist, is damaged, or does not fit the model (names the tensors).
 */
export async function loadPretrained(
  model: fl.nn.Module,
  path: string,
  options: LoadPretrainedOptions = {},
): Promise<PretrainedLoad> {
  if (!existsSync(path)) throw new Error(`pretrained weights: ${path} does not exist`);
  checkHubHash(path);
  const notes: string[] = [];
  let dict =
    (extname(path) === ".safetensors"
      ? await fl.io.loadSafetensors(path)
      : await fl.io.loadTorch(path)) as Record<string, fl.nn.TensorRecord>;
  const keys = Object.keys(dict);
  if (keys.length > 0 && keys.every((k) => k.startsWith("module."))) {
    dict = Object.fromEntries(keys.map((k) => [k.slice("module.".length), dict[k]]));
    notes.push("stripped DataParallel's 'module.' prefix");
  }
  if (model instanceof fl.models.DenseNet) {
    const { dict: renamed, renamed: count } = fl.models.renameLegacyDenseNetKeys(dict);
    dict = renamed;
    if (count > 0) {
      notes.push(`renamed ${count} keys of torchvision's old DenseNet pattern (norm.1 -> norm1)`);
    }
  }
  if (
    model instanceof fl.models.Inception3 && !model.config.transformInput &&
    (options.foldTransformInput ?? true)
  ) {
    dict = fl.models.foldTransformInput(dict);
    notes.push("folded torchvision's transform_input into Conv2d_1a_3x3");
  }
  const own = model.stateDict();
  const fits = Object.entries(dict).filter(([k, v]) => k in own && fl.nn.shapeFits(v.shape, own[k]));
  const loadedKeys = new Set(fits.map(([k]) => k));
  const head = model.namedChildren().at(-1)?.[0] ?? "";
  const misfits = Object.keys(own).filter((k) =>
    !loadedKeys.has(k) && !k.endsWith("num_batches_tracked") && !k.startsWith(`${head}.`)
  );
  if (misfits.length > 0) {
    const shown = misfits.slice(0, 3).map((k) =>
      `${describe(k, own[k].shape)}: ${
        dict[k] ? `[${dict[k].shape.join(", ")}] in the file` : "not in the file"
      }`
    );
    throw new Error(
      `pretrained weights: ${path} does not fit the model (another architecture?): ${misfits.length} of its ${
        Object.keys(own).length
      } tensors are missing or of another shape: ${shown.join("; ")}${misfits.length > 3 ? "; ..." : ""}`,
    );
  }
  model.loadStateDict(Object.fromEntries(fits), { strict: false });
  return {
    loaded: fits.length,
    kept: Object.keys(own).filter((k) => !loadedKeys.has(k)),
    unused: Object.keys(dict).filter((k) => !loadedKeys.has(k)).map((k) => describe(k, dict[k].shape)),
    notes,
  };
}

/** The line stage 1 prints for a learner started from `path`: what was loaded, adapted and left out. */
export function pretrainedMessage(arch: Stage1Arch, path: string, load: PretrainedLoad): string {
  const listed = (names: string[]) =>
    names.length <= 4 ? names.join(", ") : `${names.slice(0, 3).join(", ")} and ${names.length - 3} more`;
  const fresh = load.kept.filter((k) => !k.endsWith("num_batches_tracked"));
  return [
    `${arch}: ${load.loaded} tensors from ${path}`,
    ...load.notes,
    load.unused.length > 0 && `dropped from the file: ${listed(load.unused)}`,
    fresh.length > 0 && `fresh head: ${listed(fresh)}`,
  ].filter(Boolean).join("; ");
}
