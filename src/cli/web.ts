// `flannel serve` and `flannel build-web`: the web page, served or as static files.
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as flannel from "../flannel/mod.ts";
import { checkModelArgs, fail, intOption } from "./shared.ts";

export const WEB_MODEL_HELP =
  `  --model FILE     a bundle written by 'flannel export' (default: the shipped one)
  --run DIR        an 'experiment' output folder instead (its bundle is made first, F32)
  --help`;

/**
 * The bundle a page serves: --model, or one exported from --run into a temporary folder, which `done`
 * removes (the page's files hold the model's bytes by then).
 */
export async function webModel(
  command: string,
  values: { run?: string; model?: string },
): Promise<{ model: string | undefined; done: () => void }> {
  checkModelArgs(command, values);
  if (!values.run) return { model: values.model, done: () => {} };
  const dir = mkdtempSync(join(tmpdir(), "flannel-web-"));
  const done = () => rmSync(dir, { recursive: true, force: true });
  try {
    await flannel.exportBundle(resolve(values.run), join(dir, "model.zip"));
  } catch (err) {
    done();
    throw err;
  }
  return { model: join(dir, "model.zip"), done };
}

/** `flannel serve --help`. */
export const SERVE_HELP = `flannel serve: the models on a web page, classifying X-rays in the browser

Usage: deno task flannel serve [--model FILE.zip | --run DIR] [--port 8080] [--host 127.0.0.1]

Serves the page, its code and the model (nothing is uploaded: images are read and classified in the
browser, on WebGPU or WebAssembly) with the cross-origin isolation headers that WebAssembly threads need.
Open the printed address; ?backend=wasm or ?backend=webgpu forces a backend. Stop it with Ctrl-C.

Options:
  --port N         the port (default 8080; 0 picks a free one)
  --host NAME      the address to listen on (default 127.0.0.1: this machine only; browsers allow
                   WebGPU and threads only over https or on localhost)
${WEB_MODEL_HELP}`;

/** `flannel build-web --help`. */
export const BUILD_WEB_HELP = `flannel build-web: the web page as static files, for any web server

Usage: deno task flannel build-web --out DIR [--model FILE.zip | --run DIR]

Writes index.html, style.css, page.js, worker.js, model.zip and HEADERS.md (the headers a server should
send for WebAssembly threads) into DIR.

Options:
  --out DIR        the folder to write (created if missing)
${WEB_MODEL_HELP}`;

export const WEB_OPTIONS = {
  model: { type: "string" },
  run: { type: "string" },
  help: { type: "boolean" },
} as const;

export async function serve(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      ...WEB_OPTIONS,
      port: { type: "string", default: "8080" },
      host: { type: "string", default: "127.0.0.1" },
    },
    strict: true,
  });
  if (values.help) return console.log(SERVE_HELP);
  const port = intOption(values as Record<string, unknown>, "port", 8080, 0);
  if (port > 65535) fail(`serve: --port must be at most 65535, not ${port}`);
  const { model, done } = await webModel("serve", values);
  const { url, files } = await flannel.serveWebApp({ model, port, host: values.host }).finally(done);
  const size = (names: string[]) =>
    files.filter((f) => names.includes(f.name)).reduce((s, f) => s + f.bytes.length, 0);
  console.log(
    `flannel: serving ${url} (page ${
      (size(["index.html", "style.css", "page.js", "worker.js"]) / 1024).toFixed(0)
    } KiB, ` +
      `model ${(size([flannel.MODEL_FILE]) / 2 ** 20).toFixed(1)} MiB); Ctrl-C stops`,
  );
  await new Promise<never>(() => {}); // the server keeps the process alive until a signal ends it
}

export async function buildWeb(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { ...WEB_OPTIONS, out: { type: "string" } }, strict: true });
  if (values.help) return console.log(BUILD_WEB_HELP);
  if (!values.out) fail("build-web: give --out DIR");
  const { model, done } = await webModel("build-web", values);
  const files = await flannel.writeWebApp(resolve(values.out), { model }).finally(done);
  for (const f of files) console.log(`wrote ${join(values.out, f.name)} (${f.bytes.length} bytes)`);
}
