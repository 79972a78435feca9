// The page as static files: esbuild bundles page.ts (the interface) and worker.ts (the library) for
// browsers, with src/platform/runtime_browser.ts in runtime.ts's place; `flannel serve` serves them with
// the headers that WebAssembly threads need, `flannel build-web` writes them for any web server.
import * as fl from "../../../mod.ts";
import { type EsbuildPluginBuild, importEsbuild } from "../../npm.ts";
import {
  existsSync,
  fileURLToPath,
  join,
  mkdirSync,
  readFileSync,
  resolve,
  serveHttp,
  type Server,
} from "../../platform/runtime.ts";
import { loadBundle, SHIPPED_BUNDLE } from "../bundle.ts";
import { INDEX_HTML, STYLE_CSS } from "./page_html.ts";

/** One static file of the page. */
export interface WebFile {
  /** Its name (the URL path without the leading slash). */
  name: string;
  /** Its contents. */
  bytes: Uint8Array;
  /** Its Content-Type. */
  type: string;
}

/** The name the page fetches the model under. */
export const MODEL_FILE = "model.zip";

/**
 * The headers that make a page cross-origin isolated (COOP + COEP), without which a browser gives no
 * SharedArrayBuffer and the WebAssembly backend runs on one thread.
 */
export const ISOLATION_HEADERS: Record<string, string> = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
};

/** This folder's sources: .ts in a checkout or a JSR import, .js in the npm package. */
function source(stem: string): string {
  const dir = fileURLToPath(new URL(".", import.meta.url));
  const ts = join(dir, `${stem}.ts`);
  return existsSync(ts) ? ts : join(dir, `${stem}.js`);
}

/**
 * The page's code and style: index.html, style.css, page.js and worker.js (the library for browsers,
 * minified). Nothing in it may reach a runtime API: a node: import that does not go through
 * src/platform/runtime.ts fails the build, naming the importer.
 * @throws Error with esbuild's messages when the build fails, or when esbuild is not installed.
 */
export async function buildWebApp(): Promise<WebFile[]> {
  let esbuild: Awaited<ReturnType<typeof importEsbuild>>;
  try {
    esbuild = await importEsbuild();
  } catch (err) {
    throw new Error(
      `the web page is built with esbuild, which could not be loaded (${(err as Error).message}): ` +
        "install the package's dependencies (bun install, npm install, or ./setup.sh in a checkout)",
    );
  }
  const platform = {
    name: "flannel-browser-platform",
    setup(build: EsbuildPluginBuild) {
      // The runtime's module becomes its browser twin.
      build.onResolve({ filter: /(^|\/)platform\/runtime\.(ts|js)$/ }, (args) => ({
        path: join(args.resolveDir, args.path.replace(/runtime\.(ts|js)$/, "runtime_browser.$1")),
      }));
      // esbuild itself is loaded only by this file, which no page runs.
      build.onResolve(
        { filter: /^(npm:)?esbuild(@[^/]*)?$/ },
        (args) => ({ path: args.path, external: true }),
      );
      // src/npm.ts's npm:name@version[/subpath] specifiers are the installed packages.
      build.onResolve({ filter: /^npm:/ }, (args) => {
        const m = /^npm:((?:@[^/]+\/)?[^@/]+)@[^/]+(\/.+)?$/.exec(args.path);
        if (!m) return { errors: [{ text: `${args.path}: not npm:name@version` }] };
        return build.resolve(m[1] + (m[2] ?? ""), { kind: args.kind, resolveDir: args.resolveDir });
      });
      build.onResolve({ filter: /^node:/ }, (args) => ({
        errors: [{
          text:
            `${args.path} is imported by ${args.importer}: runtime APIs go through src/platform/runtime.ts`,
        }],
      }));
    },
  };
  const result = await esbuild.build({
    entryPoints: { page: source("page"), worker: source("worker") },
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    write: false,
    outdir: "/",
    logLevel: "silent",
    plugins: [platform],
  }).catch((err: { errors?: { text: string }[]; message: string }) => {
    throw new Error(
      `building the web page failed: ${err.errors?.map((e) => e.text).join("; ") ?? err.message}`,
    );
  });
  const encoder = new TextEncoder();
  const files: WebFile[] = [
    { name: "index.html", bytes: encoder.encode(INDEX_HTML), type: "text/html; charset=utf-8" },
    { name: "style.css", bytes: encoder.encode(STYLE_CSS), type: "text/css; charset=utf-8" },
  ];
  for (const out of result.outputFiles) {
    files.push({
      name: out.path.replace(/^.*\//, ""),
      bytes: out.contents,
      type: "text/javascript; charset=utf-8",
    });
  }
  return files;
}

/** The model a page serves: a bundle file (checked here, before anything is served), else the shipped one. */
function modelFile(model: string | undefined): WebFile {
  const path = model ? resolve(model) : fileURLToPath(SHIPPED_BUNDLE);
  const bytes = new Uint8Array(readFileSync(path));
  loadBundle(bytes, path); // refuses a file that is not a bundle, with the reason
  return { name: MODEL_FILE, bytes, type: "application/zip" };
}

/** Options of {@linkcode writeWebApp} and {@linkcode serveWebApp}. */
export interface WebAppOptions {
  /** A bundle written by `flannel export` (default: the shipped one). */
  model?: string;
}

/**
 * Writes the page, its code and the model into `outDir` (created if missing), with HEADERS.md on the
 * headers a server should send. Returns the files written, with their sizes.
 */
export async function writeWebApp(outDir: string, options: WebAppOptions = {}): Promise<WebFile[]> {
  const files = [...await buildWebApp(), modelFile(options.model)];
  const headers = Object.entries(ISOLATION_HEADERS).map(([k, v]) => `    ${k}: ${v}`).join("\n");
  files.push({
    name: "HEADERS.md",
    type: "text/markdown; charset=utf-8",
    bytes: new TextEncoder().encode(`# Serving this page

Any static web server serves these files. For the WebAssembly backend to use every core, the page must be
cross-origin isolated: send these headers with every file (without them it runs on one thread and says so):

${headers}

Browsers allow WebGPU and threads only in a secure context: https, or http on localhost / 127.0.0.1.
\`flannel serve\` does all this for you.
`),
  });
  mkdirSync(outDir, { recursive: true });
  for (const f of files) fl.io.writeFileAtomic(join(outDir, f.name), f.bytes);
  return files;
}

/** Options of {@linkcode serveWebApp}. */
export interface ServeWebOptions extends WebAppOptions {
  /** Default 8080; 0 picks a free port. */
  port?: number;
  /** Default 127.0.0.1 (this machine only). */
  host?: string;
}

/**
 * Serves the page, its code and the model over HTTP (Deno.serve, Bun.serve, or node:http in Node) with the isolation headers.
 * Returns the server and the page's URL.
 */
export async function serveWebApp(
  options: ServeWebOptions = {},
): Promise<{ server: Server; url: string; files: WebFile[] }> {
  const files = [...await buildWebApp(), modelFile(options.model)];
  const byPath = new Map(files.map((f) => [`/${f.name}`, f]));
  byPath.set("/", byPath.get("/index.html")!);
  const host = options.host ?? "127.0.0.1";
  const server = await serveHttp((request) => {
    const file = byPath.get(new URL(request.url).pathname);
    const headers = { ...ISOLATION_HEADERS, "Cache-Control": "no-cache" };
    if (!file) return new Response("not found\n", { status: 404, headers });
    if (request.method !== "GET" && request.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers });
    }
    return new Response(request.method === "HEAD" ? null : file.bytes as Uint8Array<ArrayBuffer>, {
      headers: { ...headers, "Content-Type": file.type, "Content-Length": String(file.bytes.length) },
    });
  }, { port: options.port ?? 8080, host });
  const shown = host.includes(":") ? `[${host}]` : host;
  return { server, url: `http://${shown}:${server.port}/`, files };
}
