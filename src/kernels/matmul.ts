// Batched matrix multiply with transposes folded into the indexing (so backward needs no transposed
// copies), and `linear` on top of it.
import { getEngine } from "../backend/device.ts";
import { implementation, kernelFamily, registerImplementation } from "../backend/kernel.ts";
import { chooseTile, gemmKernel, gemmWorkgroups, WASM_A, WASM_B, wasmGemm } from "./gemm.ts";
import { type DType, isFloat, productDtype, Tensor } from "../autograd/tensor.ts";
import { record } from "../autograd/tape.ts";
import { add } from "./elementwise.ts";
import { sumToShape } from "./reduce.ts";
import { fmtShape } from "./shape.ts";
import { traceComposite, tracer, type TraceRecorder } from "../onnx/trace.ts";

// Element offsets (a_off, b_off, c_off) are relative to the bound byte range of each operand, and the
// leading dims (lda, ldb, ldc) are the full matrices': a sub-block of a product can run on its own, which
// is how operands larger than one storage binding (VGG's 411 MB classifier weight) are multiplied.
const matmulKernel = kernelFamily((variant: string) => {
  const [transA, transB, rows, vecs, wx, wy, shared] = variant.split(",").map(Number);
  return gemmKernel({
    name: `matmul_${transA ? "t" : "n"}${transB ? "t" : "n"}`,
    storage: [{ name: "a", access: "read" }, { name: "b", access: "read" }, { name: "out", access: "rw" }],
    uniforms: [
      { name: "lda", type: "u32" },
      { name: "ldb", type: "u32" },
      { name: "ldc", type: "u32" },
      { name: "a_off", type: "u32" },
      { name: "b_off", type: "u32" },
      { name: "c_off", type: "u32" },
      { name: "a_batch_stride", type: "u32" },
      { name: "b_batch_stride", type: "u32" },
      { name: "c_batch_stride", type: "u32" },
      { name: "accumulate", type: "u32" },
    ],
    loadA: `let base = u.a_off + z * u.a_batch_stride; return ${
      transA ? "a[base + k * u.lda + r]" : "a[base + r * u.lda + k]"
    };`,
    loadB: `let base = u.b_off + z * u.b_batch_stride; return ${
      transB ? "b[base + col * u.ldb + k]" : "b[base + k * u.ldb + col]"
    };`,
    store: `let i = u.c_off + z * u.c_batch_stride + r * u.ldc + c;
  if (u.accumulate == 1u) { out[i] += v; } else { out[i] = v; }`,
    tile: { rows, vecs, wx, wy, shared: shared === 1 },
  });
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
    throw new Error(
      `matmul: needs 2-D or 3-D (batched) tensors, got ${fmtShape(a.shape)} and ${fmtShape(b.shape)}`,
    );
  }
  const [ar, ac] = a.shape.slice(-2), [br, bc] = b.shape.slice(-2);
  const [m, ka] = transA ? [ac, ar] : [ar, ac];
  const [kb, n] = transB ? [bc, br] : [br, bc];
  if (ka !== kb) {
    throw new Error(
      `matmul: inner dimensions differ: ${fmtShape(a.shape)}${transA ? "^T" : ""} x ${fmtShape(b.shape)}${
        transB ? "^T" : ""
      }`,
    );
  }
  const aBatch = a.rank === 3 ? a.shape[0] : 1, bBatch = b.rank === 3 ? b.shape[0] : 1;
  if (a.rank === 3 && b.rank === 3 && aBatch !== bBatch) {
    throw new Error(`matmul: batch sizes differ: ${fmtShape(a.shape)} x ${fmtShape(b.shape)}`);
  }
  return { batch: Math.max(aBatch, bBatch), m, k: ka, n, aBatched: a.rank === 3, bBatched: b.rank === 3 };
}

/** A sub-product C[m0:m1, n0:n1] (+)= A[m0:m1, k0:k1] B[k0:k1, n0:n1]. */
interface Block {
  m0: number;
  m1: number;
  n0: number;
  n1: number;
  k0: number;
  k1: number;
  accumulate: boolean;
}

/**
 * Splits a product whose operands exceed the storage-binding limit into blocks along one dim, chosen so
 * that each big operand's part of a block is a run of whole rows (contiguous): M for A stored [M, K] and
 * for C, N for B stored [N, K], K for A stored [K, M] and B stored [K, N] (those blocks accumulate).
 */
function planBlocks(s: MatmulShape, transA: boolean, transB: boolean, limit: number): Block[] {
  const whole: Block = { m0: 0, m1: s.m, n0: 0, n1: s.n, k0: 0, k1: s.k, accumulate: false };
  const bigA = s.batch * s.m * s.k * 4 > limit,
    bigB = s.batch * s.k * s.n * 4 > limit,
    bigC = s.batch * s.m * s.n * 4 > limit;
  if (!bigA && !bigB && !bigC) return [whole];
  if (s.batch > 1) {
    throw new Error(`matmul: batched operands over ${limit} bytes (one storage binding) are not supported`);
  }
  const wanted = new Set<"m" | "n" | "k">();
  // Row length (elements) of each big operand along the dim it is split on.
  const rowLength: number[] = [];
  if (bigA) wanted.add(transA ? "k" : "m"), rowLength.push(transA ? s.m : s.k);
  if (bigB) wanted.add(transB ? "n" : "k"), rowLength.push(transB ? s.k : s.n);
  if (bigC) wanted.add("m"), rowLength.push(s.n);
  if (wanted.size > 1) {
    throw new Error(
      `matmul: operands over ${limit} bytes would need splitting along ${
        [...wanted].join(" and ")
      }; not supported`,
    );
  }
  const dim = [...wanted][0];
  // Leave room for the alignment slack at the start of each bound range.
  const rows = Math.max(1, Math.floor((limit - 256) / (Math.max(...rowLength) * 4)));
  const extent = dim === "m" ? s.m : dim === "n" ? s.n : s.k;
  const blocks: Block[] = [];
  for (let start = 0; start < extent; start += rows) {
    const end = Math.min(extent, start + rows);
    blocks.push({
      ...whole,
      ...(dim === "m"
        ? { m0: start, m1: end }
        : dim === "n"
        ? { n0: start, n1: end }
        : { k0: start, k1: end }),
      accumulate: dim === "k" && start > 0,
    });
  }
  return blocks;
}

/** Binds the elements [first, last] of a tensor: whole when it fits, else an aligned byte range. */
function bindRange(t: Tensor, first: number, last: number, limit: number, align: number) {
  if (t.byteLength <= limit) return { binding: t.buffer, offset: first };
  if (t.dtype === "float16") {
    throw new Error(`matmul: a float16 operand over ${limit} bytes (one storage binding) is not supported`);
  }
  const start = Math.floor((first * 4) / align) * align;
  const size = Math.min(t.buffer.capacity - start, Math.ceil(((last + 1) * 4 - start) / 4) * 4);
  return { binding: { pb: t.buffer, offset: start, size }, offset: first - start / 4 };
}

/** How a backend multiplies: C = op(A) op(B) into `out`, for the shape `s`. */
type MatmulImpl = (
  a: Tensor,
  b: Tensor,
  out: Tensor,
  s: MatmulShape,
  transA: boolean,
  transB: boolean,
) => void;

/** WebAssembly: the one packed GEMM, its operands read as strided matrices; a batch is its z dimension. */
registerImplementation<MatmulImpl>("matmul", "wasm", (a, b, out, s, transA, transB) => {
  const lda = transA ? s.m : s.k, ldb = transB ? s.k : s.n;
  const [rsA, csA] = transA ? [1, lda] : [lda, 1], [rsB, csB] = transB ? [1, ldb] : [ldb, 1];
  wasmGemm(a, b, out, {
    m: s.m,
    n: s.n,
    k: s.k,
    a: { mode: WASM_A.strided, rs: rsA, cs: csA, z1: s.aBatched ? s.m * s.k : 0 },
    b: { mode: WASM_B.strided, rs: rsB, cs: csB, z1: s.bBatched ? s.k * s.n : 0 },
    c: { ld: s.n, z1: s.m * s.n },
    z: [s.batch, 1],
  });
});

/** WebGPU: the WGSL GEMM per block of operands that fit one storage binding each (see planBlocks). */
registerImplementation<MatmulImpl>("matmul", "webgpu", (a, b, out, s, transA, transB) => {
  const engine = getEngine();
  const limit = engine.maxStorageBinding, align = engine.minStorageOffsetAlignment;
  const lda = transA ? s.m : s.k, ldb = transB ? s.k : s.n, ldc = s.n;
  for (const blk of planBlocks(s, transA, transB, limit)) {
    const m = blk.m1 - blk.m0, n = blk.n1 - blk.n0, k = blk.k1 - blk.k0;
    const tile = chooseTile(m, n);
    // First and last element of each operand that the block reads or writes.
    const aAt = (r: number, kk: number) => (transA ? kk * lda + r : r * lda + kk);
    const bAt = (kk: number, c: number) => (transB ? c * ldb + kk : kk * ldb + c);
    const A = bindRange(a, aAt(blk.m0, blk.k0), aAt(blk.m1 - 1, blk.k1 - 1), limit, align);
    const B = bindRange(b, bAt(blk.k0, blk.n0), bAt(blk.k1 - 1, blk.n1 - 1), limit, align);
    const C = bindRange(out, blk.m0 * ldc + blk.n0, (blk.m1 - 1) * ldc + blk.n1 - 1, limit, align);
    engine.dispatch(
      matmulKernel(
        `${transA ? 1 : 0},${transB ? 1 : 0},${tile.rows},${tile.vecs},${tile.wx},${tile.wy},${
          tile.shared ? 1 : 0
        }`,
      ),
      [A.binding, B.binding, C.binding],
      [
        m,
        n,
        k,
        lda,
        ldb,
        ldc,
        A.offset,
        B.offset,
        C.offset,
        s.aBatched ? s.m * s.k : 0,
        s.bBatched ? s.k * s.n : 0,
        s.m * s.n,
        blk.accumulate ? 1 : 0,
      ],
      gemmWorkgroups(tile, m, n, s.batch),
    );
  }
});

/** C = op(A) op(B) with op a transpose when asked; a 3-D operand is a batch, a 2-D one is shared. */
function matmulRaw(a: Tensor, b: Tensor, transA: boolean, transB: boolean, dtype: DType): Tensor {
  const s = matmulShape(a, b, transA, transB);
  const out = Tensor.empty(a.rank === 3 || b.rank === 3 ? [s.batch, s.m, s.n] : [s.m, s.n], dtype);
  implementation<MatmulImpl>("matmul")(a, b, out, s, transA, transB);
  return out;
}

/**
 * Matrix product of [M, K] x [K, N] (or batched [B, M, K] x [B, K, N], either side may be 2-D and shared
 * across the batch). `transA`/`transB` read an operand transposed without copying it.
 */
export function matmul(a: Tensor, b: Tensor, transA = false, transB = false): Tensor {
  for (const t of [a, b]) if (!isFloat(t.dtype)) throw new Error("matmul: needs float tensors");
  const out = matmulRaw(a, b, transA, transB, productDtype(a));
  if (tracer) tracer.node("MatMul", [transposedIf(tracer, a, transA), transposedIf(tracer, b, transB)], out);
  return record(out, "matmul", [a, b], (g) => {
    let ga: Tensor | null = null, gb: Tensor | null = null;
    if (a.requiresGrad) {
      // dA = dC B^T (or its transpose when A was read transposed)
      ga = transA ? matmulRaw(b, g, transB, true, a.dtype) : matmulRaw(g, b, false, !transB, a.dtype);
      if (ga.rank !== a.rank) ga = sumBatch(ga, a.shape);
    }
    if (b.requiresGrad) {
      gb = transB ? matmulRaw(g, a, true, transA, b.dtype) : matmulRaw(a, g, !transA, false, b.dtype);
      if (gb.rank !== b.rank) gb = sumBatch(gb, b.shape);
    }
    return [ga, gb];
  });
}

/** ONNX's MatMul reads no operand transposed: a Transpose of the last two dims goes before it. */
function transposedIf(t: TraceRecorder, x: Tensor, transpose: boolean): Tensor | string {
  if (!transpose) return x;
  const perm = x.shape.map((_, i) => i);
  perm.splice(-2, 2, x.rank - 1, x.rank - 2);
  return t.node("Transpose", [x], undefined, { perm });
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
    throw new Error(
      `linear: weight ${fmtShape(weight.shape)} does not fit input ${fmtShape(x.shape)} (expected [out, ${
        x.shape[1]
      }])`,
    );
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== weight.shape[0])) {
    throw new Error(`linear: bias ${fmtShape(bias.shape)} does not fit weight ${fmtShape(weight.shape)}`);
  }
  return traceComposite("Gemm", bias ? [x, weight, bias] : [x, weight], { transB: 1 }, () => {
    const y = matmul(x, weight, false, true);
    return bias ? add(y, bias) : y;
  });
}
