// `flannel status`: where the jobs of a plan stand.
import process from "node:process";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import * as flannel from "../flannel/mod.ts";
import { fail } from "./shared.ts";

/** `flannel status --help`. */
export const HELP = `flannel status: where the jobs of a plan stand

Usage: deno task flannel status --run DIR [--json]

One line per job: done, running (a live lock), failed (with its error) or pending, with host and time.
Exits with status 0 when every job is done, 1 otherwise.

Options:
  --run DIR        the plan's folder
  --json           print [{"index", "kind", "arch", "fold", "state", "seconds", "host", "error"}, ...]
  --help`;

export function status(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { run: { type: "string" }, json: { type: "boolean" }, help: { type: "boolean" } },
    strict: true,
  });
  if (values.help) return Promise.resolve(console.log(HELP));
  if (!values.run) fail("status: give --run DIR (a folder made by 'flannel plan')");
  const runDir = resolve(values.run);
  const states = flannel.jobStates(runDir, flannel.loadPlan(runDir));
  const rows = states.map(({ job: j, state, record }) => ({
    index: j.index,
    kind: j.kind,
    ...(j.kind === "stage1" ? { arch: j.arch, fold: j.fold } : {}),
    state,
    ...(record ? { seconds: Math.round(record.seconds), host: record.host } : {}),
    ...(record?.error && state === "failed" ? { error: record.error } : {}),
  }));
  if (values.json) console.log(JSON.stringify(rows));
  else {
    for (const r of rows) {
      const what = r.kind === "stage1" ? `${r.arch} fold ${r.fold}` : "final (stage 2, report)";
      const when = r.seconds !== undefined ? ` (${r.seconds} s on ${r.host})` : "";
      console.log(
        `${String(r.index).padStart(3)}  ${r.state.padEnd(8)} ${what}${when}${r.error ? `: ${r.error}` : ""}`,
      );
    }
    const count = (s: string) => rows.filter((r) => r.state === s).length;
    console.log(
      `${count("done")} done, ${count("running")} running, ${count("failed")} failed, ${
        count("pending")
      } pending`,
    );
  }
  process.exit(rows.every((r) => r.state === "done") ? 0 : 1);
}
