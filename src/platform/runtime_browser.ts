// The browser's twin of runtime.ts (read its note): the browser build (src/flannel/web/build.ts) puts this
// file in runtime.ts's place. Threads are module Workers, hashing is @noble/hashes, inflating is fflate;
// a browser has no file system, no environment and no server, so those functions throw an Error that
// says so (evaluation in a page takes bytes, Files and URLs: src/io/sources.ts).
import { nobleSha256, Unzlib, zlibSync } from "../npm.ts";
import type { Sha256, ThreadPort, WorkerThread } from "./types.ts";

export type { ServeOptions, Server, Sha256, ThreadPort, WorkerThread } from "./types.ts";
import type * as OnServer from "./runtime.ts";

/** A function a browser cannot have: it throws, naming itself. */
function unavailable<T>(name: string): T {
  return (() => {
    throw new Error(
      `${name}: not available in a browser (no file system or process): pass bytes, a File or a URL`,
    );
  }) as T;
}

export const appendFileSync = unavailable<typeof OnServer.appendFileSync>("appendFileSync");
export const closeSync = unavailable<typeof OnServer.closeSync>("closeSync");
export const existsSync = unavailable<typeof OnServer.existsSync>("existsSync");
export const fstatSync = unavailable<typeof OnServer.fstatSync>("fstatSync");
export const fsyncSync = unavailable<typeof OnServer.fsyncSync>("fsyncSync");
export const mkdirSync = unavailable<typeof OnServer.mkdirSync>("mkdirSync");
export const mkdtempSync = unavailable<typeof OnServer.mkdtempSync>("mkdtempSync");
export const openSync = unavailable<typeof OnServer.openSync>("openSync");
export const readdirSync = unavailable<typeof OnServer.readdirSync>("readdirSync");
export const readFileSync = unavailable<typeof OnServer.readFileSync>("readFileSync");
export const readSync = unavailable<typeof OnServer.readSync>("readSync");
export const renameSync = unavailable<typeof OnServer.renameSync>("renameSync");
export const rmSync = unavailable<typeof OnServer.rmSync>("rmSync");
export const statSync = unavailable<typeof OnServer.statSync>("statSync");
export const utimesSync = unavailable<typeof OnServer.utimesSync>("utimesSync");
export const writeFileSync = unavailable<typeof OnServer.writeFileSync>("writeFileSync");
export const writeSync = unavailable<typeof OnServer.writeSync>("writeSync");
export const readFile = unavailable<typeof OnServer.readFile>("readFile");
export const resolve = unavailable<typeof OnServer.resolve>("path.resolve");
export const hostname = unavailable<typeof OnServer.hostname>("os.hostname");
export const tmpdir = unavailable<typeof OnServer.tmpdir>("os.tmpdir");
export const fileURLToPath = unavailable<typeof OnServer.fileURLToPath>("fileURLToPath");

// Names in messages and CSV rows are "/"-separated in a page (a File's name, a folder's relative path).
export const basename = ((path: string, suffix?: string) => {
  const base = path.replace(/\/+$/, "").split("/").pop() ?? "";
  return suffix && base.endsWith(suffix) && base !== suffix ? base.slice(0, -suffix.length) : base;
}) as typeof OnServer.basename;
export const dirname = ((path: string) => {
  const i = path.replace(/\/+$/, "").lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : path.slice(0, i);
}) as typeof OnServer.dirname;
export const extname = ((path: string) => {
  const base = basename(path), i = base.lastIndexOf(".");
  return i <= 0 ? "" : base.slice(i);
}) as typeof OnServer.extname;
export const join =
  ((...parts: string[]) =>
    parts.filter((p) => p !== "").join("/").replace(/\/{2,}/g, "/")) as typeof OnServer.join;

export const PLATFORM: "server" | "browser" = "browser";

export function env(_name: string): string | undefined {
  return undefined;
}

export const pid = 0;

export const processAlive = unavailable<typeof OnServer.processAlive>("processAlive");

/** Progress text goes to the console's debug level (a page shows its own progress). */
export const stderr: { write(text: string): void; isTTY: boolean } = {
  write: (text) => console.debug(text.trimEnd()),
  isTTY: false,
};

export function sha256(): Sha256 {
  const hash = nobleSha256.create();
  const encoder = new TextEncoder();
  return {
    update(data) {
      hash.update(typeof data === "string" ? encoder.encode(data) : data);
      return this;
    },
    hex: () => Array.from(hash.digest(), (b) => b.toString(16).padStart(2, "0")).join(""),
  };
}

export function decodeBase64(text: string): Uint8Array<ArrayBuffer> {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** fflate's streaming inflate, stopped as soon as the output passes `maxOutputLength`. */
export function inflateZlib(data: Uint8Array, maxOutputLength?: number): Uint8Array {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const stream = new Unzlib((chunk: Uint8Array) => {
    total += chunk.length;
    if (maxOutputLength !== undefined && total > maxOutputLength) {
      throw new Error(`output is larger than maxOutputLength (${maxOutputLength} bytes)`);
    }
    chunks.push(chunk);
  });
  stream.push(data, true);
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

export function deflateZlib(data: Uint8Array): Uint8Array {
  return zlibSync(data, { level: 6 });
}

/** A module Worker from a Blob URL (needs no file of its own, like the server's eval'd worker). */
export function startThread(main: (port: ThreadPort) => void): WorkerThread {
  const source = `(${main.toString()})({
    once: (fn) => self.addEventListener("message", (e) => fn(e.data), { once: true }),
    post: (message) => self.postMessage(message),
    close: () => self.close(),
  });`;
  const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  const worker = new Worker(url, { type: "module" });
  return {
    post: (message) => worker.postMessage(message),
    once(event, fn) {
      if (event === "message") {
        worker.addEventListener("message", (e) => {
          URL.revokeObjectURL(url);
          fn(e.data);
        }, { once: true });
      } else worker.addEventListener("error", (e) => fn(e.message), { once: true });
    },
    unref: () => {},
    terminate: () => worker.terminate(),
  };
}

export const serveHttp = unavailable<typeof OnServer.serveHttp>("serveHttp");
