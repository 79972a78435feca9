// Seeded, stratified splits: a train/test split and k folds on the training part, each class spread
// evenly. Deterministic for a seed in every runtime (the shuffles use the project's counter RNG).
import { Generator } from "../kernels/random.ts";

function shuffledByClass(labels: ArrayLike<number>, gen: Generator): number[][] {
  const byClass = new Map<number, number[]>();
  for (let i = 0; i < labels.length; i++) {
    const y = labels[i];
    if (!byClass.has(y)) byClass.set(y, []);
    byClass.get(y)!.push(i);
  }
  return [...byClass.keys()].sort((a, b) => a - b).map((y) => {
    const list = byClass.get(y)!;
    const perm = gen.permutation(list.length);
    return Array.from(perm, (j) => list[j]);
  });
}

/** Indices of a stratified train/test split (test share `testFraction`, per class rounded). */
export function stratifiedSplit(labels: ArrayLike<number>, testFraction: number, seed: number): { train: number[]; test: number[] } {
  if (!(testFraction > 0 && testFraction < 1)) throw new Error(`split: testFraction must be in (0, 1), got ${testFraction}`);
  const train: number[] = [], test: number[] = [];
  for (const list of shuffledByClass(labels, new Generator(seed))) {
    const nTest = Math.round(list.length * testFraction);
    test.push(...list.slice(0, nTest));
    train.push(...list.slice(nTest));
  }
  return { train: train.sort((a, b) => a - b), test: test.sort((a, b) => a - b) };
}

/**
 * k stratified folds of `indices` (positions into `labels`): fold f validates on its part and trains on the
 * rest. Each class is dealt round-robin, so fold sizes per class differ by at most one.
 */
export function stratifiedKFold(labels: ArrayLike<number>, indices: number[], k: number, seed: number): { train: number[]; val: number[] }[] {
  if (!Number.isInteger(k) || k < 2) throw new Error(`folds: k must be an integer >= 2, got ${k}`);
  if (indices.length < k) throw new Error(`folds: ${indices.length} samples cannot make ${k} folds`);
  const sub = indices.map((i) => labels[i]);
  const parts: number[][] = Array.from({ length: k }, () => []);
  let next = 0;
  for (const list of shuffledByClass(sub, new Generator(seed))) {
    for (const j of list) parts[next++ % k].push(indices[j]);
  }
  return parts.map((val, f) => ({
    train: parts.flatMap((p, g) => (g === f ? [] : p)).sort((a, b) => a - b),
    val: [...val].sort((a, b) => a - b),
  }));
}
