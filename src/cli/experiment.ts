// `flannel experiment`: the whole protocol on images (stage 1, stage 2, Table 3, figures, report).
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as fl from "../../mod.ts";
import * as flannel from "../flannel/mod.ts";
import {
  EXPERIMENT_HELP,
  EXPERIMENT_OPTIONS,
  type ImageRunValues,
  intOption,
  prepareImageRun,
} from "./shared.ts";

/** `flannel experiment --help`. */
export const HELP = `flannel experiment: the FLANNEL protocol on chest X-ray images, end to end

Usage: deno task flannel experiment --data DIR [--data DIR...] --out DIR [options]

Everything 'flannel stage1' does, for every fold, then stage 2 on each fold: soft voting, MLP stacking
with 1 and 2 layers, FLANNEL with cross-entropy, with cross-entropy and class-balanced resampling, and
FLANNEL with focal loss, each trained on the fold's out-of-fold learner outputs (80%, epoch chosen on the
other 20%) and scored on the test part; the learners alone too. Writes OUT/results.json (per method and
fold: per-class precision, recall, F1, ROC-AUC, PR-AUC, macro-F1, accuracy, confusion matrix; mean and
std over folds) and OUT/report.md (Table 1, Table 3). A rerun with --resume skips finished stage-1 work.

${EXPERIMENT_HELP}`;

export async function experiment(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: EXPERIMENT_OPTIONS,
    strict: true,
  });
  if (values.help) return console.log(HELP);
  await runImageExperiment("experiment", values, intOption(values, "stage2-epochs", 20, 1));
}

/** The experiment and its outputs: results.json, the figures, report.md. */
export async function runImageExperiment(
  command: string,
  values: ImageRunValues,
  stage2Epochs: number,
): Promise<void> {
  const run = await prepareImageRun(command, values);
  const t0 = performance.now();
  const result = await flannel.runExperiment({ ...run, ...run.settings, ...run.progress, stage2Epochs });
  const seconds = (performance.now() - t0) / 1000;
  const resultsPath = join(run.out, "results.json"), reportPath = join(run.out, "report.md");
  const machine = { data: values.data, adapter: run.info.adapter, runtime: run.info.runtime, seconds };
  fl.io.writeFileAtomic(
    resultsPath,
    JSON.stringify({ ...result, machine, table1: run.summary }, flannel.withoutProbabilities, 1),
  );
  const figures = flannel.writeFigures(run.out, result);
  // Fig. 6: the class activation maps of every learner on the first test image of each class
  for (const [c, name] of fl.metrics.CLASS_NAMES.entries()) {
    const first = run.split.test.find((i) => run.records[i].label === c);
    if (first === undefined) continue;
    const path = join(run.out, `fig6_cam_${name}.png`);
    fl.train.plots.savePNG(path, await flannel.camFigure(run.out, run.records[first].file));
    figures.push(path);
  }
  fl.io.writeFileAtomic(
    reportPath,
    experimentReport(result, run.summary, run.info.adapter, seconds, values.data ?? []),
  );
  console.log(`figures: ${figures.join(", ")}`);
  console.log(`\n${flannel.table3(result)}\n`);
  console.log(`wrote ${resultsPath} and ${reportPath} (${seconds.toFixed(0)} s)`);
}

export function experimentReport(
  result: flannel.ExperimentResult,
  summary: fl.data.DatasetSummary,
  adapter: string,
  seconds: number,
  dataDirs: readonly string[],
): string {
  const settings = result.settings;
  const folds = [...new Set(result.stage1.map((r) => r.fold))].sort((a, b) => a - b);
  const stage1Rows = result.learners.map(({ arch, title }) => {
    const cells = folds.map((f) => {
      const r = result.stage1.find((x) => x.arch === arch && x.fold === f)!;
      return `${r.heldOutMacroF1.toFixed(3)} / ${r.testMacroF1.toFixed(3)}`;
    });
    return `| ${title} | ${cells.join(" | ")} |`;
  });
  return `# FLANNEL experiment

Data: ${dataDirs.join(", ")}${
    summary.sources.synthetic ? " (the project's synthetic chest X-ray generator, not real X-rays)" : ""
  }.

Learners: ${
    result.learners.map((l) => l.title).join(", ")
  } (${settings.scale} scale), crop ${settings.crop}, ` +
    `${settings.epochs} stage-1 epochs (batch ${settings.batchSize}), ${settings.stage2Epochs} stage-2 epochs, ` +
    `seed ${settings.seed}. ${result.samples.train} training images in ${result.folds} patient-disjoint folds, ` +
    `${result.samples.test} test images. Adapter: ${adapter}. Time: ${seconds.toFixed(0)} s.

Stage 2 of each fold trains on that fold's out-of-fold learner outputs (the learners never saw those
images; their epochs were chosen on a separate share of their training part) and every row is scored on
the test part with that fold's learners.

## Table 1: data

\`\`\`
${fl.data.formatSummary(summary)}
\`\`\`

## Table 3: F1 per class and macro-F1 on the test part, mean (std) over folds

${flannel.table3(result)}

## Calibration: do the probabilities mean what they say? (test part, mean (std) over folds)

Expected calibration error (ECE: 15 equal-width bins of the top class's probability; the sample-weighted
mean gap between a bin's accuracy and its mean confidence), its classwise variant, the Brier score and the
negative log-likelihood, raw and after temperature scaling "(T)": each fold's temperature is fitted on the
share of its out-of-fold outputs that chose the stage-2 epoch, never on the test part. Scaling keeps every
argmax, so Table 3 is the same either way. \`predict\` applies the folds' mean temperature to their averaged
probabilities (\`--calibration none\` keeps them raw).

${flannel.calibrationTable(result)}

![Reliability](fig3_reliability.png)

## The folds' ensemble: what predict and a bundle run (test part)

Each row's fold models as one ensemble: the folds' test probabilities averaged, then scaled by the
folds' mean temperature, exactly what \`predict\` computes for a new image. One set of test images, so no std.

${flannel.foldEnsembleTable(result)}

## Figures

COVID F1 per method with fold error bars (Fig. 2), COVID-vs-rest ROC and precision-recall curves (Fig. 3),
FLANNEL's confusion matrix (Fig. 4):

![Fig. 2](fig2_covid_f1.png)
![Fig. 3 ROC](fig3_covid_roc.png) ![Fig. 3 PR](fig3_covid_pr.png)
![Fig. 4](fig4_confusion.png)

Class activation maps of each learner (fold 0) on the first test image of each class (Fig. 6):

${fl.metrics.CLASS_NAMES.map((c) => `![Fig. 6 ${c}](fig6_cam_${c}.png)`).join("\n")}

## What Table 3 hides: sources and noise

${flannel.auditMarkdown(result.audit)}
## Stage 1: macro-F1 per learner and fold (held-out fold / test part)

| learner | ${folds.map((f) => `fold ${f}`).join(" | ")} |
|---|${folds.map(() => "---").join("|")}|
${stage1Rows.join("\n")}
`;
}
