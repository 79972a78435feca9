// exp for the generated element-wise twins (src/backend/expr.ts emits expf and expf4 for E.exp): one
// algorithm written twice, on f32 and on f32x4, with the same operations in the same order, so a lane and the
// scalar tail give the same bits and an element's value does not depend on where it sits in a tensor.
// AssemblyScript's Mathf.exp has no lane form, and element by element it made SiLU the slowest pass of
// AI-Covid's forward. Cephes' expf: x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two so n ln2 is exact),
// exp(r) by a degree-6 polynomial (relative error under 2 ulp), times 2^n as two powers of two so n reaches
// from -150 to 128: results overflow to +inf and underflow through the subnormals to 0 as they should; NaN
// stays NaN (min and max propagate it, whatever bits the scale gets).

const LOG2E: f32 = 1.44269504088896341;
/** 1.5 2^23: added to a float below 2^22 in magnitude it rounds it to an integer (to even), which then sits
 * in the low mantissa bits, so n and its integer k come without a float-to-int conversion (none traps on NaN). */
const ROUND: f32 = 12582912;
const ROUND_BITS: i32 = 0x4b400000;
const LN2_HI: f32 = 0.693359375;
const LN2_LO: f32 = -2.12194440e-4;
const P0: f32 = 1.9875691500e-4;
const P1: f32 = 1.3981999507e-3;
const P2: f32 = 8.3334519073e-3;
const P3: f32 = 4.1665795894e-2;
const P4: f32 = 1.6666665459e-1;
const P5: f32 = 5.0000001201e-1;
/** Past these, exp is +inf or 0 in f32 anyway; the clamp keeps n and its powers of two in range. */
const X_MAX: f32 = 89;
const X_MIN: f32 = -104;

/** e^x in f32. */
@inline export function expf(x: f32): f32 {
  const c = min<f32>(max<f32>(x, X_MIN), X_MAX);
  const t = c * LOG2E + ROUND, n = t - ROUND;
  const r = (c - n * LN2_HI) - n * LN2_LO;
  let p = P0 * r + P1;
  p = p * r + P2;
  p = p * r + P3;
  p = p * r + P4;
  p = p * r + P5;
  const y = (p * (r * r) + r) + <f32>1;
  const k = reinterpret<i32>(t) - ROUND_BITS, half = k >> 1;
  const s1 = reinterpret<f32>((half + 127) << 23), s2 = reinterpret<f32>((k - half + 127) << 23);
  return (y * s1) * s2;
}

/** e^x in each of four f32 lanes, bit for bit as {@link expf}. */
@inline export function expf4(x: v128): v128 {
  const c = f32x4.min(f32x4.max(x, f32x4.splat(X_MIN)), f32x4.splat(X_MAX));
  const t = f32x4.add(f32x4.mul(c, f32x4.splat(LOG2E)), f32x4.splat(ROUND)), n = f32x4.sub(t, f32x4.splat(ROUND));
  const r = f32x4.sub(f32x4.sub(c, f32x4.mul(n, f32x4.splat(LN2_HI))), f32x4.mul(n, f32x4.splat(LN2_LO)));
  let p = f32x4.add(f32x4.mul(f32x4.splat(P0), r), f32x4.splat(P1));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(P2));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(P3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(P4));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(P5));
  const y = f32x4.add(f32x4.add(f32x4.mul(p, f32x4.mul(r, r)), r), f32x4.splat(1));
  const k = i32x4.sub(t, i32x4.splat(ROUND_BITS)), half = i32x4.shr_s(k, 1), bias = i32x4.splat(127);
  const s1 = i32x4.shl(i32x4.add(half, bias), 23), s2 = i32x4.shl(i32x4.add(i32x4.sub(k, half), bias), 23);
  return f32x4.mul(f32x4.mul(y, s1), s2);
}
