// Training checkpoints: one safetensors file with the model's state dict under `model.<key>`, the
// optimizer's state under `optim.<key>` and the training metadata in `__metadata__`, every value a
// JSON-encoded string. Keys `checkpoint.*` of the metadata are the checkpoint's own (format, optimizer
// type and exact hyper-parameters); the rest is what the caller passed as `meta`.
import type { Module } from "../nn/module.ts";
import type { OptimizerState } from "../optim/optimizers.ts";
import {
  loadSafetensors,
  readSafetensorsMetadata,
  type SafetensorsInput,
  saveSafetensors,
} from "./safetensors.ts";
import type { Tensor } from "../autograd/tensor.ts";

/** The `checkpoint.format` metadata value that marks a file as this library's checkpoint, version 1. */
export const CHECKPOINT_FORMAT = "flannel-checkpoint/1";

/** What a checkpoint needs of an optimizer (fl.optim.Adam and SGD have it). */
export interface CheckpointOptimizer {
  /** Hyper-parameters (learning rate, betas, ...); saved exactly as JSON and restored on load. */
  readonly hyper: object;
  /** The parameters it updates; a checkpoint records their count and checks it on load. */
  readonly params: readonly Tensor[];
  /** The per-parameter state (moments, step counts, ...) as tensors by key. */
  stateDict(): Promise<OptimizerState>;
  /** Restores state from {@linkcode CheckpointOptimizer.stateDict}'s form; throws on a mismatch. */
  loadStateDict(record: OptimizerState): void;
}

/** What {@linkcode saveCheckpoint} writes. */
export interface SaveCheckpointOptions {
  /** The model whose state dict is saved under `model.<key>`. */
  model: Module;
  /** When given, its state is saved under `optim.<key>`, with its class name and hyper-parameters. */
  optimizer?: CheckpointOptimizer;
  /** Any JSON-serialisable values by key (arch, config, epoch, seed, metrics, ...). */
  meta?: Record<string, unknown>;
}

/** Writes model, optimizer state and metadata to `path` atomically. */
export async function saveCheckpoint(
  path: string,
  { model, optimizer, meta = {} }: SaveCheckpointOptions,
): Promise<void> {
  const record: Record<string, Tensor | SafetensorsInput> = {};
  for (const [k, t] of Object.entries(model.stateDict())) record[`model.${k}`] = t;
  const metadata: Record<string, string> = { "checkpoint.format": JSON.stringify(CHECKPOINT_FORMAT) };
  if (optimizer) {
    for (const [k, e] of Object.entries(await optimizer.stateDict())) record[`optim.${k}`] = e;
    metadata["checkpoint.optimizer"] = JSON.stringify({
      type: optimizer.constructor.name,
      params: optimizer.params.length,
      hyper: optimizer.hyper,
    });
  }
  for (const [k, v] of Object.entries(meta)) {
    if (k.startsWith("checkpoint.")) {
      throw new Error(`saveCheckpoint: metadata key ${JSON.stringify(k)} is reserved`);
    }
    let text: string | undefined;
    try {
      text = JSON.stringify(v);
    } catch (err) {
      throw new Error(
        `saveCheckpoint: metadata ${JSON.stringify(k)} is not JSON-serialisable (${(err as Error).message})`,
      );
    }
    if (text === undefined) {
      throw new Error(`saveCheckpoint: metadata ${JSON.stringify(k)} is not JSON-serialisable`);
    }
    setKey(metadata, k, text);
  }
  await saveSafetensors(path, record, metadata);
}

/** What {@linkcode loadCheckpoint} restores into. */
export interface LoadCheckpointOptions {
  /** Receives the saved weights; its state dict must match the file's exactly. */
  model: Module;
  /** When given, receives the saved optimizer state; it must be of the saved class over as many parameters. */
  optimizer?: CheckpointOptimizer;
}

/**
 * Restores a checkpoint into `model` (strict: the error of `loadStateDict` lists every mismatch) and, when
 * given, `optimizer` (which must be of the saved type, over the same parameter list). Returns the
 * caller's metadata, JSON-decoded (a value that is not JSON comes back as its string).
 */
export async function loadCheckpoint(
  path: string,
  { model, optimizer }: LoadCheckpointOptions,
): Promise<Record<string, unknown>> {
  const metadata = await readSafetensorsMetadata(path);
  const format = parseJson(metadata["checkpoint.format"]);
  if (format !== CHECKPOINT_FORMAT) {
    throw new Error(
      `loadCheckpoint: ${path} is not a checkpoint of this library (format ${
        JSON.stringify(format ?? null)
      })`,
    );
  }
  const tensors = await loadSafetensors(path);
  const modelDict: Record<string, SafetensorsInput> = {};
  const optimDict: OptimizerState = {};
  for (const [k, e] of Object.entries(tensors)) {
    if (k.startsWith("model.")) modelDict[k.slice(6)] = e;
    else if (k.startsWith("optim.")) optimDict[k.slice(6)] = e;
    else throw new Error(`loadCheckpoint: unexpected tensor ${JSON.stringify(k)} in ${path}`);
  }
  let saved: { type?: string; params?: number; hyper?: Record<string, unknown> } | undefined;
  if (optimizer) {
    saved = parseJson(metadata["checkpoint.optimizer"]) as typeof saved;
    if (!saved || typeof saved !== "object") {
      throw new Error(`loadCheckpoint: ${path} holds no optimizer state`);
    }
    const type = optimizer.constructor.name;
    if (saved.type !== type) {
      throw new Error(`loadCheckpoint: ${path} holds ${saved.type} state, not ${type}`);
    }
    if (saved.params !== optimizer.params.length) {
      throw new Error(
        `loadCheckpoint: ${path} holds optimizer state for ${saved.params} parameters, the optimizer has ${optimizer.params.length}`,
      );
    }
  }
  model.loadStateDict(modelDict, { strict: true });
  if (optimizer && saved) {
    optimizer.loadStateDict(optimDict);
    // The file's hyper-parameters are float32; the metadata holds them exactly.
    const h = optimizer.hyper as Record<string, unknown>;
    for (const [k, v] of Object.entries(saved.hyper ?? {})) {
      if (k in h && typeof v === typeof h[k]) h[k] = v;
    }
  }
  const meta: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(metadata)) {
    if (!k.startsWith("checkpoint.")) setKey(meta, k, parseJson(v, true));
  }
  return meta;
}

function setKey<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function parseJson(text: string | undefined, fallbackToText = false): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return fallbackToText ? text : undefined;
  }
}
