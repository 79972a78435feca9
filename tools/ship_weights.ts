// The shipped weights, reproducible by one command: `deno task weights [--data DIR] [--out RUN_DIR]`.
// Trains the FLANNEL experiment with the settings below on ../shared/data/chestxray (a rerun continues the
// run folder: finished learner/fold pairs are kept), then writes weights/flannel-chestxray-tiny.zip (F16) with
// weights/MODEL_CARD_NOTES.md in its model card. The settings are stated once, here; weights/README.md quotes
// them and the scores of the run that made the committed file.
import { spawnSync } from "node:child_process";
import { statSync } from "node:fs";
import process from "node:process";
import { parseArgs } from "node:util";

/** The experiment's options: five tiny learners, 12 epochs (the kept one chosen on each fold's own share). */
export const SHIPPED_EXPERIMENT = [
  "--archs",
  "inception_v3,vgg19_bn,resnext101_32x8d,resnet152,densenet161",
  "--epochs",
  "12",
  "--augment",
  "paper",
  "--size",
  "64",
  "--seed",
  "0",
];

/** Where the bundle goes and the package's budget for it. */
const BUNDLE = "weights/flannel-chestxray-tiny.zip", BUDGET_BYTES = 10 * 2 ** 20;

function run(args: string[]): void {
  console.log(`$ deno run -A cli.ts ${args.join(" ")}`);
  const child = spawnSync(process.execPath, ["run", "-A", "cli.ts", ...args], { stdio: "inherit" });
  if (child.status !== 0) {
    throw new Error(`weights: 'cli.ts ${args[0]}' failed (exit ${child.status ?? child.signal})`);
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      data: { type: "string", default: "../shared/data/chestxray" },
      out: { type: "string", default: "runs/shipped" },
    },
  });
  run(["experiment", "--data", values.data!, "--out", values.out!, ...SHIPPED_EXPERIMENT, "--resume"]);
  run([
    "export",
    "--run",
    values.out!,
    "--out",
    BUNDLE,
    "--weights",
    "f16",
    "--notes",
    "weights/MODEL_CARD_NOTES.md",
  ]);
  const bytes = statSync(BUNDLE).size;
  if (bytes > BUDGET_BYTES) {
    throw new Error(
      `weights: ${BUNDLE} is ${(bytes / 2 ** 20).toFixed(1)} MiB, over the package's 10 MiB budget`,
    );
  }
  console.log(`${BUNDLE}: ${(bytes / 2 ** 20).toFixed(1)} MiB (budget 10 MiB)`);
}
