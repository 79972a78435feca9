import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { backendInfo } from "../src/backend/device.ts";
// A test harness that runs unchanged in Deno and Bun: tests register here, tests/run.ts runs them.
export type TestFn = () => void | Promise<void>;
export interface TestOptions {
  /** Seconds before the test fails as timed out (default: FLANNEL_TEST_TIMEOUT_S, else 300). */
  timeoutS?: number;
}
export interface TestCase {
  name: string;
  file: string;
  fn: TestFn;
  timeoutS?: number;
  /** Set by `test.skip`: the test is reported as skipped with this reason and never run. */
  skipReason?: string;
}
export interface Hook {
  file: string;
  fn: TestFn;
}

export const registry: TestCase[] = [];
/** Clean-up steps (`test.afterAll`): run after the last test of their file; not tests, never counted. */
export const afterAllHooks: Hook[] = [];
let currentFile = "";

export function setCurrentFile(file: string): void {
  currentFile = file;
}

type Register = (name: string, fn: TestFn, options?: TestOptions) => void;

/**
 * Registers a test; `test.skip` one that is reported as skipped, `test.when(condition, reason)` a test that
 * runs where `condition` holds and is reported as skipped with `reason` elsewhere, `test.afterAll` a clean-up
 * step.
 */
export const test = Object.assign(
  (name: string, fn: TestFn, options: TestOptions = {}): void => {
    registry.push({ name, file: currentFile, fn, timeoutS: options.timeoutS });
  },
  {
    skip(name: string, reason: string): void {
      registry.push({ name, file: currentFile, fn: () => skip(reason), skipReason: reason });
    },
    when(condition: boolean, reason: string): Register {
      return condition ? test : (name) => test.skip(name, reason);
    },
    afterAll(fn: TestFn): void {
      afterAllHooks.push({ file: currentFile, fn });
    },
  },
);

export class AssertionError extends Error {
  override name = "AssertionError";
}

/** Thrown by `skip(reason)`: the test is reported as `skip`, neither passed nor failed. */
export class TestSkipped extends Error {
  override name = "TestSkipped";
}

/** Ends the running test as skipped (a `skip` line with the reason; never counted as a pass). */
export function skip(reason: string): never {
  throw new TestSkipped(reason);
}

export function assert(cond: unknown, msg = "assertion failed"): asserts cond {
  if (!cond) throw new AssertionError(msg);
}

/** A value for a message: JSON-like, but NaN, ±Infinity, -0 and typed arrays shown as what they are. */
export function show(v: unknown, max = 2000): string {
  const out = showInner(v, new Set());
  return out.length > max ? out.slice(0, max) + `... (${out.length} characters)` : out;
}

function showInner(v: unknown, seen: Set<unknown>): string {
  if (typeof v === "number") return Object.is(v, -0) ? "-0" : String(v);
  if (typeof v === "bigint") return `${v}n`;
  if (typeof v === "string") return JSON.stringify(v);
  if (v === null || typeof v !== "object") return String(v);
  if (seen.has(v)) return "[circular]";
  seen.add(v);
  try {
    if (ArrayBuffer.isView(v) && !(v instanceof DataView)) {
      return `${v.constructor.name}[${
        Array.from(v as unknown as ArrayLike<number>, (x) => showInner(x, seen))
      }]`;
    }
    if (Array.isArray(v)) return `[${v.map((x) => showInner(x, seen)).join(",")}]`;
    if (v instanceof Map) {
      return `Map{${[...v].map(([k, x]) => `${showInner(k, seen)}=>${showInner(x, seen)}`)}}`;
    }
    if (v instanceof Set) return `Set{${[...v].map((x) => showInner(x, seen))}}`;
    if (v instanceof Date) return `Date(${v.toISOString()})`;
    return `{${
      Object.entries(v).filter(([, x]) => x !== undefined).map(([k, x]) =>
        `${JSON.stringify(k)}:${showInner(x, seen)}`
      ).join(",")
    }}`;
  } finally {
    seen.delete(v);
  }
}

const isList = (v: object): v is ArrayLike<unknown> =>
  Array.isArray(v) || (ArrayBuffer.isView(v) && !(v instanceof DataView));

/**
 * Where `a` and `e` first differ, or null when they are equal: numbers as SameValueZero (NaN equals NaN
 * only; NaN, null, Infinity and -Infinity all differ) or, with `signedZero`, by Object.is (-0 differs from
 * 0 too); arrays and typed arrays element by element and of the same kind, Maps, Sets and Dates by content,
 * other objects by their own enumerable keys (in any order; a key whose value is undefined counts as absent).
 */
export function firstDifference(a: unknown, e: unknown, path = "", signedZero = false): string | null {
  const here = () => `${path || "value"}: got ${show(a, 200)}, expected ${show(e, 200)}`;
  if (typeof a !== "object" || typeof e !== "object" || a === null || e === null) {
    return Object.is(a, e) || (!signedZero && a === 0 && e === 0) ? null : here();
  }
  if (a === e) return null;
  if (isList(a) || isList(e)) {
    if (!isList(a) || !isList(e) || a.constructor !== e.constructor) return here();
    if (a.length !== e.length) return `${path || "value"}: length ${a.length}, expected ${e.length}`;
    for (let i = 0; i < a.length; i++) {
      const d = firstDifference(a[i], e[i], `${path}[${i}]`, signedZero);
      if (d) return d;
    }
    return null;
  }
  if (a.constructor !== e.constructor && (a instanceof Map || a instanceof Set || a instanceof Date)) {
    return here();
  }
  if (a instanceof ArrayBuffer || e instanceof ArrayBuffer) {
    if (!(a instanceof ArrayBuffer && e instanceof ArrayBuffer)) return here();
    return firstDifference(new Uint8Array(a), new Uint8Array(e), path, signedZero);
  }
  if (a instanceof Date) return Object.is(a.getTime(), (e as Date).getTime()) ? null : here();
  if (a instanceof Map || a instanceof Set || e instanceof Map || e instanceof Set) {
    if (a.constructor !== e.constructor) return here();
    return firstDifference(
      [...(a as Map<unknown, unknown>)],
      [...(e as Map<unknown, unknown>)],
      path,
      signedZero,
    );
  }
  const keys = (o: object) =>
    Object.keys(o).filter((k) => (o as Record<string, unknown>)[k] !== undefined).sort();
  const ka = keys(a), ke = keys(e);
  const extra = ka.filter((k) => !ke.includes(k)), missing = ke.filter((k) => !ka.includes(k));
  if (extra.length || missing.length) {
    return `${path || "value"}: ${extra.length ? `unexpected keys ${show(extra)}` : ""}${
      extra.length && missing.length ? ", " : ""
    }${missing.length ? `missing keys ${show(missing)}` : ""}`;
  }
  for (const k of ka) {
    const d = firstDifference(
      (a as Record<string, unknown>)[k],
      (e as Record<string, unknown>)[k],
      `${path}.${k}`,
      signedZero,
    );
    if (d) return d;
  }
  return null;
}

/** Deep equality: NaN equals only NaN, ±Infinity only itself, -0 equals 0 (see `firstDifference`). */
export function assertEquals<T>(actual: T, expected: T, msg = ""): void {
  const d = firstDifference(actual, expected);
  if (d !== null) {
    throw new AssertionError(
      `${msg ? msg + ": " : ""}expected ${show(expected)}, got ${show(actual)} (${d})`,
    );
  }
}

/** `assertEquals` with Object.is for every number: -0 and 0 differ too (where a zero's sign matters). */
export function assertIdentical<T>(actual: T, expected: T, msg = ""): void {
  const d = firstDifference(actual, expected, "", true);
  if (d !== null) {
    throw new AssertionError(
      `${msg ? msg + ": " : ""}expected ${show(expected)}, got ${show(actual)} (${d})`,
    );
  }
}

/**
 * Element-wise |a - e| <= atol + rtol * |e|; reports the worst element. A non-finite value on either side
 * must be the same on the other (NaN only where the expected is NaN, Infinity only where it is Infinity).
 */
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
    const x = a[i], y = e[i];
    const excess = Number.isFinite(x) && Number.isFinite(y)
      ? Math.abs(x - y) - (atol + rtol * Math.abs(y))
      : Object.is(x, y)
      ? 0
      : Infinity;
    if (excess > worstExcess) [worst, worstExcess] = [i, excess];
  }
  if (worst >= 0) {
    throw new AssertionError(
      `${prefix}element ${worst} of ${a.length}: got ${show(a[worst])}, expected ${
        show(e[worst])
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

// ---- running

export const DEFAULT_TIMEOUT_S = 300;

/** The limit of a test without its own `timeoutS`: FLANNEL_TEST_TIMEOUT_S, else 300 s. */
export function defaultTimeoutS(env: Record<string, string | undefined>): number {
  const text = env.FLANNEL_TEST_TIMEOUT_S;
  if (text === undefined || text === "") return DEFAULT_TIMEOUT_S;
  const s = Number(text);
  if (!(s > 0)) throw new Error(`FLANNEL_TEST_TIMEOUT_S must be a positive number of seconds, got ${text}`);
  return s;
}

export class TestTimeout extends Error {
  override name = "TestTimeout";
}

export interface Outcome {
  status: "ok" | "FAIL" | "skip";
  seconds: number;
  /** The error (FAIL) or the reason (skip). */
  error?: unknown;
}

/**
 * Runs `fn` under a time limit: it passes, fails (a throw, or no end within `timeoutS`: a TestTimeout naming
 * `label` and the limit) or is skipped (`skip(reason)`). A timed-out call is left running; it cannot be
 * stopped from here, and a synchronous endless loop is not caught at all (tests/both.ts bounds each run).
 */
export async function runTest(label: string, fn: TestFn, timeoutS: number): Promise<Outcome> {
  const t0 = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new TestTimeout(
            `${label}: timed out after ${timeoutS} s (its limit: test(name, fn, { timeoutS }), else ` +
              `FLANNEL_TEST_TIMEOUT_S, else ${DEFAULT_TIMEOUT_S} s); it may still be running`,
          ),
        ),
      timeoutS * 1000,
    );
  });
  try {
    await Promise.race([Promise.resolve().then(fn), limit]);
    return { status: "ok", seconds: (performance.now() - t0) / 1000 };
  } catch (err) {
    const seconds = (performance.now() - t0) / 1000;
    if (err instanceof TestSkipped) return { status: "skip", seconds, error: err.message };
    return { status: "FAIL", seconds, error: err };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Imports one test file, its tests registering under `file`. An error while importing (a syntax error, a
 * throw at its top level) is returned, and the tests it registered before the error are taken out again;
 * its afterAll hooks stay, to clean up what its top level made.
 */
export async function loadTestFile(file: string, url: string): Promise<unknown | null> {
  const before = registry.length;
  setCurrentFile(file);
  try {
    await import(url);
    return null;
  } catch (err) {
    registry.splice(before);
    return err ?? new Error(`importing ${file} threw ${String(err)}`);
  }
}

/** The test files among `names` (*.test.ts) whose name contains one of `filters` (all without filters), sorted. */
export function selectTestFiles(names: string[], filters: string[]): string[] {
  return names.filter((f) => f.endsWith(".test.ts"))
    .filter((f) => filters.length === 0 || filters.some((p) => f.includes(p)))
    .sort();
}

/** The first lines of an error's stack (or its text), indented under a FAIL line. */
export function describeError(err: unknown, lines = 6): string {
  if (err instanceof TestTimeout) return "      " + err.message; // where the timer fired says nothing
  const text = err instanceof Error ? String(err.stack ?? err) : String((err as Error)?.message ?? err);
  const head = err instanceof Error && !text.includes(err.message) ? `${err.name}: ${err.message}\n` : "";
  return "      " + (head + text).split("\n").slice(0, lines).join("\n      ");
}

// ---- artifacts

/**
 * Where a test leaves a result that tests/both.ts compares across runtimes and backends:
 * runs/test-artifacts/<name>-<runtime>-<backend>.json. Write it with `writeArtifact` (or `encodeArtifact`):
 * plain JSON.stringify turns NaN and ±Infinity into null, which tests/both.ts refuses.
 */
export function artifactPath(name: string): string {
  const g = globalThis as { Bun?: unknown };
  const runtime = g.Bun !== undefined ? "bun" : "deno";
  const backend = backendInfo()?.backend ?? "none";
  const dir = join(dirname(fileURLToPath(import.meta.url)), "..", "runs", "test-artifacts");
  mkdirSync(dir, { recursive: true });
  return join(dir, `${name}-${runtime}-${backend}.json`);
}

const NON_FINITE: Record<string, number> = {
  "NaN": NaN,
  "Infinity": Infinity,
  "-Infinity": -Infinity,
  "-0": -0,
};

/**
 * JSON in which NaN, Infinity, -Infinity and -0 are the strings "NaN", "Infinity", "-Infinity" and "-0"
 * (JSON.stringify writes null for the first three and 0 for -0), and typed arrays plain arrays.
 */
export function encodeArtifact(value: unknown): string {
  return JSON.stringify(value, (_k, v) => {
    if (typeof v === "number") return Object.is(v, -0) ? "-0" : Number.isFinite(v) ? v : String(v);
    if (ArrayBuffer.isView(v) && !(v instanceof DataView)) {
      return Array.from(v as unknown as ArrayLike<number>);
    }
    return v;
  });
}

/** The inverse of `encodeArtifact`: the strings "NaN", "Infinity", "-Infinity" and "-0" become numbers. */
export function decodeArtifact(text: string): unknown {
  return JSON.parse(text, (_k, v) => typeof v === "string" && v in NON_FINITE ? NON_FINITE[v] : v);
}

/** Writes `value` as artifact `name` (see `artifactPath`), non-finite numbers encoded; returns the path. */
export function writeArtifact(name: string, value: unknown): string {
  const path = artifactPath(name);
  writeFileSync(path, encodeArtifact(value));
  return path;
}

export const readArtifact = (path: string): unknown => decodeArtifact(readFileSync(path, "utf8"));

/**
 * The largest difference between two artifacts of the same structure and where it is: numbers by |a - b|,
 * except that a non-finite number must be the same on the other side (Object.is: NaN equals NaN only);
 * Infinity where the structure differs, where other values differ, and at every null (what JSON.stringify
 * leaves of a NaN or ±Infinity: an artifact not written with `writeArtifact`).
 */
export function artifactDiff(a: unknown, b: unknown, path = ""): { diff: number; at: string } {
  if (typeof a === "number" && typeof b === "number") {
    const diff = Number.isFinite(a) && Number.isFinite(b) ? Math.abs(a - b) : Object.is(a, b) ? 0 : Infinity;
    return { diff, at: path };
  }
  if (a === null || b === null) {
    return { diff: Infinity, at: `${path} (null: a NaN or ±Infinity lost to JSON)` };
  }
  let worst = { diff: 0, at: path };
  const take = (d: { diff: number; at: string }) => {
    if (d.diff > worst.diff) worst = d;
  };
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) return { diff: Infinity, at: `${path} (length ${a.length} vs ${b.length})` };
    a.forEach((v, i) => take(artifactDiff(v, b[i], `${path}[${i}]`)));
    return worst;
  }
  if (a && b && typeof a === "object" && typeof b === "object" && !Array.isArray(a) && !Array.isArray(b)) {
    const ka = Object.keys(a).sort(), kb = Object.keys(b).sort();
    if (ka.join("\0") !== kb.join("\0")) return { diff: Infinity, at: `${path} (keys differ)` };
    for (const k of ka) {
      take(
        artifactDiff((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${path}.${k}`),
      );
    }
    return worst;
  }
  return { diff: a === b ? 0 : Infinity, at: path };
}

/**
 * The largest difference between two tensors' values relative to their largest finite magnitude (at least
 * 1e-3); a non-finite value must be the same (Object.is) in both; Infinity if the lengths differ.
 */
export function relativeDiff(a: ArrayLike<unknown>, b: ArrayLike<unknown>): number {
  if (a.length !== b.length) return Infinity;
  let diff = 0, scale = 1e-3;
  for (let i = 0; i < a.length; i++) {
    const x = a[i], y = b[i];
    if (typeof x !== "number" || typeof y !== "number") return Infinity;
    if (!Number.isFinite(x) || !Number.isFinite(y)) {
      if (!Object.is(x, y)) return Infinity;
      continue;
    }
    diff = Math.max(diff, Math.abs(x - y));
    scale = Math.max(scale, Math.abs(x), Math.abs(y));
  }
  return diff / scale;
}

/** Little-endian float32 values from base64 (how the fixture scripts store float32 tensors in JSON). */
export function float32FromBase64(s: string): Float32Array {
  const bytes = Uint8Array.from(atob(s), (ch) => ch.charCodeAt(0));
  const view = new DataView(bytes.buffer);
  return Float32Array.from({ length: bytes.length / 4 }, (_, i) => view.getFloat32(4 * i, true));
}
