// `flannel plan`: the experiment as independent jobs for a scheduler.
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { existsSync } from "node:fs";
import * as flannel from "../flannel/mod.ts";
import { EXPERIMENT_HELP, EXPERIMENT_OPTIONS, fail, intOption, prepareImageRun } from "./shared.ts";

/** `flannel plan --help`. */
export const HELP =
  `flannel plan: the experiment as independent jobs for a scheduler (Slurm arrays, Kubernetes Indexed Jobs)

Usage: deno task flannel plan --data DIR [--data DIR...] --out DIR [experiment options]

Loads and decodes the data, makes the split (OUT/split.json) and writes OUT/plan.json: the options and the
jobs, one per (learner, fold) in the order 'experiment' runs them (jobs 0..N-1), then the final job N
(stage 2, results.json, report.md, figures) that needs them all. Run each job with 'flannel job --run OUT
--index I' on any machine that sees OUT (a shared folder); 'flannel status --run OUT' shows where they stand.
The jobs together give the same results.json as 'experiment' with the same options. Templates: deploy/.

${EXPERIMENT_HELP}`;

export async function plan(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: EXPERIMENT_OPTIONS,
    strict: true,
  });
  if (values.help) return console.log(HELP);
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
