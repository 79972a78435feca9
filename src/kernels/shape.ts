// Shape arithmetic shared by the kernels: broadcasting, strides, axis checks.

/** Highest tensor rank the broadcasting and reduction kernels support. */
export const MAX_RANK = 6;

/**
 * A size given once for both spatial dims or as `[h, w]`, as PyTorch's `_pair` arguments (kernel size,
 * stride, padding, dilation, output size).
 */
export type Pair = number | [number, number];

/** The NumPy broadcast of two shapes; throws naming `op` and the first incompatible dim. */
export function broadcastShapes(a: readonly number[], b: readonly number[], op = "op"): number[] {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1, db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(
        `${op}: shapes [${a.join(", ")}] and [${b.join(", ")}] do not broadcast (dim ${i}: ${da} vs ${db})`,
      );
    }
    out.push(da === 1 ? db : da);
  }
  return out;
}

/** Row-major strides of `shape` padded on the left to `rank`, with 0 where a dim of 1 is broadcast. */
export function broadcastStrides(
  shape: readonly number[],
  outShape: readonly number[],
  rank = MAX_RANK,
): number[] {
  const strides = new Array(rank).fill(0);
  let stride = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    const d = rank - (shape.length - i);
    strides[d] = shape[i] === 1 && outShape[outShape.length - (shape.length - i)] !== 1 ? 0 : stride;
    stride *= shape[i];
  }
  return strides;
}

/** Left-pads a shape with ones to `rank`. */
export function padShape(shape: readonly number[], rank = MAX_RANK): number[] {
  if (shape.length > rank) throw new Error(`rank ${shape.length} exceeds the supported ${rank}`);
  return [...new Array(rank - shape.length).fill(1), ...shape];
}

/** Resolves a possibly negative axis. */
export function normAxis(dim: number, rank: number, op: string): number {
  if (!Number.isInteger(dim) || dim < -rank || dim >= rank) {
    throw new Error(`${op}: dim ${dim} is out of range for a tensor of rank ${rank}`);
  }
  return dim < 0 ? dim + rank : dim;
}

/** Whether two shapes are equal dim for dim. */
export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** A shape as `[2, 3]`, for error messages. */
export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

const dims = [...Array(MAX_RANK).keys()];

/** Uniform fields of a broadcasting kernel: element count, output shape, one stride set per input. */
export const broadcastUniforms = (inputs: string[]) => [
  { name: "n", type: "u32" as const },
  ...dims.map((d) => ({ name: `s${d}`, type: "u32" as const })),
  ...inputs.flatMap((x) => dims.map((d) => ({ name: `${x}t${d}`, type: "u32" as const }))),
];

/** WGSL that maps the output index `i` to offsets `o<input>` of each broadcast input. */
export const broadcastDecode = (inputs: string[]) =>
  `var rem = i; ${inputs.map((x) => `var o${x} = 0u;`).join(" ")}
  ${
    dims.slice().reverse().map((d) =>
      `{ let c = rem % u.s${d}; rem = rem / u.s${d}; ${
        inputs.map((x) => `o${x} += c * u.${x}t${d};`).join(" ")
      } }`
    ).join("\n  ")
  }`;

/** Uniform values matching `broadcastUniforms` for `inputs` broadcast to `outShape`. */
export function broadcastParams(outShape: number[], inputShapes: readonly number[][]): number[] {
  const n = outShape.reduce((a, b) => a * b, 1);
  return [n, ...padShape(outShape), ...inputShapes.flatMap((s) => broadcastStrides(s, outShape))];
}
