// Counter-based random numbers (Threefry-2x32, 20 rounds, as in JAX): every element is a pure function of
// (key, stream, index), so results do not depend on dispatch order, and the CPU copy below gives the
// same bits for tests and host-side shuffles.
import { defineKernel, main1d } from "../backend/kernel.ts";
import { checkShape, Tensor, type TensorOptions } from "../autograd/tensor.ts";
import { cast, dispatch1d } from "./basic.ts";
import { mul } from "./elementwise.ts";
import { tracer } from "../onnx/trace.ts";

const ROTATIONS = [13, 15, 26, 6, 17, 29, 16, 24];

/** Threefry-2x32-20 on the CPU: the reference the WGSL below must match bit for bit. */
export function threefry2x32(k0: number, k1: number, c0: number, c1: number): [number, number] {
  const ks = [k0 >>> 0, k1 >>> 0, (0x1bd11bda ^ k0 ^ k1) >>> 0];
  let x0 = (c0 + ks[0]) >>> 0, x1 = (c1 + ks[1]) >>> 0;
  for (let r = 0; r < 20; r++) {
    x0 = (x0 + x1) >>> 0;
    const rot = ROTATIONS[r % 8];
    x1 = ((x1 << rot) | (x1 >>> (32 - rot))) >>> 0;
    x1 = (x1 ^ x0) >>> 0;
    if (r % 4 === 3) {
      const s = (r + 1) / 4;
      x0 = (x0 + ks[s % 3]) >>> 0;
      x1 = (x1 + ks[(s + 1) % 3] + s) >>> 0;
    }
  }
  return [x0, x1];
}

/** The WGSL of Threefry-2x32-20 (`threefry(k0, k1, c0, c1) -> vec2u`), for every kernel that draws. */
export const THREEFRY_WGSL = `
fn rotl(x: u32, r: u32) -> u32 { return (x << r) | (x >> (32u - r)); }
fn threefry(k0: u32, k1: u32, c0: u32, c1: u32) -> vec2u {
  let ks = array<u32, 3>(k0, k1, 0x1bd11bdau ^ k0 ^ k1);
  let rot = array<u32, 8>(${ROTATIONS.map((r) => `${r}u`).join(", ")});
  var x0 = c0 + ks[0];
  var x1 = c1 + ks[1];
  for (var r = 0u; r < 20u; r++) {
    x0 = x0 + x1;
    x1 = rotl(x1, rot[r % 8u]);
    x1 = x1 ^ x0;
    if (r % 4u == 3u) {
      let s = (r + 1u) / 4u;
      x0 = x0 + ks[s % 3u];
      x1 = x1 + ks[(s + 1u) % 3u] + s;
    }
  }
  return vec2u(x0, x1);
}
// 24 random bits to [0, 1) and to (0, 1] (the latter is safe under log).
fn unit_open_hi(x: u32) -> f32 { return f32(x >> 8u) * 5.9604645e-8; }
fn unit_open_lo(x: u32) -> f32 { return f32((x >> 8u) + 1u) * 5.9604645e-8; }`;

/** What the random kernel draws: uniform, normal, or an inverted-dropout mask (0 or 1 / (1 - p)). */
export type Distribution = "uniform" | "normal" | "bernoulliScale";

const randomKernel = defineKernel({
  name: "random",
  storage: [{ name: "out", access: "rw" }],
  uniforms: [
    { name: "n", type: "u32" },
    { name: "k0", type: "u32" },
    { name: "k1", type: "u32" },
    { name: "stream", type: "u32" },
    { name: "base", type: "u32" },
    { name: "dist", type: "u32" },
    { name: "a", type: "f32" },
    { name: "b", type: "f32" },
  ],
  body: `${THREEFRY_WGSL}
${main1d("i", "u.n")}
  let bits = threefry(u.k0, u.k1, u.base + i, u.stream);
  if (u.dist == 0u) {
    out[i] = u.a + (u.b - u.a) * unit_open_hi(bits.x);
  } else if (u.dist == 1u) {
    // Box-Muller with one normal per counter: simple and order-free.
    let r = sqrt(-2.0 * log(unit_open_lo(bits.x)));
    out[i] = u.a + u.b * r * cos(6.2831855 * unit_open_hi(bits.y));
  } else {
    // Inverted dropout mask: kept with probability 1 - a, scaled by b = 1 / (1 - a).
    out[i] = select(0.0, u.b, unit_open_hi(bits.x) >= u.a);
  }
}`,
});

const DIST_CODE: Record<Distribution, number> = { uniform: 0, normal: 1, bernoulliScale: 2 };

/** A seeded source of keys and streams: each draw uses a fresh stream, so draws never overlap. */
export class Generator {
  private k0: number;
  private k1: number;
  private stream = 0;
  /** Keys the generator with `seed`, a non-negative safe integer (throws otherwise); streams start at 0. */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) {
      throw new Error(`seed must be a non-negative safe integer, got ${seed}`);
    }
    this.k0 = seed >>> 0;
    this.k1 = Math.floor(seed / 2 ** 32) >>> 0;
  }

  /** The key (k0, k1) and the next unused stream number: the inputs of one draw. */
  nextStream(): [number, number, number] {
    return [this.k0, this.k1, this.stream++ >>> 0];
  }

  /** A float in [0, 1) on the CPU, from the same counter sequence (for shuffles and sampling). */
  uniform(): number {
    const [k0, k1, stream] = this.nextStream();
    return (threefry2x32(k0, k1, 0, stream)[0] >>> 8) / 2 ** 24;
  }

  /** Fisher-Yates with this generator: the same seed gives the same permutation in every runtime. */
  permutation(n: number): Int32Array {
    const p = Int32Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(this.uniform() * (i + 1));
      [p[i], p[j]] = [p[j], p[i]];
    }
    return p;
  }
}

let globalGenerator = new Generator(0);

/** Reseeds the generator used by draws without an explicit seed. */
export function manualSeed(seed: number): void {
  globalGenerator = new Generator(seed);
}

/** Options of {@link rand}, {@link randn} and {@link dropout}: where the random bits come from. */
export interface RandomOptions extends TensorOptions {
  /** A seed for this draw alone; without it the global generator advances. */
  seed?: number;
  /** A generator to advance instead of the global one; takes precedence over `seed`. */
  generator?: Generator;
}

function draw(shape: number[], dist: Distribution, a: number, b: number, options: RandomOptions): Tensor {
  if (tracer) {
    throw new Error("random draws (rand, randn, dropout in training mode) cannot be exported to ONNX");
  }
  const gen = options.generator ??
    (options.seed !== undefined ? new Generator(options.seed) : globalGenerator);
  const [k0, k1, stream] = gen.nextStream();
  const out = Tensor.empty(checkShape(shape));
  dispatch1d(randomKernel, [out], [out.size, k0, k1, stream, 0, DIST_CODE[dist], a, b], out.size, 4);
  out.requiresGrad = options.requiresGrad ?? false;
  return out;
}

/** A float32 tensor uniform on [low, high) (default [0, 1)), as torch.rand; 24 random bits per value. */
export function rand(shape: number[], options: RandomOptions & { low?: number; high?: number } = {}): Tensor {
  return draw(shape, "uniform", options.low ?? 0, options.high ?? 1, options);
}

/** A float32 tensor normal with the given mean and std (default 0 and 1), as torch.randn (Box-Muller). */
export function randn(
  shape: number[],
  options: RandomOptions & { mean?: number; std?: number } = {},
): Tensor {
  return draw(shape, "normal", options.mean ?? 0, options.std ?? 1, options);
}

/**
 * Inverted dropout (torch.nn.functional.dropout): zeroes each element with probability p and scales the rest
 * by 1 / (1 - p). Returns `x` itself (not a copy) when not `training` or p is 0; throws unless 0 <= p < 1.
 */
export function dropout(x: Tensor, p: number, training: boolean, options: RandomOptions = {}): Tensor {
  if (!(p >= 0 && p < 1)) throw new Error(`dropout: p must be in [0, 1), got ${p}`);
  if (!training || p === 0) return x;
  return mul(x, maskAs(x, draw([...x.shape], "bernoulliScale", p, 1 / (1 - p), options)));
}

/**
 * The mask in `x`'s dtype: a float16 activation stays float16 (its scale 1 / (1 - p) rounded to float16,
 * as PyTorch's half-precision dropout does).
 */
function maskAs(x: Tensor, mask: Tensor): Tensor {
  if (x.dtype !== "float16") return mask;
  const half = cast(mask, "float16");
  mask.dispose();
  return half;
}

/**
 * Stochastic depth per sample (torchvision.ops.stochastic_depth, mode "row"): each sample of x [N, ...]
 * is zeroed whole with probability p, the others scaled by 1 / (1 - p); one draw per sample, broadcast.
 * Returns `x` itself when not `training` or p is 0; throws unless 0 <= p < 1.
 */
export function stochasticDepth(
  x: Tensor,
  p: number,
  training: boolean,
  options: RandomOptions = {},
): Tensor {
  if (!(p >= 0 && p < 1)) throw new Error(`stochasticDepth: p must be in [0, 1), got ${p}`);
  if (x.rank === 0) throw new Error("stochasticDepth: needs a batch dimension, got a scalar");
  if (!training || p === 0) return x;
  const mask = draw(
    [x.shape[0], ...x.shape.slice(1).map(() => 1)],
    "bernoulliScale",
    p,
    1 / (1 - p),
    options,
  );
  return mul(x, maskAs(x, mask));
}
