// 2-D convolution (NCHW, PyTorch's conv2d) as implicit GEMMs on the shared tiled GEMM: forward,
// gradient to the input and gradient to the weight each read their operands straight from the tensors
// (no im2col buffer). Groups run as the GEMM's z dimension. 1x1 convolutions without stride or padding
// use loaders without the window arithmetic.
import { backendInfo, getEngine } from "../backend/device.ts";
import { implementation, kernelFamily, registerImplementation } from "../backend/kernel.ts";
import type { KernelSpec } from "../backend/engine.ts";
import { isGradEnabled, productDtype, Tensor } from "../autograd/tensor.ts";
import { record } from "../autograd/tape.ts";
import {
  chooseTile,
  EPILOGUE_TENSORS,
  gemmKernel,
  gemmThreads,
  type GemmTile,
  gemmWorkgroups,
  WASM_A,
  WASM_B,
  type WasmGemm,
  wasmGemm,
} from "./gemm.ts";
import { sum } from "./reduce.ts";
import { wasmWinograd, type WinogradTile } from "./winograd.ts";
import { type DepthwiseConv, depthwiseFits, wasmDepthwise } from "./depthwise.ts";
import { fmtShape, type Pair, sameShape } from "./shape.ts";
import { tracer } from "../onnx/trace.ts";

export type { Pair };

/** Options of {@link conv2d}, as the keyword arguments of torch.nn.functional.conv2d. */
export interface Conv2dOptions {
  /** Step of the window over (H, W) (default 1). */
  stride?: Pair;
  /** Zeros added on each side of (H, W) (default 0). */
  padding?: Pair;
  /** Spacing between the window's taps (default 1). */
  dilation?: Pair;
  /** Channel groups (default 1): C and Cout must divide by it; the weight has C/groups input channels. */
  groups?: number;
}

/** A {@link Pair} (`fallback` when undefined) as `[h, w]`; throws unless both are integers >= `min`. */
export function pair(
  v: Pair | undefined,
  fallback: number,
  what: string,
  op: string,
  min: number,
): [number, number] {
  const p: [number, number] = v === undefined
    ? [fallback, fallback]
    : typeof v === "number"
    ? [v, v]
    : [v[0], v[1]];
  if (!Array.isArray(p) || p.length !== 2 || p.some((x) => !Number.isInteger(x) || x < min)) {
    throw new Error(
      `${op}: ${what} must be an integer >= ${min} or a pair of them, got ${JSON.stringify(v)}`,
    );
  }
  return p;
}

/** Sizes of one convolution, in the order of the kernels' uniforms after M, N, K. */
export interface ConvGeometry {
  n: number;
  c: number;
  h: number;
  w: number;
  oc: number;
  oh: number;
  ow: number;
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  ph: number;
  pw: number;
  dh: number;
  dw: number;
  groups: number;
}

// Sizes that vary with the input (batch, maps, channels) travel as uniforms; the window's geometry (size,
// stride, padding, dilation) is compiled in, so the per-element index arithmetic divides by constants (a
// multiply and shift) instead of by uniforms (a slow integer division on software adapters). Channels per
// group only ever multiply, so they are uniforms too: compiled in, they doubled the pipelines to compile
// (the suite's WebGPU run: 398 convolution pipelines with them, 201 without) at no measurable speed gain.
const SIZE_UNIFORMS = ["c", "h", "w", "oc", "oh", "ow", "cg", "ocg"].map((name) => ({
  name,
  type: "u32" as const,
}));
const sizeParams = (g: ConvGeometry) => [g.c, g.h, g.w, g.oc, g.oh, g.ow, g.c / g.groups, g.oc / g.groups];

function constants(g: ConvGeometry): string {
  const v = {
    KH: g.kh,
    KW: g.kw,
    SH: g.sh,
    SW: g.sw,
    PH: g.ph,
    PW: g.pw,
    DH: g.dh,
    DW: g.dw,
  };
  return Object.entries(v).map(([k, x]) => `const ${k}: u32 = ${x}u;`).join("\n") +
    "\nconst KHW: u32 = KH * KW;";
}
const geometryKey = (g: ConvGeometry) => [g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw].join("x");

type Variant = "general" | "pointwise";
interface ConvKernelKey {
  variant: Variant;
  geometry: string;
  consts: string;
  /** The forward pass's epilogue: which of its parts are there. */
  epilogue?: EpilogueParts;
  tile: GemmTile;
}

/**
 * What the forward pass does to each output after the product, in this order, while it is still in registers:
 * out = relu(product * scale[co] + bias[co] + residual). A batch norm in eval mode is a per-channel scale
 * and shift, so conv, batch norm, residual add and ReLU become one pass over memory instead of four.
 */
export interface ConvEpilogue {
  /** Per output channel [Cout], multiplies the product (a folded batch norm's scale). */
  scale?: Tensor | null;
  /** Per output channel [Cout], added after the scale (the conv's bias, or a folded batch norm's shift). */
  bias?: Tensor | null;
  /** Added element by element, shaped as the output (a residual connection). */
  residual?: Tensor | null;
  /** max(0, .) last. */
  relu?: boolean;
}
type EpilogueParts = Record<typeof EPILOGUE_TENSORS[number] | "relu", boolean>;
const epilogueParts = (e: ConvEpilogue): EpilogueParts => ({
  scale: Boolean(e.scale),
  bias: Boolean(e.bias),
  residual: Boolean(e.residual),
  relu: Boolean(e.relu),
});
const epilogueTensors = (e: ConvEpilogue): Tensor[] => EPILOGUE_TENSORS.flatMap((p) => e[p] ?? []);
const parseKey = (key: string): ConvKernelKey => JSON.parse(key);

// Forward: C[oc_g, (n, oh, ow)] = W[oc_g, (ci, kh, kw)] . X_cols[(ci, kh, kw), (n, oh, ow)] (+ bias).
// A column's image base and window origin are found once per thread; K's (ci, kh, kw) is advanced by
// increments (k_row), not divided out per row. Four columns in one output row read their four pixels with
// one window-row check (load_b4): the per-element bounds checks dominate a 3x3 convolution otherwise.
const forwardKernel = kernelFamily((key: string) => {
  const { variant, consts, epilogue, tile } = parseKey(key);
  const general = variant === "general";
  const tensors = EPILOGUE_TENSORS.filter((p) => epilogue?.[p]);
  return gemmKernel({
    name: `conv2d_fwd_${variant}${
      [...tensors, ...(epilogue?.relu ? ["relu"] : [])].map((p) => `_${p}`).join("")
    }`,
    storage: [
      { name: "x", access: "read" },
      { name: "wt", access: "read" },
      ...tensors.map((name) => ({ name, access: "read" as const })),
      { name: "out", access: "rw" },
      // The input again, as vec4s: a 1x1 convolution reads four adjacent pixels of one channel at once.
      ...(variant === "pointwise"
        ? [{ name: "x4", access: "read" as const, type: "vec4<f32>" as const }]
        : []),
    ],
    uniforms: SIZE_UNIFORMS,
    helpers: consts,
    loadA: "return wt[(z * u.ocg + r) * u.K + k];",
    bColumn: general
      ? {
        type: "vec3<i32>",
        body: `let ohw = u.oh * u.ow; let n = c / ohw; let oh = (c % ohw) / u.ow; let ow = c % u.ow;
  return vec3<i32>(i32((n * u.c + z * u.cg) * u.h * u.w), i32(oh * SH) - i32(PH), i32(ow * SW) - i32(PW));`,
      }
      : { type: "u32", body: "let hw = u.h * u.w; return ((c / hw) * u.c + z * u.cg) * hw + c % hw;" },
    // kr = (offset of channel ci's plane, kh * DH, kw * DW) of row k.
    kRow: general
      ? {
        type: "vec3<i32>",
        init:
          "let ci = k / KHW; let kh = (k % KHW) / KW; return vec3<i32>(i32(ci * u.h * u.w), i32(kh * DH), i32((k % KW) * DW));",
        next: `var n = kr; n.z += i32(DW);
  if (n.z == i32(KW * DW)) { n.z = 0; n.y += i32(DH); if (n.y == i32(KH * DH)) { n.y = 0; n.x += i32(u.h * u.w); } }
  return n;`,
      }
      : undefined,
    loadB4: general
      ? {
        when: "c0 % u.ow + 3u < u.ow",
        body: `let ih = col.y + kr.y;
  if (ih < 0 || ih >= i32(u.h)) { return vec4<f32>(); }
  let iw = col.z + kr.z;
  let base = col.x + kr.x + ih * i32(u.w);
  if (iw >= 0 && iw + i32(3u * SW) < i32(u.w)) {
    let b = u32(base + iw);
    return vec4<f32>(x[b], x[b + SW], x[b + 2u * SW], x[b + 3u * SW]);
  }
  var v = vec4<f32>();
  for (var j = 0; j < 4; j++) {
    let iwj = iw + j * i32(SW);
    if (iwj >= 0 && iwj < i32(u.w)) { v[j] = x[u32(base + iwj)]; }
  }
  return v;`,
      }
      : { when: "(u.h * u.w) % 4u == 0u", body: "return x4[(col + k * u.h * u.w) / 4u];" },
    loadB: general
      ? `let ih = col.y + kr.y; let iw = col.z + kr.z;
  if (ih < 0 || iw < 0 || ih >= i32(u.h) || iw >= i32(u.w)) { return 0.0; }
  return x[u32(col.x + kr.x + ih * i32(u.w) + iw)];`
      : "return x[col + k * u.h * u.w];",
    store: `let ohw = u.oh * u.ow; let co = z * u.ocg + r; let o = ((c / ohw) * u.oc + co) * ohw + c % ohw;
  var y = v;${epilogue?.scale ? " y = y * scale[co];" : ""}${epilogue?.bias ? " y = y + bias[co];" : ""}${
      epilogue?.residual ? " y = y + residual[o];" : ""
    }${epilogue?.relu ? " y = max(y, 0.0);" : ""}
  out[o] = y;`,
    tile,
  });
});

// Gradient to the input: dX[ci_g, (n, ih, iw)] = W^T[ci_g, (co, kh, kw)] . dY_cols[(co, kh, kw), (n, ih, iw)],
// where dY_cols holds dY[n, co, oh, ow] for the output position whose window puts (kh, kw) on (ih, iw).
const inputGradKernel = kernelFamily((key: string) => {
  const { variant, consts, tile } = parseKey(key);
  return gemmKernel({
    name: `conv2d_dx_${variant}`,
    storage: [
      { name: "dy", access: "read" },
      { name: "wt", access: "read" },
      { name: "dx", access: "rw" },
      ...(variant === "pointwise"
        ? [{ name: "dy4", access: "read" as const, type: "vec4<f32>" as const }]
        : []),
    ],
    uniforms: SIZE_UNIFORMS,
    helpers: consts,
    loadB4: variant === "pointwise"
      ? { when: "(u.h * u.w) % 4u == 0u", body: "return dy4[(col + k * u.h * u.w) / 4u];" }
      : undefined,
    loadA: variant === "pointwise"
      ? "return wt[(z * u.ocg + k) * u.cg + r];"
      : "return wt[((z * u.ocg + k / KHW) * u.cg + r) * KHW + k % KHW];",
    bColumn: variant === "pointwise"
      ? { type: "u32", body: "let hw = u.h * u.w; return ((c / hw) * u.oc + z * u.ocg) * hw + c % hw;" }
      : {
        type: "vec3<i32>",
        body: `let hw = u.h * u.w; let n = c / hw; let ih = (c % hw) / u.w; let iw = c % u.w;
  return vec3<i32>(i32((n * u.oc + z * u.ocg) * u.oh * u.ow), i32(ih + PH), i32(iw + PW));`,
      },
    loadB: variant === "pointwise"
      ? "return dy[col + k * u.h * u.w];"
      : `let co = k / KHW; let kh = (k % KHW) / KW; let kw = k % KW;
  let th = col.y - i32(kh * DH); let tw = col.z - i32(kw * DW);
  if (th < 0 || tw < 0 || u32(th) % SH != 0u || u32(tw) % SW != 0u) { return 0.0; }
  let oh = u32(th) / SH; let ow = u32(tw) / SW;
  if (oh >= u.oh || ow >= u.ow) { return 0.0; }
  return dy[u32(col.x) + (co * u.oh + oh) * u.ow + ow];`,
    store: "let hw = u.h * u.w; dx[((c / hw) * u.c + z * u.cg + r) * hw + c % hw] = v;",
    tile,
  });
});

// Gradient to the weight: dW[co_g, (ci, kh, kw)] = dY[co_g, (n, oh, ow)] . X_cols^T[(n, oh, ow), (ci, kh, kw)].
// K runs over (n, oh, ow), advanced by increments rather than divided out per row (k_row).
const weightGradKernel = kernelFamily((key: string) => {
  const { variant, consts, tile } = parseKey(key);
  return gemmKernel({
    name: `conv2d_dw_${variant}`,
    storage: [{ name: "dy", access: "read" }, { name: "x", access: "read" }, { name: "dw", access: "rw" }],
    uniforms: SIZE_UNIFORMS,
    helpers: consts,
    // kr = (n, oh, ow) of row k.
    kRow: {
      type: "vec3<u32>",
      init: "let ohw = u.oh * u.ow; return vec3<u32>(k / ohw, (k % ohw) / u.ow, k % u.ow);",
      next: `var n = kr; n.z += 1u;
  if (n.z == u.ow) { n.z = 0u; n.y += 1u; if (n.y == u.oh) { n.y = 0u; n.x += 1u; } }
  return n;`,
    },
    loadA: "return dy[((kr.x * u.oc + z * u.ocg + r) * u.oh + kr.y) * u.ow + kr.z];",
    bColumn: variant === "pointwise" ? { type: "u32", body: "return z * u.cg + c;" } : {
      type: "vec3<i32>",
      body: `let ci = c / KHW; let kh = (c % KHW) / KW; let kw = c % KW;
  return vec3<i32>(i32(z * u.cg + ci), i32(kh * DH) - i32(PH), i32(kw * DW) - i32(PW));`,
    },
    loadB: variant === "pointwise"
      ? "return x[((kr.x * u.c + col) * u.h + kr.y) * u.w + kr.z];"
      : `let ih = i32(kr.y * SH) + col.y; let iw = i32(kr.z * SW) + col.z;
  if (ih < 0 || iw < 0 || ih >= i32(u.h) || iw >= i32(u.w)) { return 0.0; }
  return x[((kr.x * u.c + u32(col.x)) * u.h + u32(ih)) * u.w + u32(iw)];`,
    // Split s's partial sums go to block s of a [splits, Cout, Cin/groups * KH * KW] buffer.
    store: "dw[((s * u.oc) + z * u.ocg + r) * u.N + c] = v;",
    splitK: true,
    tile,
  });
});

function geometry(x: Tensor, w: Tensor, options: Conv2dOptions): ConvGeometry {
  const op = "conv2d";
  if (!(x instanceof Tensor) || x.rank !== 4) {
    throw new Error(
      `${op}: input must be [N, C, H, W], got ${x instanceof Tensor ? fmtShape(x.shape) : typeof x}`,
    );
  }
  if (!(w instanceof Tensor) || w.rank !== 4) {
    throw new Error(
      `${op}: weight must be [Cout, Cin/groups, KH, KW], got ${
        w instanceof Tensor ? fmtShape(w.shape) : typeof w
      }`,
    );
  }
  const [n, c, h, wd] = x.shape;
  const [oc, cg, kh, kw] = w.shape;
  const groups = options.groups ?? 1;
  if (!Number.isInteger(groups) || groups < 1) {
    throw new Error(`${op}: groups must be a positive integer, got ${groups}`);
  }
  if (c % groups !== 0 || oc % groups !== 0) {
    throw new Error(`${op}: groups ${groups} must divide input channels ${c} and output channels ${oc}`);
  }
  if (cg !== c / groups) {
    throw new Error(
      `${op}: weight ${fmtShape(w.shape)} expects ${
        cg * groups
      } input channels (groups ${groups}), input has ${c}`,
    );
  }
  if (kh === 0 || kw === 0) throw new Error(`${op}: kernel size must be positive, got ${kh}x${kw}`);
  const [sh, sw] = pair(options.stride, 1, "stride", op, 1);
  const [ph, pw] = pair(options.padding, 0, "padding", op, 0);
  const [dh, dw] = pair(options.dilation, 1, "dilation", op, 1);
  const oh = Math.floor((h + 2 * ph - dh * (kh - 1) - 1) / sh) + 1;
  const ow = Math.floor((wd + 2 * pw - dw * (kw - 1) - 1) / sw) + 1;
  if (oh <= 0 || ow <= 0) {
    throw new Error(
      `${op}: input ${h}x${wd} (padding ${ph}x${pw}) is smaller than the dilated kernel ${
        dh * (kh - 1) + 1
      }x${dw * (kw - 1) + 1}`,
    );
  }
  return { n, c, h, w: wd, oc, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, groups };
}

function isPointwise(g: ConvGeometry): boolean {
  return g.kh === 1 && g.kw === 1 && g.sh === 1 && g.sw === 1 && g.ph === 0 && g.pw === 0;
}

function run(
  family: (key: string) => KernelSpec,
  buffers: Tensor[],
  g: ConvGeometry,
  key: Omit<ConvKernelKey, "tile" | "geometry" | "consts">,
  [m, n, k]: [number, number, number],
  split?: { count: number; chunk: number },
): void {
  const engine = getEngine();
  const tile = chooseTile(m, n);
  const full: ConvKernelKey = { ...key, geometry: geometryKey(g), consts: constants(g), tile };
  engine.dispatch(
    family(JSON.stringify(full)),
    buffers.map((t) => t.buffer),
    [m, n, k, ...(split ? [split.chunk, g.groups] : []), ...sizeParams(g)],
    gemmWorkgroups(tile, m, n, g.groups * (split?.count ?? 1)),
  );
}

// Split K until this many threads have work: a filter bank's gradient has few outputs (ResNeXt's grouped
// 3x3: 8 x 72 per group) and a K of every output pixel in the batch (25,088 at batch 8 and 56x56).
const SPLIT_K_THREADS = 8192;
// and keep at least this many K rows per split, so the partial sums stay few next to the product
const MIN_SPLIT_ROWS = 256;

/** The three WebGPU passes' GEMM sizes [M, N, K] (per group). */
function webgpuProducts(
  g: ConvGeometry,
): Record<"forward" | "inputGrad" | "weightGrad", [number, number, number]> {
  const cg = g.c / g.groups, ocg = g.oc / g.groups, khw = g.kh * g.kw;
  return {
    forward: [ocg, g.n * g.oh * g.ow, cg * khw],
    inputGrad: [cg, g.n * g.h * g.w, ocg * khw],
    weightGrad: [ocg, cg * khw, g.n * g.oh * g.ow],
  };
}

/** The weight-gradient GEMM's K split on WebGPU: `count` parts of `chunk` rows (count 1: no split). */
function splitK(g: ConvGeometry): { count: number; chunk: number } {
  const [m, n, k] = webgpuProducts(g).weightGrad;
  const threads = gemmThreads(chooseTile(m, n), m, n, g.groups);
  const wanted = Math.min(Math.floor(k / MIN_SPLIT_ROWS), Math.ceil(SPLIT_K_THREADS / threads));
  if (wanted <= 1) return { count: 1, chunk: k };
  const chunk = Math.ceil(k / wanted);
  return { count: Math.ceil(k / chunk), chunk };
}

/** dW of a convolution: the weight-gradient GEMM, split along K when its outputs are few. */
function weightGrad(dy: Tensor, x: Tensor, weight: Tensor, g: ConvGeometry, variant: Variant): Tensor {
  const [m, n, k] = webgpuProducts(g).weightGrad;
  const { count, chunk } = splitK(g);
  if (count === 1) {
    const dw = Tensor.empty([...weight.shape], weight.dtype);
    run(weightGradKernel, [dy, x, dw], g, { variant }, [m, n, k], { count, chunk });
    return dw;
  }
  const partial = Tensor.empty([count, ...weight.shape]);
  run(weightGradKernel, [dy, x, partial], g, { variant }, [m, n, k], { count, chunk });
  const dw = sum(partial, [0]);
  partial.dispose();
  return dw;
}

/**
 * The three passes as products for the WebAssembly GEMM, per (image, group) or per group; the packers read
 * the windows (src/kernels/wasm/gemm.ts). Pointwise convolutions read plain strided matrices.
 */
function wasmConvProducts(g: ConvGeometry): Record<"forward" | "inputGrad" | "weightGrad", WasmGemm> {
  const cg = g.c / g.groups, ocg = g.oc / g.groups, khw = g.kh * g.kw;
  const hw = g.h * g.w, p = g.oh * g.ow, pointwise = isPointwise(g);
  const geometry = [
    g.c,
    g.h,
    g.w,
    g.oc,
    g.oh,
    g.ow,
    g.kh,
    g.kw,
    g.sh,
    g.sw,
    g.ph,
    g.pw,
    g.dh,
    g.dw,
    g.groups,
  ];
  const z: [number, number] = [g.n, g.groups];
  return {
    // Y[img, g] = W[g] (ocg x cg*khw) . cols(X[img, g]) (cg*khw x p)
    forward: {
      m: ocg,
      n: p,
      k: cg * khw,
      a: { mode: WASM_A.strided, rs: cg * khw, cs: 1, z2: ocg * cg * khw },
      b: pointwise
        ? { mode: WASM_B.strided, rs: hw, cs: 1, z1: g.c * hw, z2: cg * hw }
        : { mode: WASM_B.im2col, z1: g.c * hw, z2: cg * hw },
      c: { ld: p, z1: g.oc * p, z2: ocg * p },
      z,
      geometry,
    },
    // dX[img, g] = W[g]^T (cg x ocg*khw) . windows of dY[img, g] over each input pixel (ocg*khw x hw)
    inputGrad: {
      m: cg,
      n: hw,
      k: ocg * khw,
      a: pointwise
        ? { mode: WASM_A.strided, rs: 1, cs: cg, z2: ocg * cg }
        : { mode: WASM_A.weightT, z2: ocg * cg * khw },
      b: pointwise
        ? { mode: WASM_B.strided, rs: p, cs: 1, z1: g.oc * p, z2: ocg * p }
        : { mode: WASM_B.dyCol, z1: g.oc * p, z2: ocg * p },
      c: { ld: hw, z1: g.c * hw, z2: cg * hw },
      z,
      geometry,
    },
    // dW[g] = dY[:, g] (ocg x n*p) . cols(X[:, g])^T (n*p x cg*khw), K running over every image's pixels
    weightGrad: {
      m: ocg,
      n: cg * khw,
      k: g.n * p,
      a: { mode: WASM_A.dyImages, z2: ocg * p },
      b: { mode: WASM_B.im2colT, z2: cg * hw },
      c: { ld: cg * khw, z2: ocg * cg * khw },
      z: [1, g.groups],
      geometry,
    },
  };
}

/** How one backend runs a convolution's three passes; conv2d's gradient rule is the same for both. */
type ConvPassesOf = (x: Tensor, weight: Tensor, epilogue: ConvEpilogue, g: ConvGeometry) => ConvPasses;
interface ConvPasses {
  forward(out: Tensor): void;
  inputGrad(dy: Tensor): Tensor;
  weightGrad(dy: Tensor): Tensor;
}

/**
 * Which convolution algorithm the WebAssembly backend uses: "auto" (per shape: Winograd, the depthwise kernel
 * or the implicit GEMM), "direct" (the implicit GEMM for every convolution) or a Winograd tile.
 */
export type WasmConvAlgorithm = "auto" | "direct" | WinogradTile;
let wasmAlgorithm: WasmConvAlgorithm = "auto";

/**
 * Sets the WebAssembly backend's choice of convolution algorithm (tests and benchmarks reach each path with
 * it); returns the previous setting.
 */
export function setWasmConvAlgorithm(algorithm: WasmConvAlgorithm): WasmConvAlgorithm {
  const previous = wasmAlgorithm;
  wasmAlgorithm = algorithm;
  return previous;
}

/**
 * Whether "auto" gives a convolution to the depthwise kernel (src/kernels/depthwise.ts): one filter per
 * channel, and a padded plane that fits in a thread's scratch. Its input gradient too where the stride is 1
 * (a depthwise convolution of dy, padded (k - 1) d - p).
 */
function isDepthwise(g: ConvGeometry): boolean {
  return wasmAlgorithm === "auto" && g.groups > 1 && g.groups === g.c && g.oc === g.c && depthwiseFits(g);
}
function depthwiseInputGrad(g: ConvGeometry): DepthwiseConv | null {
  const ph = (g.kh - 1) * g.dh - g.ph, pw = (g.kw - 1) * g.dw - g.pw;
  if (!isDepthwise(g) || g.sh !== 1 || g.sw !== 1 || ph < 0 || pw < 0) return null;
  const geometry = { ...g, h: g.oh, w: g.ow, oh: g.h, ow: g.w, ph, pw, flip: true, use: "" };
  return depthwiseFits(geometry) ? geometry : null;
}

/**
 * The Winograd tile for a 3x3 stride-1 product with `c` input and `oc` output channels over oh x ow outputs
 * per image, or null for the direct product: where Winograd can not take it (groups, dilation, other windows
 * and strides) or does not pay. "auto" follows the learners' shapes measured on 2 threads (README, "Winograd"):
 * the transforms cost in proportion to the channels and the tiles, the products shrink 2.25x (F(2x2)) or 4x
 * (F(4x4)); with few channels the transforms win, on small maps F(4x4)'s ragged tiles and filter transform.
 */
function winogradTile(g: ConvGeometry, c: number, oc: number, oh: number, ow: number): WinogradTile | null {
  if (wasmAlgorithm === "direct" || g.kh !== 3 || g.kw !== 3 || g.sh !== 1 || g.sw !== 1) return null;
  if (g.dh !== 1 || g.dw !== 1 || g.groups !== 1) return null;
  if (wasmAlgorithm !== "auto") return wasmAlgorithm;
  if (Math.min(c, oc) < WINOGRAD_MIN_CHANNELS) return null;
  return oh * ow >= WINOGRAD_F4_MIN_PIXELS ? 4 : oh * ow >= WINOGRAD_F2_MIN_PIXELS ? 2 : null;
}
const WINOGRAD_MIN_CHANNELS = 48;
/** F(4x4) from 24x24 output maps (InceptionV3 at crop 224 has 25x25), F(2x2) from 14x14. */
const WINOGRAD_F4_MIN_PIXELS = 24 * 24;
const WINOGRAD_F2_MIN_PIXELS = 14 * 14;

/** The input gradient's Winograd tile: a convolution of dy (padding 2 - p) with the flipped filters. */
function winogradInputGradTile(g: ConvGeometry): WinogradTile | null {
  return g.ph <= 2 && g.pw <= 2 ? winogradTile(g, g.oc, g.c, g.h, g.w) : null;
}

function wasmPasses(x: Tensor, weight: Tensor, epilogue: ConvEpilogue, g: ConvGeometry): ConvPasses {
  const products = wasmConvProducts(g);
  // How a profile names the three products: window, stride and groups say which of a network's convs it is.
  const conv = `conv2d ${g.kh}x${g.kw}${g.sh > 1 || g.sw > 1 ? `/${g.sh}` : ""}${
    g.groups > 1 ? ` g${g.groups}` : ""
  }`;
  return {
    forward: (out) => {
      const tile = winogradTile(g, g.c, g.oc, g.oh, g.ow);
      if (tile) wasmWinograd(x, weight, out, tile, { ...g, ...epilogue, use: `${conv} forward` });
      else if (isDepthwise(g)) wasmDepthwise(x, weight, out, { ...g, ...epilogue, use: `${conv} forward` });
      else wasmGemm(weight, x, out, { ...products.forward, ...epilogue, use: `${conv} forward` });
    },
    inputGrad: (dy) => {
      const dx = Tensor.empty([...x.shape], x.dtype);
      const tile = winogradInputGradTile(g), depthwise = depthwiseInputGrad(g);
      if (depthwise) wasmDepthwise(dy, weight, dx, { ...depthwise, use: `${conv} input grad` });
      else if (tile) {
        // dx is the convolution of dy with the filters transposed and turned, padded by 2 - p.
        const { n, c, h, w, oc, oh, ow, ph, pw } = g;
        const geometry = { n, c: oc, h: oh, w: ow, oc: c, oh: h, ow: w, ph: 2 - ph, pw: 2 - pw };
        wasmWinograd(dy, weight, dx, tile, { ...geometry, flip: true, use: `${conv} input grad` });
      } else wasmGemm(weight, dy, dx, { ...products.inputGrad, use: `${conv} input grad` });
      return dx;
    },
    weightGrad: (dy) => {
      const slices = wasmWeightGradSlices(g);
      const use = `${conv} weight grad`;
      if (slices === 1) {
        const dw = Tensor.empty([...weight.shape]);
        wasmGemm(dy, x, dw, { ...products.weightGrad, use });
        return dw;
      }
      // Each slice of images sums into its own copy of dW; the copies are added in slice order after.
      const wg = products.weightGrad, per = g.n / slices, pixels = g.oh * g.ow;
      const partials = Tensor.empty([slices, ...weight.shape]);
      wasmGemm(dy, x, partials, {
        ...wg,
        k: per * pixels,
        a: { ...wg.a, z1: per * g.oc * pixels },
        b: { ...wg.b, z1: per * g.c * g.h * g.w },
        c: { ...wg.c, z1: weight.size },
        z: [slices, g.groups],
        use,
      });
      const dw = sum(partials, 0);
      partials.dispose();
      return dw;
    },
  };
}

/**
 * Slices of the batch that a weight gradient on WebAssembly sums separately: a filter bank with few outputs
 * over many pixels (VGG19-bn tiny's first layer: 108 outputs, K = 65,536) is one unit of work for the GEMM,
 * so all but one thread would idle; slices of images give each thread its own. A function of the shapes
 * alone, never of the thread count, so the sums (and so the results) are the same on any number of threads.
 */
function wasmWeightGradSlices(g: ConvGeometry): number {
  const pixels = g.n * g.oh * g.ow, outputs = g.oc * (g.c / g.groups) * g.kh * g.kw;
  if (outputs > WASM_SPLIT_MAX_OUTPUTS) return 1;
  let slices = Math.min(WASM_SPLIT_MAX_SLICES, g.n, Math.floor(pixels / WASM_SPLIT_MIN_PIXELS));
  while (slices > 1 && g.n % slices !== 0) slices--;
  return Math.max(1, slices);
}
/** Filter banks up to this many values are split (256 KiB: the partial copies stay small next to K). */
const WASM_SPLIT_MAX_OUTPUTS = 65536;
/** At most this many slices, each at least this many output pixels. */
const WASM_SPLIT_MAX_SLICES = 8;
const WASM_SPLIT_MIN_PIXELS = 4096;

function webgpuPasses(x: Tensor, weight: Tensor, epilogue: ConvEpilogue, g: ConvGeometry): ConvPasses {
  const variant: Variant = isPointwise(g) ? "pointwise" : "general";
  const products = webgpuProducts(g);
  return {
    forward: (out) => {
      const buffers = [x, weight, ...epilogueTensors(epilogue), out, ...(variant === "pointwise" ? [x] : [])];
      run(forwardKernel, buffers, g, { variant, epilogue: epilogueParts(epilogue) }, products.forward);
    },
    inputGrad: (dy) => {
      const dx = Tensor.empty([...x.shape], x.dtype);
      const buffers = [dy, weight, dx, ...(variant === "pointwise" ? [dy] : [])];
      run(inputGradKernel, buffers, g, { variant }, products.inputGrad);
      return dx;
    },
    weightGrad: (dy) => weightGrad(dy, x, weight, g, variant),
  };
}
registerImplementation<ConvPassesOf>("conv2d", "wasm", wasmPasses);
registerImplementation<ConvPassesOf>("conv2d", "webgpu", webgpuPasses);

/** How {@link conv2d} runs for some operands on the open backend (see {@link convPlan}). */
export interface ConvPlan {
  /** 1x1 without stride or padding: the loaders without window arithmetic (both backends). */
  pointwise: boolean;
  /** Each pass's GEMM tile on WebGPU; null on WebAssembly, whose GEMM has one shape of work. */
  tiles: Record<"forward" | "inputGrad" | "weightGrad", GemmTile> | null;
  /** Parts the weight gradient is summed from: K splits on WebGPU, slices of the batch on WebAssembly. */
  weightGradParts: number;
  /** The Winograd tile of the forward pass and of the input gradient on WebAssembly; null: direct. */
  winograd: { forward: WinogradTile | null; inputGrad: WinogradTile | null };
  /** Whether the forward pass and the input gradient run on WebAssembly's depthwise kernel. */
  depthwise: { forward: boolean; inputGrad: boolean };
}

/**
 * The code paths {@link conv2d} takes for these operands on the open backend, from the same functions that
 * choose them: for tests that must reach every path, and for benches that name the path they measure.
 */
export function convPlan(x: Tensor, weight: Tensor, options: Conv2dOptions = {}): ConvPlan {
  const g = geometry(x, weight, options);
  if (backendInfo()?.backend === "wasm") {
    return {
      pointwise: isPointwise(g),
      tiles: null,
      weightGradParts: wasmWeightGradSlices(g),
      winograd: { forward: winogradTile(g, g.c, g.oc, g.oh, g.ow), inputGrad: winogradInputGradTile(g) },
      depthwise: { forward: isDepthwise(g), inputGrad: depthwiseInputGrad(g) !== null },
    };
  }
  const p = webgpuProducts(g);
  const tile = ([m, n]: [number, number, number]) => chooseTile(m, n);
  return {
    pointwise: isPointwise(g),
    tiles: { forward: tile(p.forward), inputGrad: tile(p.inputGrad), weightGrad: tile(p.weightGrad) },
    weightGradParts: splitK(g).count,
    winograd: { forward: null, inputGrad: null },
    depthwise: { forward: false, inputGrad: false },
  };
}

/**
 * PyTorch's conv2d (torch.nn.functional.conv2d): x [N, C, H, W], weight [Cout, C/groups, KH, KW], optional
 * bias [Cout] -> [N, Cout, OH, OW] with OH = floor((H + 2 ph - dh (KH - 1) - 1) / sh) + 1. Differentiable in
 * x, weight and bias. Throws on mismatched shapes or groups and on an output smaller than 1x1.
 */
export function conv2d(x: Tensor, weight: Tensor, bias?: Tensor | null, options: Conv2dOptions = {}): Tensor {
  const g = geometry(x, weight, options);
  checkChannelVector("conv2d", "bias", bias, g.oc);
  const passes = implementation<ConvPassesOf>("conv2d")(x, weight, { bias }, g);
  const out = Tensor.empty([g.n, g.oc, g.oh, g.ow], productDtype(x));
  passes.forward(out);
  const inputs = bias ? [x, weight, bias] : [x, weight];
  tracer?.node("Conv", inputs, out, {
    kernel_shape: [g.kh, g.kw],
    strides: [g.sh, g.sw],
    pads: [g.ph, g.pw, g.ph, g.pw],
    dilations: [g.dh, g.dw],
    group: g.groups,
  });
  return record(out, "conv2d", inputs, (dy) => {
    const dx = x.requiresGrad ? passes.inputGrad(dy) : null;
    const dw = weight.requiresGrad ? passes.weightGrad(dy) : null;
    const db = bias?.requiresGrad ? sum(dy, [0, 2, 3]) : null;
    return bias ? [dx, dw, db] : [dx, dw];
  });
}

function checkChannelVector(op: string, name: string, t: Tensor | null | undefined, oc: number): void {
  if (t && (t.rank !== 1 || t.shape[0] !== oc)) {
    throw new Error(`${op}: ${name} must be [${oc}], got ${fmtShape(t.shape)}`);
  }
}

/**
 * {@link conv2d} and what follows it in one pass: relu(conv2d(x, weight) * scale[co] + bias[co] + residual),
 * each part where given ({@link ConvEpilogue}), computed in the GEMM's epilogue while the outputs are in
 * registers. For inference (a batch norm in eval mode folded in: see nn's `convBatchNorm`): it has no
 * gradient rule, so it throws when called with recording on and an input that requires a gradient.
 */
export function conv2dFused(
  x: Tensor,
  weight: Tensor,
  epilogue: ConvEpilogue,
  options: Conv2dOptions = {},
): Tensor {
  const op = "conv2dFused";
  const g = geometry(x, weight, options);
  checkChannelVector(op, "scale", epilogue.scale, g.oc);
  checkChannelVector(op, "bias", epilogue.bias, g.oc);
  const shape = [g.n, g.oc, g.oh, g.ow];
  const residual = epilogue.residual;
  if (residual && !sameShape(residual.shape, shape)) {
    throw new Error(
      `${op}: residual must be ${fmtShape(shape)} (the output's shape), got ${fmtShape(residual.shape)}`,
    );
  }
  const inputs = [x, weight, ...epilogueTensors(epilogue)];
  if (isGradEnabled() && inputs.some((t) => t.requiresGrad)) {
    throw new Error(
      `${op} has no gradient: call it under noGrad (inference), or use conv2d and the ops after it`,
    );
  }
  if (tracer) {
    throw new Error(`${op} has no ONNX form: trace the unfused ops (conv2d, batchNorm2d, add, relu)`);
  }
  const out = Tensor.empty(shape, productDtype(x));
  implementation<ConvPassesOf>("conv2d")(x, weight, epilogue, g).forward(out);
  return out;
}
