// `flannel job`: one job of a plan.
import process from "node:process";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import * as flannel from "../flannel/mod.ts";
import { runImageExperiment } from "./experiment.ts";
import { fail, type ImageRunValues, intOption, prepareImageRun } from "./shared.ts";

/** `flannel job --help`. */
export const HELP = `flannel job: run one job of a plan (see 'flannel plan')

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
  --help`;

export async function job(args: string[]): Promise<void> {
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
  if (values.help) return console.log(HELP);
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
