// Winograd's F(m x m, 3 x 3) convolution on the WebAssembly backend (src/kernels/wasm/winograd.ts): the
// filters and the input's tiles transformed, a^2 products (a = m + 2) on the shared GEMM, and the output
// tiles transformed back with the convolution's epilogue. For 3x3 convolutions at stride 1 without groups
// or dilation: F(2x2) does 16 / 4 = 4 multiplications an output where the direct product does 9, F(4x4)
// 36 / 16 = 2.25, at the price of the transforms, of 4x (F(2x2)) or 2.25x (F(4x4)) the input and output
// held in the transformed domain, and of rounding: F(4x4)'s matrices hold values up to 8 and 1/24.
import { Tensor } from "../autograd/tensor.ts";
import { getEngine } from "../backend/device.ts";
import { u32Uniforms, wasmKernel } from "../backend/kernel.ts";
import type { ConvEpilogue, ConvGeometry } from "./conv.ts";
import {
  EPILOGUE_BINDINGS,
  EPILOGUE_FLAGS,
  epilogueBuffers,
  epilogueFlags,
  WASM_A,
  WASM_B,
  wasmGemm,
} from "./gemm.ts";

const weightKernel = wasmKernel({
  name: "winograd_weight",
  storage: [{ name: "w", access: "read" }, { name: "u", access: "rw" }],
  uniforms: u32Uniforms(["rows", "cols", "m", "flip"]),
});
const inputKernel = wasmKernel({
  name: "winograd_input",
  storage: [{ name: "x", access: "read" }, { name: "v", access: "rw" }],
  uniforms: u32Uniforms(["n", "c", "h", "w", "ph", "pw", "th", "tw", "m"]),
});
const outputKernel = wasmKernel({
  name: "winograd_output",
  storage: [{ name: "mm", access: "read" }, { name: "y", access: "rw" }, ...EPILOGUE_BINDINGS],
  uniforms: u32Uniforms(["n", "oc", "oh", "ow", "th", "tw", "m", ...EPILOGUE_FLAGS]),
});

/** Output tile side: 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3)). */
export type WinogradTile = 2 | 4;

/**
 * One 3x3 stride-1 convolution as Winograd takes it: images, channels in and out, input and output sides
 * (oh = h + 2 ph - 2), padding, and what follows the product.
 */
export interface WinogradConv
  extends Pick<ConvGeometry, "n" | "c" | "h" | "w" | "oc" | "oh" | "ow" | "ph" | "pw">, ConvEpilogue {
  /** The filters are w[c, oc] turned by 180 degrees (an input gradient) instead of w[oc, c]. */
  flip?: boolean;
  /** For a profile (e.g. "conv2d 3x3 forward"). */
  use: string;
}

/** out = the convolution of x with the 3x3 filters `weight` (see {@link WinogradConv}) by F(m x m, 3 x 3). */
export function wasmWinograd(x: Tensor, weight: Tensor, out: Tensor, m: WinogradTile, g: WinogradConv): void {
  const engine = getEngine();
  const a = m + 2, xi = a * a;
  const th = Math.ceil(g.oh / m), tw = Math.ceil(g.ow / m), p = g.n * th * tw;
  const u = Tensor.empty([xi, g.oc, g.c]), v = Tensor.empty([xi, g.c, p]), mm = Tensor.empty([xi, g.oc, p]);
  engine.dispatch(
    weightKernel,
    [weight.buffer, u.buffer],
    [g.oc, g.c, m, g.flip ? 1 : 0],
    [1],
    `winograd weights`,
  );
  engine.dispatch(
    inputKernel,
    [x.buffer, v.buffer],
    [g.n, g.c, g.h, g.w, g.ph, g.pw, th, tw, m],
    [1],
    `winograd F(${m}x${m}) input: ${g.use}`,
  );
  wasmGemm(u, v, mm, {
    m: g.oc,
    n: p,
    k: g.c,
    a: { mode: WASM_A.strided, rs: g.c, cs: 1, z1: g.oc * g.c },
    b: { mode: WASM_B.strided, rs: p, cs: 1, z1: g.c * p },
    c: { ld: p, z1: g.oc * p },
    z: [xi, 1],
    use: `${g.use} winograd F(${m}x${m})`,
  });
  engine.dispatch(
    outputKernel,
    [mm.buffer, out.buffer, ...epilogueBuffers(g, out)],
    [g.n, g.oc, g.oh, g.ow, th, tw, m, ...epilogueFlags(g)],
    [1],
    `winograd F(${m}x${m}) output: ${g.use}`,
  );
  u.dispose();
  v.dispose();
  mm.dispose();
}
