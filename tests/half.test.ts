// Half precision (src/backend/half.ts, fl.autocast, fl.train.trainStepScaled): float16 storage of activations
// on WebGPU devices with shader-f16, float32 arithmetic in every kernel. References: an exhaustive check of
// the CPU conversion over all 65,536 halves (and Math.f16round where the engine has it); each op's float16
// result against the float32 op on the same (float16-representable) inputs, rounded to float16 on the CPU;
// a tiny learner's training curve against its float32 curve; the peak memory of a step both ways.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";
import { createLearner } from "../src/flannel/learners.ts";
import { syntheticImages } from "../bench/synthetic_images.ts";
import { halfBits, halfPrecisionWgsl, halfValue } from "../src/backend/half.ts";
import { setGemmChoice } from "../src/kernels/gemm.ts";
import { assert, assertClose, assertEquals, assertRejects, assertThrows, skip, test } from "./harness.ts";

await fl.init();
const needsHalf = () => {
  const info = fl.backendInfo()!;
  if (info.backend !== "webgpu") skip("float16 tensors are WebGPU-only (the WebAssembly twins are float32)");
  if (!info.features.includes("shader-f16")) skip(`this adapter (${info.adapter}) offers no shader-f16`);
};

/** `values` rounded to the nearest float16 on the CPU (the reference for the device's conversions). */
const roundHalf = (values: ArrayLike<number>) => Float32Array.from(values, (v) => halfValue(halfBits(v)));

/** sqrt(sum (a - e)^2 / sum e^2). */
function relativeL2(a: ArrayLike<number>, e: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < e.length; i++) num += (a[i] - e[i]) ** 2, den += e[i] ** 2;
  return Math.sqrt(num / den);
}

test("float16 conversion on the CPU: every half round-trips, midpoints round to even, overflow and underflow", () => {
  for (let h = 0; h < 0x10000; h++) {
    const v = halfValue(h);
    if (Number.isNaN(v)) {
      assert((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0, `NaN from ${h.toString(16)}`);
      assert(Number.isNaN(halfValue(halfBits(v))), "NaN stays NaN");
      continue;
    }
    assertEquals(halfBits(v), h, `half ${h.toString(16)} (${v})`);
    // the midpoint to the next half up (same sign) rounds to the one whose last bit is 0
    const next = h + 1;
    if ((h & 0x7fff) < 0x7bff && (next & 0x7c00) !== 0x7c00) {
      const mid = (v + halfValue(next)) / 2;
      if (Math.fround(mid) === mid) {
        assertEquals(halfBits(mid), (h & 1) === 0 ? h : next, `midpoint after ${h.toString(16)}`);
        const above = mid + Math.abs(mid) * 2 ** -20;
        if (Math.fround(above) === above) {
          assertEquals(halfBits(above), h & 0x8000 ? h : next, "above midpoint");
        }
      }
    }
  }
  assertEquals(halfBits(65520), 0x7c00, "65520 (half-way past the largest half) overflows to Infinity");
  assertEquals(halfBits(65519), 0x7bff, "65519 rounds to 65504");
  assertEquals(halfBits(2 ** -25), 0, "half the smallest subnormal ties to zero");
  assertEquals(halfBits(2 ** -25 * 1.0001), 1, "just above it rounds up to the smallest subnormal");
  assertEquals(halfBits(-0), 0x8000);
  const f16round = (Math as unknown as { f16round?: (v: number) => number }).f16round;
  if (f16round) {
    const rng = new fl.Generator(3);
    for (let i = 0; i < 20000; i++) {
      const bits = Math.floor(rng.uniform() * 2 ** 32) >>> 0;
      const v = new Float32Array(new Uint32Array([bits]).buffer)[0];
      if (!Number.isFinite(v)) continue;
      assert(Object.is(halfValue(halfBits(v)), f16round(v)), `${v}: ours ${halfValue(halfBits(v))}`);
    }
  }
});

test("the float16 variant of a kernel's WGSL: reads widen, writes narrow, compound writes, vec4, refusals", () => {
  const code = `@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> idx: array<i32>;
fn main() { let i = 1u; out[a[i] > 0.0 ? 1u : 0u] = a[i] * b[i].x; out[2u] += a[u32(a[0])]; let v = b[i]; }`
    .replace("a[i] > 0.0 ? 1u : 0u", "select(0u, 1u, a[i] > 0.0)");
  const half = halfPrecisionWgsl("k", code, [0, 1, 2]);
  assert(half.startsWith("enable f16;\n"), half);
  assert(half.includes("var<storage, read> a: array<f16>;"), half);
  assert(half.includes("var<storage, read> b: array<vec4<f16>>;"), half);
  assert(half.includes("var<storage, read_write> idx: array<i32>;"), "an unbound binding keeps its type");
  assert(
    half.includes("out[select(0u, 1u, f32(a[i]) > 0.0)] = f16(f32(a[i]) * vec4<f32>(b[i]).x);"),
    half,
  );
  assert(half.includes("out[2u] = f16(f32(out[2u]) + (f32(a[u32(f32(a[0]))])));"), half);
  assert(half.includes("let v = vec4<f32>(b[i]);"), half);
  assertThrows(() => halfPrecisionWgsl("k", code, [3]), /binding 3 \(idx\) is array<i32>/);
  assertThrows(
    () => halfPrecisionWgsl("k", code.replace("let v = b[i];", "b[i].y = 1.0;"), [1]),
    /writes one component/,
  );
  assertThrows(() => halfPrecisionWgsl("k", code.replace("let i = 1u;", "let a = 1u;"), [0]), /shadows/);
  assertThrows(() => halfPrecisionWgsl("k", code.replace("let v = b[i];", "let p = &a[0];"), [0]), /pointer/);
});

test("the loss scaler: halves at an overflow, grows after its interval of good steps, rejects bad options", () => {
  const s = new fl.train.LossScaler({ initScale: 1024, growthInterval: 3 });
  s.update(true), s.update(true);
  assertEquals(s.scale, 1024);
  s.update(true);
  assertEquals(s.scale, 2048);
  s.update(true), s.update(false);
  assertEquals([s.scale, s.goodSteps, s.skippedSteps], [1024, 0, 1]);
  assertThrows(() => new fl.train.LossScaler({ initScale: 0 }), /initScale must be finite and > 0/);
  assertThrows(() => new fl.train.LossScaler({ backoffFactor: 2 }), /backoffFactor < 1/);
  assertThrows(() => new fl.train.LossScaler({ growthInterval: 1.5 }), /positive integer/);
});

test("float16 tensors where the backend cannot store them: a clear error", () => {
  const info = fl.backendInfo()!;
  if (info.backend === "webgpu" && info.features.includes("shader-f16")) {
    skip("this adapter stores float16 (the other tests cover it)");
  }
  assertThrows(() => fl.tensor([1, 2], [2], { dtype: "float16" }), /float16 tensors need the WebGPU backend/);
  assertThrows(() => fl.zeros([2], { dtype: "float16" }), /shader-f16/);
});

test("cast to float16 and back: the device rounds as the CPU reference, bit for bit (ties, subnormals, overflow)", async () => {
  needsHalf();
  const values = Float32Array.from([
    1,
    1 + 2 ** -11, // a tie: to even (1)
    1 + 3 * 2 ** -11, // a tie: to even (1 + 2^-9)
    65504,
    65519,
    65520,
    -70000,
    2 ** -24,
    3 * 2 ** -26,
    2 ** -26,
    6.1e-5,
    -0,
    1 / 3,
    Math.PI,
    -1e-7,
  ]);
  const rng = new fl.Generator(5);
  const random = Float32Array.from(
    { length: 4096 },
    () => (rng.uniform() - 0.5) * 2 ** (rng.uniform() * 40 - 24),
  );
  for (const data of [values, random]) {
    const h = fl.tensor(data, [data.length], { dtype: "float16" });
    assertEquals(h.dtype, "float16");
    assertEquals(h.byteLength, Math.ceil(data.length / 2) * 4);
    const back = fl.cast(h, "float32");
    const got = await back.toArray(), direct = await h.toArray();
    const want = roundHalf(data);
    for (let i = 0; i < data.length; i++) {
      assert(Object.is(got[i], want[i]), `${data[i]}: device ${got[i]}, CPU ${want[i]}`);
      assert(Object.is(direct[i], want[i]), `${data[i]}: toArray ${direct[i]}, CPU ${want[i]}`);
    }
    h.dispose(), back.dispose();
  }
});

/** Ops as a learner's step uses them, on x [2, 8, 12, 12]. */
function opCases(): Record<string, (x: fl.Tensor) => fl.Tensor> {
  const F = fl.F;
  const w = (shape: number[], seed: number) => fl.tensor(roundHalf(rand(shape, seed)), shape);
  const w3 = w([8, 8, 3, 3], 2), w1 = w([12, 8, 1, 1], 3), w17 = w([8, 8, 1, 7], 4), wg = w([8, 2, 3, 3], 9);
  const mean = w([8], 5), variance = fl.tensor(roundHalf(rand([8], 6).map((v) => 0.5 + Math.abs(v))));
  const gamma = w([8], 7), beta = w([8], 8), fc = w([4, 8 * 12 * 12], 10), fcBias = w([4], 11);
  return {
    "conv 3x3": (x) => F.conv2d(x, w3, null, { padding: 1 }),
    "conv 1x1": (x) => F.conv2d(x, w1),
    "conv 1x7": (x) => F.conv2d(x, w17, null, { padding: [0, 3] }),
    "conv 3x3 stride 2": (x) => F.conv2d(x, w3, null, { stride: 2 }),
    "conv grouped": (x) => F.conv2d(x, wg, null, { padding: 1, groups: 4 }),
    "batch norm (eval)": (x) => F.batchNorm2d(x, mean, variance, gamma, beta),
    "batch norm (training)": (x) => F.batchNorm2d(x, null, null, gamma, beta, { training: true }),
    "batch norm + residual + relu": (x) =>
      F.batchNorm2d(x, mean, variance, gamma, beta, { residual: x, relu: true }),
    "relu": (x) => F.relu(x),
    "add": (x) => F.add(x, F.relu(x)),
    "max pool": (x) => F.maxPool2d(x, { kernelSize: 3, stride: 2 }),
    "avg pool": (x) => F.avgPool2d(x, { kernelSize: 3, stride: 1, padding: 1 }),
    "adaptive avg pool": (x) => F.adaptiveAvgPool2d(x, [1, 1]),
    "cat": (x) => F.cat([x, F.relu(x)], 1),
    "linear": (x) => F.linear(F.flatten(x), fc, fcBias),
    "log softmax": (x) => F.logSoftmax(F.flatten(x)),
  };
}

function rand(shape: number[], seed: number): Float32Array {
  const rng = new fl.Generator(seed);
  return Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => 2 * rng.uniform() - 1);
}

test("each op on float16 activations: the float32 op's result rounded to float16 (bit for bit), its input gradient within float16 rounding", async () => {
  needsHalf();
  const shape = [2, 8, 12, 12];
  const x32 = roundHalf(rand(shape, 1));
  const errors: string[] = [];
  await fl.scope(async () => {
    for (const [name, op] of Object.entries(opCases())) {
      const results = [];
      for (const half of [false, true]) {
        results.push(
          await fl.scope(async () => {
            const x = fl.tensor(x32, shape, { dtype: half ? "float16" : "float32", requiresGrad: true });
            const y = half ? fl.autocast("float16", () => op(x)) : op(x);
            const gy = fl.tensor(roundHalf(rand(y.shape, 11)), y.shape);
            fl.F.sum(fl.F.mul(y, gy)).backward();
            return {
              y: await y.toArray(),
              dtype: y.dtype,
              dx: await x.grad!.toArray(),
              dxType: x.grad!.dtype,
            };
          }),
        );
      }
      const [full, half] = results;
      // softmax and linear with a float32 bias promote to float32 (autocast's rule); the rest stay float16
      const promotes = name === "log softmax" || name === "linear";
      assertEquals(half.dtype, promotes ? "float32" : "float16", name);
      assertEquals(half.dxType, "float16", `${name}: the gradient has its tensor's dtype`);
      if (name === "batch norm + residual + relu") {
        // the epilogue adds to the stored, rounded batch norm output (|values| < 4 here): off by at most
        // half an ulp of that, 2^-10, plus the final rounding
        assertClose(half.y, roundHalf(full.y), { rtol: 2 ** -11, atol: 2 ** -10, msg: name });
      } else if (!promotes) {
        const want = roundHalf(full.y);
        const off = want.findIndex((v, i) => !Object.is(v, half.y[i]));
        assert(off < 0, `${name}: element ${off}: float16 ${half.y[off]}, float32 rounded ${want[off]}`);
      } else assertClose(half.y, full.y, { rtol: 2e-3, atol: 1e-3, msg: name });
      const err = relativeL2(half.dx, full.dx);
      errors.push(`${name} ${err.toExponential(1)}`);
      assert(err < 1e-3, `${name}: input gradient off by ${err} (relative L2) from float32`);
    }
  });
  console.log(`  input gradients, float16 against float32 (relative L2): ${errors.join(", ")}`);
});

test("autocast: products write float16, parameters and their gradients stay float32, outside it ops follow their input", () => {
  needsHalf();
  fl.scope(() => {
    const conv = new fl.nn.Conv2d(3, 4, 3, { padding: 1 });
    const x = fl.randn([2, 3, 8, 8], { seed: 1 });
    const y = fl.autocast("float16", () => conv.forward(x));
    assertEquals(y.dtype, "float16");
    assertEquals(conv.forward(x).dtype, "float32", "outside autocast");
    assertEquals(fl.F.relu(y).dtype, "float16", "an op follows its input");
    assertEquals(
      fl.autocast("float16", () => fl.autocast("float32", () => conv.forward(x))).dtype,
      "float32",
    );
    fl.F.sum(y).backward();
    for (const p of conv.parameters()) assertEquals(p.grad!.dtype, "float32");
    assertThrows(() => fl.autocast("float16", () => Promise.resolve(1)), /synchronous/);
    assertThrows(() => fl.cast(fl.intTensor([1]), "float16"), /needs a float tensor/);
  });
});

test("a tiny learner trained 12 steps in float16 with loss scaling follows its float32 curve", async () => {
  needsHalf();
  const xs = Array.from({ length: 4 }, (_, i) => fl.randn([8, 3, 64, 64], { seed: 10 + i }).keep());
  const ys = Array.from({ length: 4 }, (_, i) => Array.from({ length: 8 }, (_, j) => (i + j) % 4));
  const curves: number[][] = [];
  let skipped = 0;
  for (const half of [false, true]) {
    fl.manualSeed(5);
    const model = createLearner("resnet152", { scale: "tiny", seed: 1, crop: 64 });
    model.train();
    const optimizer = new fl.optim.Adam(model.parameters(), { lr: 1e-3 });
    const lossSum = fl.zeros([]).keep();
    const scaler = new fl.train.LossScaler({ initScale: 2 ** 24 }); // overflows at first: skips and backs off
    const curve: number[] = [];
    const live: number[] = [];
    for (let step = 0; curve.length < 12; step++) {
      assert(step < 40, "float16 steps keep overflowing");
      // a skipped step leaves the weights as they were: the next one takes the same batch again
      const b = curve.length % 4;
      const loss = () => fl.F.crossEntropy(model.forward(xs[b]), ys[b]);
      if (half) {
        const r = await fl.train.trainStepScaled(
          optimizer,
          () => fl.autocast("float16", loss),
          lossSum,
          1,
          scaler,
          model.parameters(),
        );
        if (r.stepped) curve.push(r.loss);
        else skipped++;
        live.push(fl.liveTensorCount());
      } else {
        const h = fl.train.trainStep(optimizer, loss, lossSum, 1, model.parameters())!;
        curve.push(await h.loss.item());
        h.loss.dispose(), h.health.dispose();
      }
    }
    if (half) {
      assertEquals(scaler.skippedSteps, skipped);
      // Adam's state exists from the first step taken on: from then on a step leaves nothing behind
      assertEquals(new Set(live.slice(skipped + 1)).size, 1, `live tensors after each step: ${live}`);
    }
    curves.push(curve);
    lossSum.dispose(), optimizer.dispose(), model.dispose();
  }
  for (const x of xs) x.dispose();
  const [full, half] = curves;
  const worst = Math.max(...half.map((v, i) => Math.abs(v - full[i])));
  console.log(`  float32: ${full.map((v) => v.toFixed(3)).join(" ")}`);
  console.log(`  float16: ${half.map((v) => v.toFixed(3)).join(" ")} (${skipped} overflowing steps skipped)`);
  console.log(`  largest difference ${worst.toFixed(4)}`);
  assert(skipped >= 1, "a scale of 2^24 overflows float16 gradients at first");
  assert(worst < 0.05, `float16 curve off the float32 one by ${worst}`);
  assert(half[11] < 0.6 * half[0], `float16 loss fell from ${half[0]} to ${half[11]}`);
});

test("the staged (workgroup-memory) GEMM that GPUs run, on float16 activations: the float32 result rounded", async () => {
  needsHalf();
  const before = setGemmChoice("staged");
  try {
    const shape = [2, 8, 12, 12];
    const x32 = roundHalf(rand(shape, 1));
    const cases = opCases();
    for (const name of ["conv 3x3", "conv 1x1", "conv 1x7"]) {
      const [full, half] = await Promise.all([false, true].map((h) =>
        fl.scope(() => {
          const x = fl.tensor(x32, shape, { dtype: h ? "float16" : "float32" });
          return (h ? fl.autocast("float16", () => cases[name](x)) : cases[name](x)).toArray();
        })
      ));
      const want = roundHalf(full);
      const off = want.findIndex((v, i) => !Object.is(v, half[i]));
      assert(off < 0, `${name}: element ${off}: float16 ${half[off]}, float32 rounded ${want[off]}`);
    }
  } finally {
    setGemmChoice(before);
  }
});

test("a training step's peak memory with float16 activations: under three quarters of float32's", async () => {
  needsHalf();
  const peaks: number[] = [];
  for (const half of [false, true]) {
    // activations dominate: 16 channels at 96 x 96 for a batch of 8, a few thousand weights
    const net = new fl.nn.Sequential(
      new fl.nn.Conv2d(3, 16, 3, { padding: 1, bias: false }),
      new fl.nn.BatchNorm2d(16),
      new fl.nn.ReLU(),
      new fl.nn.Conv2d(16, 16, 3, { padding: 1, bias: false }),
      new fl.nn.BatchNorm2d(16),
      new fl.nn.ReLU(),
      new fl.nn.AdaptiveAvgPool2d(1),
      new fl.nn.Flatten(),
      new fl.nn.Linear(16, 4),
    );
    const optimizer = new fl.optim.SGD(net.parameters(), { lr: 0.01 });
    const lossSum = fl.zeros([]).keep();
    const x = fl.randn([8, 3, 96, 96], { seed: 1 }).keep();
    const loss = () => fl.F.crossEntropy(net.forward(x), [0, 1, 2, 3, 0, 1, 2, 3]);
    const step = () =>
      half
        ? fl.train.trainStepScaled(
          optimizer,
          () => fl.autocast("float16", loss),
          lossSum,
          1,
          new fl.train.LossScaler({ initScale: 256 }),
          net.parameters(),
        )
        : Promise.resolve(fl.train.trainStep(optimizer, loss, lossSum, 1));
    await step(); // the optimizer's state and the gradients exist from here on
    await fl.syncDevice();
    fl.resetPoolPeak();
    await step();
    await fl.syncDevice();
    peaks.push(fl.poolStats().peakLiveBytes);
    x.dispose(), lossSum.dispose(), optimizer.dispose(), net.dispose();
  }
  console.log(
    `  peak live bytes: float32 ${peaks[0]}, float16 ${peaks[1]} (${(peaks[1] / peaks[0]).toFixed(2)})`,
  );
  assert(peaks[1] < 0.75 * peaks[0], `float16 peak ${peaks[1]} against float32 ${peaks[0]}`);
});

test("trainStage1 precision f16: trains, kept in the checkpoint, the other precision refused on resume; refused without shader-f16", async () => {
  const images = syntheticImages(16, 20, 4);
  const set = { images, labels: Int32Array.from({ length: 16 }, (_, i) => i % 4) };
  const dir = mkdtempSync(join(tmpdir(), "fl-half-"));
  try {
    const run = (precision: "f32" | "f16", options: { resume?: boolean; stopAfterEpoch?: number } = {}) => {
      const model = createLearner("resnet152", { scale: "tiny", seed: 1, crop: 16 });
      return flannel.trainStage1({
        model,
        train: set,
        val: set,
        epochs: 2,
        batchSize: 8,
        crop: 16,
        precision,
        checkpointPath: join(dir, "ckpt.safetensors"),
        ...options,
      }).finally(() => model.dispose());
    };
    const info = fl.backendInfo()!;
    if (info.backend !== "webgpu" || !info.features.includes("shader-f16")) {
      await assertRejects(
        () => run("f16"),
        /precision "f16" needs the WebGPU backend on an adapter with shader-f16/,
      );
      return;
    }
    await assertRejects(() => run("f8" as "f16"), /precision must be "f32" or "f16"/);
    const first = await run("f16", { stopAfterEpoch: 1 });
    assert(Number.isFinite(first.history[0].trainLoss), `epoch 1 loss ${first.history[0].trainLoss}`);
    await assertRejects(
      () => run("f32", { resume: true }),
      /was trained with precision f16, this run has f32/,
    );
    const resumed = await run("f16", { resume: true });
    assertEquals(resumed.history.length, 2);
    assert(
      resumed.history.every((h) => Number.isFinite(h.trainLoss) && h.trainLoss > 0),
      JSON.stringify(resumed.history),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a loss-scaled step at a power-of-two scale takes the unscaled step's weights, bit for bit (float32, any backend)", async () => {
  const weights: Float32Array[] = [];
  for (const scaled of [false, true]) {
    const net = new fl.nn.Sequential(
      new fl.nn.Conv2d(3, 4, 3, { padding: 1, generator: new fl.Generator(1) }),
      new fl.nn.ReLU(),
      new fl.nn.AdaptiveAvgPool2d(1),
      new fl.nn.Flatten(),
      new fl.nn.Linear(4, 4, { generator: new fl.Generator(2) }),
    );
    const optimizer = new fl.optim.Adam(net.parameters(), { lr: 0.01 });
    const lossSum = fl.zeros([]).keep();
    const x = fl.randn([4, 3, 8, 8], { seed: 3 }).keep();
    const loss = () => fl.F.crossEntropy(net.forward(x), [0, 1, 2, 3]);
    for (let step = 0; step < 3; step++) {
      if (scaled) {
        const r = await fl.train.trainStepScaled(
          optimizer,
          loss,
          lossSum,
          1,
          new fl.train.LossScaler({ initScale: 1024 }),
          net.parameters(),
        );
        assert(r.stepped && r.scale === 1024, JSON.stringify(r));
      } else fl.train.trainStep(optimizer, loss, lossSum, 1);
    }
    weights.push(...await Promise.all(net.parameters().map((p) => p.toArray())));
    x.dispose(), lossSum.dispose(), optimizer.dispose(), net.dispose();
  }
  const half = weights.length / 2;
  for (let i = 0; i < half; i++) {
    const off = weights[i].findIndex((v, j) => !Object.is(v, weights[half + i][j]));
    assert(
      off < 0,
      `parameter ${i}, element ${off}: ${weights[i][off]} unscaled, ${weights[half + i][off]} scaled`,
    );
  }
});
