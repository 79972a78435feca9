// What a Table 3 hides, measured on the same test part: whether the rows tell sources apart rather than
// diseases, and whether FLANNEL's gains are larger than the test part's sampling noise.
//
// The public data confounds class with source: nearly every covid image comes from covid-chestxray-dataset
// (ieee8023), nearly every other from Kaggle's pediatric set. A model that recognises the source scores
// well on covid without seeing disease (DeGrave et al., Nature Machine Intelligence 2021). The audit counts,
// per source and true class, how often a non-covid image is called covid, and scores every row again on
// the images of the mixed source alone (the one source with covid and non-covid images), where the source
// cannot help. The paired bootstrap compares FLANNEL with every other row on resamples of the test images.
import * as fl from "../../mod.ts";
import type { MethodResult } from "./stage2_experiment.ts";

/** How often one group of non-covid test images (one source, one true class) is called covid. */
export interface CalledCovid {
  /** The images' source (`ImageRecord.source`). */
  source: string;
  /** Their true class. */
  className: string;
  /** Test images in the group. */
  images: number;
  /** Share called covid, mean (std) over the row's fold models. */
  share: fl.metrics.MeanStd;
}

/** FLANNEL against one other row of Table 3. */
export interface PairedComparison {
  /** The other row. */
  method: string;
  /** FLANNEL's macro-F1 minus the row's, with the resampled 95% interval and p-value. */
  macroF1: fl.metrics.PairedBootstrapResult;
  /** The same for covid F1. */
  covidF1: fl.metrics.PairedBootstrapResult;
}

/** The audit of one experiment's test part (see the file's description). */
export interface ExperimentAudit {
  /** Per row of Table 3: how often each (source, non-covid class) group is called covid. */
  calledCovid: { method: string; groups: CalledCovid[] }[];
  /**
   * The same for each learner and baseline on the training part, from its out-of-fold outputs (every
   * training image predicted once, by the fold model that never saw it): four times the images of the test
   * part, so the small groups (non-covid images of the covid source) are counted on more images. The share
   * is over those images (its std 0).
   */
  outOfFold: { method: string; groups: CalledCovid[] }[];
  /** The source with both covid and non-covid test images; null when no source has both. */
  mixedSource: string | null;
  /** Test images of the mixed source, per class (class order). */
  mixedCounts: number[];
  /** Per row: F1 per class and macro-F1 on the mixed source's test images alone, mean (std) over folds. */
  mixedSummary: { method: string; summary: fl.metrics.FoldSummary }[];
  /** The row every other is compared with (FLANNEL), and the comparisons; empty without that row. */
  reference: string;
  /** FLANNEL against every other row, paired bootstrap on the test images. */
  paired: PairedComparison[];
  /** Resamples of each paired bootstrap. */
  replicates: number;
}

/** The non-covid images by (source, true class), in the order of their keys: the audit's groups. */
function nonCovidGroups(
  labels: ArrayLike<number>,
  sources: readonly string[],
): { source: string; label: number; idx: number[] }[] {
  const byKey = new Map<string, { source: string; label: number; idx: number[] }>();
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] === 0) continue;
    const key = `${sources[i]}\u0000${labels[i]}`;
    let group = byKey.get(key);
    if (!group) byKey.set(key, group = { source: sources[i], label: labels[i], idx: [] });
    group.idx.push(i);
  }
  return [...byKey.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, g]) => g);
}

/** The share of the images `idx` that `predicted` calls covid (class 0). */
const calledCovidShare = (predicted: Int32Array, idx: readonly number[]) =>
  idx.filter((i) => predicted[i] === 0).length / idx.length;

/**
 * The audit of Table 3's rows on the test part: `methods` as runStage2Folds returns them (with their
 * per-fold test probabilities), `labels` and `sources` of the test images in the same order.
 *
 * @throws Error when `sources` does not have one entry per label.
 */
export function auditExperiment(
  methods: readonly MethodResult[],
  labels: ArrayLike<number>,
  sources: readonly string[],
  options: {
    classNames?: readonly string[];
    reference?: string;
    replicates?: number;
    seed?: number;
    /** Per learner or baseline: its out-of-fold predictions on the training part, by file. */
    outOfFold?: {
      method: string;
      labels: ArrayLike<number>;
      sources: readonly string[];
      probs: Float32Array;
    }[];
  } = {},
): ExperimentAudit {
  const classNames = options.classNames ?? fl.metrics.CLASS_NAMES;
  const reference = options.reference ?? "FLANNEL", replicates = options.replicates ?? 2000;
  const m = classNames.length, n = labels.length;
  if (sources.length !== n) throw new Error(`audit: ${sources.length} sources for ${n} test images`);
  const calledCovid = methods.map((method) => {
    const predictions = method.testProbs.map((probs) => fl.metrics.argmaxRows(probs, m));
    return {
      method: method.name,
      groups: nonCovidGroups(labels, sources).map((g) => ({
        source: g.source,
        className: classNames[g.label],
        images: g.idx.length,
        share: fl.metrics.meanStd(predictions.map((predicted) => calledCovidShare(predicted, g.idx))),
      })),
    };
  });
  const bySource = new Map<string, number[]>();
  for (let i = 0; i < n; i++) {
    if (!bySource.has(sources[i])) bySource.set(sources[i], []);
    bySource.get(sources[i])!.push(i);
  }
  const mixed =
    [...bySource.entries()].filter(([, idx]) =>
      idx.some((i) => labels[i] === 0) && idx.some((i) => labels[i] !== 0)
    )
      .sort(([, a], [, b]) => b.length - a.length)[0];
  const mixedIdx = mixed?.[1] ?? [];
  const mixedLabels = Int32Array.from(mixedIdx, (i) => labels[i]);
  const mixedSummary = mixed
    ? methods.map((method) => ({
      method: method.name,
      summary: fl.metrics.aggregateFolds(method.testProbs.map((probs) => {
        const rows = mixedIdx.map((i) => Array.from(probs.subarray(i * m, (i + 1) * m)));
        return fl.metrics.classificationReport(mixedLabels, rows, classNames);
      })),
    }))
    : [];
  const ref = methods.find((x) => x.name === reference);
  const paired = ref
    ? methods.filter((x) => x !== ref).map((other, k) => {
      const compare = (metric: fl.metrics.BootstrapMetric) =>
        fl.metrics.pairedBootstrap(labels, ref.testProbs, other.testProbs, {
          metric,
          replicates,
          seed: (options.seed ?? 0) + k,
          numClasses: m,
        });
      return { method: other.name, macroF1: compare("macroF1"), covidF1: compare({ f1: 0 }) };
    })
    : [];
  const outOfFold = (options.outOfFold ?? []).map((o) => {
    const predicted = fl.metrics.argmaxRows(o.probs, m);
    return {
      method: o.method,
      groups: nonCovidGroups(o.labels, o.sources).map((g) => ({
        source: g.source,
        className: classNames[g.label],
        images: g.idx.length,
        share: { mean: calledCovidShare(predicted, g.idx), std: 0 },
      })),
    };
  });
  return {
    calledCovid,
    outOfFold,
    mixedSource: mixed?.[0] ?? null,
    mixedCounts: classNames.map((_, c) => mixedIdx.filter((i) => labels[i] === c).length),
    mixedSummary,
    reference,
    paired,
    replicates,
  };
}

/** The audit as Markdown: the called-covid table, Table 3 on the mixed source, the paired comparisons. */
export function auditMarkdown(
  audit: ExperimentAudit,
  classNames: readonly string[] = fl.metrics.CLASS_NAMES,
): string {
  const pct = (v: number) => `${(100 * v).toFixed(0)}%`;
  const groups = audit.calledCovid[0]?.groups ?? [];
  const called = [
    `| Method | ${groups.map((g) => `${g.source} ${g.className} (${g.images})`).join(" | ")} |`,
    `|---|${groups.map(() => "---").join("|")}|`,
    ...audit.calledCovid.map((r) =>
      `| ${r.method} | ${r.groups.map((g) => `${pct(g.share.mean)} (${pct(g.share.std)})`).join(" | ")} |`
    ),
  ].join("\n");
  const oofGroups = audit.outOfFold[0]?.groups ?? [];
  const oof = audit.outOfFold.length
    ? [
      "The same for each learner on the training part, from its out-of-fold outputs (each training image",
      "predicted once, by the fold model that never saw it):",
      "",
      `| Learner | ${oofGroups.map((g) => `${g.source} ${g.className} (${g.images})`).join(" | ")} |`,
      `|---|${oofGroups.map(() => "---").join("|")}|`,
      ...audit.outOfFold.map((r) =>
        `| ${r.method} | ${r.groups.map((g) => pct(g.share.mean)).join(" | ")} |`
      ),
    ].join("\n")
    : "";
  const mixed = audit.mixedSource
    ? [
      `Table 3 on the ${audit.mixedSource} test images alone (${
        classNames.map((c, i) => `${c} ${audit.mixedCounts[i]}`).join(", ")
      }), where the source cannot tell covid apart:`,
      "",
      `| Method | ${classNames.map((c) => `${c} F1`).join(" | ")} | macro-F1 |`,
      `|---|${classNames.map(() => "---").join("|")}|---|`,
      ...audit.mixedSummary.map(({ method, summary }) =>
        `| ${method} | ${
          classNames.map((c) => fl.metrics.formatMeanStd(summary.perClass[c].f1)).join(" | ")
        } | ${fl.metrics.formatMeanStd(summary.macroF1)} |`
      ),
    ].join("\n")
    : "No source holds both covid and non-covid test images: the mixed-source table cannot be made.";
  const signed = (v: number) => `${v >= 0 ? "+" : ""}${v.toFixed(3)}`;
  const cell = (r: fl.metrics.PairedBootstrapResult) =>
    `${signed(r.difference)} [${signed(r.low)}, ${signed(r.high)}], p ${
      r.pValue < 0.001 ? "< 0.001" : r.pValue.toFixed(3)
    }`;
  const paired = audit.paired.length
    ? [
      `| ${audit.reference} against | macro-F1 difference [95% interval], p | covid F1 difference [95% interval], p |`,
      "|---|---|---|",
      ...audit.paired.map((p) => `| ${p.method} | ${cell(p.macroF1)} | ${cell(p.covidF1)} |`),
    ].join("\n")
    : `No ${audit.reference} row to compare with.`;
  return `### Non-covid images called covid, per source and true class (mean (std) over folds; images in brackets)

${called}

${oof}

### ${audit.mixedSource ? `The mixed source (${audit.mixedSource})` : "The mixed source"}

${mixed}

### ${audit.reference} against every other row: paired bootstrap on the test images

${audit.replicates} resamples of the test images with replacement; on each, both rows are scored on the same
images (the mean over their fold models, as Table 3). The interval and p-value cover the sampling of the
test images, not the variation of training; p-values are not adjusted for the ${audit.paired.length}
comparisons (Bonferroni at 0.05: p < ${(0.05 / Math.max(1, audit.paired.length)).toFixed(4)}).

${paired}
`;
}
