// The evaluation worker of the page: opens the backend and the bundle, classifies the images the page
// sends, and draws class activation maps on demand (see protocol.ts for why this runs in a worker).
import * as fl from "../../../mod.ts";
import { type Bundle, loadBundle } from "../bundle.ts";
import { camFigure } from "../figures.ts";
import { LEARNER_TITLES } from "../learners.ts";
import { predictFiles, predictionsCsv } from "../predict.ts";
import type { FromWorker, ImageFile, ResultRow, ToWorker } from "./protocol.ts";

const scope = globalThis as unknown as {
  postMessage(message: FromWorker, transfer?: Transferable[]): void;
  onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
  crossOriginIsolated?: boolean;
  location: { href: string };
};
let bundle: Bundle | null = null;
let method = "FLANNEL";

async function init(msg: Extract<ToWorker, { type: "init" }>): Promise<void> {
  const t0 = performance.now();
  const backend = await fl.init({ backend: msg.backend });
  const url = new URL(msg.modelUrl, scope.location.href);
  scope.postMessage({ type: "progress", text: `loading ${url.pathname}` });
  bundle = loadBundle(await fl.io.bytesOf(url), url.pathname.split("/").pop() || "model.zip");
  const methods = bundle.manifest.methods;
  method = methods.includes(msg.method) ? msg.method : methods[0];
  const archs = bundle.settings.archs;
  scope.postMessage({
    type: "ready",
    backend,
    isolated: Boolean(scope.crossOriginIsolated),
    archs,
    titles: archs.map((a) => LEARNER_TITLES[a]),
    classes: [...fl.metrics.CLASS_NAMES],
    method,
    folds: bundle.settings.folds,
    card: bundle.card(),
    seconds: (performance.now() - t0) / 1000,
  });
}

async function classify(files: ImageFile[]): Promise<void> {
  const t0 = performance.now();
  const inputs = files.map((f) => ({ file: f.name, bytes: new Uint8Array(f.bytes) }));
  const m = fl.metrics.CLASS_NAMES.length, n = bundle!.settings.archs.length;
  let rows: ResultRow[];
  let csv = predictionsCsv([], new Float32Array(0));
  let temperature: number | null = null;
  try {
    const result = await predictFiles(bundle!, inputs, { method });
    const at = new Map(result.files.map((f, i) => [f, i]));
    const reasons = new Map(result.skipped.map((s) => [s.file, s.reason]));
    rows = inputs.map(({ file }): ResultRow => {
      const i = at.get(file);
      if (i === undefined) return { file, error: reasons.get(file) ?? "not read" };
      const probs = Array.from(result.probs.subarray(i * m, (i + 1) * m));
      return {
        file,
        probs,
        predicted: fl.metrics.CLASS_NAMES[probs.indexOf(Math.max(...probs))],
        learners: Array.from(
          { length: n },
          (_, j) => Array.from(result.learnerProbs.subarray((i * n + j) * m, (i * n + j + 1) * m)),
        ),
        weights: result.learnerWeights
          ? Array.from(result.learnerWeights.subarray(i * n, (i + 1) * n))
          : null,
      };
    });
    csv = predictionsCsv(result.files, result.probs);
    temperature = result.temperature;
  } catch (err) {
    // predictFiles refuses a batch with no readable image: every row says why its file failed.
    const message = (err as Error).message;
    rows = inputs.map(({ file }) => ({ file, error: message }));
  }
  scope.postMessage({ type: "results", rows, csv, seconds: (performance.now() - t0) / 1000, temperature });
}

async function cam(file: ImageFile): Promise<void> {
  const png = await camFigure(bundle!, { file: file.name, bytes: new Uint8Array(file.bytes) });
  const copy = png.slice().buffer;
  scope.postMessage({ type: "cam", file: file.name, png: copy }, [copy]);
}

// One message at a time, in order: the backend runs one job at a time.
let queue: Promise<void> = Promise.resolve();
scope.onmessage = (event) => {
  const msg = event.data;
  queue = queue.then(async () => {
    try {
      if (msg.type === "init") await init(msg);
      else if (!bundle) throw new Error("the model is not loaded");
      else if (msg.type === "classify") await classify(msg.files);
      else await cam(msg.file);
    } catch (err) {
      scope.postMessage({ type: "error", message: (err as Error).message, during: msg.type });
    }
  });
};
