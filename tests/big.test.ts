// Tensors larger than one storage binding (128 MiB on lavapipe): VGG19's classifier weight [4096, 25088]
// (411 MB) must initialise, multiply forward and backward, and take an optimizer step.
import * as fl from "../mod.ts";
import { assertClose, assertEquals, test } from "./harness.ts";

await fl.init();

test("a Linear(25088, 4096) as VGG19's classifier: init, forward, both gradients and an Adam step", async () => {
  const inF = 25088, outF = 4096, batch = 2;
  const layer = new fl.nn.Linear(inF, outF, { generator: new fl.Generator(3) });
  const w = await layer.weight.toArray();
  const bound = Math.fround(1 / Math.sqrt(inF));
  // Init covers every chunk: the last row is as random as the first.
  let lastRowAbs = 0;
  for (let k = 0; k < inF; k++) lastRowAbs += Math.abs(w[(outF - 1) * inF + k]);
  assertClose(lastRowAbs / inF, bound / 2, { rtol: 0.02 });
  const outside = w.findIndex((v) => !(v >= -bound && v <= bound));
  assertEquals(outside, -1, `init within the kaiming bound (element ${outside}: ${w[outside]})`);
  const x = fl.randn([batch, inF], { seed: 1 });
  const r = fl.randn([batch, outF], { seed: 2 });
  const [xh, rh, bh] = [await x.toArray(), await r.toArray(), await layer.bias!.toArray()];
  x.requiresGrad = true;
  const y = layer.forward(x);
  const yh = await y.toArray();
  // Rows spanning the four 1337-row chunks the weight is bound in.
  const rows = [0, 1336, 1337, 2700, 4095];
  for (const o of rows) {
    for (let b = 0; b < batch; b++) {
      let acc = bh[o];
      for (let k = 0; k < inF; k++) acc += xh[b * inF + k] * w[o * inF + k];
      assertClose(yh[b * outF + o], acc, { rtol: 1e-4, atol: 1e-4, msg: `y[${b}, ${o}]` });
    }
  }
  fl.F.sum(fl.F.mul(y, r)).backward();
  const gx = await x.grad!.toArray();
  for (const k of [0, 12000, inF - 1]) {
    for (let b = 0; b < batch; b++) {
      let acc = 0;
      for (let o = 0; o < outF; o++) acc += rh[b * outF + o] * w[o * inF + k];
      assertClose(gx[b * inF + k], acc, { rtol: 1e-4, atol: 1e-4, msg: `dx[${b}, ${k}]` });
    }
  }
  const gw = await layer.weight.grad!.toArray();
  for (const o of rows) {
    for (const k of [0, 777, inF - 1]) {
      const expected = rh[o] * xh[k] + rh[outF + o] * xh[inF + k];
      assertClose(gw[o * inF + k], expected, { rtol: 1e-5, atol: 1e-6, msg: `dW[${o}, ${k}]` });
    }
  }
  const opt = new fl.optim.Adam(layer.parameters(), { lr: 0.01 });
  opt.step();
  const w2 = await layer.weight.toArray();
  // Adam's first step moves every weight with a non-zero gradient by lr (times the sign of its gradient).
  for (const i of [0, 1337 * inF + 5, outF * inF - 1]) {
    assertClose(w2[i], w[i] - 0.01 * Math.sign(gw[i]), {
      rtol: 1e-4,
      atol: 1e-6,
      msg: `w after Adam [${i}]`,
    });
  }
  opt.dispose();
  layer.dispose();
  x.dispose();
  r.dispose();
  y.dispose();
});

// The 1.6 GB this file's buffers took would otherwise stay in the pool for every later file of the run.
test.afterAll(() => fl.trimPool());
