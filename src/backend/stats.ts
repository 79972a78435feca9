// Device bookkeeping that tests and benches read: pool usage, submits, and a wait for the device.
import { getEngine } from "./device.ts";
import type { PoolStats } from "./engine.ts";

export type { PoolStats };

/**
 * A snapshot of the backend's bookkeeping: the buffer pool's {@link PoolStats} plus the submits and
 * dispatches so far and the pipelines compiled. Throws before `init()`.
 */
export function poolStats(): PoolStats & { submits: number; dispatches: number; pipelines: number } {
  const e = getEngine();
  return { ...e.pool.snapshot(), submits: e.submits, dispatches: e.dispatches, pipelines: e.pipelineCount };
}

/** Waits until the device has run everything queued so far. */
export function syncDevice(): Promise<void> {
  return getEngine().sync();
}

/** Starts `poolStats().peakLiveBytes` over from the bytes live now (to measure the peak of one step, say). */
export function resetPoolPeak(): void {
  getEngine().pool.resetPeak();
}

/** Gives the pool's free buffers back to the device (after a large model is disposed, say). */
export function trimPool(): void {
  getEngine().trimPool();
}
