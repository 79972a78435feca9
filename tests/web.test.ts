// The page (src/flannel/web) built, served and used in a real browser: Debian's Chromium, headless, driven
// by puppeteer-core against `flannel serve` on 127.0.0.1. Real X-rays go through the file input; on
// WebAssembly the CSV the page offers equals, byte for byte, the one `flannel predict` writes in Deno (the
// same kernels, the same bits); on WebGPU (Chromium's SwiftShader adapter) the probabilities are within
// 1e-4 of WebAssembly's. Also: cross-origin isolation and threads, one thread and the page saying so
// without the headers (build-web's files on a plain server), a corrupt file's error row, Grad-CAM, the
// model card from the keyboard, 200% zoom, no console errors, and the static files' sizes.
//
// The build runs in every run of the suite; serving in each runtime's WebAssembly run (Deno.serve and
// Bun.serve); the browser once per suite, in Deno's WebAssembly run (the page picks its own backend).
import { spawnSync } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import type * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";
import { serveHttp } from "../src/platform/runtime.ts";
import { artifactPath, assert, assertEquals, test, writeArtifact } from "./harness.ts";
import { isBun, repo, startCli, until } from "./cli_children.ts";

const CHROMIUM = "/usr/bin/chromium";
const haveChromium = existsSync(CHROMIUM);
const wasmRun = process.env.FLANNEL_BACKEND === "wasm";
const browserRun = wasmRun && !isBun;
const images = resolve(repo, "..", "shared", "data", "chestxray", "images");
const tmp = mkdtempSync(join(tmpdir(), "fl-web-"));
test.afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Two real X-rays of each class (the first of each class's sorted names, then the fortieth). */
function realXrays(): string[] {
  const all = readdirSync(images).sort();
  return ["covid", "viral", "bacterial", "normal"].flatMap((c) => {
    const of = all.filter((f) => f.startsWith(`${c}_`));
    return [of[0], of[40]];
  });
}

test("the page builds into four static files within the budget (1.5 MB, 500 KB gzipped), none reaching a runtime API", async () => {
  const files = await flannel.buildWebApp();
  assertEquals(files.map((f) => f.name).sort(), ["index.html", "page.js", "style.css", "worker.js"]);
  const code = files.filter((f) => f.name.endsWith(".js"));
  const bytes = code.reduce((s, f) => s + f.bytes.length, 0);
  const gzipped = code.reduce((s, f) => s + gzipSync(f.bytes).length, 0);
  console.log(`      page.js + worker.js: ${bytes} bytes, ${gzipped} gzipped`);
  assert(bytes <= 1_500_000, `${bytes} bytes of JavaScript and WebAssembly`);
  assert(gzipped <= 500_000, `${gzipped} bytes gzipped`);
  const worker = new TextDecoder().decode(files.find((f) => f.name === "worker.js")!.bytes);
  assert(!/["']node:[a-z_/]+["']/.test(worker), "worker.js names a node: module");
  assert(!/\bDeno\.(serve|readFile|env)|\bBun\.serve/.test(worker), "worker.js calls Deno or Bun APIs");
  // the library is there: the kernels' WebAssembly and the WGSL shaders
  assert(worker.includes("@compute"), "worker.js has no WGSL");
  assert(worker.length > 200_000, `worker.js is ${worker.length} characters`);
});

/** A `flannel serve` process (this runtime's server) on a free port; resolves with the page's URL. */
async function startServe(extra: string[] = []): Promise<{ url: string; stop: () => void }> {
  const server = startCli(["serve", "--port", "0", ...extra]);
  await until(
    () => /serving http:\/\/\S+\//.test(server.output()) || server.child.exitCode !== null,
    "serve",
    120,
  );
  const m = /serving (http:\/\/\S+\/)/.exec(server.output());
  assert(m, `serve did not start: ${server.output()}`);
  return { url: m[1], stop: () => server.child.kill("SIGTERM") };
}

test.when(wasmRun, "serving runs in each runtime's WebAssembly run")(
  "serve: the page, its code and the model with COOP/COEP/CORP on 127.0.0.1, 404 elsewhere; a bad --model is refused",
  async () => {
    const { url, stop } = await startServe();
    try {
      assert(url.startsWith("http://127.0.0.1:"), url);
      const page = await fetch(url);
      assertEquals(page.status, 200);
      assertEquals(page.headers.get("cross-origin-opener-policy"), "same-origin");
      assertEquals(page.headers.get("cross-origin-embedder-policy"), "require-corp");
      assert((await page.text()).includes(`<script type="module" src="page.js">`), "index.html");
      const model = await fetch(new URL(flannel.MODEL_FILE, url));
      assertEquals(model.headers.get("cross-origin-embedder-policy"), "require-corp");
      const shipped = readFileSync(fileURLToPath(flannel.SHIPPED_BUNDLE));
      assertEquals(new Uint8Array(await model.arrayBuffer()), new Uint8Array(shipped));
      for (const name of ["page.js", "worker.js", "style.css"]) {
        const r = await fetch(new URL(name, url));
        assertEquals(r.status, 200, name);
        await r.arrayBuffer();
      }
      const missing = await fetch(new URL("../etc/passwd", url));
      assertEquals(missing.status, 404);
      await missing.text();
      // a second server on the same port: refused, naming the address
      const port = new URL(url).port;
      const second = await startCli(["serve", "--port", port]).done;
      assertEquals(second.code, 2, second.output);
      assert(second.output.includes(`cannot listen on 127.0.0.1:${port}`), second.output);
    } finally {
      stop();
    }
    const notBundle = join(tmp, "not-a-bundle.zip");
    copyFileSync(join(images, realXrays()[0]), notBundle);
    const refused = startCli(["serve", "--port", "0", "--model", notBundle]);
    const { code, output } = await refused.done;
    assertEquals(code, 2, output);
    assert(/not-a-bundle\.zip.*(zip|bundle)/i.test(output), output);
  },
  { timeoutS: 180 },
);

// ---- in Chromium ----------------------------------------------------------------------------------------

type Browser = import("puppeteer-core").Browser;
type Page = import("puppeteer-core").Page;
let browser: Browser | null = null;

async function launch(): Promise<Browser> {
  const puppeteer = (await import("puppeteer-core")).default;
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    protocolTimeout: 900_000,
    // SwiftShader is the WebGPU adapter Chromium offers here (no GPU); WebGPU needs the flag on Linux.
    args: [
      "--no-sandbox",
      "--enable-unsafe-webgpu",
      "--use-webgpu-adapter=swiftshader",
      "--enable-features=Vulkan",
    ],
  });
  return browser;
}
test.afterAll(async () => {
  await browser?.close();
});

/** A page that records console errors, page errors and failed requests (its workers' too). */
async function openPage(b: Browser): Promise<{ page: Page; problems: string[] }> {
  const page = await b.newPage();
  const problems: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${(e as Error).message}`));
  page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()}`));
  page.on("workercreated", (w) => {
    w.on("console", (m) => {
      if (m.type() === "error") problems.push(`worker console: ${m.text()}`);
    });
  });
  return { page, problems };
}

async function whenReady(page: Page): Promise<ReadyInfo> {
  await page.waitForFunction(
    () =>
      (window as { flannelReady?: unknown }).flannelReady ||
      /^Error/.test(document.getElementById("status")!.textContent!),
    { timeout: 120_000, polling: 100 },
  );
  const ready = await page.evaluate(() => (window as unknown as { flannelReady?: ReadyInfo }).flannelReady);
  assert(ready, `the page did not get ready: ${await page.$eval("#status", (e) => e.textContent)}`);
  return ready;
}
interface ReadyInfo {
  backend: fl.BackendInfo;
  isolated: boolean;
  archs: string[];
}
interface PageRow {
  file: string;
  probs: number[] | null;
  predicted: string | null;
  error?: string;
}

/** Waits for the batch's window.flannelResults (cleared before the batch) and returns them. */
async function results(page: Page, timeoutS: number): Promise<PageRow[]> {
  await page.waitForFunction(() => (globalThis as { flannelResults?: unknown }).flannelResults, {
    timeout: timeoutS * 1000,
    polling: 200,
  });
  return await page.evaluate(() => (globalThis as unknown as { flannelResults: PageRow[] }).flannelResults);
}

/** Puts `files` through the file input; resolves with window.flannelResults and the CSV the page offers. */
async function classify(
  page: Page,
  files: string[],
  timeoutS: number,
): Promise<{ rows: PageRow[]; csv: string }> {
  await page.evaluate(() => delete (window as { flannelResults?: unknown }).flannelResults);
  const input = await page.$("input#files") as
    | import("puppeteer-core").ElementHandle<HTMLInputElement>
    | null;
  await input!.uploadFile(...files);
  const rows = await results(page, timeoutS);
  const csv = await page.evaluate(async () => {
    const href = (document.getElementById("csv") as HTMLAnchorElement).href;
    return await (await fetch(href)).text();
  });
  return { rows, csv };
}

let served: { url: string; stop: () => void } | null = null;
test.afterAll(() => served?.stop());
const inputDir = join(tmp, "xrays");
let copied: { good: string[]; corrupt: string } | null = null;
/** The 8 X-rays and a truncated PNG, copied side by side once (the page sees their names; so does predict). */
function inputs(): { good: string[]; corrupt: string } {
  if (copied) return copied;
  mkdirSync(inputDir, { recursive: true });
  const good = realXrays().map((f) => {
    copyFileSync(join(images, f), join(inputDir, f));
    return join(inputDir, f);
  });
  const corrupt = join(inputDir, "corrupt.png");
  writeFileSync(corrupt, readFileSync(good[0]).subarray(0, 300));
  return (copied = { good, corrupt });
}

const browserTest = test.when(
  browserRun && haveChromium,
  !haveChromium
    ? `no Chromium at ${CHROMIUM} (Debian: apt-get install chromium; ./setup.sh installs it)`
    : "the browser runs once per suite, in Deno's WebAssembly run",
);
let wasmRows: PageRow[] = [];
const timings: Record<string, number | string> = {};

browserTest(
  "in Chromium (WebAssembly, cross-origin isolated, 2+ threads): 8 X-rays and a corrupt file; the CSV equals predict's byte for byte",
  async () => {
    const { good, corrupt } = inputs();
    served = await startServe();
    const b = await launch();
    const { page, problems } = await openPage(b);
    await page.setViewport({ width: 1280, height: 900 });
    const t0 = Date.now();
    await page.goto(`${served.url}?backend=wasm`);
    const ready = await whenReady(page);
    assertEquals(ready.backend.backend, "wasm");
    assertEquals(ready.backend.runtime, "browser");
    assert(ready.isolated, "the page is not cross-origin isolated");
    assert(ready.backend.limits.threads >= 2, `${ready.backend.limits.threads} threads`);
    const { rows, csv } = await classify(page, [...good, corrupt], 300);
    timings.coldFirstResultMs = await page.evaluate(() =>
      (window as unknown as { flannelTimings: { firstResult: number } }).flannelTimings.firstResult
    );
    timings.coldWallMs = Date.now() - t0;
    assertEquals(rows.length, 9);
    const bad = rows.filter((r) => r.error);
    assertEquals(bad.map((r) => r.file), ["corrupt.png"]);
    assert(/corrupt\.png/.test(bad[0].error!) && /truncated|corrupt/i.test(bad[0].error!), bad[0].error);
    assertEquals(await page.$eval('#results tr[data-file="corrupt.png"]', (e) => e.className), "error");
    wasmRows = rows.filter((r) => !r.error);
    assertEquals(wasmRows.map((r) => r.file), good.map((g) => g.split("/").pop()));
    // predict in Deno, on the same files by the same names, with the same backend
    const predict = spawnSync(
      process.execPath,
      [
        "run",
        "-A",
        join(repo, "cli.ts"),
        "predict",
        "--backend",
        "wasm",
        "--images",
        ...wasmRows.map((r) => r.file),
      ],
      { cwd: inputDir, encoding: "utf8" },
    );
    assertEquals(predict.status, 0, predict.stderr);
    assertEquals(csv, predict.stdout);
    assertEquals(csv.split("\n").length, 10); // header, 8 rows, final newline
    const status = await page.$eval("#status", (e) => e.textContent!);
    assert(/Probabilities calibrated \(temperature \d+\.\d\d\)/.test(status), status);
    await page.screenshot({ path: artifactPath("web-page").replace(/\.json$/, ".png"), fullPage: true });
    // warm: the same browser loads the page again (compiled WebAssembly and code cached)
    const t1 = Date.now();
    await page.reload();
    await whenReady(page);
    await classify(page, good, 300);
    timings.warmFirstResultMs = await page.evaluate(() =>
      (window as unknown as { flannelTimings: { firstResult: number } }).flannelTimings.firstResult
    );
    timings.warmWallMs = Date.now() - t1;
    assertEquals(problems, []);
  },
  { timeoutS: 600 },
);

browserTest(
  "the page from the keyboard: model card, Grad-CAM on demand, the learners' table and FLANNEL's weights; readable at 200% zoom",
  async () => {
    assert(browser && served, "the first browser test did not run");
    const { page, problems } = await openPage(browser);
    // 200% zoom of a 1280-pixel window: a 640-pixel viewport at device scale 2
    await page.setViewport({ width: 640, height: 800, deviceScaleFactor: 2 });
    await page.goto(`${served.url}?backend=wasm`);
    const ready = await whenReady(page);
    const { good } = inputs();
    await classify(page, good.slice(0, 2), 300);
    // every control is reached with Tab
    const reached = new Set<string>();
    for (let i = 0; i < 30; i++) {
      await page.keyboard.press("Tab");
      reached.add(
        await page.evaluate(() => {
          const e = document.activeElement as HTMLElement;
          return e.id || `${e.tagName}: ${e.textContent?.trim().slice(0, 30)}`;
        }),
      );
    }
    for (const id of ["card-open", "files", "folder", "csv", "BUTTON: learners"]) {
      assert(reached.has(id), `Tab never reaches ${id} (reached ${[...reached].join(", ")})`);
    }
    // the model card, from the keyboard
    await page.focus("#card-open");
    await page.keyboard.press("Enter");
    const card = await page.$eval(
      "#card",
      (d) => ({ open: (d as HTMLDialogElement).open, text: d.textContent }),
    );
    assert(card.open, "the model card did not open");
    assert(/Not for clinical use/.test(card.text!) && /Table 3/.test(card.text!), card.text!.slice(0, 200));
    await page.keyboard.press("Escape");
    // the learners' table of the first image: five learners, FLANNEL's weights
    const learners = await page.$$eval(
      "#results > tbody > tr.learners:nth-child(2) tbody tr",
      (trs) => trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent)),
    );
    assertEquals(learners.length, ready.archs.length);
    for (const row of learners) {
      assertEquals(row.length, 1 + 4 + 1);
      const w = Number(row[5]);
      assert(Number.isFinite(w) && Math.abs(w) <= 1, `FLANNEL weight ${row[5]} (tanh: in [-1, 1])`);
    }
    // Grad-CAM on demand: Enter opens the first image's learners, Tab reaches its button, Enter draws
    await page.focus("#results > tbody > tr:first-child button");
    await page.keyboard.press("Enter");
    await page.keyboard.press("Tab");
    assertEquals(await page.evaluate(() => document.activeElement!.textContent), "Grad-CAM");
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => (document.getElementById("cam") as HTMLImageElement).naturalWidth > 0, {
      timeout: 300_000,
      polling: 200,
    });
    const cam = await page.$eval(
      "#cam",
      (i) => ({ w: (i as HTMLImageElement).naturalWidth, alt: (i as HTMLImageElement).alt }),
    );
    assert(cam.w >= 224 * ready.archs.length / 2, `the Grad-CAM figure is ${cam.w} px wide`);
    assert(/Class activation maps of/.test(cam.alt), cam.alt);
    // no horizontal scrolling of the page itself at 200%
    const overflow = await page.evaluate(() =>
      document.documentElement.scrollWidth - document.documentElement.clientWidth
    );
    assert(overflow <= 0, `the page scrolls sideways by ${overflow} px at 200% zoom`);
    assertEquals(problems, []);
  },
  { timeoutS: 600 },
);

browserTest(
  "build-web's files on a server without COOP/COEP: one thread, and the page says so; a dropped image classifies",
  async () => {
    assert(browser, "the first browser test did not run");
    const out = join(tmp, "static");
    const built = startCli(["build-web", "--out", out]);
    const { code, output } = await built.done;
    assertEquals(code, 0, output);
    assertEquals(readdirSync(out).sort(), [
      "HEADERS.md",
      "index.html",
      "model.zip",
      "page.js",
      "style.css",
      "worker.js",
    ]);
    const types: Record<string, string> = {
      html: "text/html",
      js: "text/javascript",
      css: "text/css",
      zip: "application/zip",
    };
    const server = await serveHttp((request) => {
      const name = new URL(request.url).pathname.slice(1) || "index.html";
      const path = join(out, name);
      if (!/^[a-z.]+$/i.test(name) || !existsSync(path)) return new Response("not found", { status: 404 });
      return new Response(readFileSync(path), {
        headers: { "Content-Type": types[name.split(".").pop()!] ?? "text/plain" },
      });
    }, { port: 0, host: "127.0.0.1" });
    try {
      const { page, problems } = await openPage(browser);
      await page.goto(`http://127.0.0.1:${server.port}/?backend=wasm`);
      const ready = await whenReady(page);
      assert(!ready.isolated, "isolated without the headers?");
      assertEquals(ready.backend.limits.threads, 1);
      const facts = await page.$eval("#backend", (e) => e.textContent);
      assert(/not cross-origin isolated/.test(facts!), facts!);
      // this time the image is dropped on the page (a drop event carrying the file), not chosen
      const first = inputs().good[0];
      await page.evaluate(
        (name, base64) => {
          const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
          const transfer = new DataTransfer();
          transfer.items.add(new File([bytes], name, { type: "image/png" }));
          document.getElementById("drop")!.dispatchEvent(
            new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }),
          );
        },
        first.split("/").pop()!,
        readFileSync(first).toString("base64"),
      );
      const rows = await results(page, 300);
      assertEquals(rows.map((r) => r.file), [wasmRows[0].file]);
      // one thread computes the same bits as two
      assertEquals(rows[0].probs, wasmRows[0].probs);
      assertEquals(problems, []);
    } finally {
      await server.close();
    }
  },
  { timeoutS: 300 },
);

browserTest(
  "WebGPU in Chromium (?backend=webgpu on its SwiftShader adapter): within 1e-4 of WebAssembly",
  async () => {
    assert(browser && served, "the first browser test did not run");
    const { page, problems } = await openPage(browser);
    const t0 = Date.now();
    await page.goto(`${served.url}?backend=webgpu`);
    const ready = await whenReady(page);
    assertEquals(ready.backend.backend, "webgpu");
    console.log(`      WebGPU adapter in Chromium: ${ready.backend.adapter}`);
    timings.webgpuAdapter = ready.backend.adapter;
    const n = WEBGPU_IMAGES;
    const { rows } = await classify(page, inputs().good.slice(0, n), 900);
    timings.webgpuWallMs = Date.now() - t0;
    let worst = 0;
    rows.forEach((r, i) => {
      assertEquals(r.file, wasmRows[i].file);
      r.probs!.forEach((p, c) => (worst = Math.max(worst, Math.abs(p - wasmRows[i].probs![c]))));
    });
    console.log(`      WebGPU vs WebAssembly: largest difference ${worst.toExponential(2)} over ${n} images`);
    assert(worst <= 1e-4, `WebGPU differs from WebAssembly by ${worst}`);
    assertEquals(problems, []);
    writeArtifact("web-timings", timings);
  },
  { timeoutS: 1200 },
);
const WEBGPU_IMAGES = 8;
