// `flannel stage1`: the base learners on every cross-validation fold.
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as flannel from "../flannel/mod.ts";
import { fail, IMAGE_RUN_HELP, IMAGE_RUN_OPTIONS, prepareImageRun } from "./shared.ts";

/** `flannel stage1 --help`. */
export const HELP = `flannel stage1: train the base learners on each cross-validation fold (stage 1)

Usage: deno task flannel stage1 --data DIR [--data DIR...] --out DIR [options]

Loads the sources (as 'flannel data'), decodes every image once (unreadable files are reported and left
out), makes or reloads a seeded, stratified, patient-disjoint 4:1 train/test split with K folds on the
training part (OUT/split.json, pinned to the data set's file list), then for every learner and fold trains
on the fold's training part (Adam, cross-entropy; the epoch kept is chosen on 10% of those patients) and
writes the learner's class probabilities on the held-out fold (out-of-fold, for stage 2) and on the test
part. Per learner and fold, in OUT/stage1/<arch>/fold<f>/: checkpoint.safetensors (+ .best), log.jsonl,
val.safetensors and test.safetensors (probs [S, 4], labels, files in the metadata).

${IMAGE_RUN_HELP}
  --fold LIST       comma-separated folds to run (default all)
  --help`;

export async function stage1(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { ...IMAGE_RUN_OPTIONS, fold: { type: "string" } },
    strict: true,
  });
  if (values.help) return console.log(HELP);
  const run = await prepareImageRun("stage1", values);
  const nFolds = run.split.folds;
  const folds = values.fold?.split(",").map((f) => {
    const v = Number(f);
    if (!Number.isInteger(v) || v < 0 || v >= nFolds) {
      fail(`--fold: ${JSON.stringify(f)} is not a fold of 0..${nFolds - 1}`);
    }
    return v;
  });
  const t0 = performance.now();
  const results = await flannel.runStage1Folds({ ...run, ...run.settings, ...run.progress, folds });
  console.log(
    "\n| learner | fold | held-out macro-F1 | test macro-F1 | test covid F1 |\n|---|---|---|---|---|",
  );
  for (const r of results) {
    const covid = r.test.perClass.covid.f1.toFixed(3);
    console.log(
      `| ${r.arch} | ${r.fold} | ${r.val.macroF1.toFixed(3)} | ${r.test.macroF1.toFixed(3)} | ${covid} |`,
    );
  }
  console.log(
    `\nstage 1 outputs in ${join(run.out, "stage1")} (${((performance.now() - t0) / 1000).toFixed(0)} s)`,
  );
}
