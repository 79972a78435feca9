// Scale-out: the experiment as a plan of jobs (flannel plan / job / status), simulated as a scheduler would run
// them: the stage-1 jobs started in parallel, a second copy of a running job refused, one job killed (SIGKILL)
// mid-training and restarted, the final job refused until stage 1 is done; then results.json equal to the one
// process `experiment` with the same options. Child processes run on the WebAssembly backend (fast here).
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import process from "node:process";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as flannel from "../src/flannel/mod.ts";
import { assert, assertEquals, AssertionError, assertThrows, test } from "./harness.ts";
import {
  chestxray64,
  repo,
  resultsOf,
  runtimeArgs,
  smallRunOptions,
  startCli,
  until,
} from "./cli_children.ts";

const data = chestxray64;
const tmp = mkdtempSync(join(tmpdir(), "fl-jobs-"));
const env = { ...process.env, FLANNEL_BACKEND: "wasm" };
const OPTIONS = smallRunOptions(20);

function cli(...args: string[]): string {
  return execFileSync(process.execPath, [...runtimeArgs, join(repo, "cli.ts"), ...args], {
    encoding: "utf8",
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** A CLI process on the WebAssembly backend (with `extraEnv`). */
const start = (args: string[], extraEnv: Record<string, string> = {}) =>
  startCli(args, { ...env, ...extraEnv });

test("jobs: a plan run as parallel jobs, with a duplicate, a kill -9 and a restart, equals the one-process experiment", async () => {
  if (!existsSync(join(data, "labels.csv"))) throw new AssertionError(`test data missing: ${data}`);
  const run = join(tmp, "plan");
  const planned = cli("plan", ...OPTIONS, "--out", run);
  assert(/wrote .*plan\.json: 4 stage-1 jobs \(indices 0-3\) and the final job 4/.test(planned), planned);
  const plan = flannel.loadPlan(run);
  assertEquals(
    plan.jobs.map((j) => (j.kind === "stage1" ? `${j.arch}/${j.fold}` : j.kind)),
    ["resnet152/0", "resnet152/1", "vgg19_bn/0", "vgg19_bn/1", "final"],
  );
  assert(/plan\.json exists; use another --out/.test(cliErr(["plan", ...OPTIONS, "--out", run])));

  // the final job first: refused, naming what it waits for
  assert(
    /needs every stage-1 job done; not yet: 0 \(pending\), 1 \(pending\), 2 \(pending\), 3 \(pending\)/.test(
      cliErr(["job", "--run", run, "--index", "4"]),
    ),
  );
  // the stage-1 jobs in parallel, the index from Slurm's or Kubernetes' variable as an array would set it
  const jobs = [0, 1, 2, 3].map((i) =>
    start(
      ["job", "--run", run],
      i % 2 ? { SLURM_ARRAY_TASK_ID: String(i) } : { JOB_COMPLETION_INDEX: String(i) },
    )
  );
  // a scheduler's retry of job 1 while it runs: refused with status 3, nothing touched
  await until(() => existsSync(join(run, "jobs", "1.lock")), "job 1's lock");
  const duplicate = await start(["job", "--run", run, "--index", "1"]).done;
  assertEquals(duplicate.code, 3, duplicate.output);
  assert(
    /job 1 is already running \(pid \d+ on .*\); not starting a second copy/.test(duplicate.output),
    duplicate.output,
  );
  // kill -9 job 2 once its first checkpoint is written, before it finishes
  const checkpoint = join(flannel.stage1FoldDir(run, "vgg19_bn", 0), "checkpoint.safetensors");
  await until(() => existsSync(checkpoint), "job 2's first checkpoint");
  jobs[2].child.kill("SIGKILL");
  const killed = await jobs[2].done;
  assertEquals(killed.signal, "SIGKILL");
  for (const i of [0, 1, 3]) {
    const r = await jobs[i].done;
    assertEquals(r.code, 0, r.output);
  }
  assert(!existsSync(join(run, "jobs", "2.json")), "the killed job recorded an outcome");
  assert(
    !existsSync(join(flannel.stage1FoldDir(run, "vgg19_bn", 0), "test.safetensors")),
    "job 2 finished before the kill",
  );
  const status = cliErr(["status", "--run", run], 1); // exits 1: not all done
  assert(
    /2 +pending +vgg19_bn fold 0/.test(status) && /3 done, 0 running, 0 failed, 2 pending/.test(status),
    status,
  );
  // restarted (its dead lock taken over), it resumes from the checkpoint
  const restarted = cli("job", "--run", run, "--index", "2");
  assert(/resum/i.test(restarted) && /job 2 done/.test(restarted), restarted);
  assert(/job 2 is already done; nothing to do/.test(cli("job", "--run", run, "--index", "2")));
  cli("job", "--run", run, "--index", "4");
  const rows = JSON.parse(cliOut(["status", "--run", run, "--json"]));
  assertEquals(rows.map((r: { state: string }) => r.state), ["done", "done", "done", "done", "done"]);
  assert(rows.every((r: { seconds: number }) => r.seconds >= 0));

  // the same experiment in one process
  const single = join(tmp, "single");
  cli("experiment", ...OPTIONS, "--out", single);
  assertEquals(resultsOf(run), resultsOf(single));
});

test("jobs: the index must come from somewhere and name a job; a broken plan is refused", () => {
  const plan = { format: flannel.PLAN_FORMAT, options: {}, jobs: flannel.planJobs(["resnet152"], 2) };
  assertEquals(flannel.jobIndex(plan, undefined, { SLURM_ARRAY_TASK_ID: "1" }), 1);
  assertEquals(flannel.jobIndex(plan, undefined, { JOB_COMPLETION_INDEX: "2" }), 2);
  assertEquals(flannel.jobIndex(plan, "0", { SLURM_ARRAY_TASK_ID: "1" }), 0);
  assertThrows(() => flannel.jobIndex(plan, undefined, {}), /give --index I, or run under a Slurm array/);
  assertThrows(() => flannel.jobIndex(plan, "3", {}), /job index "3" is not one of the plan's jobs 0..2/);
  const dir = join(tmp, "broken");
  assertThrows(() => flannel.loadPlan(dir), /has no plan.json: make one with 'flannel plan'/);
  flannel.savePlan(dir, { ...plan, jobs: plan.jobs.slice(1) });
  assertThrows(() => flannel.loadPlan(dir), /is not a flannel-plan\/1 plan/);
  writeFileSync(join(dir, "plan.json"), "{");
  assertThrows(() => flannel.loadPlan(dir), /cannot read .*plan.json/);
});

/** The CLI's stdout when it exits with an error status (status exits 1 while jobs remain). */
function cliOut(args: string[]): string {
  try {
    return cli(...args);
  } catch (err) {
    return String((err as { stdout?: string }).stdout);
  }
}

/** Everything the CLI printed, when it must fail. */
/** The output of a CLI run that must fail with `status` (2: a refused input; 1: `status` with jobs not done). */
function cliErr(args: string[], status = 2): string {
  try {
    cli(...args);
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; status?: number };
    assertEquals(
      e.status,
      status,
      `exit status of flannel ${args.join(" ")}; output: ${e.stdout}${e.stderr}`,
    );
    return `${e.stdout ?? ""}${e.stderr ?? ""}`;
  }
  throw new AssertionError(`flannel ${args.join(" ")} succeeded`);
}

test.afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});
