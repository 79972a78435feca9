// A compute thread of the WebAssembly backend: it instantiates the kernels over the shared memory and then
// runs its share of every job the main thread posts in the control block (see engine.ts), never returning
// to its event loop: a job costs a futex wake, not a message.
//
// The engine starts it from this function's source (`new Worker(source, { eval: true })`), so the worker
// needs no file of its own: the same code runs from a checkout, an npm install or a JSR import. It must
// therefore use nothing from outside its body; the control-block layout arrives in the start message.
import type { CTL } from "./protocol.ts";

/** What the engine posts to a new worker. */
export interface WorkerStart {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  names: string[];
  tid: number;
  ctlPtr: number;
  ctl: typeof CTL;
}

/** The worker's whole program; see the note above on why it is self-contained. */
export function computeWorkerMain(): void {
  type KernelFn = (tid: number, nth: number, args: number) => void;
  const { parentPort } = (globalThis as unknown as {
    process: { getBuiltinModule(id: string): typeof import("node:worker_threads") };
  }).process.getBuiltinModule("node:worker_threads");
  parentPort!.once("message", (start: WorkerStart) => {
    const { module, memory, names, tid, ctlPtr, ctl: CTL } = start;
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    const fns = names.map((n) => instance.exports[n] as KernelFn);
    const ctl = new Int32Array(memory.buffer, ctlPtr, CTL.SLOTS);
    // Read before saying ready, so a job posted right after is not mistaken for an old one.
    let seen = Atomics.load(ctl, CTL.GEN);
    parentPort!.postMessage("ready");
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
          fns[ctl[CTL.FN]](tid, nth, ctl[CTL.ARGS]);
        } catch {
          Atomics.store(ctl, CTL.ERROR, tid);
        }
      }
      Atomics.add(ctl, CTL.DONE, 1);
      Atomics.notify(ctl, CTL.DONE);
    }
    parentPort!.close();
  });
}
