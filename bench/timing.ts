// Timing shared by the benches: tinybench runs, one task at a time.
import { Bench } from "tinybench";

/**
 * Per task, the time of one warmup call (run here, before tinybench) and the median milliseconds of the
 * measured ones; NaN (and a message) for a task that failed.
 */
export async function timeTasks(
  tasks: Record<string, { fn: () => unknown; time: number; iterations: number }>,
): Promise<Record<string, { first: number; median: number }>> {
  const out: Record<string, { first: number; median: number }> = {};
  for (const [name, t] of Object.entries(tasks)) {
    out[name] = { first: NaN, median: NaN };
    try {
      const s = performance.now();
      await t.fn();
      out[name].first = performance.now() - s;
    } catch (err) {
      console.log(`  ${name} failed in its warmup: ${(err as Error).message.split("\n")[0].slice(0, 300)}`);
      continue;
    }
    // one Bench per task: each has its own time budget and iteration count
    const bench = new Bench({ time: t.time, iterations: t.iterations, warmup: false });
    bench.add(name, t.fn);
    await bench.run();
    const r = bench.getTask(name)?.result as
      | { state: string; latency?: { p50: number }; error?: unknown }
      | undefined;
    if (!r || r.state !== "completed" || !r.latency) {
      const msg = (r?.error as Error | undefined)?.message ?? String(r?.error ?? "");
      console.log(`  ${name} failed (${r?.state}): ${msg.split("\n")[0].slice(0, 300)}`);
    } else out[name].median = r.latency.p50;
  }
  return out;
}

/** The median of some numbers (the mean of the middle two for an even count; NaN for none). */
export function medianOf(values: number[]): number {
  const v = [...values].sort((a, b) => a - b), h = v.length >> 1;
  return v.length === 0 ? NaN : v.length % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
}
