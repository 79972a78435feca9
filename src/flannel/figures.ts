// The paper's figures from an experiment's results, as PNG: Fig. 2 (COVID F1 per method, fold error bars),
// Fig. 3 (COVID-vs-rest ROC and precision-recall curves of every row of Table 3 on the test part) and
// Fig. 4 (FLANNEL's confusion matrix). The curves use each row's test probabilities averaged over the folds
// (every fold scores the same test part), so a row's curve is that of its fold ensemble. And Fig. 6: class
// activation maps of each learner of an experiment on one image.
import { basename, join } from "../platform/runtime.ts";
import * as fl from "../../mod.ts";
import { LEARNER_TITLES } from "./learners.ts";
import { type Calibration, checkCalibration, runFolderModels, type TrainedModels } from "./predict.ts";
import { foldMean, type Stage2ExperimentResult } from "./stage2_experiment.ts";

/**
 * Writes fig2_covid_f1.png, fig3_covid_roc.png, fig3_covid_pr.png, fig3_reliability.png and fig4_confusion.png;
 * returns their paths.
 */
export function writeFigures(outDir: string, result: Stage2ExperimentResult, focus = "FLANNEL"): string[] {
  const covid = result.classNames[0];
  const rows = result.methods;
  const focusIndex = rows.findIndex((m) => m.name === focus);
  const paths: string[] = [];
  const save = (name: string, png: Uint8Array) => {
    const path = join(outDir, name);
    fl.train.plots.savePNG(path, png);
    paths.push(path);
  };
  save(
    "fig2_covid_f1.png",
    fl.train.plots.barChartWithErrors({
      title: `${covid} F1 on the test part, mean and std over ${result.folds} folds`,
      yLabel: `${covid} F1`,
      categories: rows.map((m) => m.name),
      means: rows.map((m) => m.summary.perClass[covid].f1.mean),
      stds: rows.map((m) => m.summary.perClass[covid].f1.std),
      yRange: [0, 1],
      highlight: focusIndex >= 0 ? focusIndex : undefined,
    }),
  );
  const m = result.classNames.length;
  const isCovid = Array.from(result.testLabels, (y) => (y === 0 ? 1 : 0));
  const covidScores = rows.map((r) => {
    const p = foldMean(r.testProbs);
    return Array.from({ length: isCovid.length }, (_, i) => p[i * m]);
  });
  save(
    "fig3_covid_roc.png",
    fl.train.plots.lineChart({
      title: `${covid} vs rest: ROC on the test part (fold-averaged probabilities)`,
      xLabel: "false positive rate",
      yLabel: "true positive rate",
      series: rows.map((r, k) => {
        const c = fl.metrics.rocCurve(isCovid, covidScores[k]);
        return {
          name: `${r.name} (AUC ${fl.metrics.rocAuc(isCovid, covidScores[k]).toFixed(3)})`,
          x: c.fpr,
          y: c.tpr,
        };
      }),
      xRange: [0, 1],
      yRange: [0, 1],
      diagonal: true,
    }),
  );
  save(
    "fig3_covid_pr.png",
    fl.train.plots.lineChart({
      title: `${covid} vs rest: precision-recall on the test part (fold-averaged probabilities)`,
      xLabel: "recall",
      yLabel: "precision",
      series: rows.map((r, k) => {
        const c = fl.metrics.precisionRecallCurve(isCovid, covidScores[k]);
        return {
          name: `${r.name} (AP ${fl.metrics.averagePrecision(isCovid, covidScores[k]).toFixed(3)})`,
          x: c.recall,
          y: c.precision,
        };
      }),
      xRange: [0, 1],
      yRange: [0, 1],
    }),
  );
  save("fig3_reliability.png", reliabilityDiagram(result, [focus, "Voting"]));
  const focusRow = rows[focusIndex >= 0 ? focusIndex : rows.length - 1];
  save(
    "fig4_confusion.png",
    fl.train.plots.confusionMatrixChart({
      title: `${focusRow.name}: confusion on the test part, summed over ${result.folds} folds`,
      classNames: result.classNames,
      matrix: focusRow.summary.confusion,
      normalize: true,
    }),
  );
  return paths;
}

/**
 * The reliability diagram of the rows named `names` (those present) on the test part, raw and temperature-
 * scaled: each of 15 equal-width confidence bins at its mean confidence and accuracy, every fold's
 * predictions pooled (each fold scores the same test images with its own models); the diagonal is perfect
 * calibration. A series' name carries its ECE over the pooled predictions.
 */
function reliabilityDiagram(result: Stage2ExperimentResult, names: readonly string[]): Uint8Array {
  const m = result.classNames.length;
  const rows = result.methods.filter((r) => names.includes(r.name));
  if (rows.length === 0) throw new Error(`reliability diagram: none of ${names.join(", ")} is a row`);
  const series = rows.flatMap((r) =>
    ([["raw", r.testProbs], ["calibrated", r.calibratedTestProbs]] as const).map(([kind, probs]) => {
      const pooled = new Float32Array(probs.length * probs[0].length);
      probs.forEach((p, f) => pooled.set(p, f * p.length));
      const labels = Int32Array.from(
        { length: pooled.length / m },
        (_, i) => result.testLabels[i % result.testLabels.length],
      );
      const c = fl.metrics.calibration(labels, pooled, { numClasses: m });
      const bins = c.bins.filter((b) => b.count > 0);
      return {
        name: `${r.name}, ${kind} (ECE ${c.ece.toFixed(3)})`,
        x: bins.map((b) => b.confidence),
        y: bins.map((b) => b.accuracy),
      };
    })
  );
  return fl.train.plots.lineChart({
    title: `reliability on the test part (${result.folds} folds pooled, 15 bins)`,
    xLabel: "confidence (top class's probability)",
    yLabel: "accuracy",
    series,
    xRange: [0, 1],
    yRange: [0, 1],
    diagonal: true,
  });
}

/**
 * Fig. 6 for one image: the image as each learner of trained models (an experiment folder, or a bundle)
 * sees it (fold `fold`'s kept weights), with that learner's class activation map for its predicted class,
 * one tile per learner, captioned with the class's probability: temperature-scaled by the learner's own
 * temperature of that fold unless `calibration` is "none" (or the models carry none).
 */
export async function camFigure(
  models: string | TrainedModels,
  file: string | fl.data.ImageSource,
  { fold, calibration = "temperature" }: { fold?: number; calibration?: Calibration } = {},
): Promise<Uint8Array> {
  checkCalibration("cam", calibration);
  const source = typeof models === "string" ? runFolderModels(models) : models;
  const { settings } = source;
  const f = fold ?? settings.folds[0];
  if (!settings.folds.includes(f)) {
    throw new Error(`fold ${f} is not in the experiment (folds ${settings.folds.join(", ")})`);
  }
  const input = typeof file === "string" ? { file } : file;
  const image = await new fl.data.ImageCache(settings.resize, settings).get(input);
  const seen = fl.data.centreCrop(image, settings.crop);
  const tiles: Uint8Array[] = [], labels: string[] = [];
  for (const arch of [...settings.archs, ...settings.baselines]) {
    const model = await source.loadLearner(arch, f);
    try {
      const cam = await fl.train.classActivationMap(model, image, { crop: settings.crop });
      const temperature = calibration === "temperature" ? source.learnerTemperature(arch, f) : null;
      const probs = temperature === null
        ? cam.probs
        : fl.metrics.temperatureScale(cam.probs, temperature, cam.probs.length);
      tiles.push(fl.train.plots.heatmapOverlay({ gray: seen, heat: cam.map }));
      labels.push(
        `${LEARNER_TITLES[arch]}: ${fl.metrics.CLASS_NAMES[cam.classIndex]} ${
          probs[cam.classIndex].toFixed(2)
        }`,
      );
    } finally {
      model.dispose();
    }
  }
  // small crops (tiny learners see 64x64) are enlarged so the maps and captions are readable
  const tileSize = Math.max(224, settings.crop);
  return fl.train.plots.imageGrid(tiles, labels, {
    title: `class activation maps, ${basename(input.file)} (fold ${f})`,
    tileSize,
  });
}
