// Limits of the WebGPU backends that a long process reaches. Bun's WebGPU (bun-webgpu over Dawn) never
// frees a bind group but through its non-standard destroy(), which the engine now calls on the groups it
// evicts (src/backend/engine.ts, bunRelease): before, a process crashed (segfault) near 60,000
// distinct bind groups. The check runs in a child process: 80,000 groups leave lavapipe's descriptor
// memory fragmented enough that a later heavy test in the same process could still fail. Deno frees bind
// groups when V8 collects their wrappers, so it has no such leak to test.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import process from "node:process";
import * as fl from "../mod.ts";
import { assertEquals, test } from "./harness.ts";

await fl.init();

const bunWebgpuTest = test.when(
  fl.backendInfo()?.backend === "webgpu" && fl.backendInfo()?.runtime === "bun",
  "the bind groups that leaked are those of Bun's WebGPU (Dawn): Bun on WebGPU only",
);
bunWebgpuTest(
  "Bun: 80,000 distinct bind groups in one process, every sum right, no crash (they leaked natively)",
  () => {
    const script = fileURLToPath(new URL("./fixtures/bind_groups.ts", import.meta.url));
    const r = spawnSync(process.execPath, ["run", script], { encoding: "utf8" });
    assertEquals(
      r.status,
      0,
      `exit status (${r.stderr.split("\n").find((l) => l.includes("panic")) ?? r.stderr.slice(-200)})`,
    );
    // sum over i, j of (a_i + a_j) = 2 n sum(a), a_i = i mod 7 (integers, exact in float32); and 2 n^2
    const n = 283, sumA = Array.from({ length: n }, (_, i) => i % 7).reduce((a, b) => a + b, 0);
    assertEquals(JSON.parse(r.stdout.trim().split("\n").pop()!), [2 * n * sumA, 2 * n * n]);
  },
);
