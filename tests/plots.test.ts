// src/train/plots.ts: the canvas primitives pixel by pixel, each figure decoded back from its PNG and checked
// where its geometry says a bar, cell, curve or hot spot must be, and each input check.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import UPNG from "upng-js";
import { assert, assertEquals, assertThrows, test } from "./harness.ts";
import {
  barChartWithErrors,
  BLACK,
  Canvas,
  type Color,
  confusionMatrixChart,
  heatmapOverlay,
  imageGrid,
  lineChart,
  measureText,
  niceTicks,
  PALETTE,
  type RgbaImage,
  savePNG,
  wrapText,
} from "../src/train/plots.ts";

function decode(png: Uint8Array): RgbaImage {
  const image = UPNG.decode(png.slice().buffer);
  return { width: image.width, height: image.height, data: new Uint8Array(UPNG.toRGBA8(image)[0]) };
}

function rgbAt(image: RgbaImage, x: number, y: number): [number, number, number] {
  const i = (y * image.width + x) * 4;
  return [image.data[i], image.data[i + 1], image.data[i + 2]];
}

const same = (a: readonly number[], b: Color) => a[0] === b[0] && a[1] === b[1] && a[2] === b[2];
const isBlack = (image: RgbaImage, x: number, y: number) => same(rgbAt(image, x, y), BLACK);
const luma = ([r, g, b]: readonly number[]) => 0.299 * r + 0.587 * g + 0.114 * b;

/**
 * The plot frame: the first and last rows holding a black run of at least `minRun` pixels (its top and
 * bottom edges; tick marks, glyph strokes and error-bar caps are all shorter), and the outermost columns of
 * that run that are black all the way down (its left and right edges; the run itself also holds the tick
 * mark of a y tick on the frame's top row).
 */
function findFrame(
  image: RgbaImage,
  minRun = 200,
): { top: number; bottom: number; left: number; right: number } {
  const rows: { y: number; start: number; end: number }[] = [];
  for (let y = 0; y < image.height; y++) {
    let start = -1;
    for (let x = 0; x <= image.width; x++) {
      const black = x < image.width && isBlack(image, x, y);
      if (black && start < 0) start = x;
      if (!black && start >= 0) {
        if (x - start >= minRun) rows.push({ y, start, end: x - 1 });
        start = -1;
      }
    }
  }
  assert(rows.length >= 2, `no frame found (${rows.length} long black rows)`);
  const top = rows[0].y, bottom = rows[rows.length - 1].y;
  const edges: number[] = [];
  for (let x = rows[0].start; x <= rows[0].end; x++) {
    let down = top;
    while (down <= bottom && isBlack(image, x, down)) down++;
    if (down > bottom) edges.push(x);
  }
  return { top, bottom, left: edges[0], right: edges[edges.length - 1] };
}

test("Canvas.toPNG decodes back to its size and pixels", () => {
  const canvas = new Canvas(37, 23);
  canvas.fillRect(3, 4, 5, 6, [10, 200, 30]);
  const image = decode(canvas.toPNG());
  assertEquals([image.width, image.height], [37, 23]);
  assertEquals(rgbAt(image, 3, 4), [10, 200, 30]);
  assertEquals(rgbAt(image, 7, 9), [10, 200, 30]);
  assertEquals(rgbAt(image, 8, 9), [255, 255, 255], "fillRect stops at x + width");
  assertEquals(rgbAt(image, 7, 10), [255, 255, 255], "fillRect stops at y + height");
  assertEquals(image.data[3], 255, "opaque");
});

test("text draws the glyph of A inside its box and nothing for a space", () => {
  const canvas = new Canvas(40, 30);
  const box = canvas.text(5, 6, "A", BLACK);
  assertEquals(box, { x: 5, y: 6, width: 10, height: 16 });
  let inked = 0;
  for (let y = 0; y < canvas.height; y++) {
    for (let x = 0; x < canvas.width; x++) {
      const [r] = canvas.pixel(x, y);
      const inside = x >= box.x && x < box.x + box.width && y >= box.y && y < box.y + box.height;
      if (r !== 255) {
        assert(inside, `ink at (${x}, ${y}) outside the box`);
        inked++;
      }
    }
  }
  // "A" is 18 font pixels (columns 0x7e 0x11 0x11 0x11 0x7e), each a 2 x 2 block at scale 2
  assertEquals(inked, 18 * 4);
  // its top row is the crossbar's apex: font columns 1..3, not 0 or 4
  assertEquals(canvas.pixel(7, 6), [0, 0, 0, 255]);
  assertEquals(canvas.pixel(12, 7), [0, 0, 0, 255]);
  assertEquals(canvas.pixel(5, 6), [255, 255, 255, 255]);
  assertEquals(canvas.pixel(13, 6), [255, 255, 255, 255]);

  const blank = new Canvas(20, 20);
  blank.text(2, 2, " ", BLACK);
  assert(blank.data.every((v) => v === 255), "a space inks nothing");
});

test("rotated text fills an upright box; measureText and wrapText agree with the 6-pixel advance", () => {
  assertEquals(measureText("AB"), { width: 22, height: 16 });
  assertEquals(measureText(""), { width: 0, height: 16 });
  const canvas = new Canvas(40, 40);
  const box = canvas.text(20, 30, "AB", BLACK, { rotate: 90, align: "center", valign: "bottom" });
  assertEquals(box, { x: 12, y: 8, width: 16, height: 22 });
  let inked = 0;
  for (let y = 0; y < 40; y++) {
    for (let x = 0; x < 40; x++) {
      if (canvas.pixel(x, y)[0] === 255) continue;
      inked++;
      assert(x >= 12 && x < 28 && y >= 8 && y < 30, `ink at (${x}, ${y}) outside the rotated box`);
    }
  }
  assert(inked > 0, "rotated text inks something");
  // 10 characters fit 118 pixels (10 * 12 - 2)
  assertEquals(wrapText("FLANNEL w/o focal + sampling", 118), ["FLANNEL", "w/o focal", "+ sampling"]);
  assertEquals(wrapText("abcdefghijkl", 58), ["abcde", "fghij", "kl"]);
});

test("niceTicks picks round steps with matching decimals", () => {
  assertEquals(niceTicks(0, 1), {
    values: [0, 0.2, 0.4, 0.6, 0.8, 1],
    labels: ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"],
  });
  assertEquals(niceTicks(0, 1810).values, [0, 500, 1000, 1500]);
  assertEquals(niceTicks(0.61, 2.2).labels, ["0.75", "1.00", "1.25", "1.50", "1.75", "2.00"]);
  assertEquals(niceTicks(-1, 1, 5).labels, ["-1.0", "-0.5", "0.0", "0.5", "1.0"]);
  assertThrows(() => niceTicks(1, 1), "min < max");
});

test("a bar of height 0.5 in [0, 1] fills the rows from the frame's middle to its bottom", () => {
  const image = decode(barChartWithErrors({
    title: "F1",
    yLabel: "F1",
    categories: ["half", "full"],
    means: [0.5, 1],
    stds: [0, 0],
    yRange: [0, 1],
  }));
  const frame = findFrame(image);
  const barRow = frame.bottom - 1;
  const barColumns: number[] = [];
  for (let x = frame.left; x <= frame.right; x++) {
    if (same(rgbAt(image, x, barRow), PALETTE[0])) barColumns.push(x);
  }
  assert(barColumns.length > 0, "no bar above the x axis");
  const halfBar = barColumns[0] + 3, fullBar = barColumns[barColumns.length - 1] - 3;
  const filledRows = (x: number) => {
    const rows: number[] = [];
    for (let y = 0; y < image.height; y++) if (same(rgbAt(image, x, y), PALETTE[0])) rows.push(y);
    return rows;
  };
  // Data 1 and 0 sit on the centres of the frame's top and bottom rows, so 0.5 is halfway between them.
  const halfTop = Math.floor((frame.top + frame.bottom + 1) / 2);
  const half = filledRows(halfBar), full = filledRows(fullBar);
  assertEquals([half[0], half[half.length - 1], half.length], [
    halfTop,
    frame.bottom - 1,
    frame.bottom - halfTop,
  ]);
  assertEquals(
    [full[0], full[full.length - 1]],
    [frame.top + 1, frame.bottom - 1],
    "a bar of 1 reaches the top",
  );
  assert(full.length === frame.bottom - frame.top - 1, "bars are solid");
});

test("error bars span mean +- std and a highlighted bar takes the second colour", () => {
  const image = decode(barChartWithErrors({
    title: "",
    yLabel: "",
    categories: ["a", "b"],
    means: [0.5, 0.5],
    stds: [0.25, 0],
    yRange: [0, 1],
    highlight: 1,
  }));
  const frame = findFrame(image);
  const slot = (frame.right - frame.left + 1) / 2;
  const centre = Math.floor(frame.left + slot / 2);
  const rowOf = (v: number) => Math.floor(frame.bottom + 0.5 - v * (frame.bottom - frame.top));
  assert(isBlack(image, centre, rowOf(0.7)), "error bar above the mean");
  assert(isBlack(image, centre, rowOf(0.3)), "error bar below the mean");
  // 4 pixels past the cap at 0.75, below the printed mean
  assert(!isBlack(image, centre, rowOf(0.76)), "nothing past mean + std");
  assert(same(rgbAt(image, Math.floor(frame.left + 1.5 * slot) + 3, rowOf(0.25)), PALETTE[1]), "highlight");
});

test("lineChart draws a series where its data maps inside the frame", () => {
  const png = lineChart({
    title: "flat",
    xLabel: "x",
    yLabel: "y",
    series: [{ name: "half", x: [0, 1], y: [0.5, 0.5] }],
    xRange: [0, 1],
    yRange: [0, 1],
    diagonal: true,
  });
  const image = decode(png);
  assertEquals([image.width, image.height], [720, 560]);
  const frame = findFrame(image);
  const middleRow = Math.floor((frame.top + frame.bottom + 1) / 2);
  const middleColumn = Math.floor((frame.left + frame.right) / 2);
  assert(same(rgbAt(image, middleColumn, middleRow), PALETTE[0]), "y = 0.5 crosses the frame's middle");
  // (10 pixels right of the x = 0.5 grid line)
  assert(same(rgbAt(image, middleColumn + 10, frame.top + 20), [255, 255, 255]), "nothing drawn near y = 1");
});

test("confusion matrix cells darken as their value grows", () => {
  const matrix = [[5, 1, 0], [2, 9, 3], [0, 4, 7]];
  const image = decode(
    confusionMatrixChart({ title: "cm", classNames: ["covid", "viral", "normal"], matrix }),
  );
  const frame = findFrame(image);
  const cell = (frame.right - frame.left + 1) / 3;
  const cells = matrix.flatMap((row, i) =>
    row.map((value, j) => ({
      value,
      luma: luma(rgbAt(image, Math.floor(frame.left + j * cell) + 4, Math.floor(frame.top + i * cell) + 4)),
    }))
  ).sort((a, b) => a.value - b.value);
  for (let k = 1; k < cells.length; k++) {
    const [lower, higher] = [cells[k - 1], cells[k]];
    if (higher.value === lower.value) assertEquals(higher.luma, lower.luma, `equal values ${higher.value}`);
    else assert(higher.luma < lower.luma, `${higher.value} is not darker than ${lower.value}`);
  }
  // normalised, a row's share sets the colour: 1 of 2 (0.5) is lighter than 10 of 10 (1.0) but darker than 0
  const shares = decode(confusionMatrixChart({
    title: "",
    classNames: ["a", "b"],
    matrix: [[1, 1], [0, 10]],
    normalize: true,
  }));
  const f = findFrame(shares, 150);
  const half = (f.right - f.left + 1) / 2;
  const at = (i: number, j: number) =>
    luma(rgbAt(shares, Math.floor(f.left + j * half) + 4, Math.floor(f.top + i * half) + 4));
  assert(at(1, 1) < at(0, 0) && at(0, 0) < at(1, 0), "row shares order the colours");
});

test("heatmap overlay is reddish at the hot spot and keeps the gray where the map is cold", () => {
  const size = 32;
  const gray = { width: size, height: size, data: new Float32Array(size * size).fill(0.5) };
  const heat = { width: 4, height: 4, data: new Float32Array(16) };
  heat.data[0] = 3; // hottest in the top-left corner; the range is rescaled to [0, 1]
  const image = decode(heatmapOverlay({ gray, heat }));
  assertEquals([image.width, image.height], [size, size]);
  const [r, g, b] = rgbAt(image, 0, 0);
  assert(r > g + 40 && r > b + 40, `hot spot (${r}, ${g}, ${b}) is not reddish`);
  const cold = rgbAt(image, size - 1, size - 1);
  assert(cold.every((c) => Math.abs(c - 128) <= 2), `cold spot ${cold} is not the X-ray's gray 128`);
  const none = decode(heatmapOverlay({ gray, heat, alpha: 0 }));
  assertEquals(rgbAt(none, 0, 0), [128, 128, 128], "alpha 0 leaves the X-ray");
});

test("imageGrid tiles PNG bytes and RGBA images unscaled when they fit", () => {
  const red = new Canvas(10, 10, [255, 0, 0]);
  const blue = new Canvas(10, 10, [0, 0, 255]).toPNG();
  const image = decode(imageGrid([red, blue], ["red", "blue"]));
  let reds = 0, blues = 0;
  for (let y = 0; y < image.height; y++) {
    for (let x = 0; x < image.width; x++) {
      const rgb = rgbAt(image, x, y);
      if (same(rgb, [255, 0, 0])) reds++;
      if (same(rgb, [0, 0, 255])) blues++;
    }
  }
  assertEquals([reds, blues], [100, 100]);
  // a large image is shrunk to the tile: a 64-pixel red square in a 16-pixel tile is 256 red pixels
  const shrunk = decode(imageGrid([new Canvas(64, 64, [255, 0, 0])], ["big"], { tileSize: 16 }));
  let shrunkReds = 0;
  for (let p = 0; p < shrunk.data.length; p += 4) {
    if (shrunk.data[p] === 255 && shrunk.data[p + 1] === 0 && shrunk.data[p + 2] === 0) shrunkReds++;
  }
  assertEquals(shrunkReds, 256);
});

test("savePNG writes the bytes", () => {
  const dir = mkdtempSync(join(tmpdir(), "plots-"));
  try {
    const png = new Canvas(4, 4).toPNG();
    const path = join(dir, "figs", "a.png");
    savePNG(path, png);
    assertEquals(Array.from(readFileSync(path)), Array.from(png));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("bad inputs throw errors that name the problem", () => {
  const bars = { title: "", yLabel: "", categories: ["a", "b"], means: [0.5, 0.6], stds: [0.1, 0.1] };
  assertThrows(() => barChartWithErrors({ ...bars, stds: [0.1, 0.1, 0.1] }), "2 means but 3 stds");
  assertThrows(() => barChartWithErrors({ ...bars, means: [0.5] }), "1 means for 2 categories");
  assertThrows(() => barChartWithErrors({ ...bars, categories: [] }), "no categories");
  assertThrows(() => barChartWithErrors({ ...bars, means: [0.5, NaN] }), "means[1] is NaN");
  assertThrows(() => barChartWithErrors({ ...bars, stds: [0.1, -1] }), "stds[1] is -1, negative");
  assertThrows(() => barChartWithErrors({ ...bars, highlight: 2 }), "highlight 2 is not a bar index");
  assertThrows(() => barChartWithErrors({ ...bars, yRange: [1, 0] }), "yRange must be finite with min < max");

  const line = { title: "", xLabel: "", yLabel: "" };
  assertThrows(() => lineChart({ ...line, series: [] }), "no series");
  assertThrows(
    () => lineChart({ ...line, series: [{ name: "roc", x: [], y: [] }] }),
    'series 0 ("roc") is empty',
  );
  assertThrows(
    () => lineChart({ ...line, series: [{ name: "pr", x: [0, 1], y: [1] }] }),
    'series 0 ("pr") has 2 x but 1 y',
  );
  assertThrows(
    () => lineChart({ ...line, series: [{ name: "roc", x: [0, NaN], y: [0, 1] }] }),
    'series 0 ("roc") x[1] is NaN',
  );
  const sixteen = Array.from({ length: 16 }, (_, k) => ({ name: `s${k}`, x: [0], y: [0] }));
  assertThrows(
    () => lineChart({ ...line, series: sixteen }),
    "16 series, but only 15 have distinct colours",
  );

  const names = ["a", "b"];
  assertThrows(
    () => confusionMatrixChart({ title: "", classNames: names, matrix: [[1, 2], [3]] }),
    "not square: row 1 has 1 entries, not 2",
  );
  assertThrows(() => confusionMatrixChart({ title: "", classNames: names, matrix: [] }), "empty matrix");
  assertThrows(
    () => confusionMatrixChart({ title: "", classNames: ["a"], matrix: [[1, 2], [3, 4]] }),
    "1 class names for a 2 x 2 matrix",
  );
  assertThrows(
    () => confusionMatrixChart({ title: "", classNames: names, matrix: [[1, -2], [3, 4]] }),
    "matrix[0][1] is -2, negative",
  );

  const gray = { width: 2, height: 2, data: new Float32Array(4) };
  assertThrows(
    () => heatmapOverlay({ gray, heat: { width: 3, height: 3, data: new Float32Array(4) } }),
    "heat has 4 values for 3 x 3",
  );
  assertThrows(() => heatmapOverlay({ gray, heat: gray, alpha: 2 }), "alpha 2 is outside [0, 1]");
  assertThrows(() => imageGrid([new Canvas(2, 2)], ["a", "b"]), "1 images but 2 labels");
  assertThrows(() => imageGrid([], []), "no images");
  assertThrows(() => new Canvas(0, 3), "size must be positive integers");
});
