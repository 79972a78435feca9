// File writes that never leave a half-written result: write a temporary sibling, then rename over.
import process from "node:process";
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { dirname } from "node:path";

/**
 * Writes a file at `path` through `write`, which gets an open descriptor, so that readers see the old file
 * or the whole new one, never a partial write: `write` fills a temporary sibling, which is flushed to disk
 * and renamed over `path`. Creates missing parent directories.
 * @throws the error of `write`, or an Error naming `path` when the file cannot be written or renamed; the
 * temporary file is removed either way.
 */
export function writeFileAtomicWith(path: string, write: (fd: number) => void): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  let fd: number | null = null;
  try {
    fd = openSync(tmp, "w");
    write(fd);
    fsyncSync(fd);
    closeSync(fd);
    fd = null;
    renameSync(tmp, path);
  } catch (err) {
    if (fd !== null) closeSync(fd);
    rmSync(tmp, { force: true });
    const message = (err as Error).message;
    throw message.includes(path) ? err : new Error(`could not write ${path}: ${message}`);
  }
}

/**
 * Writes `data` to `path` so that readers see the old file or the whole new one, never a partial write (see
 * {@linkcode writeFileAtomicWith}).
 * @throws Error naming `path` when the write or rename fails (the temporary file is removed).
 */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  writeFileAtomicWith(path, (fd) => {
    let done = 0;
    while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
  });
}
