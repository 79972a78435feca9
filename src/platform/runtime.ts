// Everything the library takes from its runtime, named once. Deno, Bun and Node share the node: modules, so
// this file serves all three; the browser build (src/flannel/web/build.ts) puts runtime_browser.ts in its
// place, which has the same exports (tests/platform.test.ts checks names and types): web equivalents for
// what evaluation needs (threads, hashing, inflating, base64) and, for the file system, functions that
// throw a named error. No other file of src/ imports a node: module (the same test checks that).
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { createServer } from "node:http";
import { Worker } from "node:worker_threads";
import process from "node:process";
import { deflateSync, inflateSync } from "node:zlib";
import type { ServeOptions, Server, Sha256, ThreadPort, WorkerThread } from "./types.ts";

export {
  appendFileSync,
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from "node:fs";
export { readFile } from "node:fs/promises";
export { basename, dirname, extname, join, resolve } from "node:path";
export { hostname, tmpdir } from "node:os";
export { fileURLToPath } from "node:url";
export type { ServeOptions, Server, Sha256, ThreadPort, WorkerThread } from "./types.ts";

/** Where the library runs: "server" here (Deno, Bun, Node), "browser" in the browser build. */
export const PLATFORM: "server" | "browser" = "server";

/** An environment variable, or undefined. */
export function env(name: string): string | undefined {
  return process.env[name];
}

/** This process's id (temporary file names, job locks). */
export const pid: number = process.pid;

/**
 * Whether process `id` may be alive on this host: signal 0 tests without signalling, and only "no such
 * process" (ESRCH) means dead (EPERM is another user's live process).
 */
export function processAlive(id: number): boolean {
  try {
    process.kill(id, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code !== "ESRCH";
  }
}

/** Writes progress text to standard error; `isTTY` says whether it is a terminal (then lines redraw). */
export const stderr: { write(text: string): void; isTTY: boolean } = {
  write: (text) => void process.stderr.write(text),
  isTTY: Boolean(process.stderr.isTTY),
};

/** A streaming SHA-256 (native here). */
export function sha256(): Sha256 {
  const hash = createHash("sha256");
  return {
    update(data) {
      hash.update(data);
      return this;
    },
    hex: () => hash.digest("hex"),
  };
}

/** Bytes of a base64 string. */
export function decodeBase64(text: string): Uint8Array<ArrayBuffer> {
  const b = Buffer.from(text, "base64");
  return new Uint8Array(b.buffer as ArrayBuffer, b.byteOffset, b.length);
}

/**
 * Inflates a zlib stream. Past `maxOutputLength` bytes it throws an Error whose message says
 * "maxOutputLength" (src/io/images.ts tells a decompression bomb from a corrupt stream by it).
 */
export function inflateZlib(data: Uint8Array, maxOutputLength?: number): Uint8Array {
  const out = maxOutputLength === undefined ? inflateSync(data) : inflateSync(data, { maxOutputLength });
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/** A zlib stream of `data` (level 6). */
export function deflateZlib(data: Uint8Array): Uint8Array {
  const out = deflateSync(data);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/**
 * Starts a thread running `main`, a self-contained function (its source is all the thread gets), called
 * with a port to its parent. node:worker_threads in Deno and Bun alike, because its workers can be unref'd:
 * a worker parked in Atomics.wait must not keep the process alive after the program's last line.
 */
export function startThread(main: (port: ThreadPort) => void): WorkerThread {
  const worker = new Worker(
    `const { parentPort } = process.getBuiltinModule("node:worker_threads");
    (${main.toString()})({
      once: (fn) => parentPort.once("message", fn),
      post: (message) => parentPort.postMessage(message),
      close: () => parentPort.close(),
    });`,
    { eval: true },
  );
  return {
    post: (message) => worker.postMessage(message),
    once(event, fn) {
      if (event === "message") worker.once("message", fn);
      else worker.once("error", (err: Error) => fn(err.message));
    },
    unref: () => worker.unref(),
    terminate: () => void worker.terminate(),
  };
}

/**
 * Serves `handler` over HTTP: Deno.serve, Bun.serve, or node:http in Node. Resolves once it listens.
 * @throws Error naming the address when it cannot listen there (in use, not this machine's, no permission).
 */
export async function serveHttp(
  handler: (request: Request) => Response | Promise<Response>,
  options: ServeOptions,
): Promise<Server> {
  try {
    return await listen(handler, options);
  } catch (err) {
    throw new Error(`cannot listen on ${options.host}:${options.port}: ${(err as Error).message}`);
  }
}

async function listen(
  handler: (request: Request) => Response | Promise<Response>,
  options: ServeOptions,
): Promise<Server> {
  const g = globalThis as unknown as {
    Deno?: {
      serve(
        o: { port: number; hostname: string; onListen(a: { port: number }): void },
        h: typeof handler,
      ): { shutdown(): Promise<void>; addr: { port: number } };
    };
    Bun?: {
      serve(o: { port: number; hostname: string; fetch: typeof handler }): { port: number; stop(): void };
    };
  };
  if (g.Deno) {
    const server = g.Deno.serve({ port: options.port, hostname: options.host, onListen() {} }, handler);
    return { port: server.addr.port, close: () => server.shutdown() };
  }
  if (g.Bun) {
    const server = g.Bun.serve({ port: options.port, hostname: options.host, fetch: handler });
    return { port: server.port, close: () => Promise.resolve(server.stop()) };
  }
  // Node: its own request and response objects, turned into the web's.
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", `http://${req.headers.host ?? options.host}`);
    Promise.resolve(handler(new Request(url, { method: req.method }))).then(async (response) => {
      const headers: Record<string, string> = {};
      response.headers.forEach((value, name) => (headers[name] = value));
      res.writeHead(response.status, headers);
      res.end(new Uint8Array(await response.arrayBuffer()));
    }).catch((err) => {
      res.writeHead(500);
      res.end(String(err));
    });
  });
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(options.port, options.host, () => ok());
  });
  const address = server.address();
  return {
    port: typeof address === "object" && address ? address.port : options.port,
    close: () => new Promise<void>((ok) => server.close(() => ok())),
  };
}
