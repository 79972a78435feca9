// tools/doc_tables.ts: a document's tables regenerated from a run's report.md, and --check's comparison.
import { readFileSync } from "node:fs";
import { fillRegions, reportTable } from "../tools/doc_tables.ts";
import { assert, assertEquals, assertThrows, test } from "./harness.ts";

const REPORT = `# FLANNEL experiment

## Table 3: F1 per class

| Method | macro-F1 |
|---|---|
| FLANNEL | 0.618 (0.037) |

## What Table 3 hides

### Non-covid images called covid

| Method | ieee8023 normal (4) |
|---|---|
| FLANNEL | 85% (14%) |

### Empty

No table here.

## Next
`;

test("doc tables: a report's section table by its title, errors naming a missing section or table", () => {
  assertEquals(
    reportTable(REPORT, "Table 3"),
    "| Method | macro-F1 |\n|---|---|\n| FLANNEL | 0.618 (0.037) |",
  );
  assertEquals(
    reportTable(REPORT, "Non-covid images"),
    "| Method | ieee8023 normal (4) |\n|---|---|\n| FLANNEL | 85% (14%) |",
  );
  assertThrows(() => reportTable(REPORT, "Table 9"), /no section "Table 9"/);
  assertThrows(() => reportTable(REPORT, "Empty"), /section "Empty" has no table/);
});

test("doc tables: each region replaced by its table, the text around it kept; the documents' regions parse", () => {
  const doc =
    `Before.\n\n<!-- table: report.md "Table 3" -->\n\n| old | table |\n|---|---|\n\n<!-- end table -->\n\nBetween.\n` +
    `<!-- table: report.md "Non-covid images" -->\n| stale |\n<!-- end table -->\nAfter.\n`;
  const filled = fillRegions(doc, REPORT);
  assert(
    filled.startsWith('Before.\n\n<!-- table: report.md "Table 3" -->\n\n| Method | macro-F1 |'),
    filled,
  );
  assert(filled.includes("| FLANNEL | 85% (14%) |\n\n<!-- end table -->\nAfter.\n"), filled);
  assert(!filled.includes("old") && !filled.includes("stale"), "old tables left");
  assertEquals(fillRegions(filled, REPORT), filled, "filling twice changes nothing");
  // docs/experiment.md's regions name sections that an experiment's report has (the run's own report is
  // not in the repository: the titles are checked against the report's headings).
  const experiment = readFileSync(new URL("../docs/experiment.md", import.meta.url), "utf8");
  const titles = [...experiment.matchAll(/<!-- table: report\.md "([^"]+)" -->/g)].map((m) => m[1]);
  assertEquals(titles, ["Table 3", "Calibration", "The folds' ensemble", "Non-covid images called covid"]);
});
