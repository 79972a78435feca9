// Every op of `fl.F` against the float64 CPU reference (tests/reference.ts): forward values, and gradients
// from the device's backward() against central finite differences of sum(f(x) * R). Then autograd
// bookkeeping (accumulation, noGrad, scope, dispose), the RNG and dropout, input validation, optimizers.
import * as fl from "../mod.ts";
await fl.init();

import { assert, assertClose, assertEquals, assertRejects, assertThrows, skip, test } from "./harness.ts";
import * as ref from "./reference.ts";
import type { Arr, Rng } from "./reference.ts";
import { checkOp as checkOpWith, type OpCase, rng, toDevice, type Tol } from "./opcheck.ts";
import { threefry2x32 } from "../src/kernels/random.ts";

type Tensor = fl.Tensor;
const FWD: Tol = { rtol: 1e-5, atol: 1e-6 };
const BWD: Tol = { rtol: 1e-4, atol: 1e-5 };
const TOL = { fwd: FWD, bwd: BWD };
const checkOp = (c: OpCase) => checkOpWith(c, TOL);

// ---------------------------------------------------------------------------------------------------------
// Element-wise

const SIZES: number[][] = [[1], [3], [7], [1037], [3, 347]];

test("exp, sigmoid and silu over all of f32's range: exp within 2 ulp of float64 up to overflow, +inf above, 0 below; NaN stays NaN; an element's bits do not depend on where it sits", async () => {
  if (fl.backendInfo()?.backend !== "wasm") {
    skip("WebGPU's exp is the driver's; this checks the WebAssembly twins' (src/kernels/wasm/math.ts)");
  }
  const n = 60001, xs = new Float32Array(n);
  for (let i = 0; i < n; i++) xs[i] = Math.fround(-110 + 205 * i / (n - 1));
  xs.set([NaN, Infinity, -Infinity, 0, -0, 88.72, 88.73, -87.5, -103.5]);
  const [e, sig, si, shifted] = await fl.scope(async () => {
    const t = fl.tensor(xs, [n]);
    return [
      await fl.F.exp(t).toArray(),
      await fl.F.sigmoid(t).toArray(),
      await fl.F.silu(t).toArray(),
      // the same values one place further on: lanes of four and the scalar tail meet elsewhere
      await fl.F.exp(fl.tensor(Float32Array.from([1, ...xs]), [n + 1])).toArray(),
    ] as Float32Array[];
  });
  assertEquals(Array.from(e.subarray(0, 5)), [NaN, Infinity, 0, 1, 1]);
  assertEquals(
    [e[5] > 3.3e38 && e[5] < Infinity, e[6]],
    [true, Infinity],
    "exp(88.72) is finite, exp(88.73) overflows",
  );
  let worstUlp = 0, differ = 0;
  for (let i = 0; i < n; i++) {
    if (!Object.is(shifted[i + 1], e[i])) differ++;
    const want = Math.exp(xs[i]);
    if (!(want >= 1.2e-38 && want < 3.4e38)) continue; // past the normal floats (checked above)
    const ulp = 2 ** (Math.floor(Math.log2(want)) - 23);
    worstUlp = Math.max(worstUlp, Math.abs(e[i] - want) / ulp);
    const s = 1 / (1 + Math.exp(-xs[i]));
    assertClose(sig[i], s, { rtol: 4e-7, atol: 0, msg: `sigmoid(${xs[i]})` });
    assertClose(si[i], xs[i] * s, { rtol: 4e-7, atol: 1e-45, msg: `silu(${xs[i]})` });
  }
  assert(worstUlp <= 2, `exp is ${worstUlp.toFixed(2)} ulp off at worst`);
  assertEquals(differ, 0, "elements whose exp changed with their position");
});

test("unary ops (relu, tanh, sigmoid, silu, abs, exp, log, neg, sqrt, scale, addScalar) on 1, 3, 7, 1037, 1041 elements", async () => {
  type U = [string, (x: Tensor) => Tensor, (x: Arr) => Arr, (r: Rng, s: number[]) => Arr];
  const normal = (r: Rng, s: number[]) => r.randn(s);
  const positive = (r: Rng, s: number[]) => r.rand(s, 0.1, 3);
  const unaries: U[] = [
    ["relu", fl.F.relu, ref.relu, (r, s) => r.randnAway(s, 0.05)],
    ["tanh", fl.F.tanh, ref.tanh, (r, s) => r.randn(s, 2)],
    ["sigmoid", fl.F.sigmoid, ref.sigmoid, (r, s) => r.randn(s, 4)],
    ["exp", fl.F.exp, ref.exp, (r, s) => r.randn(s, 2)],
    ["log", fl.F.log, ref.log, positive],
    ["neg", fl.F.neg, ref.neg, normal],
    ["sqrt", fl.F.sqrt, ref.sqrt, positive],
    ["scale", (x) => fl.F.scale(x, -2.5), (x) => ref.scale(x, -2.5), normal],
    ["addScalar", (x) => fl.F.addScalar(x, 1.25), (x) => ref.addScalar(x, 1.25), normal],
    ["silu", fl.F.silu, ref.silu, (r, s) => r.randn(s, 4)],
    ["abs", fl.F.abs, ref.abs, (r, s) => r.randnAway(s, 0.05)],
  ];
  let seed = 10;
  for (const [name, dev, cpu, gen] of unaries) {
    for (const shape of SIZES) {
      await checkOp({
        name: `${name} [${shape}]`,
        inputs: [gen(rng(seed++), shape)],
        device: ([x]) => dev(x),
        ref: ([x]) => cpu(x),
      });
    }
  }
});

test("l1l2Penalty: l1 sum |w| + l2 sum w^2 over several tensors, with gradients; bad weights refused", async () => {
  const r = rng(4242);
  const penalty = (xs: Arr[], l1: number, l2: number) =>
    ref.arr([xs.reduce((a, x) => a + x.data.reduce((s, v) => s + l1 * Math.abs(v) + l2 * v * v, 0), 0)], []);
  for (const [l1, l2] of [[0.01, 0.02], [0.5, 0], [0, 0.25]]) {
    await checkOp({
      name: `l1l2Penalty l1 ${l1} l2 ${l2}`,
      inputs: [r.randnAway([3, 5], 0.05), r.randnAway([7], 0.05)],
      device: (ws) => fl.F.l1l2Penalty(ws, { l1, l2 }),
      ref: (xs) => penalty(xs, l1, l2),
    });
  }
  const w = fl.tensor([1, -2]);
  assertEquals(await fl.F.l1l2Penalty([w], {}).item(), 0, "no weights, no penalty");
  assertThrows(() => fl.F.l1l2Penalty([w], { l1: -1 }), /l1 must be finite and >= 0, got -1/);
  assertThrows(() => fl.F.l1l2Penalty([], { l2: 1 }), /no weights/);
  w.dispose();
});

test("tanh, sigmoid and silu saturate without NaN at large |x|", async () => {
  const x = ref.arr([-100, -30, -10, 0, 10, 30, 100]);
  await checkOp({
    name: "tanh large",
    inputs: [x],
    device: ([t]) => fl.F.tanh(t),
    ref: ([t]) => ref.tanh(t),
  });
  await checkOp({
    name: "sigmoid large",
    inputs: [x],
    device: ([t]) => fl.F.sigmoid(t),
    ref: ([t]) => ref.sigmoid(t),
  });
  await checkOp({
    name: "silu large",
    inputs: [x],
    device: ([t]) => fl.F.silu(t),
    ref: ([t]) => ref.silu(t),
  });
});

const BINARY: [string, (a: Tensor, b: Tensor) => Tensor, (a: Arr, b: Arr) => Arr][] = [
  ["add", fl.F.add, ref.add],
  ["sub", fl.F.sub, ref.sub],
  ["mul", fl.F.mul, ref.mul],
  ["div", fl.F.div, ref.div],
];

test("binary ops on equal shapes of 1, 3, 7, 1037 and [3, 347] elements", async () => {
  let seed = 100;
  for (const [name, dev, cpu] of BINARY) {
    for (const shape of SIZES) {
      const r = rng(seed++);
      const a = r.randn(shape), b = name === "div" ? r.randnAway(shape, 0.5) : r.randn(shape);
      await checkOp({
        name: `${name} [${shape}]`,
        inputs: [a, b],
        device: ([x, y]) => dev(x, y),
        ref: ([x, y]) => cpu(x, y),
      });
    }
  }
});

test("binary ops broadcast: [2,3]+[3], [4,1]+[1,5], [1] with [3,4], [3,1,5]+[4,1], [5]+[2,1,5]", async () => {
  const pairs: [number[], number[]][] = [
    [[2, 3], [3]],
    [[3], [2, 3]],
    [[4, 1], [1, 5]],
    [[1], [3, 4]],
    [[3, 4], [1]],
    [[3, 1, 5], [4, 1]],
    [[5], [2, 1, 5]],
    [[1, 1], [1]],
  ];
  let seed = 200;
  for (const [name, dev, cpu] of BINARY) {
    for (const [sa, sb] of pairs) {
      const r = rng(seed++);
      const a = r.randn(sa), b = name === "div" ? r.randnAway(sb, 0.5) : r.randn(sb);
      await checkOp({
        name: `${name} [${sa}] with [${sb}]`,
        inputs: [a, b],
        device: ([x, y]) => dev(x, y),
        ref: ([x, y]) => cpu(x, y),
      });
    }
  }
});

test("a gradient only flows to the inputs that require it", async () => {
  const r = rng(300);
  await checkOp({
    name: "mul, b constant",
    inputs: [r.randn([4, 1]), r.randn([1, 5])],
    grad: [true, false],
    device: ([x, y]) => fl.F.mul(x, y),
    ref: ([x, y]) => ref.mul(x, y),
  });
  await checkOp({
    name: "div, a constant",
    inputs: [r.randn([2, 3]), r.randnAway([3], 0.5)],
    grad: [false, true],
    device: ([x, y]) => fl.F.div(x, y),
    ref: ([x, y]) => ref.div(x, y),
  });
});

test("a tensor used several times in one graph sums its gradients (x*x + exp(x) - x/2)", async () => {
  await checkOp({
    name: "diamond",
    inputs: [rng(301).randn([3, 5])],
    device: ([x]) => fl.F.sub(fl.F.add(fl.F.mul(x, x), fl.F.exp(x)), fl.F.scale(x, 0.5)),
    ref: ([x]) => ref.sub(ref.add(ref.mul(x, x), ref.exp(x)), ref.scale(x, 0.5)),
  });
});

// ---------------------------------------------------------------------------------------------------------
// Reductions

test("sum and mean over the first, middle, last, negative, listed and all dims of [3,4,5], with keepDim", async () => {
  const dims: (number | number[] | undefined)[] = [0, 1, 2, -1, -3, [0, 2], [1, 2], [0, 1, 2], undefined];
  let seed = 400;
  for (const [name, dev, cpu] of [["sum", fl.F.sum, ref.sum], ["mean", fl.F.mean, ref.mean]] as const) {
    for (const dim of dims) {
      for (const keepDim of [false, true]) {
        await checkOp({
          name: `${name} dim ${JSON.stringify(dim)} keepDim ${keepDim}`,
          inputs: [rng(seed++).randn([3, 4, 5])],
          device: ([x]) => dev(x, dim, keepDim),
          ref: ([x]) => cpu(x, dim, keepDim),
        });
      }
    }
  }
});

test("reductions of odd and large sizes: all of [1], [7]; 5000 elements; mean over 700; many short rows", async () => {
  const cases: ["sum" | "mean", number[], number | number[] | undefined, boolean, Tol?][] = [
    ["sum", [1], undefined, false],
    ["sum", [7], 0, false],
    ["mean", [7], 0, true],
    ["sum", [5000], undefined, false, { rtol: 1e-5, atol: 2e-5 }],
    ["sum", [5, 1000], undefined, false, { rtol: 1e-5, atol: 2e-5 }],
    ["mean", [3, 700], 1, false],
    ["mean", [700, 3], 0, true],
    ["sum", [300, 7], 1, false],
    ["mean", [7, 300], 0, false],
    ["sum", [2, 300, 3], [0, 2], false],
  ];
  let seed = 500;
  for (const [name, shape, dim, keepDim, fwd] of cases) {
    await checkOp({
      name: `${name} [${shape}] dim ${JSON.stringify(dim)}`,
      inputs: [rng(seed++).randn(shape)],
      device: ([x]) => (name === "sum" ? fl.F.sum : fl.F.mean)(x, dim, keepDim),
      ref: ([x]) => ref[name](x, dim, keepDim),
      fwd,
    });
  }
});

test("sum of an empty tensor is 0; mean over an empty dim throws", async () => {
  await fl.scope(async () => {
    assertEquals(Array.from(await fl.F.sum(fl.zeros([0])).toArray()), [0]);
    assertThrows(() => fl.F.mean(fl.zeros([0, 3]), 0), /mean over an empty dimension/);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Matrix products

// Sums of 65 products of N(0, 1) values: float32 accumulation leaves ~1e-6 absolute error where they cancel.
const K65: Tol = { rtol: 1e-5, atol: 1e-5 };

test("matmul 2-D: 1x1x1, 7x3x5, 33x65x17, and K = 1000", async () => {
  const shapes: [number, number, number, Tol?][] = [
    [1, 1, 1],
    [7, 3, 5],
    [33, 65, 17, K65],
    [3, 1000, 4, { rtol: 1e-4, atol: 1e-4 }],
  ];
  let seed = 600;
  for (const [m, k, n, fwd] of shapes) {
    const r = rng(seed++);
    await checkOp({
      name: `matmul ${m}x${k}x${n}`,
      inputs: [r.randn([m, k]), r.randn([k, n])],
      device: ([a, b]) => fl.F.matmul(a, b),
      ref: ([a, b]) => ref.matmul(a, b),
      fwd,
    });
  }
});

test("matmul batched [3,5,7]x[3,7,2], shared [2,4,6]x[6,3] and [4,6]x[2,6,3]", async () => {
  const pairs: [number[], number[]][] = [
    [[3, 5, 7], [3, 7, 2]],
    [[2, 4, 6], [6, 3]],
    [[4, 6], [2, 6, 3]],
    [[1, 1, 1], [1, 1, 1]],
    [[2, 33, 20], [2, 20, 35]],
  ];
  let seed = 700;
  for (const [sa, sb] of pairs) {
    const r = rng(seed++);
    await checkOp({
      name: `matmul [${sa}]x[${sb}]`,
      inputs: [r.randn(sa), r.randn(sb)],
      device: ([a, b]) => fl.F.matmul(a, b),
      ref: ([a, b]) => ref.matmul(a, b),
    });
  }
});

test("the WebAssembly GEMM's splits: A packed per unit or once per call, equal column blocks, row groups across K chunks", async () => {
  if (fl.backendInfo()?.backend !== "wasm") {
    skip("the split is the WebAssembly GEMM's (src/kernels/wasm/gemm.ts)");
  }
  // K = 300 spans two K chunks (256 + 44), so every C block is accumulated; M = 100 is no multiple of the
  // 64-row block; a row group splits it where the columns are too few to keep the threads busy.
  const cases: [string, number[], number[], boolean][] = [
    ["own A per product, one column block: packed per unit", [3, 20, 300], [3, 300, 24], false],
    ["A shared by two products, 289 columns in equal blocks: packed once", [100, 300], [2, 300, 289], true],
    ["one product of 20 columns: row groups, packed per unit", [100, 300], [300, 20], false],
    ["one product of 40 columns: row groups, packed once", [100, 300], [300, 40], true],
  ];
  let seed = 750;
  for (const [what, sa, sb, packedOnce] of cases) {
    const r = rng(seed++);
    const [a, b] = [r.randn(sa), r.randn(sb)];
    const [ta, tb] = [toDevice(a), toDevice(b)];
    fl.startProfile();
    const y = fl.F.matmul(ta, tb);
    const packings = fl.stopProfile().filter((row) => row.kernel.endsWith(", A packing")).length;
    assertEquals(packings, packedOnce ? 1 : 0, `${what}: A packing dispatches`);
    assertClose(await y.toArray() as Float32Array, ref.matmul(a, b).data, {
      rtol: 1e-4,
      atol: 1e-4,
      msg: what,
    });
    for (const t of [ta, tb, y]) t.dispose();
  }
});

test("matmul with transA / transB, 2-D, batched and shared", async () => {
  // op(A) is [M, K] = [5, 7], op(B) is [K, N] = [7, 3].
  const stored = (t: boolean, rows: number, cols: number, batch?: number) => {
    const s = t ? [cols, rows] : [rows, cols];
    return batch ? [batch, ...s] : s;
  };
  let seed = 800;
  for (const [ba, bb] of [[0, 0], [2, 2], [2, 0], [0, 2]]) {
    for (const ta of [false, true]) {
      for (const tb of [false, true]) {
        const r = rng(seed++);
        await checkOp({
          name: `matmul batch ${ba}/${bb} transA ${ta} transB ${tb}`,
          inputs: [r.randn(stored(ta, 5, 7, ba)), r.randn(stored(tb, 7, 3, bb))],
          device: ([a, b]) => fl.F.matmul(a, b, ta, tb),
          ref: ([a, b]) => ref.matmul(a, b, ta, tb),
        });
      }
    }
  }
  const r = rng(850);
  await checkOp({
    name: "matmul 33x65x17 transA transB",
    inputs: [r.randn([65, 33]), r.randn([17, 65])],
    device: ([a, b]) => fl.F.matmul(a, b, true, true),
    ref: ([a, b]) => ref.matmul(a, b, true, true),
    fwd: K65,
  });
});

test("linear with and without bias", async () => {
  const r = rng(900);
  await checkOp({
    name: "linear [4,6] [3,6] [3]",
    inputs: [r.randn([4, 6]), r.randn([3, 6]), r.randn([3])],
    device: ([x, w, b]) => fl.F.linear(x, w, b),
    ref: ([x, w, b]) => ref.linear(x, w, b),
  });
  await checkOp({
    name: "linear [1,1] [1,1] [1]",
    inputs: [r.randn([1, 1]), r.randn([1, 1]), r.randn([1])],
    device: ([x, w, b]) => fl.F.linear(x, w, b),
    ref: ([x, w, b]) => ref.linear(x, w, b),
  });
  await checkOp({
    name: "linear [37,50] [9,50] no bias",
    inputs: [r.randn([37, 50]), r.randn([9, 50])],
    device: ([x, w]) => fl.F.linear(x, w),
    ref: ([x, w]) => ref.linear(x, w),
  });
});

// ---------------------------------------------------------------------------------------------------------
// Softmax

test("softmax and logSoftmax on dims 0, 1, 2 and -1 of [3,4,5], a long row and [1,1]", async () => {
  const cases: [number[], number][] = [
    [[3, 4, 5], 0],
    [[3, 4, 5], 1],
    [[3, 4, 5], 2],
    [[3, 4, 5], -1],
    [[3, 4, 5], -3],
    [
      [1037],
      0,
    ],
    [[1, 1], 1],
    [[1, 1], 0],
    [[2, 7], 0],
  ];
  let seed = 1000;
  for (
    const [name, dev, cpu] of [["softmax", fl.F.softmax, ref.softmax], [
      "logSoftmax",
      fl.F.logSoftmax,
      ref.logSoftmax,
    ]] as const
  ) {
    for (const [shape, dim] of cases) {
      await checkOp({
        name: `${name} [${shape}] dim ${dim}`,
        inputs: [rng(seed++).randn(shape, 2)],
        device: ([x]) => dev(x, dim),
        ref: ([x]) => cpu(x, dim),
      });
    }
  }
});

test("softmax and logSoftmax are stable with large logits (80, 100, -80)", async () => {
  const x = ref.arr([80, 79, 100, -80, 1, 2, 3, 4, -100, -100, -99, -101, 88, 90, 89, 87], [4, 4]);
  for (const dim of [0, 1]) {
    await checkOp({
      name: `softmax large dim ${dim}`,
      inputs: [x],
      device: ([t]) => fl.F.softmax(t, dim),
      ref: ([t]) => ref.softmax(t, dim),
    });
    await checkOp({
      name: `logSoftmax large dim ${dim}`,
      inputs: [x],
      device: ([t]) => fl.F.logSoftmax(t, dim),
      ref: ([t]) => ref.logSoftmax(t, dim),
    });
  }
});

// ---------------------------------------------------------------------------------------------------------
// Ensemble ops, views

test("outer [B,K] -> [B,K*K] on [3,4], [1,1], [2,7], [300,3]", async () => {
  let seed = 1100;
  for (const shape of [[3, 4], [1, 1], [2, 7], [300, 3]]) {
    await checkOp({
      name: `outer [${shape}]`,
      inputs: [rng(seed++).randn(shape)],
      device: ([f]) => fl.F.outer(f),
      ref: ([f]) => ref.outer(f),
    });
  }
});

test("weightedSum w [B,N], P [B,N,M] -> [B,M]", async () => {
  let seed = 1200;
  for (const [b, n, m] of [[2, 3, 4], [1, 1, 1], [5, 7, 3], [300, 2, 3]]) {
    const r = rng(seed++);
    await checkOp({
      name: `weightedSum [${b},${n}] [${b},${n},${m}]`,
      inputs: [r.randn([b, n]), r.randn([b, n, m])],
      device: ([w, p]) => fl.F.weightedSum(w, p),
      ref: ([w, p]) => ref.weightedSum(w, p),
    });
  }
});

test("reshape (with -1) and flatten pass values and gradients through", async () => {
  const cases: [string, (x: Tensor) => Tensor, (x: Arr) => Arr][] = [
    ["reshape [12,5]", (x) => fl.F.reshape(x, [12, 5]), (x) => ref.reshape(x, [12, 5])],
    ["reshape [-1,4]", (x) => fl.F.reshape(x, [-1, 4]), (x) => ref.reshape(x, [-1, 4])],
    ["reshape [60]", (x) => fl.F.reshape(x, [60]), (x) => ref.reshape(x, [60])],
    ["flatten", (x) => fl.F.flatten(x), (x) => ref.flatten(x)],
    ["flatten 0", (x) => fl.F.flatten(x, 0), (x) => ref.flatten(x, 0)],
    ["flatten 0..1", (x) => fl.F.flatten(x, 0, 1), (x) => ref.flatten(x, 0, 1)],
    // A view inside a graph: the gradient must come back in the input's shape.
    ["exp(reshape)", (x) => fl.F.exp(fl.F.reshape(x, [5, 12])), (x) => ref.exp(ref.reshape(x, [5, 12]))],
  ];
  let seed = 1300;
  for (const [name, dev, cpu] of cases) {
    await checkOp({
      name,
      inputs: [rng(seed++).randn([3, 4, 5])],
      device: ([x]) => dev(x),
      ref: ([x]) => cpu(x),
    });
  }
});

// ---------------------------------------------------------------------------------------------------------
// Losses

test("focalLoss: gamma 0, 0.5, 2, 3; with and without alpha; mean and sum", async () => {
  const alpha = [0.5, 1.5, 0.75, 1.25];
  let seed = 1400;
  for (const gamma of [0, 0.5, 2, 3]) {
    for (const a of [undefined, alpha]) {
      for (const reduction of ["mean", "sum"] as const) {
        const r = rng(seed++);
        const logits = r.randn([7, 4], 1.5), target = r.ints(7, 4);
        const opts = { gamma, alpha: a, reduction };
        await checkOp({
          name: `focal gamma ${gamma} alpha ${a ? "yes" : "no"} ${reduction}`,
          inputs: [logits],
          device: ([x]) => fl.F.focalLoss(x, target, opts),
          ref: ([x]) => ref.focalLoss(x, target, opts),
        });
      }
    }
  }
});

test("focalLoss on a batch of 1 and of 300 (more rows than one workgroup), default gamma 2", async () => {
  let seed = 1450;
  for (const [b, m] of [[1, 3], [300, 5]]) {
    const r = rng(seed++);
    const logits = r.randn([b, m]), target = Int32Array.from(r.ints(b, m));
    await checkOp({
      name: `focal [${b},${m}]`,
      inputs: [logits],
      device: ([x]) => fl.F.focalLoss(x, target),
      ref: ([x]) => ref.focalLoss(x, Array.from(target)),
    });
  }
});

test("losses of confident rows (logits ~100) keep log p_y to float32 precision", async () => {
  // log p_y = -log(1 + e^-11 + ...) ~ -1.67e-5: computing it as x_y - (max + log s) rounds log s to the
  // ulp of 100 (7.6e-6), a 9% error; (x_y - max) - log s keeps it to the rounding of s itself (~0.4%).
  const logits = ref.arr([100, 89, 80, 70, -5, 40, 28, 30, -90, -101, -120, -79], [3, 4]);
  const target = [0, 1, 3];
  for (const gamma of [0, 2]) {
    await checkOp({
      name: `focal confident gamma ${gamma}`,
      inputs: [logits],
      device: ([x]) => fl.F.focalLoss(x, target, { gamma, reduction: "sum" }),
      ref: ([x]) => ref.focalLoss(x, target, { gamma, reduction: "sum" }),
      fwd: { rtol: 1e-2, atol: 0 },
      bwd: { rtol: 1e-2, atol: 1e-9 },
    });
  }
  await checkOp({
    name: "crossEntropy confident",
    inputs: [logits],
    device: ([x]) => fl.F.crossEntropy(x, target),
    ref: ([x]) => ref.crossEntropy(x, target),
    fwd: { rtol: 1e-2, atol: 0 },
    bwd: { rtol: 1e-2, atol: 1e-7 },
  });
  await checkOp({
    name: "logSoftmax confident",
    inputs: [logits],
    device: ([x]) => fl.F.logSoftmax(x, 1),
    ref: ([x]) => ref.logSoftmax(x, 1),
  });
});

test("crossEntropy with and without weight, mean and sum; equals focal with gamma 0", async () => {
  const weight = [0.2, 2, 1, 0.8];
  let seed = 1500;
  for (const w of [undefined, weight]) {
    for (const reduction of ["mean", "sum"] as const) {
      for (const b of [7, 300]) {
        const r = rng(seed++);
        const logits = r.randn([b, 4], 1.5), target = r.ints(b, 4);
        await checkOp({
          name: `crossEntropy B ${b} weight ${w ? "yes" : "no"} ${reduction}`,
          inputs: [logits],
          device: ([x]) => fl.F.crossEntropy(x, target, { weight: w, reduction }),
          ref: ([x]) => ref.crossEntropy(x, target, { weight: w, reduction }),
        });
      }
    }
  }
  await fl.scope(async () => {
    const r = rng(1600);
    const x = toDevice(r.randn([5, 3])), target = r.ints(5, 3);
    const ce = await fl.F.crossEntropy(x, target).item();
    const focal = await fl.F.focalLoss(x, target, { gamma: 0 }).item();
    assertClose(ce, focal, { rtol: 1e-6, atol: 0 });
  });
});

// ---------------------------------------------------------------------------------------------------------
// Autograd bookkeeping

test("gradients accumulate over two backward() calls (the grad doubles)", async () => {
  await fl.scope(async () => {
    const x = fl.tensor([0.5, -1, 2], [3], { requiresGrad: true });
    fl.F.sum(fl.F.mul(fl.F.mul(x, x), x)).backward();
    const first = Array.from(await x.grad!.toArray());
    assertClose(first, [0.75, 3, 12]);
    fl.F.sum(fl.F.mul(fl.F.mul(x, x), x)).backward();
    assertClose(await x.grad!.toArray(), first.map((v) => 2 * v));
  });
});

test("noGrad records nothing", async () => {
  await fl.scope(async () => {
    const x = fl.tensor([1, 2, 3], [3], { requiresGrad: true });
    const y = fl.noGrad(() => fl.F.sum(fl.F.mul(x, x)));
    assert(!y.requiresGrad, "result of noGrad must not require grad");
    assert(y.node === null, "result of noGrad must have no graph node");
    assertEquals(await y.item(), 14);
    assertThrows(() => y.backward(), /does not require grad/);
    // Recording is back on afterwards.
    const z = fl.F.sum(fl.F.mul(x, x));
    assert(z.requiresGrad, "recording must resume after noGrad");
    assertThrows(() => fl.noGrad(() => Promise.resolve(1)), /synchronous/);
  });
});

test("scope disposes what is not returned, keeps returned tensors (arrays, objects) and .grad", async () => {
  const before = fl.liveTensorCount();
  const kept = fl.scope(() => {
    const a = fl.tensor([1, 2, 3]);
    const b = fl.tensor([10, 20, 30]);
    const c = fl.F.add(a, b);
    fl.F.mul(c, c); // dropped
    return c;
  });
  assertEquals(fl.liveTensorCount(), before + 1);
  assertEquals(Array.from(await kept.toArray()), [11, 22, 33]);
  kept.dispose();
  assertEquals(fl.liveTensorCount(), before);

  const { pair, nested } = fl.scope(() => {
    const inner = fl.scope(() => [fl.ones([2]), fl.zeros([2])]);
    fl.full([2], 7); // dropped
    return { pair: inner, nested: { deep: fl.full([1], 5) } };
  });
  assertEquals(fl.liveTensorCount(), before + 3);
  assertEquals(Array.from(await pair[0].toArray()), [1, 1]);
  assertEquals(Array.from(await nested.deep.toArray()), [5]);
  for (const t of [...pair, nested.deep]) t.dispose();
  assertEquals(fl.liveTensorCount(), before);

  // A leaf made outside keeps the gradient written inside; .keep() survives too.
  const x = fl.tensor([1, 2], [2], { requiresGrad: true });
  let survivor: Tensor | null = null;
  fl.scope(() => {
    fl.F.sum(fl.F.mul(x, x)).backward();
    survivor = fl.F.scale(x, 3).keep();
  });
  assertEquals(fl.liveTensorCount(), before + 3);
  assert(x.grad !== null && !x.grad.disposed, "x.grad must survive the scope");
  assertEquals(Array.from(await x.grad!.toArray()), [2, 4]);
  assertEquals(Array.from(await survivor!.toArray()), [3, 6]);
  survivor!.dispose();
  x.dispose(); // disposes its grad too
  assertEquals(fl.liveTensorCount(), before);

  // An async scope, and one that throws, dispose as well.
  const v = await fl.scope(async () => {
    const t = fl.tensor([4, 5]);
    const s = fl.F.sum(t);
    return await s.item();
  });
  assertEquals(v, 9);
  assertThrows(() =>
    fl.scope(() => {
      fl.ones([3]);
      throw new Error("boom");
    }), "boom");
  assertEquals(fl.liveTensorCount(), before);
});

test("forward and backward of single ops leave nothing alive once the caller disposes what it holds", () => {
  const before = fl.liveTensorCount();
  const r = rng(1700);
  // Single ops only: the caller holds every tensor of the graph (inputs, output, loss). The losses are
  // composites (per-sample kernel, sum, scale) whose intermediates only a scope frees, by design.
  const graphs: [string, number[], (x: Tensor, y: Tensor) => Tensor][] = [
    ["mul", [1, 3], (x, y) => fl.F.mul(x, y)],
    ["div", [1, 3], (x, y) => fl.F.div(x, y)],
    ["sub", [4, 1], (x, y) => fl.F.sub(x, y)],
    ["add", [3], (x, y) => fl.F.add(x, y)],
    ["softmax", [1], (x) => fl.F.softmax(x, 0)],
    ["logSoftmax", [1], (x) => fl.F.logSoftmax(x, 1)],
    ["sigmoid", [1], (x) => fl.F.sigmoid(x)],
    ["silu", [1], (x) => fl.F.silu(x)],
    ["matmul transB", [2, 3], (x, y) => fl.F.matmul(x, y, false, true)],
    ["matmul shared", [2, 4, 5], (x, y) => fl.F.matmul(x, y, true)],
    ["mean", [1], (x) => fl.F.mean(x, 1, true)],
    ["outer", [1], (x) => fl.F.outer(x)],
    ["weightedSum", [4, 3, 2], (x, y) => fl.F.weightedSum(x, y)],
    ["reshape", [1], (x) => fl.F.reshape(x, [12])],
  ];
  for (const [name, yShape, g] of graphs) {
    const x = toDevice(r.randn([4, 3]), true), y = toDevice(r.randnAway(yShape, 0.5), true);
    const out = g(x, y);
    const loss = fl.F.sum(out);
    loss.backward();
    for (const t of [loss, out, x, y]) t.dispose();
    assertEquals(fl.liveTensorCount(), before, `after ${name}`);
  }
});

test("dispose: safe twice, buffers are reused with fresh values, views outlive their source", async () => {
  const before = fl.liveTensorCount();
  const t = fl.tensor([1, 2, 3]);
  t.dispose();
  assert(t.disposed, "disposed flag");
  t.dispose();
  assertEquals(fl.liveTensorCount(), before);
  const u = fl.tensor([4, 5, 6]);
  assertEquals(Array.from(await u.toArray()), [4, 5, 6]);
  const w = fl.zeros([3]);
  assertEquals(Array.from(await w.toArray()), [0, 0, 0]);
  const v = fl.F.reshape(u, [3, 1]);
  u.dispose();
  assertEquals(Array.from(await v.toArray()), [4, 5, 6]);
  v.dispose();
  w.dispose();
  assertEquals(fl.liveTensorCount(), before);
});

test("a disposed tensor: toArray rejects, ops and backward throw with a clear message", async () => {
  const t = fl.tensor([1, 2, 3]);
  t.dispose();
  await assertRejects(() => t.toArray(), /disposed tensor of shape \[3\]/);
  await assertRejects(() => t.item(), /one element|disposed/);
  fl.scope(() => {
    assertThrows(() => fl.F.add(t, fl.ones([3])), /disposed/);
    const x = fl.tensor([1, 2], [2], { requiresGrad: true });
    const y = fl.F.mul(x, x);
    const loss = fl.F.sum(fl.F.exp(y));
    y.dispose();
    assertThrows(() => loss.backward(), /disposed before backward/);
  });
});

test("backward twice through the same graph throws", () => {
  fl.scope(() => {
    const x = fl.tensor([1, 2], [2], { requiresGrad: true });
    const loss = fl.F.sum(fl.F.mul(x, x));
    loss.backward();
    assertThrows(() => loss.backward(), /already used/);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Random numbers and dropout

function moments(a: Float32Array): { mean: number; std: number } {
  let s = 0, s2 = 0;
  for (const v of a) s += v;
  const mean = s / a.length;
  for (const v of a) s2 += (v - mean) ** 2;
  return { mean, std: Math.sqrt(s2 / a.length) };
}

test("randn(seed 3) has mean ~0 and std ~1; rand is in [0, 1) with mean ~0.5", async () => {
  await fl.scope(async () => {
    const n = await fl.randn([100000], { seed: 3 }).toArray();
    const mn = moments(n);
    assert(Math.abs(mn.mean) < 0.02, `randn mean ${mn.mean}`);
    assert(Math.abs(mn.std - 1) < 0.02, `randn std ${mn.std}`);
    assert(n.every(Number.isFinite), "randn values must be finite");
    const u = await fl.rand([100000], { seed: 3 }).toArray();
    assert(u.every((v) => v >= 0 && v < 1), "rand must lie in [0, 1)");
    const mu = moments(u);
    assert(Math.abs(mu.mean - 0.5) < 0.01, `rand mean ${mu.mean}`);
    assert(Math.abs(mu.std - Math.sqrt(1 / 12)) < 0.01, `rand std ${mu.std}`);
    const shifted = await fl.randn([20000], { seed: 4, mean: 3, std: 0.5 }).toArray();
    const ms = moments(shifted);
    assert(
      Math.abs(ms.mean - 3) < 0.02 && Math.abs(ms.std - 0.5) < 0.02,
      `randn(3, 0.5): ${ms.mean}, ${ms.std}`,
    );
    const ranged = await fl.rand([20000], { seed: 4, low: -2, high: 6 }).toArray();
    assert(ranged.every((v) => v >= -2 && v < 6), "rand(low, high) range");
  });
});

test("same seed gives the same values, different seeds and successive draws differ", async () => {
  await fl.scope(async () => {
    const a = await fl.randn([1000], { seed: 7 }).toArray();
    const b = await fl.randn([1000], { seed: 7 }).toArray();
    const c = await fl.randn([1000], { seed: 8 }).toArray();
    assertEquals(Array.from(a), Array.from(b));
    assert(a.some((v, i) => v !== c[i]), "seeds 7 and 8 gave the same values");
    const gen = new fl.Generator(7);
    const g1 = await fl.randn([1000], { generator: gen }).toArray();
    const g2 = await fl.randn([1000], { generator: gen }).toArray();
    assertEquals(Array.from(g1), Array.from(a), "a Generator's first draw equals the seed's");
    assert(g1.some((v, i) => v !== g2[i]), "successive draws of one generator must differ");
    fl.manualSeed(11);
    const m1 = await fl.rand([100]).toArray();
    fl.manualSeed(11);
    const m2 = await fl.rand([100]).toArray();
    assertEquals(Array.from(m1), Array.from(m2), "manualSeed resets the global generator");
  });
});

test("device random bits equal the CPU threefry2x32", async () => {
  await fl.scope(async () => {
    const n = 4099;
    const u = await fl.rand([n], { seed: 5 }).toArray();
    for (let i = 0; i < n; i++) {
      const expected = (threefry2x32(5, 0, i, 0)[0] >>> 8) / 2 ** 24;
      if (u[i] !== expected) throw new Error(`rand value ${i}: device ${u[i]}, CPU ${expected}`);
    }
    // A seed above 2^32 sets k1; the generator's third draw uses stream 2.
    const seed = 2 ** 32 * 3 + 17;
    const gen = new fl.Generator(seed);
    gen.nextStream();
    gen.nextStream();
    const v = await fl.rand([64], { generator: gen }).toArray();
    for (let i = 0; i < 64; i++) {
      assertEquals(v[i], (threefry2x32(17, 3, i, 2)[0] >>> 8) / 2 ** 24, `rand(k1 = 3, stream 2) value ${i}`);
    }
    // randn is Box-Muller over the same bits (float32 transcendentals on the device).
    const z = await fl.randn([256], { seed: 5 }).toArray();
    const expected = Array.from({ length: 256 }, (_, i) => {
      const [x0, x1] = threefry2x32(5, 0, i, 0);
      return Math.sqrt(-2 * Math.log(((x0 >>> 8) + 1) / 2 ** 24)) *
        Math.cos(2 * Math.PI * ((x1 >>> 8) / 2 ** 24));
    });
    assertClose(z, expected, { rtol: 1e-4, atol: 1e-4, msg: "randn vs CPU Box-Muller" });
  });
});

test("dropout p = 0.3 zeroes ~30%, scales the rest by 1/0.7; eval mode returns the input", async () => {
  await fl.scope(async () => {
    const x = fl.ones([100000], { requiresGrad: true });
    const y = fl.F.dropout(x, 0.3, true, { seed: 9 });
    const v = await y.toArray();
    let zeros = 0;
    const kept = Math.fround(1 / 0.7);
    for (const e of v) {
      if (e === 0) zeros++;
      else if (e !== kept) throw new Error(`kept value ${e}, expected ${kept}`);
    }
    assert(Math.abs(zeros / v.length - 0.3) < 0.01, `zero fraction ${zeros / v.length}`);
    // The mask follows the CPU threefry bits: kept iff the uniform is >= p.
    for (let i = 0; i < 1000; i++) {
      const keep = (threefry2x32(9, 0, i, 0)[0] >>> 8) / 2 ** 24 >= Math.fround(0.3);
      assertEquals(v[i] !== 0, keep, `dropout mask element ${i}`);
    }
    // The gradient of sum(dropout(x)) is the mask.
    fl.F.sum(y).backward();
    assertEquals(Array.from(await x.grad!.toArray()), Array.from(v));
    assert(fl.F.dropout(x, 0.3, false) === x, "eval mode must return the input itself");
    assert(fl.F.dropout(x, 0, true) === x, "p = 0 must return the input itself");
    assertThrows(() => fl.F.dropout(x, 1, true), /p must be in \[0, 1\)/);
    assertThrows(() => fl.F.dropout(x, -0.1, true), /p must be in \[0, 1\)/);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Bad inputs

test("bad inputs throw errors that name the problem", () => {
  const before = fl.liveTensorCount();
  fl.scope(() => {
    const logits = fl.tensor(new Float32Array(12), [3, 4]);
    assertThrows(
      () => fl.F.add(fl.zeros([2, 3]), fl.zeros([4])),
      /add: shapes \[2, 3\] and \[4\] do not broadcast/,
    );
    assertThrows(() => fl.F.mul(fl.zeros([2, 3]), fl.zeros([3, 2])), /mul: shapes .* do not broadcast/);
    assertThrows(() => fl.F.matmul(fl.zeros([2, 3]), fl.zeros([4, 5])), /matmul: inner dimensions differ/);
    assertThrows(() => fl.F.matmul(fl.zeros([2, 3, 4]), fl.zeros([3, 4, 5])), /matmul: batch sizes differ/);
    assertThrows(() => fl.F.matmul(fl.zeros([3]), fl.zeros([3, 4])), /matmul: needs 2-D or 3-D/);
    assertThrows(
      () => fl.F.linear(fl.zeros([2, 3]), fl.zeros([4, 5])),
      /linear: weight \[4, 5\] does not fit input/,
    );
    assertThrows(
      () => fl.tensor([1, 2, 3, 4, 5], [2, 3]),
      /shape \[2, 3\] holds 6 values but the data has 5/,
    );
    assertThrows(() => fl.zeros([2, -1]), /non-negative integers/);
    assertThrows(() => fl.zeros([1.5, 2]), /non-negative integers/);
    assertThrows(() => fl.tensor([1, 2], [-2]), /non-negative integers/);
    assertThrows(() => fl.F.reshape(fl.zeros([2, 3]), [4, 2]), /cannot become \[4, 2\]/);
    assertThrows(() => fl.F.focalLoss(logits, [0, 4, 1]), /target 1 is 4, outside the class range 0..3/);
    assertThrows(() => fl.F.focalLoss(logits, [0, -1, 1]), /target 1 is -1, outside the class range/);
    assertThrows(() => fl.F.focalLoss(logits, [0, 1.5, 1]), /target 1 is 1.5/);
    assertThrows(() => fl.F.crossEntropy(logits, [0, 9, 1]), /crossEntropy: target 1 is 9/);
    assertThrows(() => fl.F.focalLoss(logits, [0, 1]), /2 targets for a batch of 3/);
    assertThrows(() => fl.F.crossEntropy(logits, [0, 1, 2, 3]), /4 targets for a batch of 3/);
    assertThrows(() => fl.F.focalLoss(fl.zeros([0, 4]), []), /empty batch/);
    assertThrows(
      () => fl.F.focalLoss(logits, [0, 1, 2], { alpha: [1, 1, 1] }),
      /alpha has 3 entries for 4 classes/,
    );
    assertThrows(
      () => fl.F.crossEntropy(logits, [0, 1, 2], { weight: [1, 1] }),
      /weight has 2 entries for 4 classes/,
    );
    assertThrows(
      () => fl.F.focalLoss(logits, [0, 1, 2], { gamma: -1 }),
      /gamma must be finite and >= 0, got -1/,
    );
    assertThrows(() => fl.F.focalLoss(logits, [0, 1, 2], { gamma: NaN }), /gamma must be finite/);
    assertThrows(
      // deno-lint-ignore no-explicit-any
      () => fl.F.focalLoss(logits, [0, 1, 2], { reduction: "none" as any }),
      /reduction must be "mean" or "sum", got "none"/,
    );
    assertThrows(
      // deno-lint-ignore no-explicit-any
      () => fl.F.crossEntropy(logits, [0, 1, 2], { reduction: "avg" as any }),
      /reduction must be "mean" or "sum", got "avg"/,
    );
    assertThrows(() => fl.F.focalLoss(fl.zeros([12]), [0]), /logits must be a \[batch, classes\] tensor/);
    assertThrows(
      () => fl.F.softmax(fl.zeros([2, 3]), 2),
      /softmax: dim 2 is out of range for a tensor of rank 2/,
    );
    assertThrows(() => fl.F.logSoftmax(fl.zeros([2, 3]), -3), /dim -3 is out of range/);
    assertThrows(() => fl.F.sum(fl.zeros([2, 3]), 5), /sum: dim 5 is out of range/);
    const x = fl.zeros([2, 3], { requiresGrad: true });
    assertThrows(() => fl.F.mul(x, x).backward(), /backward\(\) needs a tensor of one element.*\[2, 3\]/);
    assertThrows(() => fl.F.sum(fl.zeros([2])).backward(), /does not require grad/);
    assertThrows(() => fl.F.outer(fl.zeros([2, 3, 4])), /outer: input must be \[batch, K\]/);
    assertThrows(
      () => fl.F.weightedSum(fl.zeros([2, 3]), fl.zeros([2, 4, 5])),
      /weightedSum: weights \[2, 3\]/,
    );
  });
  assertEquals(fl.liveTensorCount(), before, "a failed call must not leak tensors");
});

test("a rejected loss call leaves no tensors behind outside a scope", () => {
  const before = fl.liveTensorCount();
  const logits = fl.tensor(new Float32Array(8), [2, 4], { requiresGrad: true });
  // deno-lint-ignore no-explicit-any
  assertThrows(() => fl.F.focalLoss(logits, [0, 1], { reduction: "bad" as any }), /reduction/);
  // deno-lint-ignore no-explicit-any
  assertThrows(() => fl.F.crossEntropy(logits, [0, 1], { reduction: "bad" as any }), /reduction/);
  logits.dispose();
  assertEquals(fl.liveTensorCount(), before);
});

// ---------------------------------------------------------------------------------------------------------
// Optimizers against float64 re-implementations of PyTorch's update rules

interface Quad {
  p0: Arr;
  c: Arr;
  t: Arr;
}
function quadratics(seed: number): Quad[] {
  const r = rng(seed);
  // Targets at least 1 away from the start, so that no gradient comes near 0 in a few steps: there Adam's
  // m / sqrt(v) would turn float32 rounding of p - t into relative errors far above 1e-5.
  return [[7], [2, 3]].map((s) => {
    const p0 = r.randn(s), c = r.rand(s, 0.5, 2), gap = r.rand(s, 1, 2);
    const t = ref.map(p0, (v) => v);
    t.data.forEach((v, i) => (t.data[i] = Math.fround(v + (i % 2 ? gap.data[i] : -gap.data[i]))));
    return { p0, c, t };
  });
}

/** Runs `steps` steps of loss = sum_q sum(c (p - t)^2) on the device; returns each parameter's values. */
async function deviceOptimize(
  qs: Quad[],
  make: (ps: Tensor[]) => fl.optim.Adam | fl.optim.SGD,
  steps: number,
) {
  const ps = qs.map((q) => toDevice(q.p0, true));
  const opt = make(ps);
  for (let s = 0; s < steps; s++) {
    opt.zeroGrad();
    fl.scope(() => {
      let loss: Tensor | null = null;
      qs.forEach((q, i) => {
        const d = fl.F.sub(ps[i], toDevice(q.t));
        const term = fl.F.sum(fl.F.mul(fl.F.mul(d, d), toDevice(q.c)));
        loss = loss ? fl.F.add(loss, term) : term;
      });
      loss!.backward();
    });
    opt.step();
  }
  const out = await Promise.all(ps.map((p) => p.toArray()));
  opt.dispose();
  ps.forEach((p) => p.dispose());
  return out;
}

function cpuGrad(q: Quad, p: Float64Array): Float64Array {
  return p.map((v, i) => 2 * q.c.data[i] * (v - q.t.data[i]));
}

function cpuAdam(
  qs: Quad[],
  o: { lr: number; betas: [number, number]; eps: number; weightDecay: number },
  steps: number,
) {
  return qs.map((q) => {
    const p = q.p0.data.slice(), m = new Float64Array(p.length), v = new Float64Array(p.length);
    for (let t = 1; t <= steps; t++) {
      const g = cpuGrad(q, p);
      const [b1, b2] = o.betas;
      for (let i = 0; i < p.length; i++) {
        const gi = g[i] + o.weightDecay * p[i];
        m[i] = b1 * m[i] + (1 - b1) * gi;
        v[i] = b2 * v[i] + (1 - b2) * gi * gi;
        const denom = Math.sqrt(v[i]) / Math.sqrt(1 - b2 ** t) + o.eps;
        p[i] -= (o.lr / (1 - b1 ** t)) * m[i] / denom;
      }
    }
    return p;
  });
}

function cpuSgd(
  qs: Quad[],
  o: { lr: number; momentum: number; dampening: number; weightDecay: number; nesterov: boolean },
  steps: number,
) {
  return qs.map((q) => {
    const p = q.p0.data.slice(), buf = new Float64Array(p.length);
    for (let t = 1; t <= steps; t++) {
      const g = cpuGrad(q, p);
      for (let i = 0; i < p.length; i++) {
        let d = g[i] + o.weightDecay * p[i];
        if (o.momentum !== 0) {
          buf[i] = t === 1 ? d : o.momentum * buf[i] + (1 - o.dampening) * d;
          d = o.nesterov ? d + o.momentum * buf[i] : buf[i];
        }
        p[i] -= o.lr * d;
      }
    }
    return p;
  });
}

test("Adam matches PyTorch's update rule (float64 CPU) over 6 steps", async () => {
  const before = fl.liveTensorCount();
  const configs = [
    { lr: 0.02, betas: [0.9, 0.999] as [number, number], eps: 1e-8, weightDecay: 0 },
    { lr: 0.05, betas: [0.8, 0.99] as [number, number], eps: 1e-6, weightDecay: 0.01 },
  ];
  let seed = 1800;
  for (const o of configs) {
    const qs = quadratics(seed++);
    const got = await deviceOptimize(qs, (ps) => new fl.optim.Adam(ps, o), 6);
    const want = cpuAdam(qs, o, 6);
    got.forEach((g, i) =>
      assertClose(g, want[i], { rtol: 1e-5, atol: 1e-6, msg: `Adam ${JSON.stringify(o)} param ${i}` })
    );
  }
  assertEquals(fl.liveTensorCount(), before, "optimizer state freed");
});

test("SGD (plain, momentum 0.9, dampening, Nesterov, weight decay) matches PyTorch's update rule", async () => {
  const before = fl.liveTensorCount();
  const base = { lr: 0.05, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false };
  const configs = [
    base,
    { ...base, momentum: 0.9 },
    { ...base, momentum: 0.9, nesterov: true },
    { ...base, momentum: 0.9, dampening: 0.1, weightDecay: 0.01 },
    { ...base, momentum: 0.9, nesterov: true, weightDecay: 0.05 },
    { ...base, weightDecay: 0.1 },
  ];
  let seed = 1900;
  for (const o of configs) {
    const qs = quadratics(seed++);
    const got = await deviceOptimize(qs, (ps) => new fl.optim.SGD(ps, o), 6);
    const want = cpuSgd(qs, o, 6);
    got.forEach((g, i) =>
      assertClose(g, want[i], { rtol: 1e-5, atol: 1e-6, msg: `SGD ${JSON.stringify(o)} param ${i}` })
    );
  }
  assertEquals(fl.liveTensorCount(), before, "optimizer state freed");
});

test("optimizers reject bad hyper-parameters", () => {
  fl.scope(() => {
    const p = fl.zeros([2], { requiresGrad: true });
    assertThrows(() => new fl.optim.Adam([]), /no parameters/);
    assertThrows(() => new fl.optim.Adam([p], { lr: -1 }), /lr must be in/);
    assertThrows(() => new fl.optim.Adam([p], { betas: [1, 0.9] }), /betas\[0\]/);
    assertThrows(() => new fl.optim.SGD([p], { momentum: -0.5 }), /momentum must be in/);
    assertThrows(() => new fl.optim.SGD([p], { nesterov: true }), /Nesterov momentum needs momentum > 0/);
  });
});
