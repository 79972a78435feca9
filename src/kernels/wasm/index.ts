// The kernels.wasm entry: every twin, exported under the name of its WGSL kernel (KernelDef.wasm).
export { axpy, fill } from "./basic";
export * from "./elementwise";
export { reduce_sum } from "./reduce";
export { gemm } from "./gemm";

/** Where static data ends: the engine places its control block, scratch and tensors above. */
export function heap_base(): usize {
  return __heap_base;
}
