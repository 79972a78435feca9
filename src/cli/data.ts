// `flannel data`: load chest X-ray sources and print the data set summary (Table 1).
import { parseArgs } from "node:util";
import * as fl from "../../mod.ts";
import { fail } from "./shared.ts";

/** `flannel data --help`. */
export const HELP =
  `flannel data: load chest X-ray sources and print the data set summary (the paper's Table 1)

Usage: deno task flannel data --data DIR [--data DIR...] [--json] [--decode]

Each DIR is one source, its kind detected from the folder (or a folder holding several sources); a zip
archive (e.g. Kaggle's download, or GitHub's of covid-chestxray-dataset) is read as it is, without unpacking:
  Kaggle chest-xray-pneumonia   chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg
  covid-chestxray-dataset       metadata.csv + images/ (frontal X-rays; findings mapped to the 4 classes)
  labels.csv + images/          columns file,label,source,patient_id,view,... (one row per image)
Prints images per source, view and class (covid, viral, bacterial, normal) and every skipped file with
its reason (CT rows, lateral views, findings outside the 4 classes, missing files).

Options:
  --data DIR   a source folder or zip archive (repeat for several)
  --json       print {"classes": {...}, "skipped": n, "images": n, "sources": {...}, "views": {...}, "table": [...]}
  --decode     also decode every image and skip the unreadable ones (slower)
  --help`;

export async function data(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      data: { type: "string", multiple: true },
      json: { type: "boolean" },
      decode: { type: "boolean" },
      help: { type: "boolean" },
    },
    strict: true,
  });
  if (values.help) return console.log(HELP);
  const dirs = values.data ?? [];
  if (dirs.length === 0) fail("data: give at least one --data DIR (see 'deno task flannel data --help')");
  const loaded = fl.data.loadDataset(dirs);
  let { records, skipped } = loaded;
  if (values.decode) {
    const checked = await fl.data.validateImages(records);
    records = checked.records;
    skipped = [...skipped, ...checked.skipped];
  }
  const summary = fl.data.summarize(records, skipped);
  if (values.json) {
    const { classes, skipped: nSkipped, images, sources, views, table } = summary;
    return console.log(
      JSON.stringify({ classes, skipped: nSkipped, images, sources, views, table }, null, 1),
    );
  }
  console.log(fl.data.formatSummary(summary));
  for (const s of skipped) console.log(`  skipped ${s.file}: ${s.reason}`);
}
