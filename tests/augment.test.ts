// The `paper` augmentation (src/data/augment.ts, src/kernels/augment.ts and its twin): the warp matrices
// against explicit cos/sin formulas in float64, the device resampling against a float64 bilinear resampler
// written here, the noise against makeBatch's formula on the CPU Threefry, identity and flip warps equal to
// plain crops exactly, determinism, the two backends (and the two runtimes) against each other, stage 1's
// `augment` setting (basic = makeBatch, paper resumes exactly, a mismatch refused) and the errors.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import process from "node:process";
import * as fl from "../mod.ts";
import * as flannel from "../src/flannel/mod.ts";
import { trainingBatch } from "../src/flannel/stage1.ts";
import {
  assert,
  assertClose,
  assertEquals,
  AssertionError,
  assertRejects,
  assertThrows,
  test,
  writeArtifact,
} from "./harness.ts";
import { opRecords } from "./opcheck.ts";
import { Rng } from "./reference.ts";

await fl.init();
const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
const tmp = mkdtempSync(join(tmpdir(), "fl-augment-"));
const MEAN = [0.485, 0.456, 0.406], STD = [0.229, 0.224, 0.225];
type GrayImage = fl.io.GrayImage;
type Key = readonly [number, number, number];

/** A smooth test image (slopes under 0.1 a pixel): bilinear rounding stays far below the tolerances. */
function smooth(w: number, h: number, phase: number): GrayImage {
  const data = new Float32Array(w * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      data[y * w + x] = 0.5 + 0.25 * Math.sin(x / 6.1 + phase) * Math.cos(y / 4.7 - phase) +
        0.15 * (x / w - y / h);
    }
  }
  return { width: w, height: h, data };
}

/** Independent random pixels in [0, 1). */
function rough(w: number, h: number, seed: number): GrayImage {
  const r = new Rng(seed);
  return { width: w, height: h, data: Float32Array.from({ length: w * h }, () => r.uniform()) };
}

/** An output-to-source map (source x = a00 x + a01 y + a02, ...) in wgpu-matrix's mat3 layout. */
function mat(a00: number, a01: number, a02: number, a10: number, a11: number, a12: number): Float64Array {
  return Float64Array.from([a00, a10, 0, 0, a01, a11, 0, 0, a02, a12, 1, 0]);
}

/** Bilinear sample of `img` at (sx, sy) in float64, pixel centres at integers, taps outside the image 0. */
function bilinear(img: GrayImage, sx: number, sy: number): number {
  const x0 = Math.floor(sx), y0 = Math.floor(sy), fx = sx - x0, fy = sy - y0;
  const taps: [number, number, number][] = [
    [x0, y0, (1 - fx) * (1 - fy)],
    [x0 + 1, y0, fx * (1 - fy)],
    [x0, y0 + 1, (1 - fx) * fy],
    [x0 + 1, y0 + 1, fx * fy],
  ];
  let v = 0;
  for (const [x, y, weight] of taps) {
    if (x >= 0 && y >= 0 && x < img.width && y < img.height) v += weight * img.data[y * img.width + x];
  }
  return v;
}

/** makeBatch's noise at output pixel `p` of an image with key (k0, k1, stream), in float64. */
function noiseAt(key: Key, p: number, std: number): number {
  const [a, c] = fl.threefry2x32(key[0], key[1], p, key[2]);
  const sum = (a >>> 16) + (a & 0xffff) + (c >>> 16) + (c & 0xffff);
  return std * (sum / 65536 - 2) * Math.sqrt(3);
}

/**
 * The batch in float64 from the maps as the kernel's contract says it takes them: entries in 16.16 fixed
 * point (round(a * 65536)), source points exact from those; then bilinear sampling, noise and
 * normalisation in float64.
 */
function reference(
  images: readonly GrayImage[],
  mats: readonly ArrayLike<number>[],
  crop: number,
  { noiseStd = 0, keys = [] }: { noiseStd?: number; keys?: Key[] } = {},
): Float64Array {
  const plane = crop * crop;
  const values = new Float64Array(images.length * 3 * plane);
  images.forEach((img, n) => {
    const m = mats[n], q = (i: number) => Math.round(m[i] * 65536);
    for (let y = 0; y < crop; y++) {
      for (let x = 0; x < crop; x++) {
        const sx = (q(0) * x + q(4) * y + q(8)) / 65536, sy = (q(1) * x + q(5) * y + q(9)) / 65536;
        let g = bilinear(img, sx, sy);
        if (noiseStd > 0) g += noiseAt(keys[n], y * crop + x, noiseStd);
        for (let c = 0; c < 3; c++) values[(n * 3 + c) * plane + y * crop + x] = (g - MEAN[c]) / STD[c];
      }
    }
  });
  return values;
}

/** The warped batch, read back (the tensor freed). */
async function warp(images: readonly GrayImage[], options: fl.data.WarpBatchOptions): Promise<Float32Array> {
  const t = fl.data.warpBatch(images, images.map((_, i) => i), options);
  try {
    return await t.toArray();
  } finally {
    t.dispose();
  }
}

test("affineMatrix: float64 maps equal explicit cos/sin formulas; identity and flip are exact crops", () => {
  const crop = 64, h = (crop - 1) / 2;
  const cases: fl.data.AffineParams[] = [
    { scale: 1, angle: 0, flip: false, centerX: 40.5, centerY: 35.5 },
    { scale: 1.1, angle: 0.17, flip: false, centerX: 37.25, centerY: 33 },
    { scale: 0.9, angle: -0.17, flip: true, centerX: 41.75, centerY: 38.125 },
    { scale: 1.05, angle: Math.PI / 4, flip: true, centerX: 128, centerY: 140.3 },
    { scale: 0.5, angle: -0.05, flip: false, centerX: 10, centerY: -3 },
  ];
  for (const p of cases) {
    const m = fl.data.affineMatrix(p, crop);
    assert(m instanceof Float64Array && m.length === 12, "a float64 mat3 of 12 values");
    // source = centre + R(-angle) diag(f, 1) (out - h) / scale, f = -1 when flipped
    const c = Math.cos(p.angle), s = Math.sin(p.angle), f = p.flip ? -1 : 1;
    const a00 = c * f / p.scale, a01 = s / p.scale, a10 = -s * f / p.scale, a11 = c / p.scale;
    const expected = [a00, a10, 0, a01, a11, 0, p.centerX - (a00 + a01) * h, p.centerY - (a10 + a11) * h, 1];
    const got = [m[0], m[1], m[2], m[4], m[5], m[6], m[8], m[9], m[10]];
    assertClose(got, expected, { rtol: 1e-14, atol: 1e-12, msg: JSON.stringify(p) });
  }
  // no rotation or zoom: a translation by the crop's corner, or the mirror about the crop's centre, exactly
  const plain = fl.data.affineMatrix(
    { scale: 1, angle: 0, flip: false, centerX: 7 + h, centerY: 3 + h },
    crop,
  );
  assertEquals([plain[0], plain[4], plain[8], plain[1], plain[5], plain[9]], [1, 0, 7, 0, 1, 3]);
  const mirror = fl.data.affineMatrix(
    { scale: 1, angle: 0, flip: true, centerX: 7 + h, centerY: 3 + h },
    crop,
  );
  assertEquals([mirror[0], mirror[4], mirror[8], mirror[1], mirror[5], mirror[9]], [
    -1,
    0,
    7 + crop - 1,
    0,
    1,
    3,
  ]);
});

test("drawAffine: five uniforms per image in the documented order, inside the ranges, the same in every runtime", () => {
  const crop = 64, w = 80, h = 72;
  const gen = new fl.Generator(3), twin = new fl.Generator(3);
  let flips = 0, minAngle = 0, maxAngle = 0;
  for (let i = 0; i < 2000; i++) {
    const p = fl.data.drawAffine(gen, w, h, crop);
    const u = [twin.uniform(), twin.uniform(), twin.uniform(), twin.uniform(), twin.uniform()];
    const half = crop / (2 * p.scale);
    assertClose(p.scale, 0.9 + u[0] * (1.1 - 0.9), { rtol: 1e-15, atol: 0 });
    assertClose(p.angle, (2 * u[1] - 1) * (10 * Math.PI / 180), { rtol: 1e-15, atol: 0 });
    const cx = (size: number, v: number) =>
      size - 0.5 - half >= half - 0.5 ? half - 0.5 + v * (size - 2 * half) : (size - 1) / 2;
    assertClose(p.centerX, cx(w, u[2]), { rtol: 1e-12, atol: 1e-12 });
    assertClose(p.centerY, cx(h, u[3]), { rtol: 1e-12, atol: 1e-12 });
    assertEquals(p.flip, u[4] < 0.5);
    assert(p.scale >= 0.9 && p.scale < 1.1, `scale ${p.scale}`);
    assert(Math.abs(p.angle) <= (10 * Math.PI) / 180, `angle ${p.angle}`);
    if (h - 0.5 - half >= half - 0.5) {
      assert(p.centerY - half >= -0.5 && p.centerY + half <= h - 0.5 + 1e-9, `window row ${p.centerY}`);
    }
    flips += p.flip ? 1 : 0;
    minAngle = Math.min(minAngle, p.angle);
    maxAngle = Math.max(maxAngle, p.angle);
  }
  assert(flips > 900 && flips < 1100, `${flips} of 2000 flipped`);
  assert(minAngle < -0.17 && maxAngle > 0.17, `angles ${minAngle}..${maxAngle}`);
  // goldens: these bits in Deno and in Bun (no Math.sin/cos/log anywhere in the draws or the matrix)
  const p = fl.data.drawAffine(new fl.Generator(3), w, h, crop);
  assertEquals(p, {
    scale: 0.9368649959564209,
    angle: 0.05131047973823018,
    flip: false,
    centerX: 37.10384937881844,
    centerY: 37.13116841809267,
  });
  assertEquals(
    Array.from(fl.data.affineMatrix(p, crop)).map((v) => v.toPrecision(17)),
    AFFINE_GOLDEN,
  );
  assertThrows(() => fl.data.drawAffine(gen, w, h, crop, { degrees: 60 }), "degrees must be in [0, 45]");
  assertThrows(() => fl.data.drawAffine(gen, w, h, crop, { scale: [1.2, 1.1] }), "0 < min <= max");
  assertThrows(() => fl.data.drawAffine(gen, w, h, crop, { flipProbability: 2 }), "flipProbability");
});

/** affineMatrix of drawAffine(new Generator(3), 80, 72, 64), to 17 digits (Deno and Bun alike). */
const AFFINE_GOLDEN = [
  "1.0659848648739356",
  "-0.054744246162659889",
  "0.0000000000000000",
  "0.0000000000000000",
  "0.054744246162659889",
  "1.0659848648739356",
  "0.0000000000000000",
  "0.0000000000000000",
  "1.8008823811656856",
  "5.2770889286874860",
  "1.0000000000000000",
  "0.0000000000000000",
];

test("warpBatch: shears, zooms, mirrors, quarter turns and out-of-image samples against a float64 bilinear resampler", async () => {
  // dyadic maps (exact in fixed point): the reference's source points are the kernel's, to the bit
  const images = [
    smooth(40, 30, 0.3),
    rough(33, 47, 5),
    smooth(40, 30, 1.1),
    rough(33, 47, 6),
    smooth(36, 36, 2),
  ];
  const mats = [
    mat(0.875, 0.25, 3.5, -0.125, 1.125, 2.25),
    mat(-1.25, 0, 38.5, 0, 1.25, -3.75), // mirrored and zoomed out: the top rows fall above the image
    mat(0, 1, 2, -1, 0, 30.5), // a quarter turn: the last columns fall below the image
    mat(1, 0, 0.5, 0, 1, 0.25), // a sub-pixel shift of rough pixels
    mat(1, 0, -100, 0, 1, 0), // wholly outside: zeros
  ];
  const crop = 24;
  const out = await warp(images, { crop, matrices: mats, noiseStd: 0 });
  assertClose(out, reference(images, mats, crop), { atol: 1e-5, rtol: 0, msg: "dyadic maps" });
  // the wholly-outside image is the normalised black everywhere; the mirrored one has black rows on top
  const plane = crop * crop;
  assertClose(out.subarray(4 * 3 * plane, 4 * 3 * plane + plane), new Array(plane).fill(-MEAN[0] / STD[0]), {
    atol: 1e-6,
    rtol: 0,
  });
  assertClose(out[3 * plane], -MEAN[0] / STD[0], { atol: 1e-6, rtol: 0, msg: "mirrored image, row 0" });
});

test("warpBatch: seeded paper warps (rotations, zooms, flips) against the float64 resampler, noise against makeBatch's formula", async () => {
  const crop = 64;
  const images = [[80, 72], [72, 96], [72, 72], [90, 72], [72, 75]].map(([w, h], i) => smooth(w, h, i));
  const clean = await warp(images, { crop, generator: new fl.Generator(21), noiseStd: 0 });
  const noisy = await warp(images, { crop, generator: new fl.Generator(21), noiseStd: 0.02 });
  // the same draws on the CPU, as documented: five uniforms of drawAffine, then the noise stream
  const gen = new fl.Generator(21);
  const params = images.map((img) => {
    const p = fl.data.drawAffine(gen, img.width, img.height, crop);
    return { p, key: gen.nextStream() };
  });
  assert(params.some(({ p }) => p.flip) && params.some(({ p }) => !p.flip), "flipped and unflipped images");
  const mats = params.map(({ p }) => fl.data.affineMatrix(p, crop));
  assertClose(clean, reference(images, mats, crop), { atol: 1e-5, rtol: 0, msg: "paper warps" });
  const keys = params.map(({ key }) => key);
  const withNoise = reference(images, mats, crop, { noiseStd: 0.02, keys });
  assertClose(noisy, withNoise, { atol: 1e-5, rtol: 0, msg: "paper warps with noise" });
  // the noise alone, in gray units: the Irwin-Hall values of the CPU Threefry, per output pixel
  const plane = crop * crop;
  let sq = 0;
  for (let n = 0; n < images.length; n++) {
    for (let i = 0; i < plane; i++) {
      const o = n * 3 * plane + i;
      const got = (noisy[o] - clean[o]) * STD[0];
      const want = noiseAt(params[n].key, i, 0.02);
      if (Math.abs(got - want) > 2e-6) {
        throw new AssertionError(`noise of image ${n} pixel ${i}: ${got} vs ${want}`);
      }
      sq += want * want;
    }
  }
  const rms = Math.sqrt(sq / (images.length * plane));
  assert(rms > 0.018 && rms < 0.022, `noise rms ${rms} (std 0.02)`);
});

test("warpBatch: identity and flip warps are plain crops exactly; with makeBatch's draws it is makeBatch", async () => {
  const crop = 24, images = [rough(31, 28, 1), rough(28, 40, 2), smooth(30, 30, 3), rough(24, 24, 4)];
  // makeBatch's draws replayed: top, left, flip, noise stream per image
  const replay = new fl.Generator(3);
  const draws = images.map((img) => {
    const top = Math.floor(replay.uniform() * (img.height - crop + 1));
    const left = Math.floor(replay.uniform() * (img.width - crop + 1));
    const flip = replay.uniform() < 0.5;
    return { top, left, flip, key: replay.nextStream() };
  });
  const h = (crop - 1) / 2;
  const mats = draws.map((d) =>
    fl.data.affineMatrix({ scale: 1, angle: 0, flip: d.flip, centerX: d.left + h, centerY: d.top + h }, crop)
  );
  const out = await warp(images, { crop, matrices: mats, noiseStd: 0 });
  // the crop normalised in float32 arithmetic, as the kernel does: equal to the bit
  const plane = crop * crop, f = Math.fround;
  let mismatches = 0;
  images.forEach((img, n) => {
    const d = draws[n];
    for (let y = 0; y < crop; y++) {
      for (let x = 0; x < crop; x++) {
        const g = img.data[(d.top + y) * img.width + d.left + (d.flip ? crop - 1 - x : x)];
        for (let c = 0; c < 3; c++) {
          const want = f(f(g - f(MEAN[c])) * f(1 / STD[c]));
          if (out[(n * 3 + c) * plane + y * crop + x] !== want) mismatches++;
        }
      }
    }
  });
  assertEquals(mismatches, 0, "values that differ from the plain crop");
  assert(draws.some((d) => d.flip) && draws.some((d) => !d.flip), "flipped and unflipped crops");
  // makeBatch (float64 normalisation and noise) with the same generator: the same batch to float32 rounding
  const noisy = await warp(images, {
    crop,
    matrices: mats,
    noiseKeys: draws.map((d) => d.key),
    noiseStd: 0.01,
  });
  const mb = fl.data.makeBatch(images, [0, 1, 2, 3], { crop, train: true, generator: new fl.Generator(3) });
  assertClose(noisy, mb, { atol: 2e-6, rtol: 0, msg: "warpBatch with makeBatch's crops, flips and noise" });
});

test("warpBatch: deterministic for a seed; the same on both backends (1e-5) and in both runtimes (bits)", async () => {
  const crop = 64;
  const images = [rough(80, 72, 11), smooth(72, 90, 5), rough(72, 72, 12), smooth(96, 72, 6)];
  const a = await warp(images, { crop, generator: new fl.Generator(4) });
  const b = await warp(images, { crop, generator: new fl.Generator(4) });
  const c = await warp(images, { crop, generator: new fl.Generator(5) });
  assert(a.every((v, i) => v === b[i]), "same seed, same batch");
  assert(a.some((v, i) => v !== c[i]), "another seed, another batch");
  // a crop of 224 from 256-short-side images, as the full-size learners train
  const big = [smooth(256, 300, 1), rough(341, 256, 3)];
  const full = await warp(big, { crop: 224, generator: new fl.Generator(8) });
  assert(full.every(Number.isFinite), "finite values at 224");
  // tests/both.ts compares the op records between the backends (1e-4 relative) and the artifact between
  // the runtimes (bit for bit)
  opRecords["augment paper crop 64 from 72"] = [Array.from(a)];
  const sample = Array.from(full.filter((_, i) => i % 4 === 0)); // every 4th value: smaller artifacts
  opRecords["augment paper crop 224 from 256"] = [sample];
  writeArtifact("augment", { crop64: Array.from(a), crop224: sample });
});

test("stage 1's training batch: basic is makeBatch to the bit, none the centre crop, paper warpBatch", async () => {
  const crop = 24, images = [rough(31, 28, 1), rough(28, 40, 2), smooth(30, 30, 3)], idx = [2, 0, 1, 0];
  const batch = (augment: fl.data.AugmentMode) =>
    trainingBatch(images, idx, { augment, crop, generator: new fl.Generator(3), noiseStd: 0.01 });
  const [basic, none, paper] = [batch("basic"), batch("none"), batch("paper")];
  const mb = fl.data.makeBatch(images, idx, { crop, train: true, generator: new fl.Generator(3) });
  assert(basic instanceof Float32Array && basic.every((v, i) => v === mb[i]), "basic = makeBatch");
  const centre = fl.data.makeBatch(images, idx, { crop, train: false });
  assert(none instanceof Float32Array && none.every((v, i) => v === centre[i]), "none = centre crop");
  assert(paper instanceof fl.Tensor, "paper gives a device tensor");
  assertEquals(paper.shape, [4, 3, crop, crop]);
  const direct = fl.data.warpBatch(images, idx, { crop, generator: new fl.Generator(3), noiseStd: 0.01 });
  const [p, d] = [await paper.toArray(), await direct.toArray()];
  paper.dispose();
  direct.dispose();
  assert(p.every((v, i) => v === d[i]), "paper = warpBatch");
  assert(p.some((v, i) => Math.abs(v - mb[i]) > 0.1), "paper differs from basic");
});

test("trainStage1 with augment paper: trains, resumes to the uninterrupted run's weights exactly, refuses another augment", async () => {
  const rng = new Rng(17);
  const images = Array.from({ length: 20 }, (_, i) => (i % 2 ? smooth(40, 44, i) : rough(44, 40, i)));
  const labels = images.map(() => rng.int(4));
  const set = {
    train: { images: images.slice(0, 16), labels: labels.slice(0, 16) },
    val: { images: images.slice(16), labels: labels.slice(16) },
  };
  const common = { ...set, epochs: 2, batchSize: 8, crop: 32, seed: 5, augment: "paper" as const };
  const make = () => fl.models.resnet152({ numClasses: 4, scale: "tiny", generator: new fl.Generator(2) });
  const weights = async (m: fl.nn.Module) => {
    const out: number[] = [];
    for (const t of Object.values(m.stateDict())) {
      out.push(...(t.dtype === "int32" ? await t.toInt32Array() : await t.toArray()));
    }
    return out;
  };
  const before = fl.liveTensorCount();
  const fullModel = make();
  const full = await flannel.trainStage1({ ...common, model: fullModel });
  assertEquals(full.history.length, 2);
  assert(full.history.every((h) => Number.isFinite(h.trainLoss) && h.trainLoss > 0), "finite losses");
  const ckpt = join(tmp, "paper.safetensors");
  const partModel = make();
  await flannel.trainStage1({ ...common, model: partModel, checkpointPath: ckpt, stopAfterEpoch: 1 });
  const mismatch = make();
  await assertRejects(
    () =>
      flannel.trainStage1({
        ...common,
        augment: "basic",
        model: mismatch,
        checkpointPath: ckpt,
        resume: true,
      }),
    /trained with augment paper, this run has basic/,
  );
  mismatch.dispose();
  const resumedModel = make();
  await flannel.trainStage1({ ...common, model: resumedModel, checkpointPath: ckpt, resume: true });
  const [w1, w2] = [await weights(fullModel), await weights(resumedModel)];
  assert(
    w1.length > 1000 && w1.every((v, i) => v === w2[i]),
    "resumed weights equal the uninterrupted run's",
  );
  // the augmentation changes what is learnt: basic from the same start ends elsewhere
  const basicModel = make();
  await flannel.trainStage1({ ...common, augment: "basic", model: basicModel });
  const w3 = await weights(basicModel);
  assert(w1.some((v, i) => v !== w3[i]), "paper and basic train differently");
  for (const m of [fullModel, partModel, resumedModel, basicModel]) m.dispose();
  assertEquals(fl.liveTensorCount(), before, "live tensors after the runs");
});

test("bad inputs: sizes, crops, generators, matrices and unknown augment modes give clear errors", async () => {
  const img = smooth(40, 30, 0);
  const gen = new fl.Generator(1);
  assertThrows(
    () =>
      fl.data.warpBatch([{ width: 40, height: 30, data: new Float32Array(100) }], [0], {
        crop: 16,
        generator: gen,
      }),
    "image 0 is said to be 40x30 but holds 100 values",
  );
  assertThrows(
    () => fl.data.warpBatch([img], [0], { crop: 31, generator: gen }),
    "image 0 is 40x30, smaller than the crop 31",
  );
  assertThrows(
    () => fl.data.warpBatch([img], [1], { crop: 16, generator: gen }),
    "no image at index 1 (1 images)",
  );
  assertThrows(() => fl.data.warpBatch([img], [0], { crop: 16 }), "a random warp needs a generator");
  assertThrows(
    () => fl.data.warpBatch([img], [0], { crop: 16, matrices: [mat(1, 0, 0, 0, 1, 0)] }),
    "noiseKeys when noiseStd > 0",
  );
  assertThrows(
    () => fl.data.warpBatch([img], [0], { crop: 16, matrices: [], noiseStd: 0 }),
    "0 matrices for 1 images",
  );
  assertThrows(
    () => fl.data.warpBatch([img], [0], { crop: 16, matrices: [mat(NaN, 0, 0, 0, 1, 0)], noiseStd: 0 }),
    "matrix 0 is not a finite mat3",
  );
  assertThrows(
    () => fl.data.warpBatch([img], [0], { crop: 0, generator: gen }),
    "crop must be a positive integer",
  );
  assertThrows(
    () => fl.data.warpBatch([img], [0], { crop: 16, generator: gen, std: [1, 2] }),
    "mean and std need 3 values",
  );
  assertThrows(
    () => fl.data.affineMatrix({ scale: 1, angle: 1, flip: false, centerX: 0, centerY: 0 }, 8),
    "angle must be within pi/4",
  );
  assertThrows(
    () => fl.data.checkAugmentMode("sideways", "x"),
    'x must be paper, basic or none, got "sideways"',
  );
  assertEquals(fl.data.checkAugmentMode("paper"), "paper");
  const model = fl.models.resnet152({ numClasses: 4, scale: "tiny" });
  await assertRejects(
    () =>
      flannel.trainStage1({
        model,
        train: { images: [img, img], labels: [0, 1] },
        val: { images: [img], labels: [0] },
        epochs: 1,
        crop: 16,
        augment: "sideways" as fl.data.AugmentMode,
      }),
    'stage 1: augment must be paper, basic or none, got "sideways"',
  );
  model.dispose();
  // the command line refuses it before it loads anything
  const args = isBun ? ["run", "cli.ts"] : ["run", "-A", "cli.ts"];
  let stderr = "";
  try {
    execFileSync(
      process.execPath,
      [...args, "stage1", "--data", join(tmp, "none"), "--out", join(tmp, "out"), "--augment", "sideways"],
      {
        cwd: repo,
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, NO_COLOR: "1" },
      },
    );
  } catch (err) {
    stderr = String((err as { stderr?: string }).stderr);
  }
  assert(stderr.includes('stage1: --augment must be paper, basic or none, got "sideways"'), stderr);
  const help = execFileSync(process.execPath, [...args, "stage1", "--help"], { cwd: repo, encoding: "utf8" });
  assert(help.includes("--augment MODE"), "--augment in the help");
});

test.afterAll(() => {
  rmSync(tmp, { recursive: true, force: true });
});
