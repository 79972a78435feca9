// What the convolution tests share (conv_paths, fusion, winograd, depthwise): deterministic data from a
// formula, the largest magnitude to scale a tolerance by, and a WebAssembly convolution algorithm forced for
// one call.
import { setWasmConvAlgorithm, type WasmConvAlgorithm } from "../src/kernels/conv.ts";

/** n values scale * fn(a i + b): smooth, signed, the same on every run and runtime. */
export const formula = (n: number, a: number, b: number, scale = 1, fn = Math.sin): Float32Array =>
  Float32Array.from({ length: n }, (_, i) => scale * fn(a * i + b));

/** The largest |value|. */
export const largest = (a: ArrayLike<number>): number =>
  Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);

/** Runs `fn` with the WebAssembly convolution algorithm forced, restoring the previous one after. */
export async function usingConvAlgorithm<T>(algorithm: WasmConvAlgorithm, fn: () => Promise<T>): Promise<T> {
  const previous = setWasmConvAlgorithm(algorithm);
  try {
    return await fn();
  } finally {
    setWasmConvAlgorithm(previous);
  }
}
