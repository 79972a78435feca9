// The page's interface (main thread): reads the images the user chooses or drops, hands them to the
// evaluation worker (worker.ts) and shows what comes back. When a batch is done it sets
// `window.flannelResults` and fills the #results table, so that scripts can drive it.
import type { FromWorker, ImageFile, ResultRow, ToWorker } from "./protocol.ts";

/** What scripts read after a batch (a row per image; an unreadable image has `error` and no probabilities). */
interface PageResult {
  file: string;
  probs: number[] | null;
  predicted: string | null;
  error?: string;
}
/** What the page leaves on `window` for scripts (and the browser test). */
const exposed = globalThis as unknown as {
  flannelResults?: PageResult[];
  flannelReady?: Extract<FromWorker, { type: "ready" }>;
  /** Milliseconds from navigation to the model being ready and to the first batch's results. */
  flannelTimings: { ready?: number; firstResult?: number };
};

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = (text: string) => ($("status").textContent = text);
const params = new URLSearchParams(location.search);
const wanted = params.get("backend") ?? "auto";
const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
const send = (msg: ToWorker, transfer: Transferable[] = []) => worker.postMessage(msg, transfer);
let ready: Extract<FromWorker, { type: "ready" }> | null = null;
/** The images of the batch on screen, by name (for the class activation maps). */
let shown = new Map<string, ImageFile>();
let csvUrl: string | null = null, camUrl: string | null = null;
exposed.flannelTimings = {};

function cell(row: HTMLTableRowElement, text: string, className?: string, header = false): HTMLElement {
  const c = document.createElement(header ? "th" : "td");
  c.textContent = text;
  if (className) c.className = className;
  row.append(c);
  return c;
}

function fact(term: string, value: string): void {
  const dt = document.createElement("dt"), dd = document.createElement("dd");
  dt.textContent = term;
  dd.textContent = value;
  $("backend").append(dt, dd);
}

function onReady(msg: Extract<FromWorker, { type: "ready" }>): void {
  ready = exposed.flannelReady = msg;
  exposed.flannelTimings.ready = performance.now();
  const b = msg.backend;
  fact("Backend", b.backend === "wasm" ? "WebAssembly (SIMD)" : "WebGPU");
  fact("Adapter", b.adapter);
  fact("Why", b.reason);
  if (b.backend === "wasm") {
    fact(
      "Threads",
      msg.isolated
        ? `${b.limits.threads} (cross-origin isolated)`
        : "1: this page is not cross-origin isolated (its server sends no COOP/COEP headers), so it has no shared memory for more",
    );
  }
  fact("Model", `${msg.titles.join(", ")} combined by ${msg.method}; folds ${msg.folds.join(", ")}`);
  $("card-text").textContent = msg.card;
  const head = $<HTMLTableRowElement>("results-head");
  for (const h of ["file", ...msg.classes, "predicted", "details"]) cell(head, h, undefined, true);
  status(`Ready (${msg.seconds.toFixed(1)} s). Choose or drop images.`);
}

function percent(p: number): string {
  return `${(100 * p).toFixed(1)} %`;
}

/**
 * The row under an image's row, hidden until its "learners" button opens it: each learner's probabilities,
 * FLANNEL's weight of each learner for this image, and the Grad-CAM button.
 */
function learnersRow(
  row: Extract<ResultRow, { probs: number[] }>,
  results: HTMLTableSectionElement,
): HTMLButtonElement {
  const learnerRow = results.insertRow();
  learnerRow.className = "learners";
  learnerRow.hidden = true;
  const td = learnerRow.insertCell();
  td.colSpan = ready!.classes.length + 3;
  const table = document.createElement("table");
  table.createCaption().textContent = `${row.file}: each learner (averaged over the folds)${
    row.weights ? " and the weight FLANNEL's Neural Weight Module gave it for this image" : ""
  }`;
  const head = table.createTHead().insertRow();
  for (const h of ["learner", ...ready!.classes, ...(row.weights ? ["FLANNEL weight"] : [])]) {
    cell(head, h, undefined, true);
  }
  const body = table.createTBody();
  row.learners.forEach((probs, j) => {
    const tr = body.insertRow();
    cell(tr, ready!.titles[j]);
    for (const p of probs) cell(tr, percent(p));
    if (row.weights) cell(tr, row.weights[j].toFixed(3));
  });
  const camButton = document.createElement("button");
  camButton.type = "button";
  camButton.textContent = "Grad-CAM";
  camButton.setAttribute("aria-label", `Grad-CAM of ${row.file}`);
  camButton.addEventListener("click", () => {
    const file = shown.get(row.file);
    if (!file) return;
    status(`Drawing the class activation maps of ${row.file}...`);
    send({ type: "cam", file }); // postMessage copies the bytes: the page keeps its own
  });
  td.append(table, camButton);
  const toggle = document.createElement("button");
  toggle.type = "button";
  toggle.textContent = "learners";
  toggle.setAttribute("aria-expanded", "false");
  toggle.setAttribute("aria-label", `learners of ${row.file}`);
  toggle.addEventListener("click", () => {
    learnerRow.hidden = !learnerRow.hidden;
    toggle.setAttribute("aria-expanded", String(!learnerRow.hidden));
  });
  return toggle;
}

function onResults(msg: Extract<FromWorker, { type: "results" }>): void {
  exposed.flannelTimings.firstResult ??= performance.now();
  const body = ($("results") as HTMLTableElement).tBodies[0];
  body.replaceChildren();
  for (const row of msg.rows) {
    const tr = body.insertRow();
    tr.dataset.file = row.file;
    cell(tr, row.file);
    if ("error" in row) {
      tr.className = "error";
      const c = cell(tr, `unreadable: ${row.error}`) as HTMLTableCellElement;
      c.colSpan = ready!.classes.length + 2;
      continue;
    }
    for (const p of row.probs) cell(tr, percent(p));
    cell(tr, row.predicted, "predicted");
    tr.insertCell().append(learnersRow(row, body));
  }
  if (csvUrl) URL.revokeObjectURL(csvUrl);
  csvUrl = URL.createObjectURL(new Blob([msg.csv], { type: "text/csv" }));
  const link = $<HTMLAnchorElement>("csv");
  link.href = csvUrl;
  link.removeAttribute("aria-disabled");
  const bad = msg.rows.filter((r) => "error" in r).length;
  status(
    `Classified ${msg.rows.length - bad} image${msg.rows.length - bad === 1 ? "" : "s"} in ${
      msg.seconds.toFixed(1)
    } s${bad ? `; ${bad} could not be read` : ""}. ${
      msg.temperature === null
        ? "Raw probabilities (the bundle carries no calibration)."
        : `Probabilities calibrated (temperature ${msg.temperature.toFixed(2)}).`
    }`,
  );
  exposed.flannelResults = msg.rows.map((r) =>
    "error" in r
      ? { file: r.file, probs: null, predicted: null, error: r.error }
      : { file: r.file, probs: r.probs, predicted: r.predicted }
  );
}

function onCam(msg: Extract<FromWorker, { type: "cam" }>): void {
  if (camUrl) URL.revokeObjectURL(camUrl);
  camUrl = URL.createObjectURL(new Blob([msg.png], { type: "image/png" }));
  const img = $<HTMLImageElement>("cam");
  img.src = camUrl;
  img.alt = `Class activation maps of ${msg.file}, one per learner, for its predicted class`;
  $("cam-caption").textContent = `${msg.file}: where each learner looked for the class it predicted.`;
  $("cam-section").hidden = false;
  status(`Class activation maps of ${msg.file} below.`);
  $("cam-section").scrollIntoView();
}

worker.addEventListener("message", (event: MessageEvent<FromWorker>) => {
  const msg = event.data;
  if (msg.type === "ready") onReady(msg);
  else if (msg.type === "progress") status(msg.text);
  else if (msg.type === "results") onResults(msg);
  else if (msg.type === "cam") onCam(msg);
  else status(`Error (${msg.during}): ${msg.message}`);
});
worker.addEventListener("error", (event) => status(`The evaluation worker failed: ${event.message}`));

const IMAGE = /\.(png|jpe?g)$/i;

/** A chosen or dropped file and the name results give it: its path inside a chosen or dropped folder. */
interface Named {
  name: string;
  file: File;
}

async function classify(files: Named[]): Promise<void> {
  if (!ready) return void status("The model is still loading; try again in a moment.");
  const images = files.filter(({ file: f }) =>
    IMAGE.test(f.name) || f.type === "image/png" || f.type === "image/jpeg"
  );
  if (images.length === 0) return void status("No PNG or JPEG files among those.");
  status(`Classifying ${images.length} image${images.length === 1 ? "" : "s"}...`);
  const read = await Promise.all(
    images.map(async (f) => ({ name: f.name, bytes: await f.file.arrayBuffer() })),
  );
  shown = new Map(read.map((f) => [f.name, f]));
  send({ type: "classify", files: read });
}

/** Every file under a dropped entry (folders recursively), in name order, named by its path in the drop. */
async function filesOf(entry: FileSystemEntry): Promise<Named[]> {
  if (entry.isFile) {
    const file = await new Promise<File>((ok, fail) => (entry as FileSystemFileEntry).file(ok, fail));
    return [{ name: entry.fullPath.replace(/^\//, ""), file }];
  }
  const reader = (entry as FileSystemDirectoryEntry).createReader();
  const children: FileSystemEntry[] = [];
  for (;;) {
    const batch = await new Promise<FileSystemEntry[]>((ok, fail) => reader.readEntries(ok, fail));
    if (batch.length === 0) break;
    children.push(...batch);
  }
  children.sort((a, b) => a.name.localeCompare(b.name));
  return (await Promise.all(children.map(filesOf))).flat();
}

for (const id of ["files", "folder"]) {
  $<HTMLInputElement>(id).addEventListener("change", (event) => {
    const input = event.target as HTMLInputElement;
    classify(Array.from(input.files ?? [], (file) => ({ name: file.webkitRelativePath || file.name, file })));
    input.value = "";
  });
}
const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", async (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const entries = Array.from(event.dataTransfer?.items ?? []).map((i) => i.webkitGetAsEntry()).filter((e) =>
    e !== null
  );
  const files = entries.length > 0
    ? (await Promise.all(entries.map(filesOf))).flat()
    : Array.from(event.dataTransfer?.files ?? [], (file) => ({ name: file.name, file }));
  classify(files);
});
$("card-open").addEventListener("click", () => ($("card") as HTMLDialogElement).showModal());

const backend = wanted === "wasm" || wanted === "webgpu" ? wanted : "auto";
send({
  type: "init",
  backend,
  modelUrl: params.get("model") ?? "model.zip",
  method: params.get("method") ?? "FLANNEL",
});
