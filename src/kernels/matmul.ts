// Batched matrix multiply with transposes folded into the indexing (so backward needs no transposed
// copies), and `linear` on top of it.
import { getEngine } from "../backend/device.ts";
import { kernelFamily } from "../backend/kernel.ts";
import { record, Tensor } from "../autograd/tensor.ts";
import { add } from "./elementwise.ts";
import { sumToShape } from "./reduce.ts";
import { fmtShape } from "./shape.ts";

// A workgroup of 8x8 threads computes a 32x32 tile of C, each thread a 4x4 block, stepping K by 16
// through tiles of A and B staged in workgroup memory.
const TILE = 32, TK = 16;

const matmulKernel = kernelFamily((variant: string) => {
  const [transA, transB] = variant.split(",").map((v) => v === "1");
  // Element (row r, col k) of A and (k, col c) of B for this batch, whichever way they are stored.
  const aAt = transA ? "a[a_base + k * u.M + r]" : "a[a_base + r * u.K + k]";
  const bAt = transB ? "b[b_base + c * u.K + k]" : "b[b_base + k * u.N + c]";
  return {
    name: `matmul_${transA ? "t" : "n"}${transB ? "t" : "n"}`,
    storage: [{ name: "a", access: "read" }, { name: "b", access: "read" }, { name: "out", access: "rw" }],
    uniforms: [
      { name: "M", type: "u32" },
      { name: "N", type: "u32" },
      { name: "K", type: "u32" },
      { name: "a_batch_stride", type: "u32" },
      { name: "b_batch_stride", type: "u32" },
    ],
    workgroupSize: 64,
    body: `
const TILE: u32 = ${TILE}u;
const TK: u32 = ${TK}u;
var<workgroup> As: array<array<f32, ${TILE}>, ${TK}>;
var<workgroup> Bs: array<array<f32, ${TILE}>, ${TK}>;
@compute @workgroup_size(8, 8, 1) fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let batch = wid.z;
  let a_base = batch * u.a_batch_stride;
  let b_base = batch * u.b_batch_stride;
  let row0 = wid.y * TILE;
  let col0 = wid.x * TILE;
  let tid = lid.y * 8u + lid.x;
  var acc: array<array<f32, 4>, 4>;
  for (var k0 = 0u; k0 < u.K; k0 += TK) {
    // 64 threads load the 16x32 tiles of A (as As[k][row]) and B (as Bs[k][col]), 8 values each.
    for (var l = 0u; l < 8u; l++) {
      let e = tid + l * 64u;
      let kk = e / TILE;
      let mm = e % TILE;
      let k = k0 + kk;
      let r = row0 + mm;
      let c = col0 + mm;
      var av = 0.0;
      if (k < u.K && r < u.M) { av = ${aAt}; }
      As[kk][mm] = av;
      var bv = 0.0;
      if (k < u.K && c < u.N) { bv = ${bAt}; }
      Bs[kk][mm] = bv;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      var av: array<f32, 4>;
      var bv: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        av[i] = As[kk][lid.y * 4u + i];
        bv[i] = Bs[kk][lid.x * 4u + i];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) { acc[i][j] = fma(av[i], bv[j], acc[i][j]); }
      }
    }
    workgroupBarrier();
  }
  let out_base = batch * u.M * u.N;
  for (var i = 0u; i < 4u; i++) {
    let r = row0 + lid.y * 4u + i;
    if (r >= u.M) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let c = col0 + lid.x * 4u + j;
      if (c < u.N) { out[out_base + r * u.N + c] = acc[i][j]; }
    }
  }
}`,
  };
});

interface MatmulShape {
  batch: number;
  m: number;
  k: number;
  n: number;
  aBatched: boolean;
  bBatched: boolean;
}

function matmulShape(a: Tensor, b: Tensor, transA: boolean, transB: boolean): MatmulShape {
  if (a.rank < 2 || b.rank < 2 || a.rank > 3 || b.rank > 3) {
    throw new Error(`matmul: needs 2-D or 3-D (batched) tensors, got ${fmtShape(a.shape)} and ${fmtShape(b.shape)}`);
  }
  const [ar, ac] = a.shape.slice(-2), [br, bc] = b.shape.slice(-2);
  const [m, ka] = transA ? [ac, ar] : [ar, ac];
  const [kb, n] = transB ? [bc, br] : [br, bc];
  if (ka !== kb) {
    throw new Error(
      `matmul: inner dimensions differ: ${fmtShape(a.shape)}${transA ? "^T" : ""} x ${fmtShape(b.shape)}${transB ? "^T" : ""}`,
    );
  }
  const aBatch = a.rank === 3 ? a.shape[0] : 1, bBatch = b.rank === 3 ? b.shape[0] : 1;
  if (a.rank === 3 && b.rank === 3 && aBatch !== bBatch) {
    throw new Error(`matmul: batch sizes differ: ${fmtShape(a.shape)} x ${fmtShape(b.shape)}`);
  }
  return { batch: Math.max(aBatch, bBatch), m, k: ka, n, aBatched: a.rank === 3, bBatched: b.rank === 3 };
}

/** C = op(A) op(B) with op a transpose when asked; a 3-D operand is a batch, a 2-D one is shared. */
function matmulRaw(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
  const s = matmulShape(a, b, transA, transB);
  const outShape = a.rank === 3 || b.rank === 3 ? [s.batch, s.m, s.n] : [s.m, s.n];
  const out = Tensor.empty(outShape);
  const engine = getEngine();
  engine.dispatch(
    matmulKernel(`${transA ? 1 : 0},${transB ? 1 : 0}`),
    [a.buffer, b.buffer, out.buffer],
    [s.m, s.n, s.k, s.aBatched ? s.m * s.k : 0, s.bBatched ? s.k * s.n : 0],
    [Math.ceil(s.n / TILE), Math.ceil(s.m / TILE), s.batch],
  );
  return out;
}

/**
 * Matrix product of [M, K] x [K, N] (or batched [B, M, K] x [B, K, N], either side may be 2-D and shared
 * across the batch). `transA`/`transB` read an operand transposed without copying it.
 */
export function matmul(a: Tensor, b: Tensor, transA = false, transB = false): Tensor {
  for (const t of [a, b]) if (t.dtype !== "float32") throw new Error("matmul: needs float32 tensors");
  const out = matmulRaw(a, b, transA, transB);
  return record(out, "matmul", [a, b], (g) => {
    let ga: Tensor | null = null, gb: Tensor | null = null;
    if (a.requiresGrad) {
      // dA = dC B^T (or its transpose when A was read transposed)
      ga = transA ? matmulRaw(b, g, transB, true) : matmulRaw(g, b, false, !transB);
      if (ga.rank !== a.rank) ga = sumBatch(ga, a.shape);
    }
    if (b.requiresGrad) {
      gb = transB ? matmulRaw(g, a, true, transA) : matmulRaw(a, g, !transA, false);
      if (gb.rank !== b.rank) gb = sumBatch(gb, b.shape);
    }
    return [ga, gb];
  });
}

/** A shared 2-D operand's gradient is the sum over the batch. */
function sumBatch(g: Tensor, shape: number[]): Tensor {
  const out = sumToShape(g, shape);
  g.dispose();
  return out;
}

/** y = x W^T + b with W of shape [out, in] as PyTorch's Linear. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  if (x.rank !== 2) throw new Error(`linear: input must be [batch, features], got ${fmtShape(x.shape)}`);
  if (weight.rank !== 2 || weight.shape[1] !== x.shape[1]) {
    throw new Error(`linear: weight ${fmtShape(weight.shape)} does not fit input ${fmtShape(x.shape)} (expected [out, ${x.shape[1]}])`);
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== weight.shape[0])) {
    throw new Error(`linear: bias ${fmtShape(bias.shape)} does not fit weight ${fmtShape(weight.shape)}`);
  }
  const y = matmul(x, weight, false, true);
  return bias ? add(y, bias) : y;
}
