// A compute thread of the WebAssembly backend: it instantiates the kernels over the shared memory and then
// runs its share of every job the main thread posts in the control block (see engine.ts), never returning
// to its event loop: a job costs a futex wake, not a message.
//
// The engine starts it from this function's source (the platform's `startThread`: an eval'd
// node:worker_threads worker on a server, a Blob-URL module Worker in a browser), so the worker needs no
// file of its own: the same code runs from a checkout, an npm install, a JSR import or a page. It must
// therefore use nothing from outside its body; the control-block layout arrives in the start message.
import type { ThreadPort } from "../../platform/types.ts";
import type { CTL } from "./protocol.ts";

/** What the engine posts to a new worker. */
export interface WorkerStart {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  /** 64: the kernels take their argument address as a BigInt (the 64-bit build). */
  memoryBits: 32 | 64;
  names: string[];
  tid: number;
  ctlPtr: number;
  ctl: typeof CTL;
}

/** The worker's whole program; see the note above on why it is self-contained. */
export function computeWorkerMain(parent: ThreadPort): void {
  type KernelFn = (tid: number, nth: number, args: number | bigint) => void;
  parent.once((message) => {
    const start = message as WorkerStart;
    const { module, memory, memoryBits, names, tid, ctlPtr, ctl: CTL } = start;
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    const fns = names.map((n) => instance.exports[n] as KernelFn);
    const ctl = new Int32Array(memory.buffer, ctlPtr, CTL.SLOTS);
    // Read before saying ready, so a job posted right after is not mistaken for an old one.
    let seen = Atomics.load(ctl, CTL.GEN);
    parent.post("ready");
    for (;;) {
      // Atomics.wait may return without a new job (measured in Bun: a wake-up with the generation
      // unchanged, which ran a job twice and acknowledged it twice, so the main thread went on while a
      // worker still wrote): wait until the generation really moved.
      let gen: number;
      while ((gen = Atomics.load(ctl, CTL.GEN)) === seen) Atomics.wait(ctl, CTL.GEN, seen);
      seen = gen;
      if (ctl[CTL.FN] < 0) break;
      const nth = ctl[CTL.NTH];
      if (tid < nth) {
        try {
          const args = ctl[CTL.ARGS];
          fns[ctl[CTL.FN]](tid, nth, memoryBits === 64 ? BigInt(args) : args);
        } catch {
          Atomics.store(ctl, CTL.ERROR, tid);
        }
      }
      Atomics.add(ctl, CTL.DONE, 1);
      Atomics.notify(ctl, CTL.DONE);
    }
    parent.close();
  });
}
