// The messages between the page (page.ts, the main thread: the interface) and the evaluation worker
// (worker.ts, which holds the library). The library runs in a worker because the WebAssembly backend's
// threads wait with Atomics.wait, which a page's main thread may not call, and so that the page stays
// responsive while the models run.
import type { BackendInfo } from "../../../mod.ts";

/** An image as the page read it: its name (a folder's relative path where there is one) and bytes. */
export interface ImageFile {
  name: string;
  bytes: ArrayBuffer;
}

export type ToWorker =
  | { type: "init"; backend: "auto" | "webgpu" | "wasm"; modelUrl: string; method: string }
  | { type: "classify"; files: ImageFile[] }
  | { type: "cam"; file: ImageFile };

/** One image's outcome: its probabilities, or why it could not be read. */
export type ResultRow =
  | {
    file: string;
    probs: number[];
    predicted: string;
    /** Each learner's probabilities, in `archs` order. */
    learners: number[][];
    /** FLANNEL's weight of each learner for this image; null for the other methods. */
    weights: number[] | null;
  }
  | { file: string; error: string };

export type FromWorker =
  | {
    type: "ready";
    backend: BackendInfo;
    isolated: boolean;
    archs: string[];
    titles: string[];
    classes: string[];
    method: string;
    folds: number[];
    card: string;
    seconds: number;
  }
  | { type: "progress"; text: string }
  | {
    type: "results";
    rows: ResultRow[];
    csv: string;
    seconds: number;
    /** The temperature the probabilities were scaled by; null where the bundle carries none. */
    temperature: number | null;
  }
  | { type: "cam"; file: string; png: ArrayBuffer }
  | { type: "error"; message: string; during: ToWorker["type"] };
