// PyTorch references for the CNN ops and layers (tests/fixtures/cnn_goldens.json, written by
// tests/fixtures/make_cnn_goldens.py): conv2d, batchNorm2d, the pools and cat, forward and gradients of
// sum(out * R) against float64 references; and a small CNN trained 5 steps with SGD and with Adam, whose
// losses, final parameters and running statistics must follow PyTorch's float32 run.
import * as fl from "../mod.ts";
await fl.init();

import { readFileSync } from "node:fs";
import { assert, assertClose, assertEquals, test } from "./harness.ts";

interface T {
  shape: number[];
  data: number[];
}
type P = [number, number];
interface OpCase {
  name: string;
  out: T;
  R: T;
}
interface ConvCase extends OpCase {
  x: T;
  w: T;
  b: T | null;
  stride: P;
  padding: P;
  dilation: P;
  groups: number;
  grad_x: T;
  grad_w: T;
  grad_b: T | null;
}
interface BatchNormCase extends OpCase {
  x: T;
  weight: T;
  bias: T;
  running_mean: T;
  running_var: T;
  training: boolean;
  momentum: number;
  eps: number;
  grad_x: T;
  grad_weight: T;
  grad_bias: T;
  running_mean_after: T;
  running_var_after: T;
}
interface MaxPoolCase extends OpCase {
  x: T;
  kernel_size: P;
  stride: P;
  padding: P;
  dilation: P;
  ceil_mode: boolean;
  grad_x: T;
}
interface AvgPoolCase extends OpCase {
  x: T;
  kernel_size: P;
  stride: P;
  padding: P;
  ceil_mode: boolean;
  count_include_pad: boolean;
  grad_x: T;
}
interface AdaptiveCase extends OpCase {
  x: T;
  output_size: P;
  grad_x: T;
}
interface CatCase extends OpCase {
  xs: T[];
  dim: number;
  grad_xs: T[];
}
interface TrajectoryCase {
  name: string;
  optimizer: "sgd" | "adam";
  lr: number;
  momentum: number;
  betas: [number, number] | null;
  eps: number | null;
  steps: number;
  keys: string[];
  initial_state: Record<string, T>;
  x: T;
  targets: number[];
  losses: number[];
  losses_float64: number[];
  final_state: Record<string, T>;
  noise_keys: string[];
}
interface Goldens {
  conv2d: ConvCase[];
  batchNorm2d: BatchNormCase[];
  maxPool2d: MaxPoolCase[];
  avgPool2d: AvgPoolCase[];
  adaptiveAvgPool2d: AdaptiveCase[];
  cat: CatCase[];
  trajectory: TrajectoryCase[];
}

const goldens = JSON.parse(
  readFileSync(new URL("./fixtures/cnn_goldens.json", import.meta.url), "utf8"),
) as Goldens;

// float32 on the device against float64 references: 1e-4 relative, and an absolute floor for elements
// that sums cancel to near zero.
const OP_TOL = { rtol: 1e-4, atol: 1e-5 };
// Five float32 training steps against PyTorch's float32 run.
const TRAJ_TOL = { rtol: 1e-3, atol: 1e-5 };

const upload = (t: T, requiresGrad = false) =>
  fl.tensor(Float32Array.from(t.data), t.shape, { requiresGrad });

async function expectTensor(actual: fl.Tensor, want: T, msg: string, tol = OP_TOL): Promise<void> {
  assertEquals(actual.shape, want.shape, `${msg} shape`);
  assertClose(await actual.toArray(), want.data, { ...tol, msg });
}

/**
 * Runs `fn` in a scope on uploaded inputs, compares out, backpropagates sum(out * R) and compares each
 * input's gradient; the scope must leave no tensor behind.
 */
async function checkOp(
  c: OpCase,
  inputs: { name: string; value: T; grad: T | null }[],
  fn: (xs: fl.Tensor[]) => fl.Tensor,
  after?: () => Promise<void>,
): Promise<void> {
  const before = fl.liveTensorCount();
  await fl.scope(async () => {
    const xs = inputs.map((i) => upload(i.value, true));
    const out = fn(xs);
    await expectTensor(out, c.out, `${c.name}: out`);
    fl.F.sum(fl.F.mul(out, upload(c.R))).backward();
    for (let i = 0; i < inputs.length; i++) {
      const want = inputs[i].grad;
      if (!want) continue;
      assert(xs[i].grad, `${c.name}: grad_${inputs[i].name} missing`);
      await expectTensor(xs[i].grad!, want, `${c.name}: grad_${inputs[i].name}`);
    }
    if (after) await after();
  });
  assertEquals(fl.liveTensorCount(), before, `${c.name}: live tensors`);
}

for (const c of goldens.conv2d) {
  test(`conv2d golden ${c.name}`, async () => {
    const inputs = [
      { name: "x", value: c.x, grad: c.grad_x },
      { name: "w", value: c.w, grad: c.grad_w },
      ...(c.b ? [{ name: "b", value: c.b, grad: c.grad_b }] : []),
    ];
    await checkOp(c, inputs, (xs) =>
      fl.F.conv2d(xs[0], xs[1], xs[2] ?? null, {
        stride: c.stride,
        padding: c.padding,
        dilation: c.dilation,
        groups: c.groups,
      }));
  });
}

for (const c of goldens.batchNorm2d) {
  test(`batchNorm2d golden ${c.name}`, async () => {
    let runningMean: fl.Tensor | null = null, runningVar: fl.Tensor | null = null;
    const inputs = [
      { name: "x", value: c.x, grad: c.grad_x },
      { name: "weight", value: c.weight, grad: c.grad_weight },
      { name: "bias", value: c.bias, grad: c.grad_bias },
    ];
    await checkOp(
      c,
      inputs,
      (xs) => {
        runningMean = upload(c.running_mean);
        runningVar = upload(c.running_var);
        return fl.F.batchNorm2d(xs[0], runningMean, runningVar, xs[1], xs[2], {
          training: c.training,
          momentum: c.momentum,
          eps: c.eps,
        });
      },
      async () => {
        await expectTensor(runningMean!, c.running_mean_after, `${c.name}: running_mean after`);
        await expectTensor(runningVar!, c.running_var_after, `${c.name}: running_var after`);
      },
    );
  });
}

for (const c of goldens.maxPool2d) {
  test(`maxPool2d golden ${c.name}`, async () => {
    await checkOp(c, [{ name: "x", value: c.x, grad: c.grad_x }], (xs) =>
      fl.F.maxPool2d(xs[0], {
        kernelSize: c.kernel_size,
        stride: c.stride,
        padding: c.padding,
        dilation: c.dilation,
        ceilMode: c.ceil_mode,
      }));
  });
}

for (const c of goldens.avgPool2d) {
  test(`avgPool2d golden ${c.name}`, async () => {
    await checkOp(c, [{ name: "x", value: c.x, grad: c.grad_x }], (xs) =>
      fl.F.avgPool2d(xs[0], {
        kernelSize: c.kernel_size,
        stride: c.stride,
        padding: c.padding,
        ceilMode: c.ceil_mode,
        countIncludePad: c.count_include_pad,
      }));
  });
}

for (const c of goldens.adaptiveAvgPool2d) {
  test(`adaptiveAvgPool2d golden ${c.name}`, async () => {
    await checkOp(
      c,
      [{ name: "x", value: c.x, grad: c.grad_x }],
      (xs) => fl.F.adaptiveAvgPool2d(xs[0], c.output_size),
    );
  });
}

for (const c of goldens.cat) {
  test(`cat golden ${c.name}`, async () => {
    const inputs = c.xs.map((x, i) => ({ name: `xs[${i}]`, value: x, grad: c.grad_xs[i] }));
    await checkOp(c, inputs, (xs) => fl.F.cat(xs, c.dim));
  });
}

test("cnn goldens cover every op family", () => {
  const counts = Object.fromEntries(Object.entries(goldens).map(([k, v]) => [k, (v as unknown[]).length]));
  assertEquals(
    Object.keys(counts),
    ["conv2d", "batchNorm2d", "maxPool2d", "avgPool2d", "adaptiveAvgPool2d", "cat", "trajectory"],
  );
  assert(counts.conv2d >= 20 && counts.batchNorm2d >= 6 && counts.trajectory === 2, JSON.stringify(counts));
});

/** The golden network, layer for layer as torch.nn.Sequential, so its state-dict keys are PyTorch's. */
function buildNet(): fl.nn.Sequential {
  return new fl.nn.Sequential(
    new fl.nn.Conv2d(3, 8, 3, { padding: 1 }),
    new fl.nn.BatchNorm2d(8),
    new fl.nn.ReLU(),
    new fl.nn.MaxPool2d(2),
    new fl.nn.Conv2d(8, 12, 3, { padding: 1, bias: false }),
    new fl.nn.BatchNorm2d(12),
    new fl.nn.ReLU(),
    new fl.nn.AdaptiveAvgPool2d([1, 1]),
    new fl.nn.Flatten(),
    new fl.nn.Linear(12, 4),
  );
}

const isCount = (key: string) => key.endsWith("num_batches_tracked");

for (const c of goldens.trajectory) {
  test(`cnn training trajectory ${c.name}: ${c.steps} steps of losses, final parameters and running stats`, async () => {
    const before = fl.liveTensorCount();
    const model = buildNet();
    // The same keys; the order is not compared (Module lists parameters before buffers, PyTorch per module).
    assertEquals(Object.keys(model.stateDict()).sort(), [...c.keys].sort(), `${c.name}: state-dict keys`);
    model.loadStateDict(
      Object.fromEntries(
        Object.entries(c.initial_state).map(([k, t]) => [
          k,
          { dtype: isCount(k) ? "int64" : "float32", shape: t.shape, data: t.data },
        ]),
      ),
    );
    model.train();
    const params = model.parameters();
    const opt = c.optimizer === "sgd"
      ? new fl.optim.SGD(params, { lr: c.lr, momentum: c.momentum })
      : new fl.optim.Adam(params, { lr: c.lr, betas: c.betas!, eps: c.eps! });
    const x = upload(c.x);
    const losses: number[] = [];
    try {
      for (let step = 0; step < c.steps; step++) {
        losses.push(
          await fl.scope(async () => {
            const loss = fl.F.crossEntropy(model.forward(x), c.targets);
            opt.zeroGrad();
            loss.backward();
            opt.step();
            return await loss.item();
          }),
        );
      }
      assertClose(losses, c.losses, { ...TRAJ_TOL, msg: `${c.name}: losses` });
      const state = model.stateDict();
      for (const key of c.keys) {
        const want = c.final_state[key];
        const got = state[key];
        assertEquals(got.size, want.data.length, `${c.name}: ${key} size`);
        const values = Array.from(
          got.dtype === "int32" ? await got.toInt32Array() : await got.toArray(),
          Number,
        );
        if (isCount(key)) {
          assertEquals(values, want.data, `${c.name}: ${key}`);
        } else if (c.noise_keys.includes(key)) {
          // Rounding noise decides these (see the fixture's docstring): only a bound holds.
          assertClose(values, want.data, {
            rtol: 0,
            atol: 2 * c.lr * c.steps,
            msg: `${c.name}: ${key} (noise key)`,
          });
        } else {
          assertClose(values, want.data, { ...TRAJ_TOL, msg: `${c.name}: final ${key}` });
        }
      }
    } finally {
      x.dispose();
      opt.dispose();
      model.dispose();
    }
    assertEquals(fl.liveTensorCount(), before, `${c.name}: live tensors`);
  });
}
