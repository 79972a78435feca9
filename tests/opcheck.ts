// The check every op test shares: forward against the float64 CPU reference, then each input's .grad from
// backward() against central finite differences of sum(f(x) * R), and no tensor left alive.
import * as fl from "../mod.ts";
import { assert, assertClose, assertEquals } from "./harness.ts";
import { type Arr, numericGrad, Rng } from "./reference.ts";

type Tensor = fl.Tensor;
export interface Tol {
  rtol?: number;
  atol?: number;
}

export interface OpCase {
  name: string;
  inputs: Arr[];
  device: (xs: Tensor[]) => Tensor;
  ref: (xs: Arr[]) => Arr;
  /** Which inputs require grad (default: all). */
  grad?: boolean[];
  fwd?: Tol;
  bwd?: Tol;
  seed?: number;
}

export const toDevice = (x: Arr, requiresGrad = false): Tensor =>
  fl.tensor(Float32Array.from(x.data), x.shape, { requiresGrad });

export const rng = (seed: number) => new Rng(seed);

/**
 * Every checked op's forward output and input gradients, by case name: tests/run.ts writes them out
 * (harness.ts `writeArtifact`: NaN and ±Infinity kept as "NaN", "Infinity", "-Infinity") and tests/both.ts
 * compares the WebAssembly backend's with WebGPU's, expecting as many records as the run reported. A case
 * name is recorded once: a second case of the same name would replace the first one's record unseen.
 */
export const opRecords: Record<string, number[][]> = {};

/** Runs `c` with the file's default tolerances (`c.fwd`/`c.bwd` override them). */
export async function checkOp(c: OpCase, defaults: { fwd: Tol; bwd: Tol }): Promise<void> {
  const before = fl.liveTensorCount();
  await fl.scope(async () => {
    const which = c.grad ?? c.inputs.map(() => true);
    const ts = c.inputs.map((x, i) => toDevice(x, which[i]));
    const out = c.device(ts);
    const expected = c.ref(c.inputs);
    assertEquals(out.shape, expected.shape, `${c.name}: output shape`);
    const values = await out.toArray();
    assert(
      !(c.name in opRecords),
      `${c.name}: a second op case of this name (its record would replace the first)`,
    );
    const record = opRecords[c.name] = [Array.from(values)];
    assertClose(values, expected.data, { ...defaults.fwd, ...c.fwd, msg: `${c.name}: forward` });
    if (!which.some(Boolean)) return;
    const r = new Rng(c.seed ?? 1234).randn(expected.shape);
    fl.F.sum(fl.F.mul(out, toDevice(r))).backward();
    const num = numericGrad(c.ref, c.inputs, r, which);
    for (let k = 0; k < ts.length; k++) {
      if (!which[k]) {
        assert(ts[k].grad === null, `${c.name}: input ${k} without requiresGrad got a gradient`);
        continue;
      }
      const g = ts[k].grad;
      assert(g !== null, `${c.name}: input ${k} has no gradient`);
      assertEquals(g.shape, ts[k].shape, `${c.name}: gradient ${k} shape`);
      const grad = await g.toArray();
      record.push(Array.from(grad));
      assertClose(grad, num[k]!, { ...defaults.bwd, ...c.bwd, msg: `${c.name}: gradient of input ${k}` });
    }
  });
  assertEquals(fl.liveTensorCount(), before, `${c.name}: live tensors after the scope`);
}
