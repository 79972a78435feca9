// Zip archives read entry by entry and written one entry at a time, so that a 1 GB data set or a bundle of
// trained models is never held inflated in memory. fflate does the DEFLATE coding; the container is read
// here because fflate's unzip wants the whole archive in memory, has no zip64 and no random access.
//
// Opening an archive reads only its central directory and checks every entry before any data is read:
// names (no absolute paths, no `..`, no backslashes, no duplicates), encryption, declared sizes against
// caps (one entry, the whole archive, the inflation ratio of a zip bomb) and overlapping entries (the
// trick of the zip bombs that reuse one compressed stream). Reading an entry checks its local header,
// inflates into a buffer of the declared size and verifies the CRC-32, so a truncated or corrupt entry is
// an error that names the archive and the entry.
import { closeSync, fstatSync, openSync, readSync, resolve, statSync } from "../platform/runtime.ts";
import { deflateSync, inflateSync } from "../npm.ts";
import { openAtomic, readAll, writeAll } from "./files.ts";
import { crc32 } from "./images.ts";

/** Caps checked against an archive's central directory before any entry is read. */
export interface ZipLimits {
  /** Most entries (default 1,000,000). */
  maxEntries?: number;
  /** Largest inflated entry in bytes (default 4 GiB). */
  maxEntryBytes?: number;
  /** Largest sum of inflated sizes in bytes (default 64 GiB). */
  maxTotalBytes?: number;
  /** Largest inflated / compressed ratio of an entry over 1 MiB (default 200; DEFLATE's own limit is 1032). */
  maxRatio?: number;
}

/** One entry of an archive's central directory. */
export interface ZipEntry {
  /** The path inside the archive, `/`-separated, without a trailing `/` for folders. */
  name: string;
  /** Whether the entry is a folder (its name ended with `/`). */
  folder: boolean;
  /** 0 (stored) or 8 (DEFLATE); any other method is refused when read. */
  method: number;
  /** Inflated size in bytes. */
  size: number;
  /** Compressed size in bytes. */
  compressedSize: number;
  /** CRC-32 of the inflated bytes. */
  crc32: number;
  /** Offset of the entry's local header in the archive. */
  headerOffset: number;
}

const DEFAULT_LIMITS: Required<ZipLimits> = {
  maxEntries: 1_000_000,
  maxEntryBytes: 4 * 2 ** 30,
  maxTotalBytes: 64 * 2 ** 30,
  maxRatio: 200,
};
const SIG_LOCAL = 0x04034b50, SIG_CENTRAL = 0x02014b50, SIG_END = 0x06054b50;
const SIG_END64 = 0x06064b50, SIG_LOCATOR64 = 0x07064b50;
const LOCAL_HEADER = 30, CENTRAL_HEADER = 46, END_RECORD = 22, END64_RECORD = 56, LOCATOR64 = 20;
const U16_MAX = 0xffff, U32_MAX = 0xffffffff;

/** Why an entry name is unsafe, or null: absolute, `..` or `.` segments, backslashes, drive letters, NUL. */
function unsafeName(name: string): string | null {
  if (name === "" || name === "/") return "an empty name";
  if (name.includes("\0")) return "a NUL character";
  if (name.includes("\\")) return "a backslash";
  if (name.startsWith("/")) return "an absolute path";
  if (/^[A-Za-z]:/.test(name)) return "a drive letter";
  const parts = name.replace(/\/$/, "").split("/");
  if (parts.some((p) => p === ".." || p === "." || p === "")) return "a '..', '.' or empty path segment";
  return null;
}

/** `length` bytes at `offset` in a buffer of their own; `what` names them if the archive ends first. */
type ReadAt = (offset: number, length: number, what: string) => Uint8Array;

const truncated = (archive: string, what: string) =>
  new Error(`${archive}: truncated archive (${what} runs past the end of the file)`);

function fileReader(fd: number, archive: string): ReadAt {
  return (offset, length, what) => readAll(fd, offset, length, () => truncated(archive, what));
}

/**
 * Copies, so that what an entry's reader gets is its own and the caller's bytes stay untouched (through
 * the Uint8Array constructor: a Node Buffer's `slice` is a view).
 */
function bytesReader(bytes: Uint8Array, archive: string): ReadAt {
  return (offset, length, what) => {
    if (offset + length > bytes.length) throw truncated(archive, what);
    return new Uint8Array(bytes.subarray(offset, offset + length));
  };
}

/**
 * An opened zip archive: its checked central directory, and entries read one at a time. The file is opened
 * for each read and closed again, so a reader holds no descriptor; it refuses to read when the file's size
 * or modification time changed since it was opened. {@linkcode ZipReader.fromBytes} reads an archive held
 * in memory the same way.
 */
export class ZipReader {
  /** Absolute path of the archive (for one in memory, the name given to `fromBytes`). */
  readonly path: string;
  private readonly byName = new Map<string, ZipEntry>();
  private readonly children = new Map<string, Set<string>>();
  /** The archive's size and modification time when it was opened; {@linkcode read} refuses once they change. */
  readonly stamp: { readonly size: number; readonly mtimeMs: number };

  private constructor(
    path: string,
    entries: ZipEntry[],
    stamp: { size: number; mtimeMs: number },
    /** The archive itself when it is held in memory; null for a file. */
    private readonly bytes: Uint8Array | null = null,
  ) {
    this.path = path;
    this.stamp = stamp;
    this.children.set("", new Set());
    for (const e of entries) {
      this.byName.set(e.name, e);
      // every parent folder exists, also when the archive lists no entry for it
      const parts = e.name.split("/");
      for (let i = 0; i < parts.length; i++) {
        const parent = parts.slice(0, i).join("/"), self = parts.slice(0, i + 1).join("/");
        if (!this.children.has(parent)) this.children.set(parent, new Set());
        this.children.get(parent)!.add(parts[i]);
        if ((i < parts.length - 1 || e.folder) && !this.children.has(self)) {
          this.children.set(self, new Set());
        }
      }
    }
  }

  /**
   * Opens `path` and checks its central directory against `limits`.
   * @throws Error naming the archive (and the entry) when it is not a zip, truncated, multi-disk, or holds
   * an unsafe or duplicate name, an encrypted entry, an entry over the size or ratio caps, or overlapping
   * entries.
   */
  static open(path: string, limits: ZipLimits = {}): ZipReader {
    const abs = resolve(path);
    const lim = { ...DEFAULT_LIMITS, ...limits };
    let fd: number;
    try {
      fd = openSync(abs, "r");
    } catch (err) {
      throw new Error(`${abs}: cannot open the archive: ${(err as Error).message}`);
    }
    try {
      const { size: fileSize, mtimeMs } = fstatSync(fd);
      const entries = readCentralDirectory(fileReader(fd, abs), fileSize, abs, lim);
      return new ZipReader(abs, entries, { size: fileSize, mtimeMs });
    } finally {
      closeSync(fd);
    }
  }

  /**
   * An archive held in memory, checked as {@linkcode open} checks a file; `name` stands for it in errors
   * and in {@linkcode path}. The reader keeps `bytes` (not a copy): leave them unchanged while it is used.
   */
  static fromBytes(bytes: Uint8Array, name: string, limits: ZipLimits = {}): ZipReader {
    const lim = { ...DEFAULT_LIMITS, ...limits };
    const entries = readCentralDirectory(bytesReader(bytes, name), bytes.length, name, lim);
    return new ZipReader(name, entries, { size: bytes.length, mtimeMs: 0 }, bytes);
  }

  /** Every file and folder entry, in archive order. */
  entries(): ZipEntry[] {
    return [...this.byName.values()];
  }

  /** The entry called `name` (without a trailing `/`), if any. */
  entry(name: string): ZipEntry | undefined {
    return this.byName.get(name);
  }

  /** Whether `name` is a file entry. */
  isFile(name: string): boolean {
    const e = this.byName.get(name);
    return e !== undefined && !e.folder;
  }

  /** Whether `name` is a folder: listed as one, or the parent of an entry; `""` is the root. */
  isFolder(name: string): boolean {
    return this.children.has(name);
  }

  /** The names (last segment only) of the files and folders directly in folder `name`, sorted. */
  list(name: string): string[] {
    const c = this.children.get(name);
    if (!c) throw new Error(`${this.path}: no folder "${name}" in the archive`);
    return [...c].sort();
  }

  /**
   * The inflated bytes of file entry `name`.
   * @throws Error naming the archive and the entry when it is missing, a folder, stored with a method other
   * than 0 or 8, truncated, corrupt (bad local header, bad DEFLATE data, wrong size or CRC-32), or when the
   * archive changed since it was opened.
   */
  read(name: string): Uint8Array {
    const e = this.byName.get(name);
    const where = `${this.path}: entry "${name}"`;
    if (!e) throw new Error(`${where} is not in the archive`);
    if (e.folder) throw new Error(`${where} is a folder`);
    if (e.method !== 0 && e.method !== 8) {
      throw new Error(
        `${where} uses compression method ${e.method}; only stored (0) and DEFLATE (8) are supported`,
      );
    }
    if (this.bytes) return readEntryData(e, where, bytesReader(this.bytes, this.path));
    let fd: number;
    try {
      fd = openSync(this.path, "r");
    } catch (err) {
      throw new Error(`${this.path}: cannot open the archive: ${(err as Error).message}`);
    }
    try {
      const { size, mtimeMs } = fstatSync(fd);
      if (size !== this.stamp.size || mtimeMs !== this.stamp.mtimeMs) {
        throw new Error(`${this.path}: the archive changed since it was opened; open it again`);
      }
      return readEntryData(e, where, fileReader(fd, this.path));
    } finally {
      closeSync(fd);
    }
  }

  /** {@linkcode read} as UTF-8 text. */
  readText(name: string): string {
    return new TextDecoder().decode(this.read(name));
  }
}

/** An entry's inflated bytes, its local header, sizes and CRC-32 checked; `where` names it in errors. */
function readEntryData(e: ZipEntry, where: string, read: ReadAt): Uint8Array {
  const head = new DataView(read(e.headerOffset, LOCAL_HEADER, `${where}'s header`).buffer);
  if (head.getUint32(0, true) !== SIG_LOCAL) throw new Error(`${where}: corrupt (no local header)`);
  const start = e.headerOffset + LOCAL_HEADER + head.getUint16(26, true) + head.getUint16(28, true);
  // A declared size below what the compressed data can hold would make the reader allocate and inflate
  // far more than the entry's size: stored data is its own size, DEFLATE expands at most 1/8 (9-bit
  // fixed-Huffman literals) plus block headers.
  if (e.method === 0 ? e.compressedSize !== e.size : e.compressedSize > e.size + e.size / 8 + 65536) {
    throw new Error(`${where}: corrupt (${e.compressedSize} compressed bytes for ${e.size} inflated)`);
  }
  const packed = read(start, e.compressedSize, where);
  let data: Uint8Array;
  if (e.method === 0) data = packed;
  else {
    try {
      // The output buffer has the declared size: a stream that inflates to more cannot grow it.
      data = inflateSync(packed, { out: new Uint8Array(e.size) });
    } catch (err) {
      throw new Error(`${where}: corrupt DEFLATE data (${(err as Error).message})`);
    }
  }
  if (data.length !== e.size) {
    throw new Error(`${where}: corrupt (inflated to ${data.length} bytes, the directory says ${e.size})`);
  }
  if (crc32(data) !== e.crc32) throw new Error(`${where}: corrupt (CRC-32 mismatch)`);
  return data;
}

function readCentralDirectory(
  read: ReadAt,
  fileSize: number,
  archive: string,
  lim: Required<ZipLimits>,
): ZipEntry[] {
  if (fileSize < END_RECORD) throw new Error(`${archive}: not a zip archive (${fileSize} bytes)`);
  const tailLength = Math.min(fileSize, END_RECORD + U16_MAX);
  const tail = read(fileSize - tailLength, tailLength, "the end record");
  const tv = new DataView(tail.buffer);
  let end = -1;
  for (let i = tailLength - END_RECORD; i >= 0; i--) {
    if (tv.getUint32(i, true) === SIG_END && i + END_RECORD + tv.getUint16(i + 20, true) === tailLength) {
      end = i;
      break;
    }
  }
  if (end < 0) {
    throw new Error(`${archive}: not a zip archive, or truncated (no end-of-central-directory record)`);
  }
  if (tv.getUint16(end + 4, true) !== 0 || tv.getUint16(end + 6, true) !== 0) {
    throw new Error(`${archive}: multi-disk (split) archives are not supported`);
  }
  let count = tv.getUint16(end + 10, true);
  let dirSize = tv.getUint32(end + 12, true), dirOffset = tv.getUint32(end + 16, true);
  const endAt = fileSize - tailLength + end;
  if (count === U16_MAX || dirSize === U32_MAX || dirOffset === U32_MAX) {
    const locAt = endAt - LOCATOR64;
    const loc = locAt >= 0 ? new DataView(read(locAt, LOCATOR64, "the zip64 locator").buffer) : null;
    if (loc && loc.getUint32(0, true) === SIG_LOCATOR64) {
      const at = Number(loc.getBigUint64(8, true));
      if (at + END64_RECORD > locAt) throw new Error(`${archive}: corrupt zip64 locator`);
      const z = new DataView(read(at, END64_RECORD, "the zip64 end record").buffer);
      if (z.getUint32(0, true) !== SIG_END64) throw new Error(`${archive}: corrupt zip64 end record`);
      count = Number(z.getBigUint64(32, true));
      dirSize = Number(z.getBigUint64(40, true));
      dirOffset = Number(z.getBigUint64(48, true));
    }
  }
  if (count > lim.maxEntries) {
    throw new Error(`${archive}: ${count} entries, over the limit of ${lim.maxEntries}`);
  }
  if (dirOffset + dirSize > endAt) {
    throw new Error(`${archive}: truncated or corrupt (the central directory runs past the end record)`);
  }
  const dir = read(dirOffset, dirSize, "the central directory");
  const dv = new DataView(dir.buffer);
  const entries: ZipEntry[] = [], names = new Set<string>(), extents: [number, number, string][] = [];
  let p = 0, total = 0;
  for (let i = 0; i < count; i++) {
    if (p + CENTRAL_HEADER > dirSize || dv.getUint32(p, true) !== SIG_CENTRAL) {
      throw new Error(`${archive}: corrupt central directory at entry ${i + 1} of ${count}`);
    }
    const flags = dv.getUint16(p + 8, true), method = dv.getUint16(p + 10, true);
    const crc = dv.getUint32(p + 16, true);
    let compressedSize = dv.getUint32(p + 20, true), size = dv.getUint32(p + 24, true);
    const nameLength = dv.getUint16(p + 28, true), extraLength = dv.getUint16(p + 30, true);
    const commentLength = dv.getUint16(p + 32, true);
    let headerOffset = dv.getUint32(p + 42, true);
    const next = p + CENTRAL_HEADER + nameLength + extraLength + commentLength;
    if (next > dirSize) {
      throw new Error(`${archive}: corrupt central directory at entry ${i + 1} of ${count}`);
    }
    const rawName = dir.subarray(p + CENTRAL_HEADER, p + CENTRAL_HEADER + nameLength);
    const fullName = new TextDecoder(flags & 0x800 ? "utf-8" : "latin1").decode(rawName);
    // zip64: the fields that overflow 32 bits come in this order in extra field 0x0001
    let x = p + CENTRAL_HEADER + nameLength;
    const extraEnd = x + extraLength;
    while (x + 4 <= extraEnd) {
      const id = dv.getUint16(x, true), len = dv.getUint16(x + 2, true);
      if (id === 1) {
        let f = x + 4;
        const take = () => {
          if (f + 8 > x + 4 + len) throw new Error(`${archive}: entry "${fullName}": corrupt zip64 field`);
          const v = Number(dv.getBigUint64(f, true));
          f += 8;
          return v;
        };
        if (size === U32_MAX) size = take();
        if (compressedSize === U32_MAX) compressedSize = take();
        if (headerOffset === U32_MAX) headerOffset = take();
      }
      x += 4 + len;
    }
    p = next;
    const where = `${archive}: entry "${fullName}"`;
    const unsafe = unsafeName(fullName);
    if (unsafe) throw new Error(`${where}: unsafe name (${unsafe})`);
    if (flags & 0x41 || method === 99) {
      throw new Error(`${where} is encrypted; encrypted archives are not supported`);
    }
    const folder = fullName.endsWith("/");
    const name = folder ? fullName.slice(0, -1) : fullName;
    if (names.has(name)) throw new Error(`${where} appears twice in the archive`);
    names.add(name);
    if (size > lim.maxEntryBytes) {
      throw new Error(`${where} would inflate to ${size} bytes, over the limit of ${lim.maxEntryBytes}`);
    }
    if (size > 2 ** 20 && size > lim.maxRatio * compressedSize) {
      throw new Error(
        `${where} would inflate ${compressedSize} bytes to ${size} (ratio over ${lim.maxRatio}: a zip bomb?)`,
      );
    }
    total += size;
    if (total > lim.maxTotalBytes) {
      throw new Error(`${archive}: the entries would inflate to over ${lim.maxTotalBytes} bytes (the limit)`);
    }
    if (headerOffset + LOCAL_HEADER + compressedSize > dirOffset) {
      throw new Error(`${where}: corrupt (its data runs into the central directory)`);
    }
    extents.push([headerOffset, headerOffset + LOCAL_HEADER + nameLength + compressedSize, name]);
    entries.push({ name, folder, method, size, compressedSize, crc32: crc, headerOffset });
  }
  extents.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < extents.length; i++) {
    if (extents[i][0] < extents[i - 1][1]) {
      throw new Error(
        `${archive}: entries "${extents[i - 1][2]}" and "${
          extents[i][2]
        }" overlap (a zip bomb's trick, or corruption)`,
      );
    }
  }
  return entries;
}

/** One file of an archive to write. */
export interface ZipInput {
  /** Its path inside the archive, `/`-separated (checked like the names of archives read). */
  name: string;
  /** Its bytes. */
  data: Uint8Array;
  /** DEFLATE it (default true); false stores it (for data that does not compress, e.g. float weights). */
  compress?: boolean;
}

/**
 * Writes the entries to a zip archive at `path`, one at a time (an iterable, sync or async, may build each
 * entry when it is reached, so only one entry is in memory at a time), atomically: a temporary sibling renamed over `path` once complete, so a reader sees the old file
 * or the whole new one. Timestamps are fixed (1980-01-01), so the same entries give the same bytes in every
 * runtime. Zip64 records are written where sizes, offsets or the entry count need them.
 * @throws Error naming the entry for an unsafe or duplicate name; Error naming `path` when writing fails; the
 * error of the iterable. Either way no file (temporary or final) is left behind and an old `path` is kept.
 */
export async function writeZip(
  path: string,
  entries: Iterable<ZipInput> | AsyncIterable<ZipInput>,
): Promise<void> {
  const file = openAtomic(path);
  try {
    const central: Uint8Array[] = [], names = new Set<string>();
    let offset = 0, count = 0;
    const put = (bytes: Uint8Array) => {
      writeAll(file.fd, bytes);
      offset += bytes.length;
    };
    for await (const input of entries) {
      const unsafe = unsafeName(input.name);
      if (unsafe || input.name.endsWith("/")) {
        throw new Error(`writeZip: entry "${input.name}" has ${unsafe ?? "a trailing '/'"}`);
      }
      if (names.has(input.name)) throw new Error(`writeZip: entry "${input.name}" given twice`);
      names.add(input.name);
      const method = input.compress === false ? 0 : 8;
      const packed = method === 8 ? deflateSync(input.data, { level: 6 }) : input.data;
      const name = new TextEncoder().encode(input.name);
      const crc = crc32(input.data);
      const big = input.data.length >= U32_MAX || packed.length >= U32_MAX;
      const bigOffset = offset >= U32_MAX;
      // local header: zip64 sizes when the entry is large
      const local = new DataView(new ArrayBuffer(LOCAL_HEADER + name.length + (big ? 20 : 0)));
      local.setUint32(0, SIG_LOCAL, true);
      local.setUint16(4, big ? 45 : 20, true);
      local.setUint16(6, 0x800, true); // names are UTF-8
      local.setUint16(8, method, true);
      local.setUint16(12, 0x21, true); // 1980-01-01
      local.setUint32(14, crc, true);
      local.setUint32(18, big ? U32_MAX : packed.length, true);
      local.setUint32(22, big ? U32_MAX : input.data.length, true);
      local.setUint16(26, name.length, true);
      local.setUint16(28, big ? 20 : 0, true);
      new Uint8Array(local.buffer).set(name, LOCAL_HEADER);
      if (big) {
        const z = LOCAL_HEADER + name.length;
        local.setUint16(z, 1, true);
        local.setUint16(z + 2, 16, true);
        local.setBigUint64(z + 4, BigInt(input.data.length), true);
        local.setBigUint64(z + 12, BigInt(packed.length), true);
      }
      const headerOffset = offset;
      put(new Uint8Array(local.buffer));
      put(packed);
      // central record: zip64 fields for whichever of size, compressed size and offset overflow
      const wide = [
        ...(big ? [input.data.length, packed.length] : []),
        ...(bigOffset ? [headerOffset] : []),
      ];
      const extra = wide.length ? 4 + 8 * wide.length : 0;
      const c = new DataView(new ArrayBuffer(CENTRAL_HEADER + name.length + extra));
      c.setUint32(0, SIG_CENTRAL, true);
      c.setUint16(4, wide.length ? 45 : 20, true);
      c.setUint16(6, wide.length ? 45 : 20, true);
      c.setUint16(8, 0x800, true);
      c.setUint16(10, method, true);
      c.setUint16(14, 0x21, true);
      c.setUint32(16, crc, true);
      c.setUint32(20, big ? U32_MAX : packed.length, true);
      c.setUint32(24, big ? U32_MAX : input.data.length, true);
      c.setUint16(28, name.length, true);
      c.setUint16(30, extra, true);
      c.setUint32(42, bigOffset ? U32_MAX : headerOffset, true);
      new Uint8Array(c.buffer).set(name, CENTRAL_HEADER);
      if (wide.length) {
        const z = CENTRAL_HEADER + name.length;
        c.setUint16(z, 1, true);
        c.setUint16(z + 2, 8 * wide.length, true);
        wide.forEach((v, k) => c.setBigUint64(z + 4 + 8 * k, BigInt(v), true));
      }
      central.push(new Uint8Array(c.buffer));
      count++;
    }
    const dirOffset = offset;
    for (const c of central) put(c);
    const dirSize = offset - dirOffset;
    if (count >= U16_MAX || dirOffset >= U32_MAX || dirSize >= U32_MAX) {
      const end64At = offset;
      const z = new DataView(new ArrayBuffer(END64_RECORD + LOCATOR64));
      z.setUint32(0, SIG_END64, true);
      z.setBigUint64(4, BigInt(END64_RECORD - 12), true);
      z.setUint16(12, 45, true);
      z.setUint16(14, 45, true);
      z.setBigUint64(24, BigInt(count), true);
      z.setBigUint64(32, BigInt(count), true);
      z.setBigUint64(40, BigInt(dirSize), true);
      z.setBigUint64(48, BigInt(dirOffset), true);
      z.setUint32(END64_RECORD, SIG_LOCATOR64, true);
      z.setBigUint64(END64_RECORD + 8, BigInt(end64At), true);
      z.setUint32(END64_RECORD + 16, 1, true);
      put(new Uint8Array(z.buffer));
    }
    const end = new DataView(new ArrayBuffer(END_RECORD));
    end.setUint32(0, SIG_END, true);
    end.setUint16(8, Math.min(count, U16_MAX), true);
    end.setUint16(10, Math.min(count, U16_MAX), true);
    end.setUint32(12, Math.min(dirSize, U32_MAX), true);
    end.setUint32(16, Math.min(dirOffset, U32_MAX), true);
    put(new Uint8Array(end.buffer));
  } catch (err) {
    file.abort();
    throw err;
  }
  file.commit();
}

/** Whether `head` (a file's first bytes) starts like a zip archive: a local header, or an empty one's end record. */
export function startsLikeZip(head: Uint8Array): boolean {
  if (head.length < 4) return false;
  const sig = new DataView(head.buffer, head.byteOffset, 4).getUint32(0, true);
  return sig === SIG_LOCAL || sig === SIG_END;
}

/** Whether `path` is a file that starts like a zip archive (see {@linkcode startsLikeZip}). */
export function isZipFile(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    const fd = openSync(path, "r");
    try {
      const head = new Uint8Array(4);
      return readSync(fd, head, 0, 4, 0) === 4 && startsLikeZip(head);
    } finally {
      closeSync(fd);
    }
  } catch {
    return false;
  }
}
