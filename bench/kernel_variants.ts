// Kernel variants for the kernel lab (bench/kernels.ts): a researcher's own WGSL for one of the lab's ops,
// timed beside the library's kernels on the same shapes, after the lab has checked its outputs against the
// library's (a wrong variant is reported, not timed). To add one, append an entry to VARIANTS: the op it
// computes (a lab case's `op`), a name, and `run`, which makes the output tensor and dispatches the WGSL on
// the open engine (README, "Kernel lab" walks through this file's example).
import { Tensor } from "../src/autograd/tensor.ts";
import { getEngine } from "../src/backend/device.ts";
import type { Access, KernelSpec, ScalarType } from "../src/backend/engine.ts";

/** One variant: what it computes (a lab op and its inputs, as the lab's case passes them) and how. */
export interface KernelVariant {
  /** The lab op it replaces: "matmul", "conv2d", "batchNorm2d", "maxPool2d" or "softmax". */
  op: string;
  /** Shown in the lab's table, e.g. "naive: one output per thread". */
  name: string;
  /** The output for the case's inputs (tensors first, then the op's options), computed by the variant. */
  run(inputs: Tensor[]): Tensor;
}

/** A WGSL compute kernel (entry point `main`) with its bindings, for {@link dispatch}. */
export function wgslKernel(
  name: string,
  code: string,
  storage: Access[],
  uniforms: ScalarType[],
): KernelSpec {
  return { name, key: `lab:${name}`, code, storage, uniforms };
}

/** Dispatches `spec` over `workgroups` with the tensors bound in order and the uniforms filled. */
export function dispatch(spec: KernelSpec, tensors: Tensor[], uniforms: number[], workgroups: number): void {
  const engine = getEngine();
  engine.dispatch(spec, tensors.map((t) => t.buffer), uniforms, engine.grid(workgroups), spec.name);
}

/** The example: C = A B with one output per thread and no blocking, the baseline every tile improves on. */
const naiveMatmul = wgslKernel(
  "lab_matmul_naive",
  `@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
struct U { m: u32, n: u32, k: u32 }
@group(0) @binding(3) var<uniform> u: U;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
  let i = id.x + id.y * groups.x * 64u;
  if (i >= u.m * u.n) { return; }
  let row = i / u.n;
  let col = i % u.n;
  var acc = 0.0;
  for (var k = 0u; k < u.k; k++) { acc += a[row * u.k + k] * b[k * u.n + col]; }
  c[i] = acc;
}`,
  ["read", "read", "rw"],
  ["u32", "u32", "u32"],
);

/** The variants the lab times; add yours here. */
export const VARIANTS: KernelVariant[] = [
  {
    op: "matmul",
    name: "naive: one output per thread",
    run([a, b]) {
      const [m, k] = a.shape, n = b.shape[1];
      const c = Tensor.empty([m, n]);
      dispatch(naiveMatmul, [a, b, c], [m, n, k], Math.ceil(m * n / 64));
      return c;
    },
  },
];
