// Batch assembly for stage-1 training, images/s, measured with tinybench: `basic` (makeBatch on the CPU:
// random crop, flip, noise, normalisation, then the upload the trainer does) against `paper` (warpBatch: the
// affine parameters drawn and the source images packed on the CPU, then one warp + noise kernel on the
// device), batch 16, at crop 224 from images of short side 256 (full-size learners) and at crop 64 from 72
// (the tiny ones, the demo).
//   deno task bench:augment          FLANNEL_BACKEND=webgpu deno task bench:augment          (and bun run bench/augment.ts)
//
// What is measured, per case and mode: one call that returns the batch as a device tensor [16, 3, crop,
// crop], then `fl.syncDevice()` (so the device's work is inside the time), then the tensor freed; images/s
// = 16 / the median time. `makeBatch alone` is the CPU part of basic without the upload. The images are 32
// smooth synthetic gray images with short side `resize` and aspect ratios 1 to 1.33 (as chest X-rays), held
// in memory like the ImageCache; each call takes the next 16 of them. One warmup call per task (the first
// compiles the kernel on WebGPU), then at least 5 iterations within a small time budget.
import { Bench } from "tinybench";
import * as fl from "../mod.ts";

const info = await fl.init();
const runtime = `${info.runtime}, ${info.backend} on ${info.adapter}`;
const B = 16;

function image(short: number, aspect: number, phase: number): fl.io.GrayImage {
  const [w, h] = phase % 2 ? [Math.round(short * aspect), short] : [short, Math.round(short * aspect)];
  const data = new Float32Array(w * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) data[y * w + x] = 0.5 + 0.3 * Math.sin(x / 9 + phase) * Math.cos(y / 7);
  }
  return { width: w, height: h, data };
}

async function median(name: string, fn: () => Promise<void>): Promise<number> {
  await fn(); // warmup: pipelines, pool buffers
  const bench = new Bench({ time: 1000, iterations: 5, warmup: false });
  bench.add(name, fn);
  await bench.run();
  const r = bench.getTask(name)?.result as { latency?: { p50: number }; error?: unknown } | undefined;
  if (!r?.latency) throw new Error(`${name}: ${String(r?.error ?? "no result")}`);
  return r.latency.p50;
}

console.log(`batch assembly, batch ${B} (${runtime})\n`);
console.log(
  "| case | makeBatch alone (CPU) | basic: makeBatch + upload | paper: warpBatch (device) | paper / basic |",
);
console.log("| --- | --- | --- | --- | --- |");
for (const [crop, resize] of [[224, 256], [64, 72]]) {
  const images = Array.from({ length: 32 }, (_, i) => image(resize, 1 + (i % 5) / 15, i));
  let next = 0;
  const indices = () => {
    const idx = Int32Array.from({ length: B }, (_, i) => (next + i) % images.length);
    next += B;
    return idx;
  };
  const gen = new fl.Generator(1);
  const cpu = await median("makeBatch", () => {
    fl.data.makeBatch(images, indices(), { crop, train: true, generator: gen });
    return Promise.resolve();
  });
  const basic = await median("basic", async () => {
    const x = fl.tensor(fl.data.makeBatch(images, indices(), { crop, train: true, generator: gen }), [
      B,
      3,
      crop,
      crop,
    ]);
    await fl.syncDevice();
    x.dispose();
  });
  const paper = await median("paper", async () => {
    const x = fl.data.warpBatch(images, indices(), { crop, generator: gen });
    await fl.syncDevice();
    x.dispose();
  });
  const rate = (ms: number) => `${(B / (ms / 1000)).toFixed(0)} images/s (${ms.toFixed(1)} ms)`;
  console.log(
    `| crop ${crop} from ${resize} | ${rate(cpu)} | ${rate(basic)} | ${rate(paper)} | ${
      (basic / paper).toFixed(2)
    } |`,
  );
}
console.log(`\nlive tensors after the bench: ${fl.liveTensorCount()}`);
