// What the engine, its compute workers and the kernel build agree on: the control block that the main thread
// and the workers share (Int32 slots in the Wasm memory), and the 64-bit memory's size.

/**
 * Pages of the 64-bit build's memory (tools/build_wasm.ts declares it, the engine makes it): 16 GiB less one
 * page, so that a Float32Array over all of it stays under 2^32 elements.
 */
export const MEMORY64_PAGES = 262143;

export const CTL = {
  /** Bumped by the main thread to post a job; workers wait on it. */
  GEN: 0,
  /** Workers that have finished the current job. */
  DONE: 1,
  /** Index of the kernel in the export list; -1 tells the workers to exit. */
  FN: 2,
  /** Byte address of the job's argument block. */
  ARGS: 3,
  /** Threads taking part (main thread included); workers with tid >= NTH only acknowledge. */
  NTH: 4,
  /** tid of a worker whose kernel trapped, else 0. */
  ERROR: 5,
  SLOTS: 8,
} as const;
