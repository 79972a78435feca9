// Synthetic learner outputs for stage 2: N learners with different per-class skills and the confusions of
// chest X-ray classes (covid with viral, viral with bacterial), drawn with the paper's class imbalance.
import * as fl from "../../mod.ts";

/** The paper's training counts (covid, viral, bacterial, normal): covid is about 1.7% of samples. */
export const PAPER_CLASS_COUNTS = [100, 1493, 2772, 1591];

/** Stage 2's data: N learners' class probabilities for S labelled samples. */
export interface LearnerOutputs {
  /** Row-major [samples, learners, classes] probabilities. */
  probs: Float32Array;
  /** S class indices in 0..M-1. */
  labels: Int32Array;
  /** N. */
  learners: number;
  /** M. */
  classes: number;
}

/** Options of {@link syntheticLearnerOutputs}. */
export interface SyntheticOptions {
  /** S, a positive integer. */
  samples: number;
  /** Relative class frequencies (default the paper's counts). */
  classShares?: number[];
  /** N (default 5, as the paper's learners). */
  learners?: number;
  /** Seeds every draw (default 0). */
  seed?: number;
  /** Scales every learner's skill: lower is a harder task (default 1). */
  skill?: number;
}

function normal(gen: fl.Generator): number {
  const u1 = 1 - gen.uniform();
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * gen.uniform());
}

/**
 * Draws labels by the class shares, then each learner's softmax output for every sample. Learner i is
 * strongest on class i mod M and the last one a generalist, so a combiner gains by trusting each learner
 * where it is strong. Deterministic for a seed.
 *
 * @throws {Error} when `samples` is not a positive integer or `classShares` has fewer than 2 entries, a
 * negative one, or only zeros.
 */
export function syntheticLearnerOutputs(options: SyntheticOptions): LearnerOutputs {
  const { samples, learners = 5, seed = 0, skill = 1 } = options;
  const shares = options.classShares ?? PAPER_CLASS_COUNTS;
  const classes = shares.length;
  if (!Number.isInteger(samples) || samples < 1) {
    throw new Error(`synthetic: samples must be a positive integer, got ${samples}`);
  }
  if (classes < 2 || shares.some((s) => !(s >= 0)) || shares.every((s) => s === 0)) {
    throw new Error(`synthetic: classShares must be >= 2 non-negative numbers, not all 0`);
  }
  const gen = new fl.Generator(seed);
  const total = shares.reduce((a, b) => a + b, 0);
  const cumulative = shares.map((_, i) => shares.slice(0, i + 1).reduce((a, b) => a + b, 0) / total);
  const labels = new Int32Array(samples);
  for (let s = 0; s < samples; s++) {
    const u = gen.uniform();
    labels[s] = Math.max(0, cumulative.findIndex((c) => u < c));
  }
  // Learner i is strongest on class i mod M; the last learner is a generalist. The ensemble gains by
  // trusting each learner where it is strong.
  const skills = Array.from(
    { length: learners },
    (_, i) =>
      Array.from(
        { length: classes },
        (_, c) => skill * (i === learners - 1 ? 1.6 : c === i % classes ? 2.6 : 0.9),
      ),
  );
  const probs = new Float32Array(samples * learners * classes);
  const z = new Float64Array(classes);
  for (let s = 0; s < samples; s++) {
    const y = labels[s];
    const difficulty = 0.6 * normal(gen); // shared by all learners: some images are hard for everyone
    for (let i = 0; i < learners; i++) {
      for (let m = 0; m < classes; m++) z[m] = normal(gen);
      z[y] += skills[i][y] + difficulty;
      // Neighbouring classes look alike (covid~viral, viral~bacterial, ...).
      if (y + 1 < classes) z[y + 1] += 0.8;
      if (y > 0) z[y - 1] += 0.4;
      const mx = Math.max(...z);
      let sum = 0;
      for (let m = 0; m < classes; m++) sum += z[m] = Math.exp(z[m] - mx);
      for (let m = 0; m < classes; m++) probs[(s * learners + i) * classes + m] = z[m] / sum;
    }
  }
  return { probs, labels, learners, classes };
}
