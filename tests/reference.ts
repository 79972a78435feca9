// Float64 CPU reference implementations of every op in `fl.F`, central finite differences, and a seeded
// CPU PRNG for test inputs. Plain TypeScript on Float64Array with a shape: no device, no library code.

/** A float64 array with a row-major shape. */
export interface Arr {
  shape: number[];
  data: Float64Array;
}

export function size(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function arr(data: ArrayLike<number>, shape: number[] = [data.length]): Arr {
  if (size(shape) !== data.length) {
    throw new Error(`arr: shape [${shape}] does not hold ${data.length} values`);
  }
  return { shape: [...shape], data: Float64Array.from(data) };
}

export function fullArr(shape: number[], value: number): Arr {
  return { shape: [...shape], data: new Float64Array(size(shape)).fill(value) };
}

// ---------------------------------------------------------------------------------------------------------
// PRNG

/** mulberry32: a tiny seeded 32-bit generator; returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Seeded test inputs; every value is exactly representable in float32 (so device and CPU see the same). */
export class Rng {
  private next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  uniform(): number {
    return this.next();
  }
  normal(): number {
    const u = 1 - this.next(), v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  /** Standard normal times `scale`, rounded to float32. */
  randn(shape: number[], scale = 1): Arr {
    const a = fullArr(shape, 0);
    for (let i = 0; i < a.data.length; i++) a.data[i] = Math.fround(this.normal() * scale);
    return a;
  }
  /** Uniform on [lo, hi), rounded to float32. */
  rand(shape: number[], lo = 0, hi = 1): Arr {
    const a = fullArr(shape, 0);
    for (let i = 0; i < a.data.length; i++) a.data[i] = Math.fround(lo + (hi - lo) * this.next());
    return a;
  }
  /** Normal values pushed at least `gap` away from 0 (for ops with a kink or a pole there). */
  randnAway(shape: number[], gap = 0.1): Arr {
    const a = this.randn(shape);
    for (let i = 0; i < a.data.length; i++) {
      const x = a.data[i];
      if (Math.abs(x) < gap) a.data[i] = Math.fround(x < 0 ? x - gap : x + gap);
    }
    return a;
  }
  ints(n: number, hi: number): number[] {
    return Array.from({ length: n }, () => this.int(hi));
  }
}

// ---------------------------------------------------------------------------------------------------------
// Shapes

function stridesOf(shape: readonly number[]): number[] {
  const s = new Array(shape.length);
  for (let d = shape.length - 1, st = 1; d >= 0; d--) {
    s[d] = st;
    st *= shape[d];
  }
  return s;
}

export function broadcastShape(a: readonly number[], b: readonly number[]): number[] {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1, db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new Error(`reference: [${a}] and [${b}] do not broadcast`);
    out.push(da === 1 ? db : da);
  }
  return out;
}

/** Offset into `shape` (broadcast to `out`) of each flat index of `out`. */
function broadcastIndex(shape: readonly number[], out: readonly number[]): Int32Array {
  const n = size(out), idx = new Int32Array(n);
  const st = stridesOf(shape), lead = out.length - shape.length;
  for (let i = 0; i < n; i++) {
    let rem = i, off = 0;
    for (let d = out.length - 1; d >= 0; d--) {
      const c = rem % out[d];
      rem = Math.floor(rem / out[d]);
      const sd = d - lead;
      if (sd >= 0 && shape[sd] !== 1) off += c * st[sd];
    }
    idx[i] = off;
  }
  return idx;
}

function normDim(dim: number, rank: number): number {
  if (!Number.isInteger(dim) || dim < -rank || dim >= rank) {
    throw new Error(`reference: dim ${dim} out of range`);
  }
  return dim < 0 ? dim + rank : dim;
}

// ---------------------------------------------------------------------------------------------------------
// Element-wise

function binary(a: Arr, b: Arr, f: (x: number, y: number) => number): Arr {
  const shape = broadcastShape(a.shape, b.shape);
  const ia = broadcastIndex(a.shape, shape), ib = broadcastIndex(b.shape, shape);
  const out = fullArr(shape, 0);
  for (let i = 0; i < out.data.length; i++) out.data[i] = f(a.data[ia[i]], b.data[ib[i]]);
  return out;
}

export const add = (a: Arr, b: Arr): Arr => binary(a, b, (x, y) => x + y);
export const sub = (a: Arr, b: Arr): Arr => binary(a, b, (x, y) => x - y);
export const mul = (a: Arr, b: Arr): Arr => binary(a, b, (x, y) => x * y);
export const div = (a: Arr, b: Arr): Arr => binary(a, b, (x, y) => x / y);

export function map(a: Arr, f: (x: number) => number): Arr {
  return { shape: [...a.shape], data: a.data.map(f) };
}

export const relu = (a: Arr): Arr => map(a, (x) => Math.max(x, 0));
export const tanh = (a: Arr): Arr => map(a, Math.tanh);
export const sigmoid = (a: Arr): Arr => map(a, (x) => 1 / (1 + Math.exp(-x)));
export const silu = (a: Arr): Arr => map(a, (x) => x / (1 + Math.exp(-x)));
export const abs = (a: Arr): Arr => map(a, Math.abs);
export const exp = (a: Arr): Arr => map(a, Math.exp);
export const log = (a: Arr): Arr => map(a, Math.log);
export const neg = (a: Arr): Arr => map(a, (x) => -x);
export const sqrt = (a: Arr): Arr => map(a, Math.sqrt);
export const scale = (a: Arr, alpha: number): Arr => map(a, (x) => x * alpha);
export const addScalar = (a: Arr, alpha: number): Arr => map(a, (x) => x + alpha);

// ---------------------------------------------------------------------------------------------------------
// Reductions

function reduce(x: Arr, dim: number | number[] | undefined, keepDim: boolean, mean: boolean): Arr {
  const rank = x.shape.length;
  const dims = dim === undefined
    ? x.shape.map((_, i) => i)
    : (Array.isArray(dim) ? dim : [dim]).map((d) => normDim(d, rank));
  const reduced = x.shape.map((_, i) => dims.includes(i));
  const keptShape = x.shape.map((s, i) => (reduced[i] ? 1 : s));
  const out = fullArr(keptShape, 0);
  const outSt = stridesOf(keptShape);
  let count = 1;
  x.shape.forEach((s, i) => reduced[i] && (count *= s));
  for (let i = 0; i < x.data.length; i++) {
    let rem = i, off = 0;
    for (let d = rank - 1; d >= 0; d--) {
      const c = rem % x.shape[d];
      rem = Math.floor(rem / x.shape[d]);
      if (!reduced[d]) off += c * outSt[d];
    }
    out.data[off] += x.data[i];
  }
  if (mean) { for (let i = 0; i < out.data.length; i++) out.data[i] /= count; }
  out.shape = keepDim ? keptShape : x.shape.filter((_, i) => !reduced[i]);
  return out;
}

export const sum = (x: Arr, dim?: number | number[], keepDim = false): Arr => reduce(x, dim, keepDim, false);
export const mean = (x: Arr, dim?: number | number[], keepDim = false): Arr => reduce(x, dim, keepDim, true);

// ---------------------------------------------------------------------------------------------------------
// Matrix products

/** op(A) op(B); a 3-D operand is a batch, a 2-D one is shared across the other's batch. */
export function matmul(a: Arr, b: Arr, transA = false, transB = false): Arr {
  const [ar, ac] = a.shape.slice(-2), [br, bc] = b.shape.slice(-2);
  const [m, k] = transA ? [ac, ar] : [ar, ac];
  const [kb, n] = transB ? [bc, br] : [br, bc];
  if (k !== kb) throw new Error(`reference matmul: inner dims ${k} vs ${kb}`);
  const batched = a.shape.length === 3 || b.shape.length === 3;
  const batch = a.shape.length === 3 ? a.shape[0] : b.shape.length === 3 ? b.shape[0] : 1;
  const aStride = a.shape.length === 3 ? m * k : 0, bStride = b.shape.length === 3 ? k * n : 0;
  const out = fullArr(batched ? [batch, m, n] : [m, n], 0);
  // op(A) as [m, k] and op(B) transposed as [n, k], so that the inner loop runs over contiguous memory.
  const am = new Float64Array(m * k), bt = new Float64Array(n * k);
  for (let z = 0; z < batch; z++) {
    for (let r = 0; r < m; r++) {
      for (let t = 0; t < k; t++) am[r * k + t] = a.data[z * aStride + (transA ? t * m + r : r * k + t)];
    }
    for (let c = 0; c < n; c++) {
      for (let t = 0; t < k; t++) bt[c * k + t] = b.data[z * bStride + (transB ? c * k + t : t * n + c)];
    }
    for (let r = 0; r < m; r++) {
      for (let c = 0; c < n; c++) {
        let acc = 0;
        for (let t = 0, ra = r * k, cb = c * k; t < k; t++) acc += am[ra + t] * bt[cb + t];
        out.data[(z * m + r) * n + c] = acc;
      }
    }
  }
  return out;
}

/** x W^T + b with W [out, in]. */
export function linear(x: Arr, w: Arr, bias?: Arr): Arr {
  const y = matmul(x, w, false, true);
  return bias ? add(y, bias) : y;
}

// ---------------------------------------------------------------------------------------------------------
// Softmax

function alongDim(x: Arr, dim: number, f: (row: number[]) => number[]): Arr {
  const d = normDim(dim, x.shape.length);
  const n = x.shape[d];
  const inner = size(x.shape.slice(d + 1)), outer = size(x.shape.slice(0, d));
  const out = fullArr(x.shape, 0);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const base = o * n * inner + i;
      const row = Array.from({ length: n }, (_, t) => x.data[base + t * inner]);
      f(row).forEach((v, t) => (out.data[base + t * inner] = v));
    }
  }
  return out;
}

function logSumExp(row: number[]): number {
  const mx = Math.max(...row);
  let s = 0;
  for (const v of row) s += Math.exp(v - mx);
  return mx + Math.log(s);
}

export const softmax = (x: Arr, dim = -1): Arr =>
  alongDim(x, dim, (row) => {
    const lse = logSumExp(row);
    return row.map((v) => Math.exp(v - lse));
  });

export const logSoftmax = (x: Arr, dim = -1): Arr =>
  alongDim(x, dim, (row) => {
    const lse = logSumExp(row);
    return row.map((v) => v - lse);
  });

// ---------------------------------------------------------------------------------------------------------
// FLANNEL's ensemble ops

/** [B, K] -> [B, K*K], element i*K+j = f_i f_j. */
export function outer(f: Arr): Arr {
  const [b, k] = f.shape;
  const out = fullArr([b, k * k], 0);
  for (let z = 0; z < b; z++) {
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < k; j++) out.data[z * k * k + i * k + j] = f.data[z * k + i] * f.data[z * k + j];
    }
  }
  return out;
}

/** w [B, N], P [B, N, M] -> [B, M] = sum_i w[b, i] P[b, i, :]. */
export function weightedSum(w: Arr, p: Arr): Arr {
  const [b, n, m] = p.shape;
  const out = fullArr([b, m], 0);
  for (let z = 0; z < b; z++) {
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < m; j++) out.data[z * m + j] += w.data[z * n + i] * p.data[(z * n + i) * m + j];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Losses (scalar results have shape [])

export type Reduction = "mean" | "sum";

/** mean/sum over b of -alpha[y_b] (1 - p_b)^gamma log p_b, p = softmax(logits) at the target. */
export function focalLoss(
  logits: Arr,
  target: readonly number[],
  { gamma = 2, alpha, reduction = "mean" }: {
    gamma?: number;
    alpha?: readonly number[];
    reduction?: Reduction;
  } = {},
): Arr {
  const [b, m] = logits.shape;
  let total = 0;
  for (let z = 0; z < b; z++) {
    const row = Array.from(logits.data.subarray(z * m, (z + 1) * m));
    const y = target[z];
    const lp = row[y] - logSumExp(row);
    const omp = -Math.expm1(lp);
    const mod = gamma === 0 ? 1 : Math.pow(omp, gamma);
    total += -(alpha ? alpha[y] : 1) * mod * lp;
  }
  return arr([reduction === "mean" ? total / b : total], []);
}

/** Cross-entropy from logits; the weighted mean divides by the sum of the targets' weights (PyTorch). */
export function crossEntropy(
  logits: Arr,
  target: readonly number[],
  { weight, reduction = "mean" }: { weight?: readonly number[]; reduction?: Reduction } = {},
): Arr {
  const [b, m] = logits.shape;
  let total = 0, wsum = 0;
  for (let z = 0; z < b; z++) {
    const row = Array.from(logits.data.subarray(z * m, (z + 1) * m));
    const y = target[z];
    const w = weight ? weight[y] : 1;
    total += -w * (row[y] - logSumExp(row));
    wsum += w;
  }
  return arr([reduction === "mean" ? total / wsum : total], []);
}

// ---------------------------------------------------------------------------------------------------------
// Views

export function reshape(x: Arr, shape: number[]): Arr {
  const known = shape.reduce((a, d) => (d === -1 ? a : a * d), 1);
  const target = shape.map((d) => (d === -1 ? x.data.length / known : d));
  if (size(target) !== x.data.length) throw new Error(`reference reshape: [${x.shape}] -> [${shape}]`);
  return { shape: target, data: x.data.slice() };
}

export function flatten(x: Arr, startDim = 1, endDim = -1): Arr {
  const s = normDim(startDim, x.shape.length), e = normDim(endDim, x.shape.length);
  const merged = size(x.shape.slice(s, e + 1));
  return reshape(x, [...x.shape.slice(0, s), merged, ...x.shape.slice(e + 1)]);
}

// ---------------------------------------------------------------------------------------------------------
// Finite differences

/** sum(f(inputs) * R) in float64. */
export function weightedTotal(f: (xs: Arr[]) => Arr, inputs: Arr[], r: Arr): number {
  const out = f(inputs);
  if (out.data.length !== r.data.length) {
    throw new Error(`numericGrad: R has ${r.data.length} values, f ${out.data.length}`);
  }
  let s = 0;
  for (let i = 0; i < out.data.length; i++) s += out.data[i] * r.data[i];
  return s;
}

/**
 * d sum(f(inputs) * R) / d inputs[k] by central differences (step 1e-6 relative to each value's
 * magnitude) for each k in `which` (default all); the others come back as null.
 */
export function numericGrad(
  f: (xs: Arr[]) => Arr,
  inputs: Arr[],
  r: Arr,
  which: boolean[] = inputs.map(() => true),
  step = 1e-6,
): (Float64Array | null)[] {
  const xs = inputs.map((x) => ({ shape: [...x.shape], data: x.data.slice() }));
  return xs.map((x, k) => {
    if (!which[k]) return null;
    const g = new Float64Array(x.data.length);
    for (let i = 0; i < x.data.length; i++) {
      const v = x.data[i];
      const h = step * Math.max(1, Math.abs(v));
      x.data[i] = v + h;
      const up = weightedTotal(f, xs, r);
      x.data[i] = v - h;
      const down = weightedTotal(f, xs, r);
      x.data[i] = v;
      g[i] = (up - down) / (2 * h);
    }
    return g;
  });
}

// ---------------------------------------------------------------------------------------------------------
// CNN ops (NCHW): batch norm, pooling, concatenation

type RefPair = number | [number, number];
const refPair = (v: RefPair): [number, number] => (typeof v === "number" ? [v, v] : [v[0], v[1]]);

/**
 * F.batch_norm: per channel, batch statistics (mean, biased variance over N, H, W) when training or when
 * there are no running statistics, else the running ones. Returns the output and the running statistics
 * after the call (training: (1 - m) running + m batch, the unbiased variance into the running variance).
 */
export function batchNorm2d(
  x: Arr,
  runningMean: Arr | null,
  runningVar: Arr | null,
  weight: Arr | null,
  bias: Arr | null,
  { training = false, momentum = 0.1, eps = 1e-5 }: { training?: boolean; momentum?: number; eps?: number } =
    {},
): { out: Arr; runningMean: Arr | null; runningVar: Arr | null } {
  const [n, c, h, w] = x.shape;
  const hw = h * w, count = n * hw;
  const out = fullArr(x.shape, 0);
  const rm = runningMean ? { shape: [c], data: runningMean.data.slice() } : null;
  const rv = runningVar ? { shape: [c], data: runningVar.data.slice() } : null;
  const useBatch = training || !runningMean;
  for (let ch = 0; ch < c; ch++) {
    let mean: number, variance: number;
    if (useBatch) {
      let s = 0;
      for (let b = 0; b < n; b++) for (let k = 0; k < hw; k++) s += x.data[(b * c + ch) * hw + k];
      mean = s / count;
      let s2 = 0;
      for (let b = 0; b < n; b++) {
        for (let k = 0; k < hw; k++) s2 += (x.data[(b * c + ch) * hw + k] - mean) ** 2;
      }
      variance = s2 / count;
      if (training && rm && rv) {
        rm.data[ch] = (1 - momentum) * rm.data[ch] + momentum * mean;
        rv.data[ch] = (1 - momentum) * rv.data[ch] + momentum * variance * count / (count - 1);
      }
    } else {
      mean = runningMean!.data[ch];
      variance = runningVar!.data[ch];
    }
    const inv = 1 / Math.sqrt(variance + eps);
    const gamma = weight ? weight.data[ch] : 1, beta = bias ? bias.data[ch] : 0;
    for (let b = 0; b < n; b++) {
      for (let k = 0; k < hw; k++) {
        const o = (b * c + ch) * hw + k;
        out.data[o] = (x.data[o] - mean) * inv * gamma + beta;
      }
    }
  }
  return { out, runningMean: rm, runningVar: rv };
}

/** PyTorch's pooling output size (ceil_mode: the last window starts inside the input or left padding). */
export function poolOutSize(
  inSize: number,
  k: number,
  s: number,
  p: number,
  d: number,
  ceil: boolean,
): number {
  const span = inSize + 2 * p - d * (k - 1) - 1;
  let o = (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
  if (ceil && (o - 1) * s >= inSize + p) o--;
  return o;
}

interface RefPoolOptions {
  kernelSize: RefPair;
  stride?: RefPair;
  padding?: RefPair;
  dilation?: RefPair;
  ceilMode?: boolean;
  countIncludePad?: boolean;
  divisorOverride?: number;
}

function poolWindows(
  x: Arr,
  o: RefPoolOptions,
  f: (
    plane: Float64Array,
    y0: number,
    x0: number,
    k: number[],
    d: number[],
    pad: number[],
    s: number[],
  ) => number,
): Arr {
  const [n, c, h, w] = x.shape;
  const k = refPair(o.kernelSize), s = refPair(o.stride ?? o.kernelSize), p = refPair(o.padding ?? 0);
  const d = refPair(o.dilation ?? 1);
  const oh = poolOutSize(h, k[0], s[0], p[0], d[0], o.ceilMode ?? false);
  const ow = poolOutSize(w, k[1], s[1], p[1], d[1], o.ceilMode ?? false);
  const out = fullArr([n, c, oh, ow], 0);
  for (let pl = 0; pl < n * c; pl++) {
    const plane = x.data.subarray(pl * h * w, (pl + 1) * h * w);
    for (let i = 0; i < oh; i++) {
      for (let j = 0; j < ow; j++) {
        out.data[(pl * oh + i) * ow + j] = f(plane, i * s[0] - p[0], j * s[1] - p[1], k, d, p, s);
      }
    }
  }
  return out;
}

/** F.max_pool2d; padding never wins (it is -infinity). */
export function maxPool2d(x: Arr, o: RefPoolOptions): Arr {
  const [h, w] = x.shape.slice(2);
  return poolWindows(x, o, (plane, y0, x0, k, d) => {
    let best = -Infinity;
    for (let a = 0; a < k[0]; a++) {
      for (let b = 0; b < k[1]; b++) {
        const yy = y0 + a * d[0], xx = x0 + b * d[1];
        if (yy >= 0 && yy < h && xx >= 0 && xx < w) best = Math.max(best, plane[yy * w + xx]);
      }
    }
    return best;
  });
}

/** F.avg_pool2d with count_include_pad (windows clipped to the padded input) and divisor_override. */
export function avgPool2d(x: Arr, o: RefPoolOptions): Arr {
  const [h, w] = x.shape.slice(2);
  return poolWindows(x, { ...o, dilation: 1 }, (plane, y0, x0, k, _d, p) => {
    const y1 = Math.min(y0 + k[0], h + p[0]), x1 = Math.min(x0 + k[1], w + p[1]);
    let s = 0, valid = 0;
    for (let yy = Math.max(y0, 0); yy < Math.min(y1, h); yy++) {
      for (let xx = Math.max(x0, 0); xx < Math.min(x1, w); xx++) {
        s += plane[yy * w + xx];
        valid++;
      }
    }
    const divisor = o.divisorOverride ?? ((o.countIncludePad ?? true) ? (y1 - y0) * (x1 - x0) : valid);
    return s / divisor;
  });
}

/** F.adaptive_avg_pool2d: window i spans [floor(i H / oh), ceil((i + 1) H / oh)). */
export function adaptiveAvgPool2d(x: Arr, size: RefPair): Arr {
  const [n, c, h, w] = x.shape;
  const [oh, ow] = refPair(size);
  const out = fullArr([n, c, oh, ow], 0);
  for (let pl = 0; pl < n * c; pl++) {
    for (let i = 0; i < oh; i++) {
      const y0 = Math.floor((i * h) / oh), y1 = Math.ceil(((i + 1) * h) / oh);
      for (let j = 0; j < ow; j++) {
        const x0 = Math.floor((j * w) / ow), x1 = Math.ceil(((j + 1) * w) / ow);
        let s = 0;
        for (let yy = y0; yy < y1; yy++) {
          for (let xx = x0; xx < x1; xx++) s += x.data[pl * h * w + yy * w + xx];
        }
        out.data[(pl * oh + i) * ow + j] = s / ((y1 - y0) * (x1 - x0));
      }
    }
  }
  return out;
}

/** torch.cat along `dim`. */
export function cat(xs: Arr[], dim: number): Arr {
  const d = normDim(dim, xs[0].shape.length);
  const shape = [...xs[0].shape];
  shape[d] = xs.reduce((a, x) => a + x.shape[d], 0);
  const out = fullArr(shape, 0);
  const outer = size(shape.slice(0, d)), inner = size(shape.slice(d + 1));
  let pos = 0;
  for (let o = 0; o < outer; o++) {
    for (const x of xs) {
      const block = x.shape[d] * inner;
      for (let k = 0; k < block; k++) out.data[pos++] = x.data[o * block + k];
    }
  }
  return out;
}

/** Options of {@link conv2d}: stride, padding (both sides), dilation and groups, as torch.nn.functional.conv2d's. */
export interface ConvRefOptions {
  stride?: number;
  padding?: number;
  dilation?: number;
  groups?: number;
}

/**
 * Every (output, input, weight) index triple of a convolution of x [N, C, H, W] with w [O, C / groups, KH, KW]
 * giving output [N, O, OH, OW]: each tap of each window that falls inside the input, in (image, output channel,
 * row, column, input channel, ky, kx) order. The convolution and its input gradient are both this walk.
 */
function convTaps(
  [n, c, h, wd]: number[],
  [oc, cg, kh, kw]: number[],
  [oh, ow]: number[],
  { stride = 1, padding = 0, dilation = 1, groups = 1 }: ConvRefOptions,
  tap: (out: number, input: number, weight: number) => void,
): void {
  const ocg = oc / groups;
  for (let img = 0; img < n; img++) {
    for (let o = 0; o < oc; o++) {
      const c0 = Math.floor(o / ocg) * cg;
      for (let y = 0; y < oh; y++) {
        for (let xx = 0; xx < ow; xx++) {
          const out = ((img * oc + o) * oh + y) * ow + xx;
          for (let ci = 0; ci < cg; ci++) {
            for (let ky = 0; ky < kh; ky++) {
              const iy = y * stride - padding + ky * dilation;
              if (iy < 0 || iy >= h) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = xx * stride - padding + kx * dilation;
                if (ix < 0 || ix >= wd) continue;
                tap(out, ((img * c + c0 + ci) * h + iy) * wd + ix, ((o * cg + ci) * kh + ky) * kw + kx);
              }
            }
          }
        }
      }
    }
  }
}

/** conv2d of x [N, C, H, W] with w [O, C / groups, KH, KW], from the definition (no bias). */
export function conv2d(x: Arr, w: Arr, options: ConvRefOptions = {}): Arr {
  const { stride = 1, padding = 0, dilation = 1 } = options;
  const [n, , h, wd] = x.shape, [oc, , kh, kw] = w.shape;
  const oh = Math.floor((h + 2 * padding - dilation * (kh - 1) - 1) / stride) + 1,
    ow = Math.floor((wd + 2 * padding - dilation * (kw - 1) - 1) / stride) + 1;
  const out = new Float64Array(n * oc * oh * ow);
  convTaps(x.shape, w.shape, [oh, ow], options, (o, i, k) => out[o] += x.data[i] * w.data[k]);
  return { shape: [n, oc, oh, ow], data: out };
}

/** The gradient of sum(conv2d(x, w) * dy) to x (shape `xShape`), from the definition. */
export function conv2dInputGrad(dy: Arr, w: Arr, xShape: number[], options: ConvRefOptions = {}): Arr {
  const dx = new Float64Array(size(xShape));
  convTaps(xShape, w.shape, dy.shape.slice(2), options, (o, i, k) => dx[i] += dy.data[o] * w.data[k]);
  return { shape: [...xShape], data: dx };
}
