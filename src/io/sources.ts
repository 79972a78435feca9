// Bytes from wherever a runtime keeps them: a path or file: URL (servers), an http(s), blob: or data: URL
// (fetched, in a page or a server), a Blob or File (a page's file input or drop), or bytes already in memory.
import { fileURLToPath, readFile } from "../platform/runtime.ts";

/** What {@linkcode bytesOf} reads. */
export type ByteSource = Uint8Array | ArrayBuffer | Blob | URL | string;

const FETCHED = /^(https?|blob|data):/i;

/**
 * The bytes of `source`. A string is a URL when it starts with http:, https:, blob: or data:, else a path.
 * @throws Error naming the source: a missing file, an HTTP status other than 2xx, a failed fetch.
 */
export async function bytesOf(source: ByteSource): Promise<Uint8Array> {
  if (source instanceof Uint8Array) return source;
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  if (typeof Blob !== "undefined" && source instanceof Blob) {
    return new Uint8Array(await source.arrayBuffer());
  }
  const url = source instanceof URL
    ? source
    : FETCHED.test(source as string)
    ? new URL(source as string)
    : null;
  if (url === null || url.protocol === "file:") {
    const path = url ? fileURLToPath(url) : source as string;
    try {
      return new Uint8Array(await readFile(path));
    } catch (err) {
      throw new Error(`cannot read ${path}: ${(err as Error).message}`);
    }
  }
  let response: Response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new Error(`cannot fetch ${url.href}: ${(err as Error).message}`);
  }
  if (!response.ok) {
    throw new Error(`cannot fetch ${url.href}: HTTP ${response.status} ${response.statusText}`);
  }
  return new Uint8Array(await response.arrayBuffer());
}
