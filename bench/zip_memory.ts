// Peak memory and speed of a data set read straight from a zip archive, against the same files unpacked.
//   deno task bench:zip [--mb 1024] [--no-folder] [--keep]      bun run bench/zip_memory.ts [...]
//
// 1. Generates, streaming into a temporary folder (never into the repo), a Kaggle-layout archive of about
//    `--mb` MiB: the real JPEGs of ../shared/data/layouts/kaggle repeated under new person names
//    (`chest_xray/{train,test}/{NORMAL,PNEUMONIA}/...`), every fourth copy DEFLATEd, the rest stored (JPEG does
//    not compress). Only one entry is in memory at a time (`writeZip` takes a generator). The same files are
//    also written unpacked to a folder, unless --no-folder.
// 2. In a child process for each (so the measurement starts from a fresh runtime): `fl.data.loadDataset` on
//    the archive (the index: its central directory, no pixels), then `fl.data.validateImages` reads, inflates,
//    checks and decodes every image. It samples the resident set size (process.memoryUsage().rss) after
//    loading, after indexing and after every image, and reads the kernel's high-water mark (VmHWM of
//    /proc/self/status, Linux) at the end: the true peak, also within a decode.
// 3. Prints the archive's size, the peak RSS, and time and images/s for the archive and the folder.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { loadDataset, validateImages } from "../src/data/datasets.ts";
import { writeZip, type ZipInput } from "../src/io/zip.ts";

const here = dirname(fileURLToPath(import.meta.url));
const MiB = 2 ** 20;

/** The kernel's peak resident set of this process in bytes (Linux), or null. */
function highWaterMark(): number | null {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** The child: index and decode every image of `path`, report memory and times as one JSON line. */
async function child(path: string): Promise<void> {
  const rss = () => process.memoryUsage().rss;
  const atStart = rss();
  let t0 = performance.now();
  const { records, skipped } = loadDataset([path]);
  const indexSeconds = (performance.now() - t0) / 1000;
  const afterIndex = rss();
  let peak = Math.max(atStart, afterIndex);
  t0 = performance.now();
  let lastLine = t0;
  const checked = await validateImages(records, {
    onProgress: (done, total) => {
      peak = Math.max(peak, rss());
      const now = performance.now();
      if (now - lastLine > 10_000 || done === total) {
        lastLine = now;
        console.error(`  ${done}/${total} images, rss ${(rss() / MiB).toFixed(0)} MiB`);
      }
    },
  });
  const decodeSeconds = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({
    records: records.length,
    skipped: skipped.length + checked.skipped.length,
    indexSeconds,
    decodeSeconds,
    imagesPerSecond: records.length / decodeSeconds,
    rssAtStart: atStart,
    rssAfterIndex: afterIndex,
    rssPeakSampled: peak,
    vmHWM: highWaterMark(),
  }));
}

interface ChildResult {
  records: number;
  skipped: number;
  indexSeconds: number;
  decodeSeconds: number;
  imagesPerSecond: number;
  rssAtStart: number;
  rssAfterIndex: number;
  rssPeakSampled: number;
  vmHWM: number | null;
}

function runChild(path: string): ChildResult {
  const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
  const self = fileURLToPath(import.meta.url);
  const args = [...(isBun ? ["run"] : ["run", "-A"]), self, "--child", path];
  const r = spawnSync(process.execPath, args, { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  if (r.status !== 0) throw new Error(`the child for ${path} failed (status ${r.status}): ${r.stdout}`);
  return JSON.parse(r.stdout.trim().split("\n").pop()!);
}

/** The source JPEGs: [path inside the layout, bytes], with the naming parts a copy changes. */
function sources(): { split: string; cls: string; name: string; bytes: Uint8Array }[] {
  const root = resolve(here, "..", "..", "shared", "data", "layouts", "kaggle", "chest_xray");
  try {
    statSync(root);
  } catch {
    throw new Error(`${root} is missing: this benchmark needs ../shared/data (see its README)`);
  }
  const out = [];
  for (const split of readdirSync(root).sort()) {
    for (const cls of readdirSync(join(root, split)).sort()) {
      for (const name of readdirSync(join(root, split, cls)).sort()) {
        out.push({ split, cls, name, bytes: readFileSync(join(root, split, cls, name)) });
      }
    }
  }
  return out;
}

/** Copy `k` of a Kaggle file name: a new person (or IM-) number, so that every copy is a new patient. */
function renamed(name: string, k: number): string {
  const person = /^person(\d+)_/.exec(name);
  if (person) return name.replace(/^person\d+/, `person${(k + 1) * 10000 + Number(person[1])}`);
  return name.replace(/IM-(\d+)/, (_, n) => `IM-${k + 1}${n}`);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === "--child") return child(argv[1]);
  const mbAt = argv.indexOf("--mb");
  const targetBytes = (mbAt >= 0 ? Number(argv[mbAt + 1]) : 1024) * MiB;
  const withFolder = !argv.includes("--no-folder"), keep = argv.includes("--keep");
  if (!(targetBytes > 0)) throw new Error("--mb takes a positive number");

  const files = sources();
  const perCopy = files.reduce((s, f) => s + f.bytes.length, 0);
  const copies = Math.ceil(targetBytes / perCopy);
  const work = mkdtempSync(join(tmpdir(), "fl-zipbench-"));
  const zip = join(work, "chest-xray-pneumonia.zip"), folder = join(work, "unpacked");
  console.log(
    `${files.length} real JPEGs (${(perCopy / MiB).toFixed(1)} MiB) x ${copies} copies -> ${zip}` +
      (withFolder ? ` and ${folder}` : ""),
  );
  try {
    let t0 = performance.now();
    const entries = function* (): Generator<ZipInput> {
      for (let k = 0; k < copies; k++) {
        for (const f of files) {
          const name = `chest_xray/${f.split}/${f.cls}/${renamed(f.name, k)}`;
          if (withFolder) {
            mkdirSync(dirname(join(folder, name)), { recursive: true });
            writeFileSync(join(folder, name), f.bytes);
          }
          yield { name, data: f.bytes, compress: k % 4 === 0 };
        }
      }
    };
    await writeZip(zip, entries());
    const size = statSync(zip).size;
    console.log(
      `generated in ${((performance.now() - t0) / 1000).toFixed(0)} s: ${size} bytes (${
        (size / MiB).toFixed(0)
      } MiB)`,
    );

    console.log("archive: indexing and decoding every image in a child process");
    t0 = performance.now();
    const z = runChild(zip);
    const f = withFolder ? (console.log("unpacked folder: the same"), runChild(folder)) : null;
    const mib = (b: number | null) => (b === null ? "n/a" : `${(b / MiB).toFixed(0)} MiB`);
    const row = (label: string, a: string, b?: string | null) =>
      console.log(`${label.padEnd(34)}${a.padStart(14)}${f ? (b ?? "").padStart(14) : ""}`);
    console.log();
    row("", "zip", "folder");
    row("images (skipped)", `${z.records} (${z.skipped})`, f ? `${f.records} (${f.skipped})` : "");
    row("index: loadDataset", `${z.indexSeconds.toFixed(2)} s`, f && `${f.indexSeconds.toFixed(2)} s`);
    row(
      "read + decode: validateImages",
      `${z.decodeSeconds.toFixed(1)} s`,
      f && `${f.decodeSeconds.toFixed(1)} s`,
    );
    row("images/s", z.imagesPerSecond.toFixed(1), f?.imagesPerSecond.toFixed(1));
    row("ms per image", (1000 / z.imagesPerSecond).toFixed(1), f && (1000 / f.imagesPerSecond).toFixed(1));
    row("RSS at start", mib(z.rssAtStart), f && mib(f.rssAtStart));
    row("RSS after the index", mib(z.rssAfterIndex), f && mib(f.rssAfterIndex));
    row("peak RSS, sampled per image", mib(z.rssPeakSampled), f && mib(f.rssPeakSampled));
    row("peak RSS, kernel high-water mark", mib(z.vmHWM), f && mib(f.vmHWM));
    const peak = z.vmHWM ?? z.rssPeakSampled;
    console.log(
      `\narchive ${(size / MiB).toFixed(0)} MiB, peak RSS ${(peak / MiB).toFixed(0)} MiB ` +
        `(${((100 * peak) / size).toFixed(1)}% of the archive); runtime ${
          typeof (globalThis as { Bun?: unknown }).Bun !== "undefined" ? "Bun" : "Deno"
        }; ${((performance.now() - t0) / 1000).toFixed(0)} s`,
    );
  } finally {
    if (keep) console.log(`kept ${work}`);
    else rmSync(work, { recursive: true, force: true });
  }
}

await main();
