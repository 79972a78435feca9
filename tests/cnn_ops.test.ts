// The CNN ops of `fl.F` (batchNorm2d, maxPool2d, avgPool2d, adaptiveAvgPool2d, cat) against the float64
// CPU references of tests/reference.ts: forward values, and gradients from backward() against central
// finite differences of sum(f(x) * R). Then batch norm's running statistics, the layers of fl.nn, bad
// arguments and leaks. (The PyTorch goldens of these ops are checked in cnn_goldens.test.ts.)
import * as fl from "../mod.ts";
await fl.init();

import { assert, assertClose, assertEquals, assertThrows, test } from "./harness.ts";
import * as ref from "./reference.ts";
import type { Arr } from "./reference.ts";
import { checkOp as checkOpWith, type OpCase, rng, toDevice, type Tol } from "./opcheck.ts";

type Tensor = fl.Tensor;
const FWD: Tol = { rtol: 1e-5, atol: 1e-5 };
const BWD: Tol = { rtol: 1e-4, atol: 1e-4 };
const TOL = { fwd: FWD, bwd: BWD };
const checkOp = (c: OpCase) => checkOpWith(c, TOL);

// ---------------------------------------------------------------------------------------------------------
// Batch norm

const BN_SHAPES: number[][] = [[2, 3, 7, 5], [1, 5, 3, 3], [4, 3, 1, 1], [1, 1, 2, 1], [3, 4, 2, 3]];

test("batchNorm2d training: forward and gradients to x, weight, bias (batch stats) on 5 shapes", async () => {
  let seed = 2000;
  for (const shape of BN_SHAPES) {
    const c = shape[1];
    const r = rng(seed++);
    const x = r.randn(shape, 2), w = r.rand([c], 0.5, 1.5), b = r.randn([c]);
    const rm = r.randn([c], 0.1), rv = r.rand([c], 0.5, 1.5);
    await checkOp({
      name: `batchNorm2d train [${shape}]`,
      inputs: [x, w, b],
      device: ([tx, tw, tb]) => fl.F.batchNorm2d(tx, toDevice(rm), toDevice(rv), tw, tb, { training: true }),
      ref: ([ax, aw, ab]) => ref.batchNorm2d(ax, rm, rv, aw, ab, { training: true }).out,
    });
  }
});

test("batchNorm2d training without affine, without running stats, and with only x needing grad", async () => {
  const r = rng(2100);
  const x = r.randn([2, 5, 3, 4]), w = r.rand([5], 0.5, 1.5), b = r.randn([5]);
  await checkOp({
    name: "batchNorm2d train, affine false",
    inputs: [x],
    device: ([tx]) =>
      fl.F.batchNorm2d(tx, fl.zeros([5]), fl.ones([5]), null, null, { training: true, eps: 1e-3 }),
    ref: ([ax]) => ref.batchNorm2d(ax, null, null, null, null, { training: true, eps: 1e-3 }).out,
  });
  // No running statistics: batch statistics in eval mode too (track_running_stats=False).
  for (const training of [true, false]) {
    await checkOp({
      name: `batchNorm2d no running stats, training ${training}`,
      inputs: [x, w, b],
      device: ([tx, tw, tb]) => fl.F.batchNorm2d(tx, null, null, tw, tb, { training }),
      ref: ([ax, aw, ab]) => ref.batchNorm2d(ax, null, null, aw, ab, { training: true }).out,
    });
  }
  await checkOp({
    name: "batchNorm2d train, weight and bias constant",
    inputs: [x, w, b],
    grad: [true, false, false],
    device: ([tx, tw, tb]) => fl.F.batchNorm2d(tx, null, null, tw, tb, { training: true }),
    ref: ([ax, aw, ab]) => ref.batchNorm2d(ax, null, null, aw, ab, { training: true }).out,
  });
  await checkOp({
    name: "batchNorm2d train, x constant",
    inputs: [x, w, b],
    grad: [false, true, true],
    device: ([tx, tw, tb]) => fl.F.batchNorm2d(tx, null, null, tw, tb, { training: true }),
    ref: ([ax, aw, ab]) => ref.batchNorm2d(ax, null, null, aw, ab, { training: true }).out,
  });
});

test("batchNorm2d eval: running statistics, gradients to x, weight, bias; affine false", async () => {
  let seed = 2200;
  for (const shape of [[2, 3, 7, 5], [1, 5, 1, 1], [3, 4, 2, 3]]) {
    const c = shape[1];
    const r = rng(seed++);
    const x = r.randn(shape, 2), w = r.rand([c], 0.5, 1.5), b = r.randn([c]);
    const rm = r.randn([c], 0.5), rv = r.rand([c], 0.5, 1.5);
    for (const affine of [true, false]) {
      await checkOp({
        name: `batchNorm2d eval [${shape}] affine ${affine}`,
        inputs: affine ? [x, w, b] : [x],
        device: ([tx, tw, tb]) =>
          fl.F.batchNorm2d(tx, toDevice(rm), toDevice(rv), tw ?? null, tb ?? null, { eps: 1e-3 }),
        ref: ([ax, aw, ab]) => ref.batchNorm2d(ax, rm, rv, aw ?? null, ab ?? null, { eps: 1e-3 }).out,
      });
    }
  }
});

test("batchNorm2d updates running stats in place (unbiased variance), eval leaves them; large maps", async () => {
  const before = fl.liveTensorCount();
  await fl.scope(async () => {
    const r = rng(2300);
    const c = 3;
    let rmRef: Arr = r.randn([c], 0.2), rvRef: Arr = r.rand([c], 0.5, 1.5);
    const rm = toDevice(rmRef), rv = toDevice(rvRef);
    // Two training steps with different batches and momenta, checked after each.
    for (const [shape, momentum] of [[[2, c, 7, 5], 0.1], [[1, c, 3, 1], 0.3]] as [number[], number][]) {
      const x = r.randn(shape, 2);
      const out = fl.F.batchNorm2d(toDevice(x), rm, rv, null, null, { training: true, momentum });
      const expected = ref.batchNorm2d(x, rmRef, rvRef, null, null, { training: true, momentum });
      assertClose(await out.toArray(), expected.out.data, { ...FWD, msg: `output [${shape}]` });
      rmRef = expected.runningMean!;
      rvRef = expected.runningVar!;
      assertClose(await rm.toArray(), rmRef.data, { ...FWD, msg: `running mean after [${shape}]` });
      assertClose(await rv.toArray(), rvRef.data, { ...FWD, msg: `running var after [${shape}]` });
    }
    // The unbiased variance: a channel holding (0, 2) has batch variance 1, unbiased 2.
    const rm1 = fl.zeros([1]), rv1 = fl.ones([1]);
    fl.F.batchNorm2d(fl.tensor([0, 2], [1, 1, 2, 1]), rm1, rv1, null, null, {
      training: true,
      momentum: 0.5,
    });
    assertClose(await rm1.toArray(), [0.5]);
    assertClose(await rv1.toArray(), [1.5]);
    // Eval mode reads the running statistics and leaves them alone.
    const x = r.randn([2, c, 4, 4]);
    const out = fl.F.batchNorm2d(toDevice(x), rm, rv, null, null, { training: false });
    assertClose(await out.toArray(), ref.batchNorm2d(x, rmRef, rvRef, null, null).out.data, FWD);
    assertClose(await rm.toArray(), rmRef.data, { ...FWD, msg: "eval must not move the running mean" });
    assertClose(await rv.toArray(), rvRef.data, { ...FWD, msg: "eval must not move the running var" });
    // A large map with a large mean (the parallel reduction over 4551 values a channel, and the two-pass
    // variance); the gradients against the closed form dx = w inv (g - mean(g) - xhat mean(g xhat)).
    const [bn, bc, bh, bw] = [3, 5, 41, 37];
    const big = r.randn([bn, bc, bh, bw], 0.5);
    for (let i = 0; i < big.data.length; i++) big.data[i] = Math.fround(big.data[i] + 100 + (i % 5));
    const gamma = r.rand([bc], 0.5, 1.5), beta = r.randn([bc]);
    const rmBig = fl.zeros([bc]), rvBig = fl.ones([bc]);
    const [xt, wt, bt] = [toDevice(big, true), toDevice(gamma, true), toDevice(beta, true)];
    const outBig = fl.F.batchNorm2d(xt, rmBig, rvBig, wt, bt, { training: true });
    const expBig = ref.batchNorm2d(big, ref.fullArr([bc], 0), ref.fullArr([bc], 1), gamma, beta, {
      training: true,
    });
    assertClose(await outBig.toArray(), expBig.out.data, { rtol: 1e-4, atol: 1e-4, msg: "large map output" });
    assertClose(await rmBig.toArray(), expBig.runningMean!.data, {
      rtol: 1e-5,
      atol: 1e-5,
      msg: "large map mean",
    });
    assertClose(await rvBig.toArray(), expBig.runningVar!.data, {
      rtol: 1e-4,
      atol: 1e-6,
      msg: "large map var",
    });
    const g = r.randn([bn, bc, bh, bw]);
    fl.F.sum(fl.F.mul(outBig, toDevice(g))).backward();
    const hw = bh * bw, count = bn * hw;
    const dx = new Float64Array(big.data.length), dw = new Float64Array(bc), db = new Float64Array(bc);
    for (let c = 0; c < bc; c++) {
      const at = (n: number, k: number) => (n * bc + c) * hw + k;
      let mean = 0, variance = 0;
      for (let n = 0; n < bn; n++) for (let k = 0; k < hw; k++) mean += big.data[at(n, k)] / count;
      for (let n = 0; n < bn; n++) {
        for (let k = 0; k < hw; k++) variance += (big.data[at(n, k)] - mean) ** 2 / count;
      }
      const inv = 1 / Math.sqrt(variance + 1e-5);
      for (let n = 0; n < bn; n++) {
        for (let k = 0; k < hw; k++) {
          db[c] += g.data[at(n, k)];
          dw[c] += g.data[at(n, k)] * (big.data[at(n, k)] - mean) * inv;
        }
      }
      for (let n = 0; n < bn; n++) {
        for (let k = 0; k < hw; k++) {
          const xhat = (big.data[at(n, k)] - mean) * inv;
          dx[at(n, k)] = gamma.data[c] * inv * (g.data[at(n, k)] - db[c] / count - xhat * dw[c] / count);
        }
      }
    }
    assertClose(await xt.grad!.toArray(), dx, { rtol: 1e-3, atol: 1e-3, msg: "large map grad x" });
    assertClose(await wt.grad!.toArray(), dw, { rtol: 1e-4, atol: 1e-2, msg: "large map grad weight" });
    assertClose(await bt.grad!.toArray(), db, { rtol: 1e-4, atol: 1e-3, msg: "large map grad bias" });
  });
  assertEquals(fl.liveTensorCount(), before);
});

test("batchNorm2d over 70000 channels: one workgroup per channel on a 2-D grid (> 65535 per dimension)", async () => {
  const before = fl.liveTensorCount();
  await fl.scope(async () => {
    const c = 70000;
    // Channel k holds a = (k % 7) / 2 in sample 0 and b = ((c + k) % 7) / 2 + 1 in sample 1.
    const data = Float32Array.from({ length: 2 * c }, (_, i) => (i % 7) * 0.5 + Math.floor(i / c));
    const rm = fl.zeros([c]), rv = fl.ones([c]);
    const y = await fl.F.batchNorm2d(fl.tensor(data, [2, c, 1, 1]), rm, rv, null, null, { training: true })
      .toArray();
    const [m, v] = [await rm.toArray(), await rv.toArray()];
    for (let k = 0; k < c; k++) {
      const a = data[k], b = data[c + k], mean = (a + b) / 2, variance = ((a - b) / 2) ** 2;
      const inv = 1 / Math.sqrt(variance + 1e-5);
      const ok = Math.abs(y[k] - (a - mean) * inv) < 1e-4 && Math.abs(y[c + k] - (b - mean) * inv) < 1e-4 &&
        Math.abs(m[k] - 0.1 * mean) < 1e-6 && Math.abs(v[k] - (0.9 + 0.1 * 2 * variance)) < 1e-6;
      assert(ok, `channel ${k}: y (${y[k]}, ${y[c + k]}), running (${m[k]}, ${v[k]}); a ${a}, b ${b}`);
    }
  });
  assertEquals(fl.liveTensorCount(), before);
});

test("batchNorm2d's epilogue (residual, relu): the bits of batch norm, add and relu in turn, two tensors kept", async () => {
  const gen = new fl.Generator(21);
  const values = (n: number) => Float32Array.from({ length: n }, () => gen.uniform() * 4 - 2);
  const shape = [3, 5, 7, 6], size = 3 * 5 * 7 * 6;
  const [xs, rs, gs, ws, bs] = [values(size), values(size), values(size), values(5), values(5)];
  for (const then of [{ relu: true }, { residual: true }, { residual: true, relu: true }]) {
    for (const training of [true, false]) {
      const results: Float32Array[][] = [];
      const kept: number[] = [];
      for (const fused of [false, true]) {
        results.push(
          await fl.scope(async () => {
            const x = fl.tensor(xs, shape, { requiresGrad: true });
            const r = fl.tensor(rs, shape, { requiresGrad: true });
            const w = fl.tensor(ws, [5], { requiresGrad: true }),
              b = fl.tensor(bs, [5], { requiresGrad: true });
            const rm = fl.tensor(ws.map(Math.abs), [5]), rv = fl.tensor(bs.map((v) => 1 + v * v), [5]);
            const live = fl.liveTensorCount();
            let y: fl.Tensor;
            if (fused) {
              y = fl.F.batchNorm2d(x, rm, rv, w, b, {
                training,
                residual: then.residual ? r : null,
                relu: then.relu,
              });
            } else {
              y = fl.F.batchNorm2d(x, rm, rv, w, b, { training });
              if (then.residual) y = fl.F.add(y, r);
              if (then.relu) y = fl.F.relu(y);
            }
            kept.push(fl.liveTensorCount() - live);
            fl.F.sum(fl.F.mul(y, fl.tensor(gs, shape))).backward();
            return await Promise.all(
              [y, x.grad!, w.grad!, b.grad!, rm, rv, ...(then.residual ? [r.grad!] : [])].map((t) =>
                t.toArray() as Promise<Float32Array>
              ),
            );
          }),
        );
      }
      const what = `${JSON.stringify(then)}, training ${training}`;
      results[0].forEach((want, i) => {
        assert(
          want.every((v, j) => Object.is(v, results[1][i][j])),
          `${what}: result ${i} differs from the ops in turn`,
        );
      });
      // the output (and the per-channel statistics saved beside it) instead of one or two more x-sized tensors
      const steps = (then.residual ? 1 : 0) + (then.relu ? 1 : 0);
      assert(kept[0] - kept[1] === steps, `${what}: ${kept[1]} tensors kept fused, ${kept[0]} in turn`);
    }
  }
  assertThrows(
    () =>
      fl.F.batchNorm2d(fl.zeros([2, 3, 4, 4]), null, null, null, null, { residual: fl.zeros([2, 3, 4, 5]) }),
    /residual must be a Tensor shaped as x \[2, 3, 4, 4\], got \[2, 3, 4, 5\]/,
  );
});

// ---------------------------------------------------------------------------------------------------------
// Pooling

type MaxOpts = fl.F.MaxPool2dOptions;
type AvgOpts = fl.F.AvgPool2dOptions;

test("maxPool2d forward and gradient: odd sizes, ceil mode, stride > kernel, padding, dilation 2, 1x1 maps", async () => {
  const cases: [number[], MaxOpts][] = [
    [[2, 3, 8, 8], { kernelSize: 2 }],
    [[1, 3, 7, 5], { kernelSize: 2, stride: 2 }],
    [[1, 3, 7, 5], { kernelSize: 2, stride: 2, ceilMode: true }],
    [[1, 5, 9, 11], { kernelSize: 3, stride: 2, padding: 1 }],
    [[2, 3, 8, 8], { kernelSize: 3, stride: 2, padding: 1, ceilMode: true }],
    [[2, 2, 8, 6], { kernelSize: 3, stride: 2, ceilMode: true }],
    [[1, 2, 10, 7], { kernelSize: 2, stride: 3 }],
    [[1, 2, 7, 9], { kernelSize: 3, stride: 1, padding: 1, dilation: 2 }],
    [[1, 2, 9, 8], { kernelSize: [3, 2], stride: [2, 1], padding: [1, 1], dilation: [2, 3], ceilMode: true }],
    [[1, 3, 6, 7], { kernelSize: [2, 3], stride: [1, 2], padding: [1, 1] }],
    [[1, 5, 1, 1], { kernelSize: 1 }],
    [[2, 3, 1, 1], { kernelSize: 3, stride: 3, padding: 1, ceilMode: true }],
    // Overlapping windows (stride 1): an input that is the maximum of several windows sums their gradients.
    [[1, 3, 5, 5], { kernelSize: 3, stride: 1 }],
  ];
  let seed = 3000;
  for (const [shape, opts] of cases) {
    await checkOp({
      name: `maxPool2d [${shape}] ${JSON.stringify(opts)}`,
      inputs: [rng(seed++).randn(shape)],
      device: ([x]) => fl.F.maxPool2d(x, opts),
      ref: ([x]) => ref.maxPool2d(x, opts),
    });
  }
});

test("maxPool2d: a window entirely in dilated gaps gives -inf, as PyTorch; output sizes follow PyTorch", async () => {
  await fl.scope(async () => {
    // H = 2, kernel 2, dilation 3, padding 1: the window's taps are rows -1 and 2, both outside.
    const y = fl.F.maxPool2d(fl.ones([1, 1, 2, 2]), { kernelSize: 2, dilation: 3, padding: 1, stride: 1 });
    assertEquals(y.shape, [1, 1, 1, 1]);
    assertEquals(Array.from(await y.toArray()), [-Infinity]);
  });
  // ceil mode keeps a last window only if it starts inside the input or the left padding.
  const sizes: [number, number, number, number, boolean, number][] = [
    [5, 2, 2, 0, false, 2],
    [5, 2, 2, 0, true, 3],
    [6, 3, 3, 1, true, 3], // windows start at -1, 2, 5: the last starts inside the input
    [5, 2, 2, 1, false, 3],
    [5, 2, 2, 1, true, 3], // a 4th window would start at 5 = H, in the right padding: dropped
    [8, 3, 2, 1, true, 5],
    [8, 3, 2, 1, false, 4],
  ];
  for (const [h, k, s, p, ceil, expected] of sizes) {
    fl.scope(() => {
      const opts = { kernelSize: k, stride: s, padding: p, ceilMode: ceil };
      const y = fl.F.maxPool2d(fl.zeros([1, 1, h, h]), opts);
      assertEquals(y.shape, [1, 1, expected, expected], `H ${h} ${JSON.stringify(opts)}`);
      assertEquals(
        ref.poolOutSize(h, k, s, p, 1, ceil),
        expected,
        `reference H ${h} ${JSON.stringify(opts)}`,
      );
      const a = fl.F.avgPool2d(fl.zeros([1, 1, h, h]), opts);
      assertEquals(a.shape, [1, 1, expected, expected], `avgPool2d H ${h} ${JSON.stringify(opts)}`);
    });
  }
});

test("avgPool2d forward and gradient: countIncludePad both ways, ceil mode, padding, divisorOverride", async () => {
  const cases: [number[], AvgOpts][] = [
    [[2, 3, 8, 8], { kernelSize: 2 }],
    [[1, 3, 7, 5], { kernelSize: 2, stride: 2, ceilMode: true }],
    [[1, 4, 9, 11], { kernelSize: 3, stride: 2, padding: 1 }],
    [[1, 4, 9, 11], { kernelSize: 3, stride: 2, padding: 1, countIncludePad: false }],
    [[2, 2, 8, 6], { kernelSize: 3, stride: 2, padding: 1, ceilMode: true }],
    [[2, 2, 8, 6], { kernelSize: 3, stride: 2, padding: 1, ceilMode: true, countIncludePad: false }],
    [[1, 3, 8, 8], { kernelSize: 3, stride: 2, ceilMode: true }],
    [[1, 2, 10, 7], { kernelSize: 2, stride: 3 }],
    [[1, 5, 7, 5], { kernelSize: 3, stride: 1, padding: 1, countIncludePad: false }],
    [[1, 3, 7, 6], { kernelSize: [3, 2], stride: [2, 1], padding: [1, 0] }],
    [[1, 3, 7, 5], { kernelSize: 3, stride: 2, padding: 1, ceilMode: true, divisorOverride: 5 }],
    [[2, 3, 1, 1], { kernelSize: 1 }],
    [[1, 3, 1, 1], { kernelSize: 3, stride: 2, padding: 1, countIncludePad: false }],
  ];
  let seed = 3100;
  for (const [shape, opts] of cases) {
    await checkOp({
      name: `avgPool2d [${shape}] ${JSON.stringify(opts)}`,
      inputs: [rng(seed++).randn(shape)],
      device: ([x]) => fl.F.avgPool2d(x, opts),
      ref: ([x]) => ref.avgPool2d(x, opts),
    });
  }
});

test("adaptiveAvgPool2d forward and gradient: 7x7->3x3, 5x5->2x4, global, upsampling, identity", async () => {
  const cases: [number[], number | [number, number]][] = [
    [[2, 3, 7, 7], [3, 3]],
    [[1, 4, 5, 5], [2, 4]],
    [[3, 5, 6, 6], 1],
    [[1, 3, 9, 11], [4, 5]],
    [[1, 2, 4, 4], [7, 7]],
    [[1, 2, 7, 5], [7, 5]],
    [[2, 7, 1, 1], [1, 1]],
    [[1, 3, 13, 6], [5, 4]],
  ];
  let seed = 3200;
  for (const [shape, size] of cases) {
    await checkOp({
      name: `adaptiveAvgPool2d [${shape}] -> ${JSON.stringify(size)}`,
      inputs: [rng(seed++).randn(shape)],
      device: ([x]) => fl.F.adaptiveAvgPool2d(x, size),
      ref: ([x]) => ref.adaptiveAvgPool2d(x, size),
    });
  }
});

// ---------------------------------------------------------------------------------------------------------
// Concatenation

test("cat along dims 0, 1, 2, 3 and -1 with 3 inputs, 2-D, a single input, and a repeated input", async () => {
  const cases: [number[][], number][] = [
    [[[1, 3, 4, 5], [2, 3, 4, 5], [3, 3, 4, 5]], 0],
    [[[2, 3, 4, 5], [2, 1, 4, 5], [2, 5, 4, 5]], 1],
    [[[2, 3, 1, 5], [2, 3, 4, 5], [2, 3, 2, 5]], 2],
    [[[2, 3, 4, 1], [2, 3, 4, 3], [2, 3, 4, 2]], 3],
    [[[2, 3, 4, 1], [2, 3, 4, 3], [2, 3, 4, 2]], -1],
    [[[3, 7], [3, 2]], 1],
    [[[3, 7], [1, 7], [2, 7]], 0],
    [[[2, 5, 3, 3]], 1],
  ];
  let seed = 3300;
  for (const [shapes, dim] of cases) {
    const r = rng(seed++);
    await checkOp({
      name: `cat ${JSON.stringify(shapes)} dim ${dim}`,
      inputs: shapes.map((s) => r.randn(s)),
      device: (xs) => fl.F.cat(xs, dim),
      ref: (xs) => ref.cat(xs, dim),
    });
  }
  // Only some inputs need a gradient; the same tensor twice sums both slices.
  const r = rng(3350);
  await checkOp({
    name: "cat, middle input constant",
    inputs: [r.randn([2, 3, 2, 2]), r.randn([2, 4, 2, 2]), r.randn([2, 1, 2, 2])],
    grad: [true, false, true],
    device: (xs) => fl.F.cat(xs, 1),
    ref: (xs) => ref.cat(xs, 1),
  });
  await checkOp({
    name: "cat [x, y, x]",
    inputs: [r.randn([2, 3, 2]), r.randn([2, 1, 2])],
    device: ([x, y]) => fl.F.cat([x, y, x], 1),
    ref: ([x, y]) => ref.cat([x, y, x], 1),
  });
  await fl.scope(async () => {
    const ints = fl.F.cat([fl.intTensor([1, 2, 3, 4], [2, 2]), fl.intTensor([5, 6], [2, 1])], 1);
    assertEquals(Array.from(await ints.toInt32Array()), [1, 2, 5, 3, 4, 6]);
  });
});

// ---------------------------------------------------------------------------------------------------------
// Composition and leaks

test("a small CNN block (batchNorm -> relu -> maxPool -> cat -> adaptiveAvgPool) backpropagates", async () => {
  const r = rng(3400);
  const c = 3;
  const w = r.rand([c], 0.5, 1.5), b = r.randn([c], 0.3);
  const block = (x: Arr, bw: Arr, bb: Arr) => {
    const h = ref.relu(ref.batchNorm2d(x, null, null, bw, bb, { training: true }).out);
    const p = ref.maxPool2d(h, { kernelSize: 3, stride: 2, padding: 1 });
    const a = ref.avgPool2d(h, { kernelSize: 3, stride: 2, padding: 1, countIncludePad: false });
    return ref.adaptiveAvgPool2d(ref.cat([p, a], 1), [2, 1]);
  };
  await checkOp({
    name: "cnn block",
    inputs: [r.randnAway([2, c, 7, 6], 0.05), w, b],
    device: ([x, tw, tb]) => {
      const h = fl.F.relu(fl.F.batchNorm2d(x, null, null, tw, tb, { training: true }));
      const p = fl.F.maxPool2d(h, { kernelSize: 3, stride: 2, padding: 1 });
      const a = fl.F.avgPool2d(h, { kernelSize: 3, stride: 2, padding: 1, countIncludePad: false });
      return fl.F.adaptiveAvgPool2d(fl.F.cat([p, a], 1), [2, 1]);
    },
    ref: ([x, bw, bb]) => block(x, bw, bb),
  });
});

test("forward and backward of each op leave nothing alive once the caller disposes what it holds", () => {
  const before = fl.liveTensorCount();
  const r = rng(3500);
  const ops: [string, (x: Tensor, w: Tensor, b: Tensor) => Tensor][] = [
    ["batchNorm2d train", (x, w, b) => fl.F.batchNorm2d(x, null, null, w, b, { training: true })],
    ["batchNorm2d eval", (x, w, b) => fl.F.batchNorm2d(x, b, w, w, b)],
    ["maxPool2d", (x) => fl.F.maxPool2d(x, { kernelSize: 2 })],
    ["avgPool2d", (x) => fl.F.avgPool2d(x, { kernelSize: 2, padding: 1 })],
    ["adaptiveAvgPool2d", (x) => fl.F.adaptiveAvgPool2d(x, 3)],
    ["cat", (x) => fl.F.cat([x, x], 2)],
  ];
  for (const [name, f] of ops) {
    const x = toDevice(r.randn([2, 3, 4, 4]), true);
    const w = toDevice(r.rand([3], 0.5, 1.5), true), b = toDevice(r.rand([3], 0.5, 1.5), true);
    const out = f(x, w, b);
    const loss = fl.F.sum(out);
    loss.backward();
    for (const t of [loss, out, x, w, b]) t.dispose();
    assertEquals(fl.liveTensorCount(), before, `after ${name}`);
    // Without a graph (noGrad) the saved statistics and argmax are freed at once.
    const y = toDevice(r.randn([2, 3, 4, 4]), true);
    const w2 = toDevice(r.rand([3], 0.5, 1.5)), b2 = toDevice(r.rand([3], 0.5, 1.5));
    const out2 = fl.noGrad(() => f(y, w2, b2));
    for (const t of [out2, y, w2, b2]) t.dispose();
    assertEquals(fl.liveTensorCount(), before, `after ${name} under noGrad`);
  }
});

// ---------------------------------------------------------------------------------------------------------
// Layers

test("BatchNorm2d: PyTorch keys and init, num_batches_tracked counts training forwards, eval uses running stats", async () => {
  const before = fl.liveTensorCount();
  const bn = new fl.nn.BatchNorm2d(3, { momentum: 0.2 });
  assertEquals(Object.keys(bn.stateDict()), [
    "weight",
    "bias",
    "running_mean",
    "running_var",
    "num_batches_tracked",
  ]);
  assertEquals(bn.namedParameters().map(([k]) => k), ["weight", "bias"]);
  assertEquals(bn.stateDict().num_batches_tracked.dtype, "int32");
  assertEquals(bn.stateDict().num_batches_tracked.shape, [1]);
  assertEquals(Array.from(await bn.weight!.toArray()), [1, 1, 1]);
  assertEquals(Array.from(await bn.bias!.toArray()), [0, 0, 0]);
  assertEquals(Array.from(await bn.runningMean!.toArray()), [0, 0, 0]);
  assertEquals(Array.from(await bn.runningVar!.toArray()), [1, 1, 1]);
  const r = rng(3600);
  let rm: Arr = ref.fullArr([3], 0), rv: Arr = ref.fullArr([3], 1);
  await fl.scope(async () => {
    for (let step = 0; step < 3; step++) {
      const x = r.randn([2, 3, 5, 3], 1.5);
      const y = bn.forward(toDevice(x));
      const e = ref.batchNorm2d(x, rm, rv, null, null, { training: true, momentum: 0.2 });
      assertClose(await y.toArray(), e.out.data, FWD);
      rm = e.runningMean!;
      rv = e.runningVar!;
    }
    assertEquals(Array.from(await bn.numBatchesTracked!.toInt32Array()), [3]);
    assertClose(await bn.runningMean!.toArray(), rm.data, FWD);
    assertClose(await bn.runningVar!.toArray(), rv.data, FWD);
    bn.eval();
    const x = r.randn([1, 3, 2, 2]);
    const y = bn.forward(toDevice(x));
    assertClose(await y.toArray(), ref.batchNorm2d(x, rm, rv, null, null).out.data, FWD);
    assertEquals(Array.from(await bn.numBatchesTracked!.toInt32Array()), [3], "eval must not count");
    // A loaded counter keeps counting from its value.
    bn.train();
    bn.loadStateDict({ num_batches_tracked: { dtype: "I64", shape: [], data: [41] } }, { strict: false });
    bn.forward(toDevice(r.randn([2, 3, 2, 2])));
    assertEquals(Array.from(await bn.numBatchesTracked!.toInt32Array()), [42]);
    // Parameters get gradients through the layer.
    const xt = toDevice(r.randn([2, 3, 2, 2]), true);
    fl.F.sum(fl.F.mul(bn.forward(xt), toDevice(r.randn([2, 3, 2, 2])))).backward();
    assert(
      bn.weight!.grad !== null && bn.bias!.grad !== null && xt.grad !== null,
      "gradients through BatchNorm2d",
    );
  });
  bn.dispose();
  assertEquals(fl.liveTensorCount(), before);

  // affine false: no parameters; trackRunningStats false: no buffers, batch statistics in eval too.
  const plain = new fl.nn.BatchNorm2d(2, { affine: false, trackRunningStats: false, eps: 1e-3 });
  assertEquals(Object.keys(plain.stateDict()), []);
  await fl.scope(async () => {
    plain.eval();
    const x = r.randn([2, 2, 3, 3]);
    const y = plain.forward(toDevice(x));
    assertClose(
      await y.toArray(),
      ref.batchNorm2d(x, null, null, null, null, { training: true, eps: 1e-3 }).out.data,
      FWD,
    );
  });
  const noAffine = new fl.nn.BatchNorm2d(2, { affine: false });
  assertEquals(Object.keys(noAffine.stateDict()), ["running_mean", "running_var", "num_batches_tracked"]);
  noAffine.dispose();
  assertEquals(fl.liveTensorCount(), before);
});

test("MaxPool2d, AvgPool2d, AdaptiveAvgPool2d modules match the functional ops", async () => {
  const before = fl.liveTensorCount();
  const r = rng(3700);
  const x = r.randn([2, 3, 7, 5]);
  await fl.scope(async () => {
    const t = toDevice(x);
    const layers: [fl.nn.Module, Arr][] = [
      [
        new fl.nn.MaxPool2d(3, { stride: 2, padding: 1, ceilMode: true }),
        ref.maxPool2d(x, { kernelSize: 3, stride: 2, padding: 1, ceilMode: true }),
      ],
      [new fl.nn.MaxPool2d([2, 1]), ref.maxPool2d(x, { kernelSize: [2, 1] })],
      [
        new fl.nn.AvgPool2d(3, { stride: 1, padding: 1, countIncludePad: false }),
        ref.avgPool2d(x, { kernelSize: 3, stride: 1, padding: 1, countIncludePad: false }),
      ],
      [new fl.nn.AdaptiveAvgPool2d([3, 2]), ref.adaptiveAvgPool2d(x, [3, 2])],
      [new fl.nn.AdaptiveAvgPool2d(1), ref.adaptiveAvgPool2d(x, 1)],
    ];
    for (const [layer, expected] of layers) {
      const y = layer.forward(t);
      assertEquals(y.shape, expected.shape, layer.constructor.name);
      assertClose(await y.toArray(), expected.data, { ...FWD, msg: layer.constructor.name });
      assertEquals(layer.parameters().length, 0);
    }
  });
  assertEquals(fl.liveTensorCount(), before);
});

test("Conv2d: parameter shapes, PyTorch keys, kaiming-uniform bounds (fan_in = in/groups * kh * kw), forward", async () => {
  const before = fl.liveTensorCount();
  const conv = new fl.nn.Conv2d(6, 8, [3, 5], {
    groups: 2,
    stride: 2,
    padding: [1, 2],
    generator: new fl.Generator(5),
  });
  assertEquals(Object.keys(conv.stateDict()), ["weight", "bias"]);
  assertEquals(conv.weight.shape, [8, 3, 3, 5]);
  assertEquals(conv.bias!.shape, [8]);
  const bound = 1 / Math.sqrt(3 * 3 * 5);
  const w = await conv.weight.toArray(), b = await conv.bias!.toArray();
  for (const [name, v] of [["weight", w], ["bias", b]] as const) {
    assert(v.every((e) => Math.abs(e) <= bound), `${name} within +-${bound}`);
    assert(Math.max(...v.map(Math.abs)) > bound / 2, `${name} spreads over the bound`);
  }
  const again = new fl.nn.Conv2d(6, 8, [3, 5], { groups: 2, generator: new fl.Generator(5) });
  assertEquals(Array.from(await again.weight.toArray()), Array.from(w), "same generator seed, same weights");
  // The layer's forward is conv2d with its options: against a naive float64 convolution.
  await fl.scope(async () => {
    const xa = rng(3800).randn([2, 6, 7, 9]);
    const y = conv.forward(toDevice(xa, true));
    const [wv, bv] = [Array.from(w), Array.from(b)];
    const [oh, ow] = [(7 + 2 - 3) / 2 + 1, Math.floor((9 + 4 - 5) / 2) + 1];
    assertEquals(y.shape, [2, 8, oh, ow]);
    const expected = new Float64Array(2 * 8 * oh * ow);
    for (let n = 0; n < 2; n++) {
      for (let o = 0; o < 8; o++) {
        const grp = Math.floor(o / 4);
        for (let i = 0; i < oh; i++) {
          for (let j = 0; j < ow; j++) {
            let acc = bv[o];
            for (let ci = 0; ci < 3; ci++) {
              for (let a = 0; a < 3; a++) {
                for (let bb = 0; bb < 5; bb++) {
                  const yy = i * 2 - 1 + a, xx = j * 2 - 2 + bb;
                  if (yy < 0 || yy >= 7 || xx < 0 || xx >= 9) continue;
                  acc += wv[((o * 3 + ci) * 3 + a) * 5 + bb] *
                    xa.data[((n * 6 + grp * 3 + ci) * 7 + yy) * 9 + xx];
                }
              }
            }
            expected[((n * 8 + o) * oh + i) * ow + j] = acc;
          }
        }
      }
    }
    assertClose(await y.toArray(), expected, { ...FWD, msg: "Conv2d forward" });
    fl.F.sum(y).backward();
    assertEquals(conv.weight.grad?.shape, [8, 3, 3, 5]);
    assertEquals(conv.bias!.grad?.shape, [8]);
    // d sum(y) / d bias = the number of output positions.
    assertClose(await conv.bias!.grad!.toArray(), new Array(8).fill(2 * oh * ow));
  });
  const noBias = new fl.nn.Conv2d(3, 4, 1, { bias: false });
  assertEquals(Object.keys(noBias.stateDict()), ["weight"]);
  assertEquals(noBias.weight.shape, [4, 3, 1, 1]);
  assertThrows(
    () => new fl.nn.Conv2d(6, 8, 3, { groups: 4 }),
    /inChannels \(6\) must be divisible by groups \(4\)/,
  );
  assertThrows(
    () => new fl.nn.Conv2d(4, 6, 3, { groups: 4 }),
    /outChannels \(6\) must be divisible by groups \(4\)/,
  );
  assertThrows(() => new fl.nn.Conv2d(4, 6, 0), /Conv2d: kernelSize must be positive/);
  assertThrows(() => new fl.nn.Conv2d(0, 6, 3), /Conv2d: inChannels must be a positive integer, got 0/);
  for (const m of [conv, again, noBias]) m.dispose();
  assertEquals(fl.liveTensorCount(), before);
});

test("conv2d weight gradient over a large K (split over image slices or along K) equals a float64 sum", async () => {
  // 8 images of 48x48 (K = 18,432 output pixels a filter): the WebAssembly backend sums 4 slices of 2 images
  // separately, WebGPU splits K; plain and grouped, stride 1 and 2.
  for (
    const { c, oc, groups, stride } of [{ c: 3, oc: 4, groups: 1, stride: 1 }, {
      c: 4,
      oc: 6,
      groups: 2,
      stride: 2,
    }]
  ) {
    await fl.scope(async () => {
      const n = 8, h = 48, w = 48, k = 3, pad = 1, cg = c / groups, ocg = oc / groups;
      const oh = Math.floor((h + 2 * pad - k) / stride) + 1, ow = Math.floor((w + 2 * pad - k) / stride) + 1;
      const xa = rng(3900 + c).randn([n, c, h, w]), ra = rng(3950 + c).randn([n, oc, oh, ow]);
      const wt = fl.randn([oc, cg, k, k], { seed: 39, requiresGrad: true });
      const y = fl.F.conv2d(toDevice(xa), wt, null, { stride, padding: pad, groups });
      fl.F.sum(fl.F.mul(y, toDevice(ra))).backward();
      const expected = new Float64Array(oc * cg * k * k);
      for (let o = 0; o < oc; o++) {
        const grp = Math.floor(o / ocg);
        for (let ci = 0; ci < cg; ci++) {
          for (let a = 0; a < k; a++) {
            for (let bb = 0; bb < k; bb++) {
              let acc = 0;
              for (let img = 0; img < n; img++) {
                for (let i = 0; i < oh; i++) {
                  const yy = i * stride - pad + a;
                  if (yy < 0 || yy >= h) continue;
                  for (let j = 0; j < ow; j++) {
                    const xx = j * stride - pad + bb;
                    if (xx < 0 || xx >= w) continue;
                    acc += ra.data[((img * oc + o) * oh + i) * ow + j] *
                      xa.data[((img * c + grp * cg + ci) * h + yy) * w + xx];
                  }
                }
              }
              expected[((o * cg + ci) * k + a) * k + bb] = acc;
            }
          }
        }
      }
      assertClose(await wt.grad!.toArray(), expected, {
        rtol: 1e-4,
        atol: 1e-3,
        msg: `dW, ${c}->${oc} channels, groups ${groups}, stride ${stride}`,
      });
      wt.grad!.dispose();
    });
  }
});

// ---------------------------------------------------------------------------------------------------------
// Bad arguments

test("bad arguments throw errors that name the problem", () => {
  const before = fl.liveTensorCount();
  fl.scope(() => {
    const x = fl.zeros([2, 3, 5, 5]);
    const c3 = fl.zeros([3]);
    // batchNorm2d
    assertThrows(
      () => fl.F.batchNorm2d(fl.zeros([2, 3, 5]), c3, c3, null, null),
      /batchNorm2d: expected a 4-D \[N, C, H, W\] input, got shape \[2, 3, 5\]/,
    );
    assertThrows(
      () => fl.F.batchNorm2d(x, fl.zeros([4]), c3, null, null),
      /batchNorm2d: runningMean must have shape \[3\].*got \[4\]/,
    );
    assertThrows(
      () => fl.F.batchNorm2d(x, c3, fl.zeros([3, 1]), null, null),
      /runningVar must have shape \[3\]/,
    );
    assertThrows(() => fl.F.batchNorm2d(x, c3, c3, fl.zeros([2]), c3), /weight must have shape \[3\]/);
    assertThrows(() => fl.F.batchNorm2d(x, c3, c3, c3, fl.zeros([5])), /bias must have shape \[3\]/);
    assertThrows(
      () => fl.F.batchNorm2d(x, c3, null, null, null),
      /runningMean and runningVar must both be tensors or both be null/,
    );
    assertThrows(
      () => fl.F.batchNorm2d(x, c3, c3, c3, null),
      /weight and bias must both be tensors or both be null/,
    );
    assertThrows(
      () => fl.F.batchNorm2d(fl.zeros([1, 3, 1, 1]), c3, c3, null, null, { training: true }),
      /expected more than 1 value per channel when training, got input size \[1, 3, 1, 1\]/,
    );
    assertThrows(
      () => fl.F.batchNorm2d(x, c3, c3, null, null, { momentum: 1.5 }),
      /momentum must be a number in \[0, 1\], got 1.5/,
    );
    assertThrows(
      () => fl.F.batchNorm2d(x, c3, c3, null, null, { eps: -1 }),
      /eps must be finite and >= 0, got -1/,
    );
    assertThrows(
      () => fl.F.batchNorm2d(x, fl.intTensor([0, 0, 0]), c3, null, null),
      /runningMean must be float32/,
    );
    // pooling
    assertThrows(
      () => fl.F.maxPool2d(fl.zeros([3, 5, 5]), { kernelSize: 2 }),
      /maxPool2d: expected a 4-D \[N, C, H, W\] input, got shape \[3, 5, 5\]/,
    );
    assertThrows(() => fl.F.avgPool2d(fl.zeros([5, 5]), { kernelSize: 2 }), /avgPool2d: expected a 4-D/);
    assertThrows(
      () => fl.F.adaptiveAvgPool2d(fl.zeros([1, 2, 3, 4, 5]), 2),
      /adaptiveAvgPool2d: expected a 4-D/,
    );
    assertThrows(
      () => fl.F.maxPool2d(x, { kernelSize: 0 }),
      /maxPool2d: kernelSize must be positive, got \[0, 0\]/,
    );
    assertThrows(
      () => fl.F.maxPool2d(x, { kernelSize: [2, -1] }),
      /kernelSize must be positive, got \[2, -1\]/,
    );
    assertThrows(
      () => fl.F.avgPool2d(x, { kernelSize: 2, stride: 0 }),
      /avgPool2d: stride must be positive, got \[0, 0\]/,
    );
    assertThrows(() => fl.F.maxPool2d(x, { kernelSize: 2, dilation: 0 }), /dilation must be positive/);
    assertThrows(
      () => fl.F.maxPool2d(x, { kernelSize: 2, padding: -1 }),
      /padding must be non-negative, got \[-1, -1\]/,
    );
    assertThrows(
      () => fl.F.maxPool2d(x, { kernelSize: 1.5 }),
      /kernelSize must be an integer or a pair of integers, got 1.5/,
    );
    assertThrows(
      () => fl.F.maxPool2d(x, { kernelSize: [2, 2, 2] as unknown as [number, number] }),
      /kernelSize must be an integer or a pair of integers, got \[2,2,2\]/,
    );
    assertThrows(
      () => fl.F.maxPool2d(x, { kernelSize: 3, padding: 2 }),
      /maxPool2d: padding \[2, 2\] must be at most half the kernel size \[3, 3\]/,
    );
    assertThrows(
      () => fl.F.avgPool2d(x, { kernelSize: [4, 2], padding: [1, 2] }),
      /padding \[1, 2\] must be at most half the kernel size \[4, 2\]/,
    );
    assertThrows(
      () => fl.F.maxPool2d(fl.zeros([1, 1, 2, 2]), { kernelSize: 3 }),
      /maxPool2d: input 2x2 with kernel 3x3.*gives an output of 0x0: the output size is too small/,
    );
    assertThrows(
      () => fl.F.maxPool2d(fl.zeros([1, 1, 4, 4]), { kernelSize: 3, dilation: 2 }),
      /output of 0x0/,
    );
    assertThrows(
      () => fl.F.avgPool2d(x, { kernelSize: 2, divisorOverride: 0 }),
      /divisorOverride must be a non-zero integer, got 0/,
    );
    assertThrows(
      () => fl.F.adaptiveAvgPool2d(x, [0, 2]),
      /adaptiveAvgPool2d: outputSize must be positive, got \[0, 2\]/,
    );
    assertThrows(() => fl.F.adaptiveAvgPool2d(fl.zeros([1, 1, 0, 3]), 2), /empty spatial size/);
    // deno-lint-ignore no-explicit-any
    assertThrows(() => fl.F.maxPool2d(x, undefined as any), /options \{ kernelSize, ... \} are required/);
    assertThrows(
      () => fl.F.maxPool2d(fl.intTensor([1, 2, 3, 4], [1, 1, 2, 2]), { kernelSize: 2 }),
      /needs a float input, got int32/,
    );
    // cat
    assertThrows(() => fl.F.cat([], 0), /cat: expects a non-empty array of tensors/);
    assertThrows(
      () => fl.F.cat([x, fl.zeros([2, 3, 5])], 1),
      /cat: tensor 1 has rank 3 \(shape \[2, 3, 5\]\) but tensor 0 has rank 4/,
    );
    assertThrows(
      () => fl.F.cat([x, fl.zeros([2, 4, 5, 5]), fl.zeros([2, 3, 5, 4])], 1),
      /cat: tensor 2 has shape \[2, 3, 5, 4\] and tensor 0 \[2, 3, 5, 5\]: they differ in dim 3, but only dim 1 may differ/,
    );
    assertThrows(() => fl.F.cat([x, x], 4), /cat: dim 4 is out of range for a tensor of rank 4/);
    assertThrows(() => fl.F.cat([x, fl.intTensor([1])], 0), /cat: tensor 1 is int32 but tensor 0 is float32/);
    // layers
    assertThrows(
      () => new fl.nn.BatchNorm2d(0),
      /BatchNorm2d: numFeatures must be a positive integer, got 0/,
    );
    assertThrows(
      () => new fl.nn.BatchNorm2d(3, { momentum: null as unknown as number }),
      /momentum null .* is not supported/,
    );
    assertThrows(() => new fl.nn.MaxPool2d(0), /MaxPool2d: kernelSize must be positive/);
    assertThrows(() => new fl.nn.AdaptiveAvgPool2d([2, 0]), /AdaptiveAvgPool2d: outputSize must be positive/);
  });
  const bn = new fl.nn.BatchNorm2d(4);
  fl.scope(() => {
    assertThrows(
      () => bn.forward(fl.zeros([2, 3, 4, 4])),
      /BatchNorm2d: expected 4 channels, got input of shape \[2, 3, 4, 4\]/,
    );
    assertThrows(() => bn.forward(fl.zeros([2, 4])), /BatchNorm2d: expected a 4-D/);
  });
  bn.dispose();
  assertEquals(fl.liveTensorCount(), before, "a failed call must not leak tensors");
});
