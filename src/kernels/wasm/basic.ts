// Twins of src/kernels/basic.ts.
import { argF, argI, argP, at, shareBegin, shareEnd } from "./common";
import * as L from "./layout";

/** fill: out[i] = value; uniforms n, value. */
export function fill(tid: i32, nth: i32, args: usize): void {
  const out = argP(args, L.fill.out), n = argI(args, L.fill.n), value = argF(args, L.fill.value);
  const b = shareBegin(tid, nth, n, 4), e = shareEnd(tid, nth, n, 4);
  const v = f32x4.splat(value);
  let i = b;
  for (; i + 4 <= e; i += 4) v128.store(at(out, i), v);
  for (; i < e; i++) store<f32>(at(out, i), value);
}

/** axpy: dst[i] += alpha * src[i]; uniforms n, alpha. */
export function axpy(tid: i32, nth: i32, args: usize): void {
  const dst = argP(args, L.axpy.dst), src = argP(args, L.axpy.src), n = argI(args, L.axpy.n), alpha = argF(args, L.axpy.alpha);
  const b = shareBegin(tid, nth, n, 4), e = shareEnd(tid, nth, n, 4);
  const va = f32x4.splat(alpha);
  let i = b;
  for (; i + 4 <= e; i += 4) {
    v128.store(at(dst, i), f32x4.add(v128.load(at(dst, i)), f32x4.mul(va, v128.load(at(src, i)))));
  }
  for (; i < e; i++) store<f32>(at(dst, i), load<f32>(at(dst, i)) + alpha * load<f32>(at(src, i)));
}
