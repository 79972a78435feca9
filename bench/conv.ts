// Convolution, batch norm and max pooling of the base learners' networks against TensorFlow.js's WebGPU
// backend (@tensorflow/tfjs-backend-webgpu 4.22.0, a dev dependency used here alone), both on the same
// WebGPU adapter in the same process, measured with tinybench.
//   deno run -A bench/conv.ts [--quick] [filter]      bun run bench/conv.ts [--quick] [filter]
//   --quick: batch 2 instead of 8 and a subset of the shapes; filter: a substring of the case names.
//   --gemm staged|streamed: force the workgroup-memory GEMM (a GPU's default) or the streamed one (a CPU's).
//
// What is measured
// - Shapes: the convolutions of ResNet-152 (bottleneck 1x1 and 3x3 at 56x56 and 28x28), ResNeXt-101 32x8d
//   (its grouped 3x3, 32 groups) and DenseNet-161 (1x1 bottleneck and 3x3 growth conv), batch 8; BatchNorm2d
//   forward in training mode and MaxPool2d 3x3/2 forward on ResNet's stem output [8, 64, 112, 112].
// - GFLOP/s = 2 * N * Cout * OH * OW * (Cin / groups) * KH * KW per pass, the same count for the forward,
//   the gradient to the input and the gradient to the weight. GB/s counts the least traffic an op needs:
//   batch norm reads x and writes y (8 bytes an element), max pooling reads x and writes y.
// - Each library runs in its own layout: ours NCHW with weights [Cout, Cin/groups, KH, KW], tfjs NHWC (its
//   default and only fast path) with filters [KH, KW, Cin, Cout].
// - Ours, forward: `fl.F.conv2d`. Ours, backward: the public API has no separate backward ops, so the gradient
//   pass is the time of `sum(conv2d(x, w) * r).backward()` with only x (gradient to the input) or only w
//   (gradient to the weight) requiring a gradient, minus the same with only r requiring one: our autograd
//   computes only the gradients that are asked for, so both runs do the same forward and the same
//   elementwise backward passes over y (the sum's and the mul's), and the difference is the convolution's
//   backward kernel.
// - tfjs: the kernels its conv2d gradient calls, run directly: forward `tf.conv2d`, gradient to the input
//   `tf.conv2dTranspose` (kernel Conv2DBackpropInput), gradient to the filter the kernel Conv2DBackpropFilter
//   through `tf.engine().runKernel` (tfjs-core exposes no public op for it). tfjs flags stay at their defaults
//   (e.g. WEBGPU_USE_NAIVE_CONV2D_TRANSPOSE true, so the gradient to the input is its direct kernel).
// - Grouped convolutions: tfjs has no groups (only depthwise, which none of these shapes is), so tfjs runs them
//   emulated the way a tfjs model would be written: split the input along channels, one conv per group (the
//   filters kept as `groups` separate tensors), concat the outputs; the backward passes the same way.
// - Batch norm in training: ours `fl.F.batchNorm2d(..., { training: true })`; tfjs `tf.moments` over N, H, W
//   and `tf.batchNorm` (what tfjs-layers' BatchNormalization does in training; the running-statistics update,
//   a few ops on [C], is left out on the tfjs side).
// - Timing: every case records its op `reps` times and then waits for its device: ours `fl.syncDevice()`,
//   tfjs submits its pending command encoder and awaits `queue.onSubmittedWorkDone()` on its device. Ours runs
//   inside `fl.scope`, tfjs inside `tf.tidy`, so every iteration frees what it made. tinybench: 1 warmup
//   iteration, then at least 3 (and 0.3 s, 0.8 s without --quick, for light cases); the median is reported.
//   (tfjs's wait was checked against reading a result back with `data()`: the same times within noise.)
// - Before measuring, a small check runs both libraries on the same small inputs (a strided conv and a grouped
//   one: forward and both gradients; batch norm; max pooling) against a float64 CPU reference.
//
// tfjs-backend-webgpu under Deno and Bun (found out while writing this file)
// - Deno 2: works as shipped (navigator.gpu is built in; Deno loads the package's CommonJS "main" bundle).
// - Bun with bun-webgpu: two problems, worked around below in `registerTfjsWebGPU`:
//   1. tfjs's backend factory pushes `['bgra8unorm-storage']` (an array, a tfjs bug) into requiredFeatures
//      when the adapter has that feature; bun-webgpu rejects it ("Invalid feature required"), so setBackend
//      fails. The shim replaces the factory by one that asks for no features and for every adapter limit, as
//      `fl.init` does (Dawn otherwise packs its defaults); the same factory is used in Deno for parity.
//   2. bun-webgpu's setupGlobals defines no `GPUBuffer` or `GPUTexture` globals, and tfjs tests
//      `resource instanceof GPUBuffer` / `GPUTexture`; the shim defines them from the constructors of a
//      buffer and a texture made on the tfjs device.
//   The factory must also be registered after `fl.init()` (which runs bun-webgpu's setupGlobals), since
//   tfjs-backend-webgpu registers its backend at import only if navigator.gpu exists: hence dynamic imports.
import process from "node:process";
import { Bench } from "tinybench";
import * as fl from "../mod.ts";
import { type GemmChoice, setGemmChoice } from "../src/kernels/gemm.ts";

const args = process.argv.slice(2);
const quick = args.includes("--quick");
const gemmAt = args.indexOf("--gemm");
// --gemm staged|streamed forces one GEMM (default auto: staged on a GPU, streamed on a CPU adapter).
if (gemmAt >= 0) setGemmChoice(args.splice(gemmAt, 2)[1] as GemmChoice);
const filter = args.find((a) => !a.startsWith("-")) ?? "";
const N = quick ? 2 : 8;

const info = await fl.init({ backend: "webgpu" }); // the peer is tfjs-backend-webgpu: WebGPU on both sides

// ---------------------------------------------------------------------------------------------------------
// tfjs on WebGPU

const tf = await import("@tensorflow/tfjs-core");
const tfwg = await import("@tensorflow/tfjs-backend-webgpu");
type TfTensor = import("@tensorflow/tfjs-core").Tensor;
type Tf4D = import("@tensorflow/tfjs-core").Tensor4D;

let tfAdapter = "?";
let tfDevice: GPUDevice | null = null;

/** Replaces tfjs's own "webgpu" backend factory (see the notes at the top). */
function registerTfjsWebGPU(): void {
  tf.removeBackend("webgpu");
  tf.registerBackend("webgpu", async () => {
    const gpu = (globalThis.navigator as Navigator & { gpu?: GPU }).gpu;
    if (!gpu) throw new Error("no navigator.gpu");
    const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
    if (!adapter) throw new Error("no WebGPU adapter for tfjs");
    const limits: Record<string, number> = {};
    for (const key in adapter.limits) {
      const v = (adapter.limits as unknown as Record<string, unknown>)[key];
      if (typeof v === "number" && key !== "nextInChain") limits[key] = v;
    }
    const device = await adapter.requestDevice({ requiredLimits: limits });
    const g = globalThis as Record<string, unknown>;
    if (g.GPUBuffer === undefined) {
      const b = device.createBuffer({ size: 4, usage: GPUBufferUsage.COPY_DST });
      g.GPUBuffer = b.constructor;
      b.destroy();
    }
    if (g.GPUTexture === undefined) {
      const t = device.createTexture({ size: [1, 1], format: "rgba8unorm", usage: GPUTextureUsage.COPY_DST });
      g.GPUTexture = t.constructor;
      t.destroy();
    }
    const ai = adapter.info;
    tfAdapter = ai?.description || `${ai?.vendor ?? ""} ${ai?.architecture ?? ""} ${ai?.device ?? ""}`.trim();
    tfDevice = device;
    // deno-lint-ignore no-explicit-any
    return new tfwg.WebGPUBackend(device as any, ai as any);
  }, 3);
}

registerTfjsWebGPU();
let tfOk = false;
try {
  tfOk = await tf.setBackend("webgpu");
  await tf.ready();
} catch (err) {
  console.log(`tfjs-backend-webgpu failed to start: ${(err as Error).message}`);
}
if (!tfOk) console.log("tfjs-backend-webgpu did not initialise: its column stays empty");

/** Submits what tfjs has recorded and waits for its device. */
async function tfSync(): Promise<void> {
  // What tfjs's own read does before it submits: the open compute pass must end, or the command buffer is
  // invalid and the device skips it.
  const be = tf.backend() as unknown as {
    ensureCommandEncoderReady(): void;
    endComputePassEncoder(): void;
    submitQueue(): void;
  };
  be.ensureCommandEncoderReady();
  be.endComputePassEncoder();
  be.submitQueue();
  await tfDevice!.queue.onSubmittedWorkDone();
}

const tfRun = (reps: number, op: () => void) => async () => {
  tf.tidy(() => {
    for (let i = 0; i < reps; i++) op();
  });
  await tfSync();
};

// ---------------------------------------------------------------------------------------------------------
// Ours (being written: the script measures tfjs alone while these ops are missing)

interface Conv2dOptions {
  stride?: number;
  padding?: number;
  dilation?: number;
  groups?: number;
}
interface OurCnnOps {
  conv2d?: (x: fl.Tensor, w: fl.Tensor, b: fl.Tensor | null, o: Conv2dOptions) => fl.Tensor;
  batchNorm2d?: (
    x: fl.Tensor,
    runningMean: fl.Tensor,
    runningVar: fl.Tensor,
    weight: fl.Tensor,
    bias: fl.Tensor,
    o: { training: boolean },
  ) => fl.Tensor;
  maxPool2d?: (x: fl.Tensor, o: { kernelSize: number; stride: number; padding: number }) => fl.Tensor;
}
const ours = fl.F as unknown as OurCnnOps;
for (const op of ["conv2d", "batchNorm2d", "maxPool2d"] as const) {
  if (typeof ours[op] !== "function") {
    console.log(`fl.F.${op} does not exist yet: its cases measure tfjs alone`);
  }
}

const onDevice = (reps: number, op: () => void) => async () => {
  fl.scope(() => {
    for (let i = 0; i < reps; i++) op();
  });
  await fl.syncDevice();
};

// ---------------------------------------------------------------------------------------------------------
// Host-side data and layouts

const rand = (n: number, seed: number) => {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32) - 0.5);
};

/** [N, C, H, W] -> [N, H, W, C] */
function nchwToNhwc(a: Float32Array, n: number, c: number, h: number, w: number): Float32Array {
  const o = new Float32Array(a.length);
  for (let i = 0; i < n; i++) {
    for (let ch = 0; ch < c; ch++) {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) o[((i * h + y) * w + x) * c + ch] = a[((i * c + ch) * h + y) * w + x];
      }
    }
  }
  return o;
}

/** Weights [Cout, Cin/g, KH, KW] -> per group a filter [KH, KW, Cin/g, Cout/g] (tfjs's HWIO). */
function oihwToHwioGroups(
  a: Float32Array,
  cout: number,
  cinG: number,
  kh: number,
  kw: number,
  groups: number,
) {
  const coutG = cout / groups;
  const out: Float32Array[] = [];
  for (let g = 0; g < groups; g++) {
    const f = new Float32Array(kh * kw * cinG * coutG);
    for (let o = 0; o < coutG; o++) {
      for (let i = 0; i < cinG; i++) {
        for (let y = 0; y < kh; y++) {
          for (let x = 0; x < kw; x++) {
            f[((y * kw + x) * cinG + i) * coutG + o] = a[(((g * coutG + o) * cinG + i) * kh + y) * kw + x];
          }
        }
      }
    }
    out.push(f);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Convolutions on the tfjs side (grouped ones split into `groups` plain convs)

interface ConvGeom {
  n: number;
  cin: number;
  cout: number;
  h: number;
  w: number;
  k: number;
  stride: number;
  pad: number;
  groups: number;
}
const outSize = (s: number, k: number, stride: number, pad: number) =>
  Math.floor((s + 2 * pad - k) / stride) + 1;

function tfConvFwd(x: Tf4D, f: Tf4D[], g: ConvGeom): Tf4D {
  if (g.groups === 1) return tf.conv2d(x, f[0], g.stride, g.pad);
  const xs = tf.split(x, g.groups, 3) as Tf4D[];
  return tf.concat(xs.map((xi, i) => tf.conv2d(xi, f[i], g.stride, g.pad)), 3);
}

function tfConvBwdInput(dy: Tf4D, f: Tf4D[], g: ConvGeom): Tf4D {
  const shape = (c: number): [number, number, number, number] => [g.n, g.h, g.w, c];
  if (g.groups === 1) return tf.conv2dTranspose(dy, f[0], shape(g.cin), g.stride, g.pad);
  const dys = tf.split(dy, g.groups, 3) as Tf4D[];
  return tf.concat(
    dys.map((d, i) => tf.conv2dTranspose(d, f[i], shape(g.cin / g.groups), g.stride, g.pad)),
    3,
  );
}

function tfConvBwdFilter(x: Tf4D, dy: Tf4D, g: ConvGeom): Tf4D[] {
  const filterShape = [g.k, g.k, g.cin / g.groups, g.cout / g.groups];
  const one = (xi: Tf4D, di: Tf4D) =>
    tf.engine().runKernel(
      "Conv2DBackpropFilter",
      { x: xi, dy: di },
      {
        strides: g.stride,
        pad: g.pad,
        dataFormat: "NHWC",
        dimRoundingMode: undefined,
        filterShape,
      } as unknown as import("@tensorflow/tfjs-core").NamedAttrMap,
    ) as Tf4D;
  if (g.groups === 1) return [one(x, dy)];
  const xs = tf.split(x, g.groups, 3) as Tf4D[];
  const dys = tf.split(dy, g.groups, 3) as Tf4D[];
  return xs.map((xi, i) => one(xi, dys[i]));
}

// ---------------------------------------------------------------------------------------------------------
// A small check that both sides compute what they are timed for: a plain strided conv and a grouped one
// (forward, gradient to the input with r as the output's gradient, gradient to the weight), batch norm and
// max pooling, each library against a float64 CPU reference (NCHW).

function cpuConv(xh: Float32Array, wh: Float32Array, rh: Float32Array, g: ConvGeom) {
  const oh = outSize(g.h, g.k, g.stride, g.pad), ow = outSize(g.w, g.k, g.stride, g.pad);
  const cg = g.cin / g.groups, og = g.cout / g.groups;
  const y = new Float64Array(g.n * g.cout * oh * ow),
    dx = new Float64Array(xh.length),
    dw = new Float64Array(wh.length);
  for (let n = 0; n < g.n; n++) {
    for (let o = 0; o < g.cout; o++) {
      const grp = Math.floor(o / og);
      for (let oy = 0; oy < oh; oy++) {
        for (let ox = 0; ox < ow; ox++) {
          const yi = ((n * g.cout + o) * oh + oy) * ow + ox;
          for (let i = 0; i < cg; i++) {
            const c = grp * cg + i;
            for (let ky = 0; ky < g.k; ky++) {
              const iy = oy * g.stride - g.pad + ky;
              if (iy < 0 || iy >= g.h) continue;
              for (let kx = 0; kx < g.k; kx++) {
                const ix = ox * g.stride - g.pad + kx;
                if (ix < 0 || ix >= g.w) continue;
                const xi = ((n * g.cin + c) * g.h + iy) * g.w + ix, wi = ((o * cg + i) * g.k + ky) * g.k + kx;
                y[yi] += xh[xi] * wh[wi];
                dx[xi] += rh[yi] * wh[wi];
                dw[wi] += rh[yi] * xh[xi];
              }
            }
          }
        }
      }
    }
  }
  return { y: Float32Array.from(y), dx: Float32Array.from(dx), dw: Float32Array.from(dw) };
}

async function check(): Promise<void> {
  const maxDiff = (a: Float32Array, b: Float32Array) => {
    if (a.length !== b.length) return Infinity;
    let m = 0;
    for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
    return m;
  };
  const e = (v: number) => v.toExponential(1);
  const lines: string[] = [];
  let worst = 0;
  const note = (label: string, d: number[]) => {
    worst = Math.max(worst, ...d);
    lines.push(`${label}: ${d.map(e).join(", ")}`);
  };
  for (
    const g of [
      { n: 2, cin: 8, cout: 12, h: 9, w: 7, k: 3, stride: 2, pad: 1, groups: 1 },
      { n: 2, cin: 8, cout: 12, h: 9, w: 7, k: 3, stride: 1, pad: 1, groups: 4 },
    ]
  ) {
    const xh = rand(g.n * g.cin * g.h * g.w, 11), wh = rand(g.cout * (g.cin / g.groups) * g.k * g.k, 12);
    const oh = outSize(g.h, g.k, g.stride, g.pad), ow = outSize(g.w, g.k, g.stride, g.pad);
    const rh = rand(g.n * g.cout * oh * ow, 13);
    const ref = cpuConv(xh, wh, rh, g);
    const cg = g.cin / g.groups, og = g.cout / g.groups, inner = g.k * g.k * cg;
    // tfjs's filter gradients, concatenated along the last axis, are [KH, KW, Cin/g, Cout]
    const refDwTf = new Float32Array(ref.dw.length);
    oihwToHwioGroups(ref.dw, g.cout, cg, g.k, g.k, g.groups).forEach((a, gi) => {
      for (let p = 0; p < inner; p++) {
        for (let o = 0; o < og; o++) refDwTf[p * g.cout + gi * og + o] = a[p * og + o];
      }
    });
    const label = `conv ${g.cin}->${g.cout} 3x3 stride ${g.stride} groups ${g.groups} (y, dx, dw)`;
    if (tfOk) {
      const [tY, tDx, tDw] = tf.tidy(() => {
        const x = tf.tensor4d(nchwToNhwc(xh, g.n, g.cin, g.h, g.w), [g.n, g.h, g.w, g.cin]);
        const f = oihwToHwioGroups(wh, g.cout, cg, g.k, g.k, g.groups).map((a) =>
          tf.tensor4d(a, [g.k, g.k, cg, og])
        );
        const dy = tf.tensor4d(nchwToNhwc(rh, g.n, g.cout, oh, ow), [g.n, oh, ow, g.cout]);
        return [tfConvFwd(x, f, g), tfConvBwdInput(dy, f, g), tf.concat(tfConvBwdFilter(x, dy, g), 3)];
      });
      const [y, dx, dw] = [await tY.data(), await tDx.data(), await tDw.data()] as Float32Array[];
      tf.dispose([tY, tDx, tDw]);
      note(`tfjs ${label}`, [
        maxDiff(y, nchwToNhwc(ref.y, g.n, g.cout, oh, ow)),
        maxDiff(dx, nchwToNhwc(ref.dx, g.n, g.cin, g.h, g.w)),
        maxDiff(dw, refDwTf),
      ]);
    }
    if (ours.conv2d) {
      const conv2d = ours.conv2d;
      const got = await fl.scope(async () => {
        const x = fl.tensor(xh, [g.n, g.cin, g.h, g.w], { requiresGrad: true });
        const w = fl.tensor(wh, [g.cout, cg, g.k, g.k], { requiresGrad: true });
        const y = conv2d(x, w, null, { stride: g.stride, padding: g.pad, groups: g.groups });
        fl.F.sum(fl.F.mul(y, fl.tensor(rh, [g.n, g.cout, oh, ow]))).backward();
        const out = [await y.toArray(), await x.grad!.toArray(), await w.grad!.toArray()];
        x.grad!.dispose();
        w.grad!.dispose();
        return out;
      }).catch((err: Error) => err);
      if (got instanceof Error) {
        lines.push(`ours ${label}: failed: ${got.message.split("\n")[0].slice(0, 300)}`);
      } else {note(`ours ${label}`, [
          maxDiff(got[0], ref.y),
          maxDiff(got[1], ref.dx),
          maxDiff(got[2], ref.dw),
        ]);}
    }
  }
  {
    const n = 2, c = 6, h = 11, w = 9, oh = outSize(h, 3, 2, 1), ow = outSize(w, 3, 2, 1);
    const xh = rand(n * c * h * w, 21);
    // references: batch statistics (biased variance, eps 1e-5), weight 1, bias 0; max over the padded window
    const bnRef = new Float32Array(xh.length), mpRef = new Float32Array(n * c * oh * ow).fill(-Infinity);
    for (let ch = 0; ch < c; ch++) {
      let s = 0, s2 = 0;
      for (let i = 0; i < n; i++) for (let p = 0; p < h * w; p++) s += xh[(i * c + ch) * h * w + p];
      const mean = s / (n * h * w);
      for (let i = 0; i < n; i++) {
        for (let p = 0; p < h * w; p++) s2 += (xh[(i * c + ch) * h * w + p] - mean) ** 2;
      }
      const inv = 1 / Math.sqrt(s2 / (n * h * w) + 1e-5);
      for (let i = 0; i < n; i++) {
        for (let p = 0; p < h * w; p++) {
          bnRef[(i * c + ch) * h * w + p] = (xh[(i * c + ch) * h * w + p] - mean) * inv;
        }
        for (let y = 0; y < h; y++) {
          for (let x = 0; x < w; x++) {
            for (let oy = Math.max(0, Math.ceil((y - 1) / 2)); oy < oh && oy * 2 - 1 <= y; oy++) {
              for (let ox = Math.max(0, Math.ceil((x - 1) / 2)); ox < ow && ox * 2 - 1 <= x; ox++) {
                const o = ((i * c + ch) * oh + oy) * ow + ox;
                mpRef[o] = Math.max(mpRef[o], xh[((i * c + ch) * h + y) * w + x]);
              }
            }
          }
        }
      }
    }
    if (tfOk) {
      const [tBn, tMp] = tf.tidy(() => {
        const x = tf.tensor4d(nchwToNhwc(xh, n, c, h, w), [n, h, w, c]);
        const { mean, variance } = tf.moments(x, [0, 1, 2]);
        return [tf.batchNorm(x, mean, variance, tf.zeros([c]), tf.ones([c]), 1e-5), tf.maxPool(x, 3, 2, 1)];
      });
      const [bn, mp] = [await tBn.data(), await tMp.data()] as Float32Array[];
      tf.dispose([tBn, tMp]);
      note("tfjs batch norm (training), max pool 3x3/2", [
        maxDiff(bn, nchwToNhwc(bnRef, n, c, h, w)),
        maxDiff(mp, nchwToNhwc(mpRef, n, c, oh, ow)),
      ]);
    }
    const bn = ours.batchNorm2d, mp = ours.maxPool2d;
    if (bn && mp) {
      const got = await fl.scope(async () => {
        const x = fl.tensor(xh, [n, c, h, w]);
        const yb = bn(x, fl.zeros([c]), fl.ones([c]), fl.ones([c]), fl.zeros([c]), { training: true });
        return [await yb.toArray(), await mp(x, { kernelSize: 3, stride: 2, padding: 1 }).toArray()];
      }).catch((err: Error) => err);
      if (got instanceof Error) {
        lines.push(`ours batch norm, max pool: failed: ${got.message.split("\n")[0].slice(0, 300)}`);
      } else {note("ours batch norm (training), max pool 3x3/2", [
          maxDiff(got[0], bnRef),
          maxDiff(got[1], mpRef),
        ]);}
    }
  }
  console.log(
    `check against a float64 CPU reference (largest absolute difference):\n  ${lines.join("\n  ")}`,
  );
  if (worst > 1e-4) {
    console.log(`  WARNING: a difference of ${e(worst)}: the timings below may not measure the right thing`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// The cases

interface Shape extends Omit<ConvGeom, "n"> {
  name: string;
  quick: boolean;
}
const S = (
  name: string,
  cin: number,
  cout: number,
  hw: number,
  k: number,
  o: Partial<Shape> = {},
): Shape => ({
  name,
  cin,
  cout,
  h: hw,
  w: hw,
  k,
  stride: 1,
  pad: (k - 1) >> 1,
  groups: 1,
  quick: false,
  ...o,
});
const shapes: Shape[] = [
  S("ResNet-152 1x1 64->64 @56", 64, 64, 56, 1),
  S("ResNet-152 3x3 64->64 @56", 64, 64, 56, 3, { quick: true }),
  S("ResNet-152 1x1 64->256 @56", 64, 256, 56, 1),
  S("ResNet-152 1x1 256->64 @56", 256, 64, 56, 1, { quick: true }),
  S("ResNet-152 3x3 128->128 @28", 128, 128, 28, 3, { quick: true }),
  S("ResNet-152 1x1 512->128 @28", 512, 128, 28, 1),
  S("ResNeXt-101 32x8d 3x3 256->256 g32 @56", 256, 256, 56, 3, { groups: 32, quick: true }),
  S("ResNeXt-101 32x8d 3x3 512->512 g32 @28", 512, 512, 28, 3, { groups: 32 }),
  S("DenseNet-161 1x1 96->192 @56", 96, 192, 56, 1),
  S("DenseNet-161 3x3 192->48 @56", 192, 48, 56, 3, { quick: true }),
];

interface Row {
  name: string;
  unit: "GFLOP/s" | "GB/s";
  ours: number; // NaN: not measured
  tfjs: number;
  note?: string;
}
const rows: Row[] = [];
const fmt = (v: number) => (Number.isFinite(v) ? v.toPrecision(3) : "-");

/** Median milliseconds of each task, run one after the other; NaN (and a message) for a task that failed. */
async function timeTasks(
  tasks: Record<string, () => Promise<void>>,
  heavy: boolean,
): Promise<Record<string, number>> {
  const bench = new Bench({
    time: heavy ? 0 : quick ? 300 : 800,
    iterations: 3,
    warmupIterations: 1,
    warmupTime: 0,
  });
  for (const [name, fn] of Object.entries(tasks)) bench.add(name, fn);
  await bench.run();
  const out: Record<string, number> = {};
  for (const name of Object.keys(tasks)) {
    const r = bench.getTask(name)?.result as
      | { state: string; latency?: { mean: number; p50: number }; error?: unknown }
      | undefined;
    if (!r || r.state !== "completed" || !r.latency) {
      const msg = (r?.error as Error | undefined)?.message ?? String(r?.error ?? "");
      console.log(`  ${name} failed (${r?.state}): ${msg.split("\n")[0].slice(0, 300)}`);
      out[name] = NaN;
    } else out[name] = r.latency.p50; // the median: the machine may be shared, and a mean of 3 takes every hiccup
  }
  return out;
}

async function convCase(s: Shape): Promise<void> {
  const g: ConvGeom = { ...s, n: N };
  const oh = outSize(g.h, g.k, g.stride, g.pad), ow = outSize(g.w, g.k, g.stride, g.pad);
  const cinG = g.cin / g.groups;
  const flops = 2 * g.n * g.cout * oh * ow * cinG * g.k * g.k;
  // Enough recordings per iteration for ~0.2 GFLOP, so that small shapes are not all waiting time.
  const reps = Math.min(8, Math.max(1, Math.round(0.2e9 / flops)));
  const heavy = flops * reps > 1.5e9;
  const xh = rand(g.n * g.cin * g.h * g.w, 1), wh = rand(g.cout * cinG * g.k * g.k, 2);
  const rh = rand(g.n * g.cout * oh * ow, 3);

  const tasks: Record<string, () => Promise<void>> = {};
  const disposeOurs: (() => void)[] = [];
  if (ours.conv2d) {
    const conv2d = ours.conv2d;
    const opts = { stride: g.stride, padding: g.pad, dilation: 1, groups: g.groups };
    const x = fl.tensor(xh, [g.n, g.cin, g.h, g.w]).keep();
    const xg = fl.tensor(xh, [g.n, g.cin, g.h, g.w], { requiresGrad: true }).keep();
    const w = fl.tensor(wh, [g.cout, cinG, g.k, g.k]).keep();
    const wg = fl.tensor(wh, [g.cout, cinG, g.k, g.k], { requiresGrad: true }).keep();
    const r = fl.tensor(rh, [g.n, g.cout, oh, ow]).keep();
    const rg = fl.tensor(rh, [g.n, g.cout, oh, ow], { requiresGrad: true }).keep();
    disposeOurs.push(() => [x, xg, w, wg, r, rg].forEach((t) => t.dispose()));
    const clearGrad = (t: fl.Tensor) => {
      t.grad?.dispose();
      t.grad = null;
    };
    tasks["ours fwd"] = onDevice(reps, () => conv2d(x, w, null, opts));
    tasks["ours fwd+loss+bwd-r"] = onDevice(reps, () => {
      fl.F.sum(fl.F.mul(conv2d(x, w, null, opts), rg)).backward();
      clearGrad(rg);
    });
    tasks["ours fwd+loss+bwd-input"] = onDevice(reps, () => {
      fl.F.sum(fl.F.mul(conv2d(xg, w, null, opts), r)).backward();
      clearGrad(xg);
    });
    tasks["ours fwd+loss+bwd-weight"] = onDevice(reps, () => {
      fl.F.sum(fl.F.mul(conv2d(x, wg, null, opts), r)).backward();
      clearGrad(wg);
    });
  }
  let tfTensors: TfTensor[] = [];
  if (tfOk) {
    const x = tf.tensor4d(nchwToNhwc(xh, g.n, g.cin, g.h, g.w), [g.n, g.h, g.w, g.cin]);
    const f = oihwToHwioGroups(wh, g.cout, cinG, g.k, g.k, g.groups)
      .map((a) => tf.tensor4d(a, [g.k, g.k, cinG, g.cout / g.groups]));
    const dy = tf.tensor4d(nchwToNhwc(rh, g.n, g.cout, oh, ow), [g.n, oh, ow, g.cout]);
    tfTensors = [x, dy, ...f];
    tasks["tfjs fwd"] = tfRun(reps, () => tfConvFwd(x, f, g));
    tasks["tfjs bwd-input"] = tfRun(reps, () => tfConvBwdInput(dy, f, g));
    tasks["tfjs bwd-weight"] = tfRun(reps, () => tfConvBwdFilter(x, dy, g));
  }
  const t = await timeTasks(tasks, heavy);
  disposeOurs.forEach((d) => d());
  tf.dispose(tfTensors);

  const rate = (
    ms: number | undefined,
  ) => (ms !== undefined && ms > 0 ? (reps * flops) / 1e9 / (ms / 1000) : NaN);
  const per = (
    ms: number | undefined,
  ) => (ms === undefined || !Number.isFinite(ms) ? "-" : `${(ms / reps).toFixed(1)} ms`);
  const bwdIn = t["ours fwd+loss+bwd-input"] - t["ours fwd+loss+bwd-r"];
  const bwdW = t["ours fwd+loss+bwd-weight"] - t["ours fwd+loss+bwd-r"];
  const tfNote = g.groups > 1 ? " (tfjs: split + conv per group + concat)" : "";
  for (
    const [pass, o, tj] of [
      ["fwd", t["ours fwd"], t["tfjs fwd"]],
      ["bwd-input", bwdIn, t["tfjs bwd-input"]],
      ["bwd-weight", bwdW, t["tfjs bwd-weight"]],
    ] as const
  ) {
    rows.push({ name: `${s.name} ${pass}`, unit: "GFLOP/s", ours: rate(o), tfjs: rate(tj), note: tfNote });
  }
  console.log(
    `${s.name}, batch ${g.n}, ${(flops / 1e9).toFixed(3)} GFLOP a pass, ${reps} per iteration${tfNote}\n` +
      `  ours: fwd ${per(t["ours fwd"])}, fwd+loss+bwd-r ${per(t["ours fwd+loss+bwd-r"])}, +bwd-input ${
        per(t["ours fwd+loss+bwd-input"])
      }` +
      ` (bwd-input ${per(ours.conv2d ? bwdIn : undefined)}), +bwd-weight ${
        per(t["ours fwd+loss+bwd-weight"])
      }` +
      ` (bwd-weight ${per(ours.conv2d ? bwdW : undefined)})\n` +
      `  tfjs: fwd ${per(t["tfjs fwd"])}, bwd-input ${per(t["tfjs bwd-input"])}, bwd-weight ${
        per(t["tfjs bwd-weight"])
      }\n` +
      rows.slice(-3).map((r) => `  ${r.name}: ours ${fmt(r.ours)}, tfjs ${fmt(r.tfjs)} GFLOP/s`).join("\n"),
  );
}

async function poolNormCases(): Promise<void> {
  const n = N, c = 64, h = 112, w = 112;
  const xh = rand(n * c * h * w, 4);
  const x = fl.tensor(xh, [n, c, h, w]).keep();
  const xt = tfOk ? tf.tensor4d(nchwToNhwc(xh, n, c, h, w), [n, h, w, c]) : null;
  const numel = n * c * h * w;
  const reps = quick ? 4 : 2;
  const cases: { name: string; bytes: number; ours?: () => void; tfjs?: () => void }[] = [];
  {
    const rm = fl.zeros([c]).keep(),
      rv = fl.ones([c]).keep(),
      gamma = fl.ones([c]).keep(),
      beta = fl.zeros([c]).keep();
    const tg = xt ? tf.ones([c]) : null, tb = xt ? tf.zeros([c]) : null;
    const bn = ours.batchNorm2d;
    cases.push({
      name: `BatchNorm2d training fwd [${n},${c},${h},${w}]`,
      bytes: 8 * numel,
      ours: bn ? () => bn(x, rm, rv, gamma, beta, { training: true }) : undefined,
      tfjs: xt
        ? () => {
          const { mean, variance } = tf.moments(xt, [0, 1, 2]);
          tf.batchNorm(xt, mean, variance, tb!, tg!, 1e-5);
        }
        : undefined,
    });
    const ohw = outSize(h, 3, 2, 1);
    const mp = ours.maxPool2d;
    cases.push({
      name: `MaxPool2d 3x3/2 pad 1 fwd [${n},${c},${h},${w}]`,
      bytes: 4 * (numel + n * c * ohw * ohw),
      ours: mp ? () => mp(x, { kernelSize: 3, stride: 2, padding: 1 }) : undefined,
      tfjs: xt ? () => tf.maxPool(xt, 3, 2, 1) : undefined,
    });
    for (const k of cases) {
      if (!k.name.includes(filter)) continue;
      const tasks: Record<string, () => Promise<void>> = {};
      if (k.ours) tasks.ours = onDevice(reps, k.ours);
      if (k.tfjs) tasks.tfjs = tfRun(reps, k.tfjs);
      const t = await timeTasks(tasks, false);
      const rate = (
        ms: number | undefined,
      ) => (ms !== undefined && ms > 0 ? (reps * k.bytes) / 1e9 / (ms / 1000) : NaN);
      rows.push({ name: k.name, unit: "GB/s", ours: rate(t.ours), tfjs: rate(t.tfjs) });
      const r = rows[rows.length - 1];
      console.log(`${k.name}: ours ${fmt(r.ours)} GB/s, tfjs ${fmt(r.tfjs)} GB/s`);
    }
    [rm, rv, gamma, beta].forEach((t) => t.dispose());
    if (tg && tb) tf.dispose([tg, tb]);
  }
  x.dispose();
  if (xt) tf.dispose(xt);
}

console.log(
  `${info.runtime} on ${info.adapter}; tfjs ${tf.version_core} webgpu on ${
    tfOk ? tfAdapter : "-"
  }; batch ${N}` +
    `${quick ? " (--quick)" : ""}${filter ? `; filter "${filter}"` : ""}`,
);
await check();
for (const s of shapes) {
  if ((quick && !s.quick) || !s.name.includes(filter)) continue;
  await convCase(s);
}
await poolNormCases();

console.log(
  `\n${info.runtime} ${
    info.runtime === "deno"
      ? (globalThis as unknown as { Deno: { version: { deno: string } } }).Deno.version.deno
      : process.versions.bun ?? ""
  }` +
    `, ours on ${info.adapter}, tfjs-backend-webgpu ${tf.version_core} on ${
      tfOk ? tfAdapter : "-"
    }, batch ${N}${quick ? " (--quick)" : ""}\n`,
);
console.log("| case | ours | tfjs-webgpu | ratio ours / tfjs |");
console.log("|---|---|---|---|");
for (const r of rows) {
  const ratio = Number.isFinite(r.ours) && Number.isFinite(r.tfjs) ? (r.ours / r.tfjs).toFixed(2) : "-";
  const cell = (v: number) => (Number.isFinite(v) ? `${fmt(v)} ${r.unit}` : "-");
  console.log(`| ${r.name}${r.note ? " \\*" : ""} | ${cell(r.ours)} | ${cell(r.tfjs)} | ${ratio} |`);
}
if (rows.some((r) => r.note)) {
  console.log("\n\\* grouped: tfjs has no groups, emulated by split + one conv per group + concat");
}
console.log(
  "\nbwd-input / bwd-weight, ours: time of sum(conv2d(x, w) * r).backward() with only x / only w requiring a gradient," +
    " minus the same with only r requiring one; tfjs: its Conv2DBackpropInput / Conv2DBackpropFilter kernels.",
);
process.exit(0);
