// File writes that never leave a half-written result: write a temporary sibling, then rename over.
import {
  closeSync,
  dirname,
  existsSync,
  fsyncSync,
  join,
  mkdirSync,
  openSync,
  pid,
  readdirSync,
  readSync,
  renameSync,
  rmSync,
  writeSync,
} from "../platform/runtime.ts";

/** A file being written by {@linkcode openAtomic}: write through `fd`, then `commit` or `abort`. */
export interface AtomicFile {
  /** Descriptor of the temporary sibling. */
  readonly fd: number;
  /** Flushes the temporary file to disk and renames it over the target. */
  commit(): void;
  /** Closes and removes the temporary file; the target is left as it was. */
  abort(): void;
}

/** The name {@linkcode openAtomic} gives a temporary file: `<name>.<pid>.<milliseconds>.tmp`. */
const TEMPORARY_NAME = /\.\d+\.\d+\.tmp$/;

/**
 * Removes the temporary files of {@linkcode openAtomic} that a killed writer (kill -9, a power cut) left in
 * `dir` (not its subfolders); returns their names. Only for a folder no other process is writing into.
 */
export function removeTemporaries(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const names = readdirSync(dir).filter((n) => TEMPORARY_NAME.test(n));
  for (const n of names) rmSync(join(dir, n), { force: true });
  return names;
}

/**
 * Opens a temporary sibling of `path` for writing, so that readers see the old file or the whole new one,
 * never a partial write: `commit` flushes it and renames it over `path`, `abort` removes it. Creates missing
 * parent directories.
 * @throws Error naming `path` when the temporary file cannot be created.
 */
export function openAtomic(path: string): AtomicFile {
  const tmp = `${path}.${pid}.${Date.now()}.tmp`;
  let fd: number | null;
  try {
    mkdirSync(dirname(path), { recursive: true });
    fd = openSync(tmp, "w");
  } catch (err) {
    throw new Error(`could not write ${path}: ${(err as Error).message}`);
  }
  const close = () => {
    if (fd !== null) closeSync(fd);
    fd = null;
  };
  return {
    fd,
    commit() {
      try {
        fsyncSync(fd!);
        close();
        renameSync(tmp, path);
      } catch (err) {
        this.abort();
        throw new Error(`could not write ${path}: ${(err as Error).message}`);
      }
    },
    abort() {
      close();
      rmSync(tmp, { force: true });
    },
  };
}

/**
 * Reads `length` bytes at `position` of an open file; `short` makes the error thrown when the file ends
 * first (what is missing, for the caller's message).
 */
export function readAll(fd: number, position: number, length: number, short: () => Error): Uint8Array {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, out, done, length - done, position + done);
    if (n === 0) throw short();
    done += n;
  }
  return out;
}

/** Writes all of `bytes` at the descriptor's position. */
export function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
}

/**
 * Writes `data` to `path` so that readers see the old file or the whole new one, never a partial write (see
 * {@linkcode openAtomic}).
 * @throws Error naming `path` when the write or rename fails (the temporary file is removed).
 */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  const file = openAtomic(path);
  try {
    writeAll(file.fd, typeof data === "string" ? new TextEncoder().encode(data) : data);
  } catch (err) {
    file.abort();
    throw new Error(`could not write ${path}: ${(err as Error).message}`);
  }
  file.commit();
}
