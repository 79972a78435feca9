import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { backendInfo } from "../src/backend/device.ts";
// A test harness that runs unchanged in Deno and Bun: tests register here, tests/run.ts runs them.
export type TestFn = () => void | Promise<void>;
export interface TestCase {
  name: string;
  file: string;
  fn: TestFn;
}

export const registry: TestCase[] = [];
let currentFile = "";

export function setCurrentFile(file: string): void {
  currentFile = file;
}

export function test(name: string, fn: TestFn): void {
  registry.push({ name, file: currentFile, fn });
}

export class AssertionError extends Error {
  override name = "AssertionError";
}

export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new AssertionError(msg);
}

export function assertEquals<T>(actual: T, expected: T, msg = ""): void {
  const a = JSON.stringify(actual), e = JSON.stringify(expected);
  if (a !== e) throw new AssertionError(`${msg ? msg + ": " : ""}expected ${e}, got ${a}`);
}

/** Element-wise |a - e| <= atol + rtol * |e|; reports the worst element. */
export function assertClose(
  actual: ArrayLike<number> | number,
  expected: ArrayLike<number> | number,
  { rtol = 1e-5, atol = 1e-6, msg = "" }: { rtol?: number; atol?: number; msg?: string } = {},
): void {
  const a = typeof actual === "number" ? [actual] : actual;
  const e = typeof expected === "number" ? [expected] : expected;
  const prefix = msg ? msg + ": " : "";
  if (a.length !== e.length) throw new AssertionError(`${prefix}length ${a.length} != expected ${e.length}`);
  let worst = -1, worstExcess = 0;
  for (let i = 0; i < a.length; i++) {
    const diff = Math.abs(a[i] - e[i]);
    const excess = diff - (atol + rtol * Math.abs(e[i]));
    if (
      Number.isNaN(a[i]) !== Number.isNaN(e[i]) || excess > worstExcess ||
      (Number.isNaN(diff) && !Number.isNaN(e[i]))
    ) {
      if (worst < 0 || excess > worstExcess || Number.isNaN(excess)) {
        worst = i;
        worstExcess = Number.isNaN(excess) ? Infinity : excess;
      }
    }
  }
  if (worst >= 0) {
    throw new AssertionError(
      `${prefix}element ${worst} of ${a.length}: got ${a[worst]}, expected ${
        e[worst]
      } (rtol ${rtol}, atol ${atol})`,
    );
  }
}

function errorMatches(err: unknown, pattern: RegExp | string): boolean {
  const text = err instanceof Error ? err.message : String(err);
  return typeof pattern === "string" ? text.includes(pattern) : pattern.test(text);
}

/** The call must throw an error whose message matches `pattern`. */
export function assertThrows(fn: () => unknown, pattern: RegExp | string): void {
  try {
    fn();
  } catch (err) {
    if (!errorMatches(err, pattern)) {
      throw new AssertionError(
        `error message ${JSON.stringify(String((err as Error)?.message ?? err))} does not match ${pattern}`,
      );
    }
    return;
  }
  throw new AssertionError(`expected an error matching ${pattern}, but nothing was thrown`);
}

export async function assertRejects(fn: () => Promise<unknown>, pattern: RegExp | string): Promise<void> {
  try {
    await fn();
  } catch (err) {
    if (!errorMatches(err, pattern)) {
      throw new AssertionError(
        `error message ${JSON.stringify(String((err as Error)?.message ?? err))} does not match ${pattern}`,
      );
    }
    return;
  }
  throw new AssertionError(`expected a rejection matching ${pattern}, but the promise resolved`);
}

/**
 * Where a test leaves a result that tests/both.ts compares across runtimes and backends:
 * runs/test-artifacts/<name>-<runtime>-<backend>.json.
 */
export function artifactPath(name: string): string {
  const g = globalThis as { Bun?: unknown };
  const runtime = g.Bun !== undefined ? "bun" : "deno";
  const backend = backendInfo()?.backend ?? "none";
  const dir = join(dirname(fileURLToPath(import.meta.url)), "..", "runs", "test-artifacts");
  mkdirSync(dir, { recursive: true });
  return join(dir, `${name}-${runtime}-${backend}.json`);
}
