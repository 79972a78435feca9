// The kernel profile (fl.startProfile / fl.finishProfile / fl.stopProfile): every dispatch counted once, under
// the phase it ran in (forward, backward inside backward(), optimizer inside step()); timed on WebAssembly,
// timed by the device on WebGPU where it has timestamp-query (lavapipe has), else counted.
import * as fl from "../mod.ts";
import { assert, assertEquals, test } from "./harness.ts";

await fl.init();

test("profile: each dispatch once, by phase; convolution products named by their use", async () => {
  const x = fl.randn([2, 3, 9, 9], { seed: 1, requiresGrad: true });
  const conv = new fl.nn.Conv2d(3, 4, 3, { padding: 1, generator: new fl.Generator(2) });
  const head = new fl.nn.Linear(4 * 81, 4, { generator: new fl.Generator(3) });
  const optimizer = new fl.optim.Adam([...conv.parameters(), ...head.parameters()]);
  await fl.syncDevice();
  const before = fl.poolStats().dispatches;
  fl.startProfile();
  const t0 = performance.now();
  fl.scope(() => {
    const logits = head.forward(fl.F.flatten(fl.F.relu(conv.forward(x))));
    const loss = fl.F.crossEntropy(logits, [0, 1]);
    optimizer.zeroGrad();
    loss.backward();
    optimizer.step();
  });
  const rows = await fl.finishProfile();
  const wallMs = performance.now() - t0;
  const dispatched = fl.poolStats().dispatches - before;
  const calls = rows.reduce((n, r) => n + r.calls, 0);
  assertEquals(calls, dispatched, "profiled calls = dispatches");
  const phases = new Set(rows.map((r) => r.phase));
  assertEquals([...phases].sort(), ["backward", "forward", "optimizer"]);
  const wasm = fl.backendInfo()!.backend === "wasm";
  const has = (phase: string, kernel: RegExp) => rows.some((r) => r.phase === phase && kernel.test(r.kernel));
  if (wasm) {
    assert(has("forward", /^gemm: conv2d 3x3 forward$/), JSON.stringify(rows));
    assert(has("backward", /^gemm: conv2d 3x3 input grad$/), JSON.stringify(rows));
    assert(has("backward", /^gemm: conv2d 3x3 weight grad$/), JSON.stringify(rows));
    assert(has("forward", /^gemm: matmul$/), JSON.stringify(rows));
    assert(rows.every((r) => Number.isFinite(r.ms) && r.ms >= 0), "times on WebAssembly");
  } else if (fl.backendInfo()!.features.includes("timestamp-query")) {
    assert(rows.every((r) => Number.isFinite(r.ms) && r.ms >= 0), `device times: ${JSON.stringify(rows)}`);
    const deviceMs = rows.reduce((t, r) => t + r.ms, 0);
    assert(
      deviceMs > 0 && deviceMs < wallMs,
      `device time ${deviceMs} ms, within the ${wallMs} ms it all took`,
    );
  } else {
    assert(rows.every((r) => Number.isNaN(r.ms)), "WebGPU without timestamps counts calls, no times");
  }
  assert(
    has("optimizer", /adam/i),
    `optimizer rows: ${JSON.stringify(rows.filter((r) => r.phase === "optimizer"))}`,
  );
  assertEquals(fl.stopProfile(), [], "nothing collected after stopProfile");
});
