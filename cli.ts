// The command line: `deno task flannel <command>` or `bun run cli.ts <command>`, same behaviour. Each command
// is one module of src/cli/ (its help, options and work together); this file dispatches and handles signals.
import process from "node:process";
import { fail, stop } from "./src/cli/shared.ts";
import { demo } from "./src/cli/demo.ts";
import { data } from "./src/cli/data.ts";
import { stage1 } from "./src/cli/stage1.ts";
import { experiment } from "./src/cli/experiment.ts";
import { predict } from "./src/cli/predict.ts";
import { cam } from "./src/cli/cam.ts";
import { exportCommand } from "./src/cli/export.ts";
import { plan } from "./src/cli/plan.ts";
import { job } from "./src/cli/job.ts";
import { status } from "./src/cli/status.ts";
import { buildWeb, serve } from "./src/cli/web.ts";

const MAIN_HELP = `flannel: FLANNEL (focal-loss neural-network ensemble for COVID-19 detection) on WebGPU

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
longer the same bits in every runtime. Where the engine has no relaxed SIMD it says so and runs exact.`;

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
    return console.log(MAIN_HELP);
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
