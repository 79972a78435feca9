// The platform module and its browser twin (src/platform): the same exports with the same types, and the
// twin's web implementations (noble's SHA-256, fflate's inflate and deflate, atob, POSIX names, module
// Workers from a Blob URL) giving what the runtime's native ones give, here in Deno or Bun.
import * as path from "node:path";
import * as server from "../src/platform/runtime.ts";
import * as browserModule from "../src/platform/runtime_browser.ts";
import { assert, assertEquals, assertThrows, test } from "./harness.ts";

// The type annotation is the check that the twin's exports have the runtime's types (deno task check).
const browser: typeof server = browserModule;

/** Deterministic bytes (xorshift32) that compress a little: runs of a few values. */
function bytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (x >>> 0) % 7 === 0 ? x & 0xff : i % 5;
  }
  return out;
}

test("the browser twin exports exactly the runtime module's names", () => {
  assertEquals(Object.keys(browserModule).sort(), Object.keys(server).sort());
  assertEquals(server.PLATFORM, "server");
  assertEquals(browser.PLATFORM, "browser");
});

test("noble's SHA-256 (browser) equals the runtime's, in one piece and streamed", () => {
  for (const n of [0, 1, 55, 56, 64, 1000, 1 << 20]) {
    const data = bytes(n, n + 1);
    assertEquals(browser.sha256().update(data).hex(), server.sha256().update(data).hex(), `${n} bytes`);
  }
  const data = bytes(100_000);
  const streamed = browser.sha256().update(data.subarray(0, 777)).update(data.subarray(777)).hex();
  assertEquals(streamed, server.sha256().update(data).hex());
  // FIPS 180-2's test vector
  assertEquals(
    browser.sha256().update("abc").hex(),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});

test("fflate's zlib (browser) and the runtime's inflate each other's streams to the same bytes", () => {
  for (const n of [0, 1, 1000, 300_000]) {
    const data = bytes(n, 7 + n);
    assertEquals(browser.inflateZlib(server.deflateZlib(data)), data, `runtime's stream, ${n} bytes`);
    assertEquals(server.inflateZlib(browser.deflateZlib(data)), data, `browser's stream, ${n} bytes`);
  }
});

test("both inflates stop at maxOutputLength with a message that says so, and refuse a corrupt stream", () => {
  const stream = server.deflateZlib(new Uint8Array(1 << 20));
  for (const [name, p] of [["runtime", server], ["browser", browser]] as const) {
    assertEquals(p.inflateZlib(stream, 1 << 20).length, 1 << 20, name);
    assertThrows(() => p.inflateZlib(stream, 1000), /maxOutputLength|larger than/);
    const corrupt = stream.slice();
    corrupt[2] ^= 0xff;
    assertThrows(() => p.inflateZlib(corrupt), /./);
  }
});

test("base64 decodes the same on both", () => {
  const data = bytes(1000, 3);
  let binary = "";
  for (const b of data) binary += String.fromCharCode(b);
  const text = btoa(binary);
  assertEquals(browser.decodeBase64(text), data);
  assertEquals(server.decodeBase64(text), data);
});

test("the browser's path names follow POSIX path's on '/'-separated names", () => {
  const names = [
    "a.png",
    "dir/a.png",
    "dir/sub/b.tar.gz",
    "/abs/c.jpg",
    "noext",
    ".hidden",
    "dir/",
    "a/b/../c.png",
  ];
  for (const n of names) {
    assertEquals(browser.basename(n), path.posix.basename(n), `basename ${n}`);
    assertEquals(browser.dirname(n), path.posix.dirname(n), `dirname ${n}`);
    assertEquals(browser.extname(n), path.posix.extname(n), `extname ${n}`);
  }
  assertEquals(browser.basename("x/a.png", ".png"), "a");
  assertEquals(browser.join("runs", "x", "y.csv"), "runs/x/y.csv");
});

test("what a browser cannot have throws, naming itself", () => {
  assertThrows(() => browser.readFileSync("x"), /readFileSync: not available in a browser/);
  assertThrows(() => browser.resolve("x"), /path.resolve: not available in a browser/);
  assertThrows(() => browser.serveHttp(() => new Response(), { port: 0, host: "127.0.0.1" }), /serveHttp/);
  assertEquals(browser.env("PATH"), undefined);
});

// Deno and Bun have the web's Worker too, so the browser's threads run here as they do in a page.
test(
  "the browser's threads (module Workers from a Blob URL) run a self-contained function",
  async () => {
    const thread = browser.startThread((port) => {
      port.once((message) => {
        port.post((message as number[]).reduce((a, b) => a + b, 0));
        port.close();
      });
    });
    const answer = await new Promise((ok, fail) => {
      thread.once("message", ok);
      thread.once("error", fail);
      thread.post([1, 2, 3, 4]);
    });
    thread.terminate();
    assertEquals(answer, 10);
    assert(typeof thread.unref === "function");
  },
);
