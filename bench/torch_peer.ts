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

/**
 * Runs bench/stage1_torch.py on `archs`; null where PyTorch is not installed (said on stdout), or an error
 * message where the peer failed.
 */
export function torchPeer(archs: string[], o: TorchPeerOptions): TorchPeer | null | { error: string } {
  const python = "/usr/bin/python3";
  const probe = spawnSync(python, ["-c", "import torch, torchvision; print(torch.__version__)"], {
    encoding: "utf8",
  });
  if (probe.status !== 0) {
    console.log("\n(no PyTorch peer: Debian's python3-torch and python3-torchvision are not installed)");
    return null;
  }
  // OpenBLAS's tuning variables of this machine slow PyTorch down; unset for the peer alone.
  const env: Record<string, string | undefined> = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const script = fileURLToPath(new URL("./stage1_torch.py", import.meta.url));
  console.log(
    `\nPyTorch peer: ${archs.join(", ")} (${o.scale === "full" ? "tens of seconds" : "seconds"} each)`,
  );
  const r = spawnSync(
    python,
    [
      script,
      ...[
        "--scale",
        o.scale,
        "--crop",
        String(o.crop),
        "--batch",
        String(o.batch),
        "--steps",
        String(o.steps),
      ],
      ...(o.inferenceOnly ? ["--inference-only"] : []),
      ...archs,
    ],
    { encoding: "utf8", env, maxBuffer: 1 << 26 },
  );
  if (r.status !== 0) return { error: `PyTorch peer failed: ${r.stderr.trim().split("\n").pop()}` };
  const rows = r.stdout.trim().split("\n").map((l) => JSON.parse(l) as TorchRow & { threads: number });
  return { version: probe.stdout.trim(), threads: rows[0]?.threads ?? 0, rows };
}
