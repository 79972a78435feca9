// PyTorch float64 references (tests/fixtures/goldens.json, written by tests/fixtures/make_goldens.py): the
// focal loss, cross-entropy and op cases, forward and gradient, on the device. The "nwm" cases are tested
// with the Neural Weight Module elsewhere.
import * as fl from "../mod.ts";
await fl.init();

import { readFileSync } from "node:fs";
import { assertClose, assertEquals, test } from "./harness.ts";

interface T {
  shape: number[];
  data: number[];
}
interface FocalCase {
  name: string;
  logits: T;
  target: number[];
  alpha: number[] | null;
  gamma: number;
  reduction: "mean" | "sum";
  loss: number;
  grad: T;
}
interface CrossEntropyCase {
  name: string;
  logits: T;
  target: number[];
  weight: number[] | null;
  reduction: "mean" | "sum";
  loss: number;
  grad: T;
}
interface OpsCase {
  name: string;
  op: "matmul" | "linear" | "softmax" | "log_softmax" | "outer";
  dim?: number;
  out: T;
  R: T;
  [key: string]: unknown;
}
interface Goldens {
  focal: FocalCase[];
  crossEntropy: CrossEntropyCase[];
  ops: OpsCase[];
}

const goldens = JSON.parse(
  readFileSync(new URL("./fixtures/goldens.json", import.meta.url), "utf8"),
) as Goldens;

// Relative 1e-5; the atol covers gradient entries far below float32's resolution of the row (the
// large-logit case has entries ~1e-31).
const LOSS_TOL = { rtol: 1e-5, atol: 1e-7 };
const GRAD_TOL = { rtol: 1e-5, atol: 1e-7 };

const upload = (t: T, requiresGrad = false) =>
  fl.tensor(Float32Array.from(t.data), t.shape, { requiresGrad });

async function checkLoss(
  kind: string,
  c: { name: string; logits: T; loss: number; grad: T },
  lossFn: (x: fl.Tensor) => fl.Tensor,
): Promise<void> {
  const before = fl.liveTensorCount();
  await fl.scope(async () => {
    const x = upload(c.logits, true);
    const loss = lossFn(x);
    assertEquals(loss.size, 1, `${kind} ${c.name}: loss size`);
    assertClose(await loss.item(), c.loss, { ...LOSS_TOL, msg: `${kind} ${c.name}: loss` });
    loss.backward();
    assertEquals(x.grad!.shape, c.grad.shape, `${kind} ${c.name}: grad shape`);
    assertClose(await x.grad!.toArray(), c.grad.data, { ...GRAD_TOL, msg: `${kind} ${c.name}: grad` });
  });
  assertEquals(fl.liveTensorCount(), before, `${kind} ${c.name}: live tensors`);
}

test(`focal loss goldens (${goldens.focal.length} cases): loss and gradient wrt logits`, async () => {
  for (const c of goldens.focal) {
    await checkLoss(
      "focal",
      c,
      (x) =>
        fl.F.focalLoss(x, c.target, { gamma: c.gamma, alpha: c.alpha ?? undefined, reduction: c.reduction }),
    );
  }
});

test(`cross-entropy goldens (${goldens.crossEntropy.length} cases): loss and gradient wrt logits`, async () => {
  for (const c of goldens.crossEntropy) {
    await checkLoss(
      "crossEntropy",
      c,
      (x) => fl.F.crossEntropy(x, c.target, { weight: c.weight ?? undefined, reduction: c.reduction }),
    );
  }
});

/** The tensor inputs of an op case, in the order the op takes them. */
const OP_INPUTS: Record<OpsCase["op"], string[]> = {
  matmul: ["a", "b"],
  linear: ["x", "w", "bias"],
  softmax: ["x"],
  log_softmax: ["x"],
  outer: ["x"],
};

function runOp(c: OpsCase, xs: fl.Tensor[]): fl.Tensor {
  switch (c.op) {
    case "matmul":
      return fl.F.matmul(xs[0], xs[1]);
    case "linear":
      return fl.F.linear(xs[0], xs[1], xs[2]);
    case "softmax":
      return fl.F.softmax(xs[0], c.dim);
    case "log_softmax":
      return fl.F.logSoftmax(xs[0], c.dim);
    case "outer":
      return fl.F.outer(xs[0]);
  }
}

test(`op goldens (${goldens.ops.length} cases): output and d sum(out * R) / d input`, async () => {
  const ops = new Set<string>();
  for (const c of goldens.ops) {
    ops.add(c.op);
    const names = OP_INPUTS[c.op];
    if (!names) throw new Error(`ops golden ${c.name}: unknown op ${c.op}`);
    const before = fl.liveTensorCount();
    await fl.scope(async () => {
      const xs = names.map((n) => upload(c[n] as T, true));
      const out = runOp(c, xs);
      assertEquals(out.shape, c.out.shape, `${c.name}: output shape`);
      assertClose(await out.toArray(), c.out.data, { rtol: 1e-5, atol: 1e-6, msg: `${c.name}: out` });
      fl.F.sum(fl.F.mul(out, upload(c.R))).backward();
      for (let i = 0; i < names.length; i++) {
        const want = c[`grad_${names[i]}`] as T;
        assertEquals(xs[i].grad!.shape, want.shape, `${c.name}: grad_${names[i]} shape`);
        assertClose(await xs[i].grad!.toArray(), want.data, {
          rtol: 1e-5,
          atol: 1e-6,
          msg: `${c.name}: grad_${names[i]}`,
        });
      }
    });
    assertEquals(fl.liveTensorCount(), before, `${c.name}: live tensors`);
  }
  assertEquals([...ops].sort(), ["linear", "log_softmax", "matmul", "outer", "softmax"], "op kinds covered");
});
