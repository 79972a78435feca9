// What the tests that run child processes share: the CLI in this runtime (jobs.test.ts, interrupt.test.ts,
// ...), waiting for a condition on its output and reading the results.json it wrote; and Debian's Python,
// whose torch, torchvision and onnx are the independent references of some tests.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import process from "node:process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { AssertionError } from "./harness.ts";

/** The repository's root. */
export const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
/** Whether this runtime is Bun (else Deno). */
export const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
/** Debian's Python (python3-torch, python3-torchvision, python3-onnx), not a pyenv one. */
export const PYTHON = "/usr/bin/python3";

/** Whether {@link PYTHON} imports every module of `modules` ("torch, torchvision"). */
export function pythonImports(modules: string): boolean {
  return spawnSync(PYTHON, ["-c", `import ${modules}`]).status === 0;
}
/** What runs a script in this runtime: `bun run` or `deno run -A`. */
export const runtimeArgs = isBun ? ["run"] : ["run", "-A"];

/** The small real data set the CLI tests run on. */
export const chestxray64 = resolve(repo, "..", "shared", "data", "chestxray64");

/**
 * `experiment` (and `plan`) options of a small run on chestxray64: the tiny ResNet-152 and VGG19-bn, two
 * folds, 3 epochs, `perClass` images of each class, 2 stage-2 epochs.
 */
export function smallRunOptions(perClass: number): string[] {
  return [
    ...["--data", chestxray64, "--archs", "resnet152,vgg19_bn", "--folds", "2", "--epochs", "3"],
    ...["--subsample", ["covid", "viral", "bacterial", "normal"].map((c) => `${c}=${perClass}`).join(",")],
    ...["--stage2-epochs", "2"],
  ];
}

/** A CLI process (`cli.ts args`) in this runtime; `done` resolves with its exit code or signal and output. */
export function startCli(args: string[], env: Record<string, string | undefined> = process.env) {
  const child: ChildProcess = spawn(process.execPath, [...runtimeArgs, join(repo, "cli.ts"), ...args], {
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const done = new Promise<{ code: number | null; signal: string | null; output: string }>((ok) =>
    child.on("close", (code, signal) => ok({ code, signal, output }))
  );
  return { child, done, output: () => output };
}

/** Waits until `cond()` holds (polling every 5 ms); fails naming `what` after `seconds`. */
export async function until(cond: () => boolean, what: string, seconds = 120): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > seconds * 1000) throw new AssertionError(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A run's results.json without its machine block (data paths, adapter, elapsed time). */
export function resultsOf(dir: string): unknown {
  const r = JSON.parse(readFileSync(join(dir, "results.json"), "utf8"));
  delete r.machine;
  return r;
}
