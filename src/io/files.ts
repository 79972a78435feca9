// File writes that never leave a half-written result: write a temporary sibling, then rename over.
import process from "node:process";
import { mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

/**
 * Writes `data` to `path` so that readers see the old file or the whole new one, never a partial write: it
 * writes a temporary sibling and renames it over `path`. Creates missing parent directories.
 * @throws Error naming `path` when the write or rename fails (the temporary file is removed).
 */
export function writeFileAtomic(path: string, data: string | Uint8Array): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  try {
    writeFileSync(tmp, data);
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw new Error(`could not write ${path}: ${(err as Error).message}`);
  }
}
