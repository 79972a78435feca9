// The experiment as independent jobs for a scheduler that already exists (Slurm job arrays, Kubernetes
// Indexed Jobs): a plan (plan.json) lists one stage-1 job per (learner, fold) and a final stage-2/report job
// that depends on them all. A job runs in any process on any machine that sees the shared output folder:
// it takes a lock, so that a scheduler's retry of a running job cannot run it twice; it resumes from its last
// checkpoint after a kill; and it records its result in jobs/<index>.json, written atomically.
import {
  closeSync,
  existsSync,
  hostname,
  join,
  mkdirSync,
  openSync,
  pid,
  processAlive,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeSync,
} from "../platform/runtime.ts";
import * as fl from "../../mod.ts";
import { isStage1Arch, type Stage1Arch } from "./learners.ts";

/** `format` of plan.json. */
export const PLAN_FORMAT = "flannel-plan/1";
/** A lock whose heartbeat is older than this is a dead job's (another host's process cannot be asked). */
export const STALE_LOCK_SECONDS = 600;
/** How often a running job touches its lock. */
const HEARTBEAT_SECONDS = 30;

/** One job of a plan. */
export type PlanJob =
  | { index: number; kind: "stage1"; arch: Stage1Arch; fold: number; writes: string }
  | { index: number; kind: "final"; needs: number[]; writes: string };

/** plan.json: the experiment's options and its jobs. */
export interface Plan {
  /** {@linkcode PLAN_FORMAT}. */
  format: string;
  /** The command-line options of the experiment (data folders absolute), as `experiment` takes them. */
  options: Record<string, string | string[] | boolean>;
  /** Stage-1 jobs first (learner by learner, folds ascending, as `experiment` runs them), then the final job. */
  jobs: PlanJob[];
}

/** The jobs of an experiment over `archs` and `folds` folds. */
export function planJobs(archs: readonly Stage1Arch[], folds: number): PlanJob[] {
  const jobs: PlanJob[] = [];
  for (const arch of archs) {
    for (let fold = 0; fold < folds; fold++) {
      jobs.push({ index: jobs.length, kind: "stage1", arch, fold, writes: `stage1/${arch}/fold${fold}/` });
    }
  }
  jobs.push({
    index: jobs.length,
    kind: "final",
    needs: jobs.map((j) => j.index),
    writes: "stage2/, results.json, report.md, figures",
  });
  return jobs;
}

/** Writes plan.json in `runDir` (atomically). */
export function savePlan(runDir: string, plan: Plan): void {
  fl.io.writeFileAtomic(join(runDir, "plan.json"), JSON.stringify(plan, null, 1));
}

/**
 * plan.json of `runDir`, checked.
 * @throws Error when it is missing, does not parse, or is not a plan.
 */
export function loadPlan(runDir: string): Plan {
  const path = join(runDir, "plan.json");
  if (!existsSync(path)) throw new Error(`${runDir} has no plan.json: make one with 'flannel plan'`);
  let plan: Plan;
  try {
    plan = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new Error(`cannot read ${path}: ${(err as Error).message}`);
  }
  const jobsOk = Array.isArray(plan?.jobs) && plan.jobs.length >= 2 &&
    plan.jobs.every((j, i) =>
      j.index === i &&
      (j.kind === "final" ? i === plan.jobs.length - 1 : j.kind === "stage1" && isStage1Arch(j.arch))
    );
  if (plan?.format !== PLAN_FORMAT || typeof plan.options !== "object" || !jobsOk) {
    throw new Error(`${path} is not a ${PLAN_FORMAT} plan`);
  }
  return plan;
}

/**
 * The job index to run: `index` when given, else `SLURM_ARRAY_TASK_ID` (Slurm job arrays) or
 * `JOB_COMPLETION_INDEX` (Kubernetes Indexed Jobs).
 * @throws Error when none is set, or the index is not a job of the plan.
 */
export function jobIndex(
  plan: Plan,
  index: string | undefined,
  env: Record<string, string | undefined>,
): number {
  const raw = index ?? env.SLURM_ARRAY_TASK_ID ?? env.JOB_COMPLETION_INDEX;
  if (raw === undefined) {
    throw new Error(
      "give --index I, or run under a Slurm array (SLURM_ARRAY_TASK_ID) or a Kubernetes Indexed Job",
    );
  }
  const i = Number(raw);
  if (!Number.isInteger(i) || i < 0 || i >= plan.jobs.length) {
    throw new Error(
      `job index ${JSON.stringify(raw)} is not one of the plan's jobs 0..${plan.jobs.length - 1}`,
    );
  }
  return i;
}

/** jobs/<index>.json: what a job recorded when it ended. */
export interface JobRecord {
  /** The job's index in the plan. */
  index: number;
  /** "done" or "failed". */
  status: "done" | "failed";
  /** Host and process that ran it. */
  host: string;
  /** Process id on `host`. */
  pid: number;
  /** ISO times. */
  started: string;
  /** ISO time it ended. */
  finished: string;
  /** Wall time in seconds. */
  seconds: number;
  /** The error message of a failed job. */
  error?: string;
}

/** What `jobStates` reports per job. */
export type JobState = "done" | "running" | "failed" | "pending";

const lockPath = (runDir: string, index: number) => join(runDir, "jobs", `${index}.lock`);
const recordPath = (runDir: string, index: number) => join(runDir, "jobs", `${index}.json`);

/** The record of job `index`, or null when it never ended. */
export function readJobRecord(runDir: string, index: number): JobRecord | null {
  const path = recordPath(runDir, index);
  if (!existsSync(path)) return null;
  return JSON.parse(readFileSync(path, "utf8"));
}

interface LockInfo {
  host: string;
  pid: number;
  started: string;
}

/** Why an existing lock still holds (a live job), or null when its job is dead. */
function liveLock(path: string): string | null {
  let info: LockInfo, age: number;
  try {
    info = JSON.parse(readFileSync(path, "utf8"));
    age = (Date.now() - statSync(path).mtimeMs) / 1000;
  } catch {
    return null; // vanished or half-written by a process killed while creating it
  }
  if (info.host === hostname()) {
    if (!processAlive(info.pid)) return null;
  }
  if (age > STALE_LOCK_SECONDS) return null;
  return `pid ${info.pid} on ${info.host} since ${info.started}, heartbeat ${age.toFixed(0)} s ago`;
}

/**
 * Takes the lock of job `index` (jobs/<index>.lock, created exclusively: only one process can). A lock left
 * by a dead job (a process gone on this host, or a heartbeat older than {@linkcode STALE_LOCK_SECONDS}) is
 * taken over. Returns the release function, which also stops the heartbeat.
 * @throws Error naming the holder when a live job holds it.
 */
export function takeJobLock(runDir: string, index: number): () => void {
  const path = lockPath(runDir, index);
  mkdirSync(join(runDir, "jobs"), { recursive: true });
  const info: LockInfo = { host: hostname(), pid, started: new Date().toISOString() };
  for (let attempt = 0; attempt < 2; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, "wx");
    } catch (err) {
      if ((err as { code?: string }).code !== "EEXIST") throw err;
      const holder = liveLock(path);
      if (holder) {
        throw new Error(
          `job ${index} is already running (${holder}); not starting a second copy (lock ${path})`,
        );
      }
      rmSync(path, { force: true }); // a dead job's: take it over
      continue;
    }
    writeSync(fd, JSON.stringify(info));
    closeSync(fd);
    const beat = setInterval(() => {
      const now = new Date();
      try {
        utimesSync(path, now, now);
      } catch { /* the folder went away: the job's own writes will fail and say so */ }
    }, HEARTBEAT_SECONDS * 1000);
    (beat as { unref?: () => void }).unref?.();
    return () => {
      clearInterval(beat);
      rmSync(path, { force: true });
    };
  }
  throw new Error(`job ${index}: another process took the lock ${path} at the same moment`);
}

/**
 * Runs job `index` of the plan in `runDir` through `run` under its lock, and records the outcome in
 * jobs/<index>.json (atomically). A job already done returns at once ("already done").
 * @returns "ran" or "already done".
 * @throws the job's error (after recording it as failed), or the lock's.
 */
export async function runJob(
  runDir: string,
  index: number,
  run: () => Promise<void>,
): Promise<"ran" | "already done"> {
  if (readJobRecord(runDir, index)?.status === "done") return "already done";
  const release = takeJobLock(runDir, index);
  const started = new Date();
  const record = (status: JobRecord["status"], error?: string) =>
    fl.io.writeFileAtomic(
      recordPath(runDir, index),
      JSON.stringify(
        {
          index,
          status,
          host: hostname(),
          pid,
          started: started.toISOString(),
          finished: new Date().toISOString(),
          seconds: (Date.now() - started.getTime()) / 1000,
          ...(error ? { error } : {}),
        } satisfies JobRecord,
        null,
        1,
      ),
    );
  try {
    await run();
    record("done");
    return "ran";
  } catch (err) {
    record("failed", (err as Error).message);
    throw err;
  } finally {
    release();
  }
}

/** The state of every job of the plan: done, running (a live lock), failed, or pending. */
export function jobStates(
  runDir: string,
  plan: Plan,
): { job: PlanJob; state: JobState; record: JobRecord | null }[] {
  const locks = new Set(existsSync(join(runDir, "jobs")) ? readdirSync(join(runDir, "jobs")) : []);
  return plan.jobs.map((job) => {
    const record = readJobRecord(runDir, job.index);
    const running = locks.has(`${job.index}.lock`) && liveLock(lockPath(runDir, job.index)) !== null;
    const state: JobState = record?.status === "done"
      ? "done"
      : running
      ? "running"
      : record
      ? "failed"
      : "pending";
    return { job, state, record };
  });
}

/**
 * Checks that the final job (stage 2 and the report) can start: every stage-1 job of the plan done.
 * @throws Error listing the stage-1 jobs not done yet, with their states.
 */
export function checkFinalReady(runDir: string, plan: Plan): void {
  const missing = jobStates(runDir, plan).filter((s) => s.job.kind === "stage1" && s.state !== "done");
  if (missing.length > 0) {
    throw new Error(
      `the final job (stage 2 and the report) needs every stage-1 job done; not yet: ${
        missing.map((s) => `${s.job.index} (${s.state})`).join(", ")
      }`,
    );
  }
}
