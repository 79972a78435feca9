// Twin of src/kernels/random.ts: counter-based Threefry-2x32-20 draws, element i from the counter
// (base + i, stream) under key (k0, k1), bit for bit the WGSL's (u32 arithmetic is exact), four counters at
// once in i32x4 lanes. Bindings out; uniforms n, k0, k1, stream, base, dist, a, b.
import { argF, argI, argP, at, SCRATCH, shareBegin, shareEnd } from "./common";
import * as L from "./layout";

const UNIFORM = 0, NORMAL = 1;
/** 2^-24: 24 random bits to a float in [0, 1). */
const ULP24: f32 = 5.9604645e-8;
const TWO_PI: f32 = 6.2831855;

@inline function rotl(x: v128, r: i32): v128 {
  return v128.or(i32x4.shl(x, r), i32x4.shr_u(x, 32 - r));
}

/** The injected key word s % 3 of (k0, k1, k0 ^ k1 ^ 0x1bd11bda). */
@inline function keyWord(s: i32, k0: v128, k1: v128, k2: v128): v128 {
  const j = s % 3;
  return j == 0 ? k0 : j == 1 ? k1 : k2;
}

/** Top 24 bits of each lane to [0, 1), or to (0, 1] with `lift` 1 (safe under log). */
@inline function unit(x: v128, lift: i32): v128 {
  const top = i32x4.add(i32x4.shr_u(x, 8), i32x4.splat(lift));
  return f32x4.mul(f32x4.convert_i32x4_u(top), f32x4.splat(ULP24));
}

/** Elements i .. i+3 of the draw. */
@inline function draw4(
  i: i32, k0: v128, k1: v128, k2: v128, stream: v128, base: i32, dist: i32, a: f32, b: f32,
): v128 {
  const c0 = i32x4.add(i32x4.splat(base + i), i32x4(0, 1, 2, 3));
  let x0 = i32x4.add(c0, k0), x1 = i32x4.add(stream, k1);
  // 20 rounds in five groups of four; the rotations alternate between two sets, and the key schedule is
  // injected after each group.
  for (let s = 1; s <= 5; s++) {
    const odd = s & 1;
    x0 = i32x4.add(x0, x1);
    x1 = v128.xor(rotl(x1, odd ? 13 : 17), x0);
    x0 = i32x4.add(x0, x1);
    x1 = v128.xor(rotl(x1, odd ? 15 : 29), x0);
    x0 = i32x4.add(x0, x1);
    x1 = v128.xor(rotl(x1, odd ? 26 : 16), x0);
    x0 = i32x4.add(x0, x1);
    x1 = v128.xor(rotl(x1, odd ? 6 : 24), x0);
    x0 = i32x4.add(x0, keyWord(s, k0, k1, k2));
    x1 = i32x4.add(i32x4.add(x1, keyWord(s + 1, k0, k1, k2)), i32x4.splat(s));
  }
  if (dist == UNIFORM) return f32x4.add(f32x4.splat(a), f32x4.mul(f32x4.splat(b - a), unit(x0, 0)));
  if (dist == NORMAL) {
    // Box-Muller with one normal per counter, as the WGSL: r cos(2 pi u2), r = sqrt(-2 log u1).
    const u1 = unit(x0, 1), u2 = unit(x1, 0);
    const r0 = Mathf.sqrt(-2 * Mathf.log(f32x4.extract_lane(u1, 0)));
    const r1 = Mathf.sqrt(-2 * Mathf.log(f32x4.extract_lane(u1, 1)));
    const r2 = Mathf.sqrt(-2 * Mathf.log(f32x4.extract_lane(u1, 2)));
    const r3 = Mathf.sqrt(-2 * Mathf.log(f32x4.extract_lane(u1, 3)));
    const z = f32x4(
      b * r0 * Mathf.cos(TWO_PI * f32x4.extract_lane(u2, 0)),
      b * r1 * Mathf.cos(TWO_PI * f32x4.extract_lane(u2, 1)),
      b * r2 * Mathf.cos(TWO_PI * f32x4.extract_lane(u2, 2)),
      b * r3 * Mathf.cos(TWO_PI * f32x4.extract_lane(u2, 3)),
    );
    return f32x4.add(f32x4.splat(a), z);
  }
  // Inverted dropout mask: kept (b = 1 / (1 - a)) where the uniform is >= the drop probability a.
  return v128.and(f32x4.splat(b), f32x4.ge(unit(x0, 0), f32x4.splat(a)));
}

export function random(tid: i32, nth: i32, args: usize): void {
  const out = argP(args, L.random.out), n = argI(args, L.random.n);
  const k0 = i32x4.splat(argI(args, L.random.k0)), k1 = i32x4.splat(argI(args, L.random.k1));
  const k2 = i32x4.splat(argI(args, L.random.k0) ^ argI(args, L.random.k1) ^ 0x1bd11bda);
  const stream = i32x4.splat(argI(args, L.random.stream));
  const base = argI(args, L.random.base), dist = argI(args, L.random.dist), a = argF(args, L.random.a), b = argF(args, L.random.b);
  const begin = shareBegin(tid, nth, n, 4), end = shareEnd(tid, nth, n, 4);
  let i = begin;
  for (; i + 4 <= end; i += 4) v128.store(at(out, i), draw4(i, k0, k1, k2, stream, base, dist, a, b));
  if (i < end) {
    // The last 1 to 3 elements: a full group drawn into the thread's scratch, the wanted lanes copied out.
    const tail = argP(args, L.random.SCRATCH_BASE) + <usize>tid * SCRATCH;
    v128.store(tail, draw4(i, k0, k1, k2, stream, base, dist, a, b));
    memory.copy(at(out, i), tail, <usize>(end - i) << 2);
  }
}
