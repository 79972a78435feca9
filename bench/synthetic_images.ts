// Seeded gray images for the benches that train (stage1.ts, soak.ts): in memory, no data set needed.
import type { GrayImage } from "../src/io/images.ts";

/**
 * `count` gray images of side `side`, values in [0, 1]: a smooth pattern that differs with i mod 4 (so a
 * learner has something to learn from labels i mod 4) plus seeded noise.
 */
export function syntheticImages(count: number, side: number, seed: number): GrayImage[] {
  let s = seed >>> 0;
  const next = () => (s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32;
  return Array.from({ length: count }, (_, i) => {
    const data = new Float32Array(side * side);
    for (let y = 0; y < side; y++) {
      for (let x = 0; x < side; x++) {
        const v = 0.5 + 0.25 * Math.sin((x + i) / 7) * Math.cos(y / 5 + (i % 4)) + 0.2 * (next() - 0.5);
        data[y * side + x] = Math.min(1, Math.max(0, v));
      }
    }
    return { width: side, height: side, data };
  });
}
