// The harness itself: equality and closeness that tell NaN, ±Infinity and -0 apart from 0 and null, the
// artifact encoding that keeps them, the comparisons tests/both.ts makes, the per-test time limit, skips,
// and a test file that fails to import.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import {
  afterAllHooks,
  artifactDiff,
  assert,
  assertClose,
  assertEquals,
  assertIdentical,
  assertThrows,
  decodeArtifact,
  defaultTimeoutS,
  encodeArtifact,
  firstDifference,
  loadTestFile,
  registry,
  relativeDiff,
  runTest,
  selectTestFiles,
  skip,
  test,
} from "./harness.ts";

const tmp = mkdtempSync(join(tmpdir(), "fl-harness-"));

test("assertEquals tells NaN, ±Infinity and null apart in arrays, typed arrays and objects; assertIdentical -0 too", () => {
  const pairs: [unknown, unknown][] = [
    [NaN, 0],
    [0, NaN],
    [NaN, null],
    [Infinity, -Infinity],
    [Infinity, null],
    [-Infinity, null],
    [[1, NaN], [1, 0]],
    [[Infinity], [null]],
    [new Float32Array([NaN]), new Float32Array([0])],
    [{ a: { b: [NaN] } }, { a: { b: [null] } }],
    [new Map([["k", NaN]]), new Map([["k", 0]])],
    [new Float32Array([1, 2]), [1, 2]], // a typed array is not a plain array
    [[1, 2], [1, 2, 3]],
    [{ a: 1 }, { a: 1, b: 2 }],
    [new Set([1]), new Set([2])],
    [1n, 2n],
    ["1", 1],
  ];
  for (const [a, e] of pairs) assertThrows(() => assertEquals(a, e), /expected/);
  assertThrows(() => assertEquals([1, NaN], [1, 0]), /\[1\]: got NaN, expected 0/);
  assertThrows(
    () => assertEquals({ a: { b: [NaN] } }, { a: { b: [0] } }),
    /\.a\.b\[0\]: got NaN, expected 0/,
  );
  // -0 equals 0 in assertEquals; assertIdentical tells them apart (Object.is for every number).
  assertEquals([-0, new Float64Array([-0])], [0, new Float64Array([0])]);
  assertThrows(() => assertIdentical(-0, 0), /got -0, expected 0/);
  assertThrows(
    () => assertIdentical({ a: { b: [-0] } }, { a: { b: [0] } }),
    /\.a\.b\[0\]: got -0, expected 0/,
  );
  assertThrows(() => assertIdentical(new Float64Array([0]), new Float64Array([-0])), /got 0, expected -0/);
  assertThrows(() => assertIdentical([NaN], [0]), /got NaN/);
  assertIdentical([NaN, -0, Infinity], [NaN, -0, Infinity]);
  // Equal: NaN to NaN anywhere, key order and undefined-valued keys aside, Maps and Sets by content.
  assertEquals(NaN, NaN);
  assertEquals([NaN, Infinity, -Infinity, -0], [NaN, Infinity, -Infinity, -0]);
  assertEquals(new Float32Array([NaN, -0]), new Float32Array([NaN, -0]));
  assertEquals({ a: 1, b: [NaN], c: undefined }, { b: [NaN], a: 1 });
  assertEquals(new Map([["x", [1]]]), new Map([["x", [1]]]));
  assertEquals(new Set([NaN]), new Set([NaN]));
  assertEquals(firstDifference({ x: [1, { y: "z" }] }, { x: [1, { y: "z" }] }), null);
});

test("assertClose fails on NaN or ±Infinity unless the other side holds the same at that position", () => {
  assertThrows(() => assertClose(NaN, 0), /element 0 of 1: got NaN, expected 0/);
  assertThrows(() => assertClose(0, NaN), /got 0, expected NaN/);
  assertThrows(() => assertClose([1, 2, NaN], [1, 2, 3]), /element 2 of 3: got NaN/);
  assertThrows(() => assertClose([Infinity], [-Infinity]), /got Infinity, expected -Infinity/);
  assertThrows(() => assertClose([Infinity], [1e308]), /got Infinity/);
  assertThrows(() => assertClose([1e308], [Infinity]), /expected Infinity/);
  // A NaN is reported even next to a larger finite excess.
  assertThrows(() => assertClose([10, NaN], [0, 0]), /element 1 of 2: got NaN/);
  assertThrows(() => assertClose([1, 2], [1, 2.1], { atol: 0.05, rtol: 0 }), /element 1 of 2/);
  assertClose([NaN, Infinity, -Infinity, -0, 1], [NaN, Infinity, -Infinity, 0, 1 + 1e-7]);
  assertClose(new Float32Array([NaN, 1]), [NaN, 1]);
});

test("artifact encoding round-trips NaN, ±Infinity and -0 (plain JSON writes null and 0)", () => {
  const value = {
    a: [1.5, NaN, Infinity, -Infinity, -0, 0],
    t: new Float32Array([NaN, -0, 2]),
    nested: { x: [[-Infinity]], s: "text", b: true, n: null },
  };
  const text = encodeArtifact(value);
  assert(text.includes('"NaN"') && text.includes('"-Infinity"') && text.includes('"-0"'), text);
  assertEquals(decodeArtifact(text), {
    a: [1.5, NaN, Infinity, -Infinity, -0, 0],
    t: [NaN, -0, 2],
    nested: { x: [[-Infinity]], s: "text", b: true, n: null },
  });
  assertEquals(JSON.parse(JSON.stringify([NaN, Infinity, -0])), [null, null, 0]); // what plain JSON does
});

test("both.ts's comparisons: a non-finite value must match by Object.is; null (a lost NaN) never matches", () => {
  const diff = (a: unknown, b: unknown) => artifactDiff(a, b).diff;
  assertEquals(diff({ l: [1, NaN] }, { l: [1, NaN] }), 0);
  assertEquals(diff([Infinity, -0], [Infinity, 0]), 0);
  assertEquals(diff([NaN], [0]), Infinity);
  assertEquals(diff([0], [NaN]), Infinity);
  assertEquals(diff([Infinity], [-Infinity]), Infinity);
  assertEquals(diff([null], [null]), Infinity);
  assertEquals(diff([null], [0]), Infinity);
  assertEquals(diff({ a: 1 }, { b: 1 }), Infinity);
  assertEquals(diff([1, 2], [1]), Infinity);
  assertEquals(diff({ x: [1, 2.5] }, { x: [1, 2] }), 0.5);
  assertEquals(artifactDiff({ x: [1, NaN] }, { x: [1, 3] }).at, ".x[1]");
  assertEquals(relativeDiff([NaN, 1], [NaN, 1]), 0);
  assertEquals(relativeDiff([NaN, 1], [0, 1]), Infinity);
  assertEquals(relativeDiff([Infinity], [1e30]), Infinity);
  assertEquals(relativeDiff([null], [0]), Infinity);
  assertClose(relativeDiff([0, 8], [0.008, 8]), 0.001, { rtol: 1e-12, atol: 0 });
  assertEquals(relativeDiff([1e-5], [0]), 1e-5 / 1e-3); // a magnitude under 1e-3 counts as 1e-3
  assertEquals(relativeDiff([1], [1, 2]), Infinity);
});

test("a test past its time limit fails with a message naming it and the limit; skip and throw are told apart", async () => {
  const hung = await runTest("x.test.ts > hangs", () => new Promise(() => {}), 0.05);
  assertEquals(hung.status, "FAIL");
  assert(
    /^x\.test\.ts > hangs: timed out after 0\.05 s/.test((hung.error as Error).message),
    String((hung.error as Error).message),
  );
  assertEquals((hung.error as Error).name, "TestTimeout");
  const skipped = await runTest("x > s", () => skip("no GPU here"), 5);
  assertEquals([skipped.status, skipped.error], ["skip", "no GPU here"]);
  const thrown = await runTest("x > t", () => {
    throw new TypeError("boom");
  }, 5);
  assertEquals([thrown.status, (thrown.error as Error).name], ["FAIL", "TypeError"]);
  assertEquals((await runTest("x > ok", async () => {}, 5)).status, "ok");
  assertEquals(defaultTimeoutS({}), 300);
  assertEquals(defaultTimeoutS({ FLANNEL_TEST_TIMEOUT_S: "12.5" }), 12.5);
  assertThrows(() => defaultTimeoutS({ FLANNEL_TEST_TIMEOUT_S: "soon" }), /positive number of seconds/);
  assertEquals(selectTestFiles(["b.test.ts", "a.test.ts", "harness.ts"], []), ["a.test.ts", "b.test.ts"]);
  assertEquals(selectTestFiles(["ops.test.ts", "cnn_ops.test.ts", "zip.test.ts"], ["ops"]), [
    "cnn_ops.test.ts",
    "ops.test.ts",
  ]);
});

test("a test file that fails to import is an error naming it; the tests it registered are taken out", async () => {
  const registered = registry.length, hooks = afterAllHooks.length;
  const broken = join(tmp, "broken.test.ts");
  writeFileSync(broken, "export const x = ;\n");
  const err = await loadTestFile("broken.test.ts", pathToFileURL(broken).href);
  assert(err !== null, "a syntax error imported without an error");
  // A file that registers a test and then throws at its top level.
  const harness = new URL("./harness.ts", import.meta.url);
  const throwing = join(tmp, "throws.test.ts");
  writeFileSync(
    throwing,
    `import { test } from ${JSON.stringify(harness.href)};\n` +
      `test("never runs", () => {});\nthrow new Error("top-level failure");\n`,
  );
  const err2 = await loadTestFile("throws.test.ts", pathToFileURL(throwing).href);
  assert(err2 instanceof Error && /top-level failure/.test(err2.message), String(err2));
  assertEquals([registry.length, afterAllHooks.length], [registered, hooks]);
});

test("test.when: the test where the condition holds, a skip with the reason elsewhere", async () => {
  const before = registry.length;
  const ran: string[] = [];
  test.when(true, "unused")("when-true", () => void ran.push("when-true"));
  test.when(false, "not on this backend")("when-false", () => void ran.push("when-false"));
  const added = registry.splice(before); // registered here, run here: not the runner's
  assertEquals(added.map((t) => [t.name, t.skipReason ?? null]), [
    ["when-true", null],
    ["when-false", "not on this backend"],
  ]);
  const results = [];
  for (const t of added) results.push(await runTest(t.name, t.fn, 5));
  assertEquals(results.map((r) => [r.status, r.error ?? null]), [["ok", null], [
    "skip",
    "not on this backend",
  ]]);
  assertEquals(ran, ["when-true"]);
});

test.afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});
