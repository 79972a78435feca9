// Depthwise convolution on the WebAssembly backend (src/kernels/wasm/depthwise.ts): one filter per channel
// (groups = channels = output channels), COVID-Net's and AI-Covid's 3x3 and 5x5 layers, computed directly
// plane by plane instead of as a grouped GEMM of one-row products. The forward pass (any stride, padding and
// dilation, with the convolution's epilogue) and the input gradient of stride-1 layers (the same kernel on
// dy with the filters turned by 180 degrees) take it; the weight gradient stays on the GEMM.
import type { Tensor } from "../autograd/tensor.ts";
import { getEngine } from "../backend/device.ts";
import { u32Uniforms, wasmKernel } from "../backend/kernel.ts";
import { SCRATCH_PER_THREAD } from "../backend/wasm/engine.ts";
import type { ConvEpilogue, ConvGeometry } from "./conv.ts";
import { EPILOGUE_BINDINGS, EPILOGUE_FLAGS, epilogueBuffers, epilogueFlags } from "./gemm.ts";

/** The convolution's sizes as the kernel's first uniforms, in this order. */
const SIZES = ["n", "c", "h", "w", "oh", "ow", "kh", "kw", "sh", "sw", "ph", "pw", "dh", "dw"] as const;
const depthwiseKernel = wasmKernel({
  name: "depthwise_conv",
  storage: [
    { name: "x", access: "read" },
    { name: "weight", access: "read" },
    { name: "y", access: "rw" },
    ...EPILOGUE_BINDINGS,
  ],
  uniforms: u32Uniforms([...SIZES, "flip", "hp", "wq", ...EPILOGUE_FLAGS]),
});

/** One depthwise convolution: a convolution's sizes (c channels in and out), and what follows the product. */
export interface DepthwiseConv extends Omit<ConvGeometry, "oc" | "groups">, ConvEpilogue {
  /** The filters turned by 180 degrees (an input gradient). */
  flip?: boolean;
  /** For a profile (e.g. "conv2d 3x3 g96 forward"). */
  use: string;
}

/**
 * The padded plane a thread holds in its scratch: hp rows of sw column phases, wq columns each, so that
 * every group of four outputs reads four floats inside it; null where it (with the filter, the taps' offsets
 * and one vector for a row's last outputs) does not fit in a thread's scratch, and the convolution goes to
 * the GEMM.
 */
function paddedPlane(g: PlaneGeometry): { hp: number; wq: number } | null {
  const hp = (g.oh - 1) * g.sh + (g.kh - 1) * g.dh + 1;
  const wq = Math.ceil(g.ow / 4) * 4 + Math.ceil((g.kw - 1) * g.dw / g.sw) + 1;
  const bytes = (2 * g.kh * g.kw + hp * g.sw * wq + 4) * 4; // filter, tap offsets, plane, one vector
  return bytes <= SCRATCH_PER_THREAD ? { hp, wq } : null;
}

/** What the padded plane's size depends on. */
type PlaneGeometry = Pick<DepthwiseConv, "oh" | "ow" | "kh" | "kw" | "sh" | "sw" | "dh" | "dw">;

/** Whether {@link wasmDepthwise} takes a convolution of this geometry (its plane fits in a thread's scratch). */
export function depthwiseFits(g: PlaneGeometry): boolean {
  return paddedPlane(g) !== null;
}

/** out = epilogue(x convolved channel by channel with weight [c, 1, kh, kw]) (see {@link DepthwiseConv}). */
export function wasmDepthwise(x: Tensor, weight: Tensor, out: Tensor, g: DepthwiseConv): void {
  const plane = paddedPlane(g);
  if (!plane) {
    throw new Error(`depthwise convolution: a ${g.h}x${g.w} plane does not fit in a thread's scratch`);
  }
  getEngine().dispatch(
    depthwiseKernel,
    [x.buffer, weight.buffer, out.buffer, ...epilogueBuffers(g, out)],
    [...SIZES.map((size) => g[size]), g.flip ? 1 : 0, plane.hp, plane.wq, ...epilogueFlags(g)],
    [1],
    `depthwise: ${g.use}`,
  );
}
