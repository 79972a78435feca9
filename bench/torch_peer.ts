// The PyTorch CPU peer of the stage-1 benches (bench/stage1.ts, bench/peers.ts): bench/stage1_torch.py run
// with Debian's python3-torch on the same learners, in the same run.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import process from "node:process";

/** One learner's medians from bench/stage1_torch.py (train_ms null with inferenceOnly). */
export interface TorchRow {
  arch: string;
  train_ms: number | null;
  inference_ms: number;
}

/** What the peer measured: PyTorch's version, its threads and one row per learner. */
export interface TorchPeer {
  version: string;
  threads: number;
  rows: TorchRow[];
}

/** How the peer runs: the learners' size, crop, batch and measured steps. */
export interface TorchPeerOptions {
  scale: "tiny" | "full";
  crop: number;
  batch: number;
  steps: number;
  /** Skip the train step (bench/peers.ts). */
  inferenceOnly?: boolean;
}

const PYTHON = "/usr/bin/python3";
const SCRIPT = fileURLToPath(new URL("./stage1_torch.py", import.meta.url));

/** PyTorch's version, or null (said on stdout) where Debian's python3-torch is not installed. */
function torchVersion(): string | null {
  const probe = spawnSync(PYTHON, ["-c", "import torch, torchvision; print(torch.__version__)"], {
    encoding: "utf8",
  });
  if (probe.status === 0) return probe.stdout.trim();
  console.log("\n(no PyTorch peer: Debian's python3-torch and python3-torchvision are not installed)");
  return null;
}

/** Runs bench/stage1_torch.py; its JSON lines, or an error message. */
function runPeer(args: string[], extraEnv: Record<string, string> = {}): unknown[] | { error: string } {
  // OpenBLAS's tuning variables of this machine slow PyTorch down; unset for the peer alone.
  const env: Record<string, string | undefined> = { ...process.env, ...extraEnv };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const r = spawnSync(PYTHON, [SCRIPT, ...args], { encoding: "utf8", env, maxBuffer: 1 << 26 });
  if (r.status !== 0) return { error: `PyTorch peer failed: ${r.stderr.trim().split("\n").pop()}` };
  return r.stdout.trim().split("\n").map((l) => JSON.parse(l));
}

/**
 * Runs bench/stage1_torch.py on `archs`; null where PyTorch is not installed (said on stdout), or an error
 * message where the peer failed.
 */
export function torchPeer(archs: string[], o: TorchPeerOptions): TorchPeer | null | { error: string } {
  const version = torchVersion();
  if (version === null) return null;
  console.log(
    `\nPyTorch peer: ${archs.join(", ")} (${o.scale === "full" ? "tens of seconds" : "seconds"} each)`,
  );
  const rows = runPeer([
    ...["--scale", o.scale, "--crop", String(o.crop), "--batch", String(o.batch), "--steps", String(o.steps)],
    ...(o.inferenceOnly ? ["--inference-only"] : []),
    ...archs,
  ]);
  if ("error" in rows) return rows;
  const typed = rows as (TorchRow & { threads: number })[];
  return { version, threads: typed[0]?.threads ?? 0, rows: typed };
}

/** PyTorch's peak memory of one train step (bench/stage1_torch.py --memory). */
export interface TorchMemory {
  /** The resident high-water mark of the step over the process's size before the model was built. */
  peak_bytes: number;
  /** That step's wall time. */
  step_ms: number;
}

/**
 * PyTorch's peak memory of a train step of `arch` at `batch` images in `parts` micro-batches, in a process of
 * its own; null where PyTorch is not installed, or an error message.
 */
export function torchMemoryPeer(
  arch: string,
  o: { scale: "tiny" | "full"; crop: number; batch: number; parts: number },
): TorchMemory | null | { error: string } {
  if (torchVersion() === null) return null;
  const rows = runPeer(
    [
      "--scale",
      o.scale,
      "--crop",
      String(o.crop),
      "--batch",
      String(o.batch),
      "--memory",
      String(o.parts),
      arch,
    ],
    // large blocks straight from mmap: a freed tensor leaves the resident set at once (see the script)
    { MALLOC_MMAP_THRESHOLD_: "65536" },
  );
  return "error" in rows ? rows : rows[0] as TorchMemory;
}
