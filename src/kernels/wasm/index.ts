// The kernels.wasm entry: every twin, exported under the name of its WGSL kernel (KernelDef.wasm).
export { axpy, fill } from "./basic";
export { expand } from "./elementwise";
// binary_*, unary_*, unary_grad_*: generated with their arithmetic (tools/build_wasm.ts).
export * from "./map_kernels";
export { reduce_sum } from "./reduce";
export { gemm } from "./gemm";
export { winograd_input, winograd_output, winograd_weight } from "./winograd";
export { depthwise_conv } from "./depthwise";
export { log_softmax_bwd, log_softmax_fwd, softmax_bwd, softmax_fwd } from "./softmax";
export { focal_bwd, focal_fwd } from "./loss";
export { outer_bwd, outer_fwd, weighted_sum_bwd, weighted_sum_fwd } from "./ensemble";
// adam_step, sgd_step, sgd_step_momentum: generated from their pointwise programs (tools/build_wasm.ts).
export * from "./pointwise_kernels";
export { random } from "./random";
export { augment_warp } from "./augment";
export { cat_place, cat_slice, gather_rows } from "./concat";
export {
  batchnorm_apply_affine,
  batchnorm_apply_plain,
  batchnorm_dx_batch_affine,
  batchnorm_dx_batch_plain,
  batchnorm_dx_running_affine,
  batchnorm_dx_running_plain,
  batchnorm_grad_sums,
  batchnorm_running_stats,
  batchnorm_stats_plain,
  batchnorm_stats_track,
  increment_i32,
} from "./batchnorm";
export {
  pool_adaptive_bwd,
  pool_adaptive_fwd,
  pool_avg_bwd,
  pool_avg_fwd,
  pool_max_bwd,
  pool_max_fwd,
} from "./pool";

/** Where static data ends: the engine places its control block, scratch and tensors above. */
export function heap_base(): usize {
  return __heap_base;
}
