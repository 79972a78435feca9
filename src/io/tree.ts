// A small read-only file tree over folders and zip archives, so that data loaders read a data set the same
// way from a folder or from the zip it came in, entry by entry, without unpacking it. A path inside an
// archive is written `<archive path>!/<entry path>` (e.g. `/data/chest_xray.zip!/chest_xray/test/NORMAL/
// IM-0001-0001.jpeg`); the archive's root folder is `<archive path>!/`. Every other path is a plain file
// system path. An archive's central directory is read and checked once (see {@linkcode ZipReader.open}) and
// kept; it is read again when the archive's size or modification time changes. Archives inside archives are
// not opened.
import {
  basename,
  join,
  readdirSync,
  readFile,
  readFileSync,
  resolve,
  statSync,
} from "../platform/runtime.ts";
import { type ZipLimits, ZipReader } from "./zip.ts";

/** What separates an archive's path from the path of an entry inside it: `data.zip!/images/x.png`. */
export const ARCHIVE_SEPARATOR = "!/";

/** A path inside an archive, split: the archive's file and the entry's `/`-separated path (`""` for the root). */
export interface ArchivePath {
  /** Absolute path of the zip file. */
  archive: string;
  /** Path inside it, `/`-separated, without leading or trailing `/`; `""` is the archive's root folder. */
  entry: string;
}

interface Opened {
  reader: ZipReader;
  limits: ZipLimits;
}
const opened = new Map<string, Opened>();

/** Whether `path` names a regular file on disk. */
function diskFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** `entry` without `.` segments and empty ones; `..` goes up; null when it climbs out of the archive. */
function normalizeEntry(entry: string): string | null {
  const out: string[] = [];
  for (const part of entry.split(/[\\/]/)) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.length === 0) return null;
      out.pop();
    } else out.push(part);
  }
  return out.join("/");
}

/**
 * Splits a path inside an archive into the archive and the entry, or returns null for a plain path: the
 * first `!/` (or a final `!`) whose left part is a file is the separator.
 * @throws Error when the entry part climbs out of the archive with `..`.
 */
export function splitArchivePath(path: string): ArchivePath | null {
  for (let i = path.indexOf("!"); i >= 0; i = path.indexOf("!", i + 1)) {
    const next = path[i + 1];
    if (i === 0 || (next !== undefined && next !== "/" && next !== "\\")) continue;
    const archive = resolve(path.slice(0, i));
    if (!opened.has(archive) && !diskFile(archive)) continue;
    const entry = normalizeEntry(path.slice(i + 2));
    if (entry === null) throw new Error(`${path}: the path leads outside the archive ${archive}`);
    return { archive, entry };
  }
  return null;
}

/** The path of `entry` (default the root folder) inside the archive at `archive`: `<absolute archive>!/<entry>`. */
export function archivePath(archive: string, entry = ""): string {
  return `${resolve(archive)}${ARCHIVE_SEPARATOR}${entry}`;
}

/**
 * The checked reader of the zip archive at `path`, opened once and kept (opened again when the file changed,
 * or when `limits` differ from those it was opened with). Later reads through this module use the limits of
 * the last call that gave them.
 * @throws Error naming the archive (and the entry) when it is not a zip archive or fails a check of
 * {@linkcode ZipReader.open}: unsafe or duplicate names, encryption, size and ratio caps, overlaps.
 */
export function openArchive(path: string, limits?: ZipLimits): ZipReader {
  const abs = resolve(path);
  const known = opened.get(abs);
  const wanted = limits ?? known?.limits ?? {};
  if (known && JSON.stringify(known.limits) === JSON.stringify(wanted)) {
    let current = false;
    try {
      const st = statSync(abs);
      current = st.size === known.reader.stamp.size && st.mtimeMs === known.reader.stamp.mtimeMs;
    } catch {
      // gone: opening again says so
    }
    if (current) return known.reader;
  }
  opened.delete(abs);
  const reader = ZipReader.open(abs, wanted);
  opened.set(abs, { reader, limits: wanted });
  return reader;
}

/** Forgets every archive opened through this module (the next access reads its central directory again). */
export function closeArchives(): void {
  opened.clear();
}

/** Whether `path` is a file: on disk, or a file entry of an archive. */
export function isFile(path: string): boolean {
  const a = splitArchivePath(path);
  if (!a) return diskFile(path);
  return a.entry !== "" && openArchive(a.archive).isFile(a.entry);
}

/** Whether `path` is a folder: on disk, or inside an archive (its root included). */
export function isFolder(path: string): boolean {
  const a = splitArchivePath(path);
  if (a) return openArchive(a.archive).isFolder(a.entry);
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/**
 * The names (last segment only) in folder `path`, sorted.
 * @throws Error naming the folder when it is not one.
 */
export function listFolder(path: string): string[] {
  const a = splitArchivePath(path);
  if (a) {
    const reader = openArchive(a.archive);
    if (!reader.isFolder(a.entry)) throw new Error(`${path}: not a folder in the archive`);
    return reader.list(a.entry);
  }
  return readdirSync(path).sort();
}

/**
 * `base` joined with `parts`. Inside an archive the result must stay in it: `..` past the root and absolute
 * parts are refused; on disk it is `node:path`'s `resolve`.
 * @throws Error when a path inside an archive would lead outside it.
 */
export function resolvePath(base: string, ...parts: string[]): string {
  const a = splitArchivePath(base);
  if (!a) return resolve(base, ...parts);
  const rest = parts.join("/");
  const entry = normalizeEntry(`${a.entry}/${rest}`);
  if (entry === null || /^([\\/]|[A-Za-z]:)/.test(parts.find((p) => p !== "") ?? "")) {
    throw new Error(`"${rest}" leads outside the archive ${a.archive}`);
  }
  return archivePath(a.archive, entry);
}

/** The last segment of `path`; for an archive's root folder, the archive's file name without `.zip`. */
export function baseName(path: string): string {
  const a = splitArchivePath(path);
  if (!a) return basename(path);
  return a.entry === ""
    ? basename(a.archive).replace(/\.zip$/i, "")
    : a.entry.slice(a.entry.lastIndexOf("/") + 1);
}

/** An archive entry's bytes; errors start with the path and say why (not in the archive, corrupt, ...). */
function readEntry(path: string, a: ArchivePath): Uint8Array {
  let reader: ZipReader;
  try {
    reader = openArchive(a.archive);
  } catch (err) {
    throw new Error(`${path}: cannot read (${(err as Error).message})`);
  }
  if (!reader.isFile(a.entry)) {
    throw new Error(
      `${path}: cannot read (${reader.isFolder(a.entry) ? "a folder" : "no such entry"} in ${a.archive})`,
    );
  }
  try {
    return reader.read(a.entry);
  } catch (err) {
    // the reader's message starts with the archive and the entry, which `path` already names
    const message = (err as Error).message, prefix = `${a.archive}: entry "${a.entry}"`;
    throw new Error(
      `${path}: ${message.startsWith(prefix) ? message.slice(prefix.length).replace(/^:? /, "") : message}`,
    );
  }
}

/**
 * The bytes of file `path` (on disk, or an archive entry inflated and checked against its CRC-32).
 * @throws Error starting with `path` and saying why it cannot be read.
 */
export function readBytes(path: string): Uint8Array {
  const a = splitArchivePath(path);
  if (a) return readEntry(path, a);
  try {
    return readFileSync(path);
  } catch (err) {
    throw new Error(`${path}: cannot read (${(err as Error).message})`);
  }
}

/** {@linkcode readBytes}, reading a file on disk without blocking; an archive entry is read synchronously. */
export async function readBytesAsync(path: string): Promise<Uint8Array> {
  const a = splitArchivePath(path);
  if (a) return readEntry(path, a);
  try {
    return await readFile(path);
  } catch (err) {
    throw new Error(`${path}: cannot read (${(err as Error).message})`);
  }
}

/** {@linkcode readBytes} as UTF-8 text. */
export function readText(path: string): string {
  return new TextDecoder().decode(readBytes(path));
}

/** `join` for paths on disk, kept here so that callers need not know which kind a path is. */
export function joinPath(base: string, ...parts: string[]): string {
  return splitArchivePath(base) ? resolvePath(base, ...parts) : join(base, ...parts);
}
