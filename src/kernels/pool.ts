// 2-D pooling of NCHW tensors with PyTorch's output sizes and windows: max (with the argmax saved for
// backward), average (count_include_pad, divisor_override, ceil_mode) and adaptive average.
// Every backward runs one thread per input element that sums the gradients of the outputs whose window
// holds it: a gather instead of a scatter, so no float atomics.
import { kernelFamily, main1d } from "../backend/kernel.ts";
import { isFloat, Tensor } from "../autograd/tensor.ts";
import { record } from "../autograd/tape.ts";
import { dispatch1d } from "./basic.ts";
import { fmtShape, type Pair } from "./shape.ts";
import { tracer, type TraceRecorder } from "../onnx/trace.ts";

export type { Pair };

/** Options of {@link maxPool2d}, as the arguments of torch.nn.functional.max_pool2d. */
export interface MaxPool2dOptions {
  /** Window size (required). */
  kernelSize: Pair;
  /** Default: kernelSize. */
  stride?: Pair;
  /** Implicit -infinity padding on each side; at most half the kernel size (default 0). */
  padding?: Pair;
  /** Spacing between the window's taps (default 1). */
  dilation?: Pair;
  /**
   * Round the output size up instead of down (default false); a last window must still start inside the
   * input or the left padding, as in PyTorch.
   */
  ceilMode?: boolean;
}

/** Options of {@link avgPool2d}, as the arguments of torch.nn.functional.avg_pool2d. */
export interface AvgPool2dOptions {
  /** Window size (required). */
  kernelSize: Pair;
  /** Default: kernelSize. */
  stride?: Pair;
  /** Implicit zero padding on each side; at most half the kernel size (default 0). */
  padding?: Pair;
  /** Round the output size up instead of down, as PyTorch's ceil_mode (default false). */
  ceilMode?: boolean;
  /** Count the zero padding in the divisor (default true). */
  countIncludePad?: boolean;
  /** Divide every window's sum by this instead. */
  divisorOverride?: number;
}

// ---------------------------------------------------------------------------------------------------------
// Geometry

const POOL_UNIFORMS = [
  { name: "total", type: "u32" as const },
  ...["h", "w", "oh", "ow", "kh", "kw", "sh", "sw", "ph", "pw", "dh", "dw", "include_pad", "divisor"]
    .map((name) => ({ name, type: "i32" as const })),
];

interface Geometry {
  n: number;
  c: number;
  h: number;
  w: number;
  oh: number;
  ow: number;
  k: [number, number];
  s: [number, number];
  p: [number, number];
  d: [number, number];
}

/** A number or an [h, w] pair of integers >= `min`, as a pair. */
export function toPair(op: string, name: string, v: Pair, min: number): [number, number] {
  const p: unknown[] = typeof v === "number" ? [v, v] : Array.isArray(v) ? v : [];
  if (p.length !== 2 || !p.every((e) => Number.isInteger(e))) {
    throw new Error(`${op}: ${name} must be an integer or a pair of integers, got ${JSON.stringify(v)}`);
  }
  const pair = p as [number, number];
  if (pair.some((e) => e < min)) {
    const what = min === 0 ? "non-negative" : "positive";
    throw new Error(`${op}: ${name} must be ${what}, got ${fmtShape(pair)}`);
  }
  return pair;
}

function check4d(op: string, x: Tensor): [number, number, number, number] {
  if (!(x instanceof Tensor)) throw new Error(`${op}: expected a Tensor, got ${typeof x}`);
  if (!isFloat(x.dtype)) throw new Error(`${op}: needs a float input, got ${x.dtype}`);
  if (x.rank !== 4) {
    throw new Error(`${op}: expected a 4-D [N, C, H, W] input, got shape ${fmtShape(x.shape)}`);
  }
  return x.shape as [number, number, number, number];
}

/** PyTorch's pooling_output_shape: with ceil_mode the last window must start inside the input or left padding. */
export function poolOutputSize(
  inSize: number,
  k: number,
  s: number,
  p: number,
  d: number,
  ceilMode: boolean,
): number {
  let out = Math.floor((inSize + 2 * p - d * (k - 1) - 1 + (ceilMode ? s - 1 : 0)) / s) + 1;
  if (ceilMode && (out - 1) * s >= inSize + p) out--;
  return out;
}

function geometry(
  op: string,
  x: Tensor,
  kernelSize: Pair,
  stride: Pair | undefined,
  padding: Pair,
  dilation: Pair,
  ceilMode: boolean,
): Geometry {
  const [n, c, h, w] = check4d(op, x);
  if (kernelSize === undefined) throw new Error(`${op}: kernelSize is required`);
  const k = toPair(op, "kernelSize", kernelSize, 1);
  const s = toPair(op, "stride", stride ?? k, 1);
  const p = toPair(op, "padding", padding, 0);
  const d = toPair(op, "dilation", dilation, 1);
  if (p[0] > Math.floor(k[0] / 2) || p[1] > Math.floor(k[1] / 2)) {
    throw new Error(`${op}: padding ${fmtShape(p)} must be at most half the kernel size ${fmtShape(k)}`);
  }
  const oh = poolOutputSize(h, k[0], s[0], p[0], d[0], ceilMode);
  const ow = poolOutputSize(w, k[1], s[1], p[1], d[1], ceilMode);
  if (oh <= 0 || ow <= 0) {
    throw new Error(
      `${op}: input ${h}x${w} with kernel ${k[0]}x${k[1]}, stride ${fmtShape(s)}, padding ${fmtShape(p)}, ` +
        `dilation ${fmtShape(d)} gives an output of ${oh}x${ow}: the output size is too small`,
    );
  }
  return { n, c, h, w, oh, ow, k, s, p, d };
}

function poolParams(total: number, g: Geometry, includePad = 1, divisor = 0): number[] {
  return [total, g.h, g.w, g.oh, g.ow, ...g.k, ...g.s, ...g.p, ...g.d, includePad, divisor];
}

// Decodes an output index into (plane, oh, ow) and an input index into (plane, ih, iw).
const DECODE_OUT = `let ow = i32(i % u32(u.ow));
  let t = i / u32(u.ow);
  let oh = i32(t % u32(u.oh));
  let plane = t / u32(u.oh);`;
const DECODE_IN = `let iw = i32(i % u32(u.w));
  let t = i / u32(u.w);
  let ih = i32(t % u32(u.h));
  let plane = t / u32(u.h);
  let obase = plane * u32(u.oh * u.ow);`;
/**
 * Loops over the outputs (oh, ow) whose window holds input (ih, iw): tap a of the window sits at
 * oh * sh - ph + a * dh, so oh = (ih + ph - a * dh) / sh when that divides exactly.
 */
const FOR_WINDOWS = (inner: string) =>
  `for (var a = 0; a < u.kh; a++) {
    let th = ih + u.ph - a * u.dh;
    if (th < 0 || th % u.sh != 0) { continue; }
    let oh = th / u.sh;
    if (oh >= u.oh) { continue; }
    for (var b = 0; b < u.kw; b++) {
      let tw = iw + u.pw - b * u.dw;
      if (tw < 0 || tw % u.sw != 0) { continue; }
      let ow = tw / u.sw;
      if (ow >= u.ow) { continue; }
      let o = obase + u32(oh * u.ow + ow);
      ${inner}
    }
  }`;

type PoolKernel = "max_fwd" | "max_bwd" | "avg_fwd" | "avg_bwd" | "adaptive_fwd" | "adaptive_bwd";

// PyTorch's avg-pool divisor of output (oh, ow): the window clipped to the padded input, or to the input.
const AVG_DIVISOR = `fn avg_divisor(oh: i32, ow: i32) -> f32 {
  if (u.divisor != 0) { return f32(u.divisor); }
  let h0 = oh * u.sh - u.ph;
  let w0 = ow * u.sw - u.pw;
  let h1 = min(h0 + u.kh, u.h + u.ph);
  let w1 = min(w0 + u.kw, u.w + u.pw);
  if (u.include_pad != 0) { return f32((h1 - h0) * (w1 - w0)); }
  return f32((min(h1, u.h) - max(h0, 0)) * (min(w1, u.w) - max(w0, 0)));
}`;
// Adaptive windows: start = floor(i * in / out), end = ceil((i + 1) * in / out).
const ADAPTIVE_RANGE = `fn adaptive_range(i: i32, n_in: i32, n_out: i32) -> vec2i {
  return vec2i((i * n_in) / n_out, ((i + 1) * n_in + n_out - 1) / n_out);
}`;

const poolKernel = kernelFamily((v: PoolKernel) => {
  const fwd = v.endsWith("fwd");
  const storage = v === "max_fwd"
    ? [{ name: "x", access: "read" as const }, { name: "y", access: "rw" as const }, {
      name: "idx",
      access: "rw" as const,
      type: "i32" as const,
    }]
    : v === "max_bwd"
    ? [
      { name: "g", access: "read" as const },
      { name: "idx", access: "read" as const, type: "i32" as const },
      {
        name: "dx",
        access: "rw" as const,
      },
    ]
    : fwd
    ? [{ name: "x", access: "read" as const }, { name: "y", access: "rw" as const }]
    : [{ name: "g", access: "read" as const }, { name: "dx", access: "rw" as const }];
  const bodies: Record<PoolKernel, string> = {
    // -inf through a private variable: Tint rejects a constant expression that evaluates to infinity.
    max_fwd: `var<private> NEG_INF_BITS: u32 = 0xff800000u;
${main1d("i", "u.total")}
  ${DECODE_OUT}
  let base = plane * u32(u.h * u.w);
  let h0 = oh * u.sh - u.ph;
  let w0 = ow * u.sw - u.pw;
  var best = bitcast<f32>(NEG_INF_BITS);
  var arg = -1;
  for (var a = 0; a < u.kh; a++) {
    let ih = h0 + a * u.dh;
    if (ih < 0 || ih >= u.h) { continue; }
    for (var b = 0; b < u.kw; b++) {
      let iw = w0 + b * u.dw;
      if (iw < 0 || iw >= u.w) { continue; }
      let v = x[base + u32(ih * u.w + iw)];
      // The first valid tap, then any larger value or a NaN (which max propagates, as PyTorch).
      if (arg < 0 || v > best || v != v) {
        best = v;
        arg = ih * u.w + iw;
      }
    }
  }
  y[i] = best;
  idx[i] = arg;
}`,
    max_bwd: `${main1d("i", "u.total")}
  ${DECODE_IN}
  let flat = ih * u.w + iw;
  var acc = 0.0;
  ${FOR_WINDOWS("if (idx[o] == flat) { acc += g[o]; }")}
  dx[i] = acc;
}`,
    avg_fwd: `${AVG_DIVISOR}
${main1d("i", "u.total")}
  ${DECODE_OUT}
  let base = plane * u32(u.h * u.w);
  let h0 = max(oh * u.sh - u.ph, 0);
  let w0 = max(ow * u.sw - u.pw, 0);
  let h1 = min(oh * u.sh - u.ph + u.kh, u.h);
  let w1 = min(ow * u.sw - u.pw + u.kw, u.w);
  var acc = 0.0;
  for (var ih = h0; ih < h1; ih++) {
    for (var iw = w0; iw < w1; iw++) { acc += x[base + u32(ih * u.w + iw)]; }
  }
  y[i] = acc / avg_divisor(oh, ow);
}`,
    avg_bwd: `${AVG_DIVISOR}
${main1d("i", "u.total")}
  ${DECODE_IN}
  var acc = 0.0;
  ${FOR_WINDOWS("acc += g[o] / avg_divisor(oh, ow);")}
  dx[i] = acc;
}`,
    adaptive_fwd: `${ADAPTIVE_RANGE}
${main1d("i", "u.total")}
  ${DECODE_OUT}
  let base = plane * u32(u.h * u.w);
  let rh = adaptive_range(oh, u.h, u.oh);
  let rw = adaptive_range(ow, u.w, u.ow);
  var acc = 0.0;
  for (var ih = rh.x; ih < rh.y; ih++) {
    for (var iw = rw.x; iw < rw.y; iw++) { acc += x[base + u32(ih * u.w + iw)]; }
  }
  y[i] = acc / f32((rh.y - rh.x) * (rw.y - rw.x));
}`,
    // The outputs whose window holds ih lie in [floor(ih * oh / h), ceil((ih + 1) * oh / h)).
    adaptive_bwd: `${ADAPTIVE_RANGE}
${main1d("i", "u.total")}
  ${DECODE_IN}
  let ch = vec2i((ih * u.oh) / u.h, min(((ih + 1) * u.oh + u.h - 1) / u.h, u.oh));
  let cw = vec2i((iw * u.ow) / u.w, min(((iw + 1) * u.ow + u.w - 1) / u.w, u.ow));
  var acc = 0.0;
  for (var oh = ch.x; oh < ch.y; oh++) {
    let rh = adaptive_range(oh, u.h, u.oh);
    if (ih < rh.x || ih >= rh.y) { continue; }
    for (var ow = cw.x; ow < cw.y; ow++) {
      let rw = adaptive_range(ow, u.w, u.ow);
      if (iw < rw.x || iw >= rw.y) { continue; }
      acc += g[obase + u32(oh * u.ow + ow)] / f32((rh.y - rh.x) * (rw.y - rw.x));
    }
  }
  dx[i] = acc;
}`,
  };
  return { name: `pool_${v}`, uniformBlock: "pool", storage, uniforms: POOL_UNIFORMS, body: bodies[v] };
}, ["max_fwd", "max_bwd", "avg_fwd", "avg_bwd", "adaptive_fwd", "adaptive_bwd"]);

/**
 * A pooling's ONNX translation (opset 17). ceil_mode becomes explicit end padding instead, so that the
 * output size is this op's whatever a runtime's rounding rule: a max ignores padding anyway, an average
 * counts only the input there (count_include_pad 0), which is PyTorch's divisor where no padding is
 * given; an average that counts given padding and has windows past it is refused. Adaptive pooling is a
 * GlobalAveragePool to 1x1, or an AveragePool where the output divides the input.
 */
function tracePool(
  t: TraceRecorder,
  op: string,
  kind: "max" | "avg" | "adaptive",
  x: Tensor,
  out: Tensor,
  g: Geometry,
  includePad: number,
  divisor: number,
): void {
  const refused = (why: string) => new Error(`${op} from ${g.h}x${g.w} to ${g.oh}x${g.ow}: ${why}`);
  if (kind === "adaptive") {
    if (g.h % g.oh !== 0 || g.w % g.ow !== 0) {
      throw refused("not exportable to ONNX (the output does not divide the input)");
    }
    const k = [g.h / g.oh, g.w / g.ow];
    if (g.oh === 1 && g.ow === 1) t.node("GlobalAveragePool", [x], out);
    else t.node("AveragePool", [x], out, { kernel_shape: k, strides: k });
    return;
  }
  if (divisor !== 0) throw refused("divisorOverride is not exportable to ONNX");
  // The end padding that makes the last window the last output's (more than g.p only with ceilMode).
  const end = [0, 1].map((i) =>
    Math.max(g.p[i], ([g.oh, g.ow][i] - 1) * g.s[i] + g.d[i] * (g.k[i] - 1) + 1 - [g.h, g.w][i] - g.p[i])
  );
  if (end.some((e, i) => e >= g.k[i])) {
    throw refused("not exportable to ONNX (ceil mode would need padding as large as the kernel)");
  }
  const pastPadding = end.some((e, i) => e > g.p[i]);
  const window = { kernel_shape: g.k, strides: g.s, pads: [...g.p, ...end] };
  if (kind === "max") {
    t.node("MaxPool", [x], out, { ...window, dilations: g.d });
    return;
  }
  if (includePad && pastPadding && g.p.some((p) => p > 0)) {
    throw refused("countIncludePad with padding and ceil-mode windows past it is not exportable to ONNX");
  }
  t.node("AveragePool", [x], out, { ...window, count_include_pad: includePad && !pastPadding ? 1 : 0 });
}

/** Runs the forward kernel, and records the backward one (one thread per input element). */
function pool(
  op: string,
  kind: "max" | "avg" | "adaptive",
  x: Tensor,
  g: Geometry,
  includePad = 1,
  divisor = 0,
): Tensor {
  const out = Tensor.empty([g.n, g.c, g.oh, g.ow], x.dtype);
  if (out.size === 0) return record(out, op, [x], () => [Tensor.empty([...x.shape], x.dtype)]);
  if (tracer) tracePool(tracer, op, kind, x, out, g, includePad, divisor);
  const idx = kind === "max" ? Tensor.empty([...out.shape], "int32") : null;
  dispatch1d(
    poolKernel(`${kind}_fwd`),
    [x, out, ...(idx ? [idx] : [])],
    poolParams(out.size, g, includePad, divisor),
    out.size,
  );
  record(out, op, [x], (grad) => {
    const dx = Tensor.empty([...x.shape], x.dtype);
    const bufs = idx ? [grad, idx, dx] : [grad, dx];
    dispatch1d(poolKernel(`${kind}_bwd`), bufs, poolParams(x.size, g, includePad, divisor), x.size);
    // The graph runs backward once: the saved argmax is not needed afterwards.
    idx?.dispose();
    return [dx];
  });
  if (!out.node) idx?.dispose();
  return out;
}

/** torch.nn.functional.max_pool2d; the gradient goes to each window's (first) maximum. */
export function maxPool2d(x: Tensor, options: MaxPool2dOptions): Tensor {
  const op = "maxPool2d";
  if (!options || typeof options !== "object") {
    throw new Error(`${op}: options { kernelSize, ... } are required`);
  }
  const { kernelSize, stride, padding = 0, dilation = 1, ceilMode = false } = options;
  const g = geometry(op, x, kernelSize, stride, padding, dilation, ceilMode);
  return pool(op, "max", x, g);
}

/** torch.nn.functional.avg_pool2d. */
export function avgPool2d(x: Tensor, options: AvgPool2dOptions): Tensor {
  const op = "avgPool2d";
  if (!options || typeof options !== "object") {
    throw new Error(`${op}: options { kernelSize, ... } are required`);
  }
  const { kernelSize, stride, padding = 0, ceilMode = false, countIncludePad = true, divisorOverride } =
    options;
  if (divisorOverride !== undefined && (!Number.isInteger(divisorOverride) || divisorOverride === 0)) {
    throw new Error(`${op}: divisorOverride must be a non-zero integer, got ${divisorOverride}`);
  }
  const g = geometry(op, x, kernelSize, stride, padding, 1, ceilMode);
  return pool(op, "avg", x, g, countIncludePad ? 1 : 0, divisorOverride ?? 0);
}

/** torch.nn.functional.adaptive_avg_pool2d: window i spans [floor(i H / oh), ceil((i + 1) H / oh)). */
export function adaptiveAvgPool2d(x: Tensor, outputSize: Pair): Tensor {
  const op = "adaptiveAvgPool2d";
  const [n, c, h, w] = check4d(op, x);
  const [oh, ow] = toPair(op, "outputSize", outputSize, 1);
  if (h === 0 || w === 0) throw new Error(`${op}: input ${fmtShape(x.shape)} has an empty spatial size`);
  const g: Geometry = { n, c, h, w, oh, ow, k: [1, 1], s: [1, 1], p: [0, 0], d: [1, 1] };
  return pool(op, "adaptive", x, g);
}
