// Tables in the documents that a run regenerates are written from that run, not copied by hand:
//   deno task doc:tables --run DIR [--check] [files...]   (default files: every docs/*.md)
// A region of a document
//   <!-- table: report.md "Table 3" -->
//   | ... the table ... |
//   <!-- end table -->
// is replaced by the first table of the section of DIR/report.md whose heading starts with that title (the
// text before the region says which run and command it is). --check writes nothing and fails where a region differs from the
// run's table (a document out of date against the run it cites).
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";

const REGION = /<!-- table: report\.md "([^"]+)" -->\n[\s\S]*?<!-- end table -->/g;

/** The first markdown table after the heading of `report` that starts with `title` (any level). */
export function reportTable(report: string, title: string): string {
  const lines = report.split("\n");
  const heading = lines.findIndex((l) => /^#+ /.test(l) && l.replace(/^#+ /, "").startsWith(title));
  if (heading < 0) throw new Error(`report.md has no section "${title}"`);
  let start = heading + 1;
  while (start < lines.length && !lines[start].startsWith("|")) {
    if (/^#+ /.test(lines[start])) throw new Error(`report.md's section "${title}" has no table`);
    start++;
  }
  let end = start;
  while (end < lines.length && lines[end].startsWith("|")) end++;
  if (start >= lines.length) throw new Error(`report.md's section "${title}" has no table`);
  return lines.slice(start, end).join("\n");
}

/** `doc` with every region replaced by the run's table (see the file's description). */
export function fillRegions(doc: string, report: string): string {
  return doc.replace(
    REGION,
    (_, title: string) =>
      `<!-- table: report.md "${title}" -->\n\n${reportTable(report, title)}\n\n<!-- end table -->`,
  );
}

/** Cells without their padding and no blank lines, so that a formatter's layout is not a difference. */
const normalise = (text: string) =>
  text.replace(/ *\| */g, "|").replace(/\|-+/g, "|-").replace(/\n\n+/g, "\n");

if (import.meta.main) {
  const { values, positionals } = parseArgs({
    args: process.argv.slice(2),
    options: { run: { type: "string" }, check: { type: "boolean" } },
    allowPositionals: true,
  });
  if (!values.run) throw new Error("doc:tables: give --run DIR (an experiment's output folder)");
  const reportPath = join(values.run, "report.md");
  if (!existsSync(reportPath)) throw new Error(`doc:tables: ${reportPath} does not exist`);
  const report = readFileSync(reportPath, "utf8");
  const files = positionals.length
    ? positionals
    : readdirSync("docs").filter((f) => f.endsWith(".md")).map((f) => join("docs", f));
  let stale = 0;
  for (const file of files) {
    const doc = readFileSync(file, "utf8");
    const filled = fillRegions(doc, report);
    if (normalise(filled) === normalise(doc)) continue;
    if (values.check) {
      stale++;
      console.error(`${file}: a table differs from ${reportPath}`);
    } else {
      writeFileSync(file, filled);
      spawnSync("deno", ["fmt", file], { stdio: "ignore" }); // the tables aligned as the repository keeps them
      console.log(`${file}: tables written from ${reportPath}`);
    }
  }
  process.exit(stale ? 1 : 0);
}
