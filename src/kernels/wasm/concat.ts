// Twins of src/kernels/concat.ts (cat_place, cat_slice) and src/kernels/gather.ts (gather_rows). All move
// 32-bit words (float32 or int32 alike) in contiguous runs, so each run is one memory.copy.
import { argI, argP, at, shareBegin, shareEnd } from "./common";

// Seen along the cat dim a tensor is blocks of `block` words; input block k sits in the output at
// k * outBlock + offset. Bindings (src, out) or (g, dx); uniforms n, block, out_block, offset.

/** Copies words [begin, end) of the input between `input` and the blocks of `whole`; `place` writes whole. */
@inline function blocks(tid: i32, nth: i32, args: usize, place: bool): void {
  const input = argP(args, place ? 0 : 1), whole = argP(args, place ? 1 : 0);
  const n = argI(args, 2), block = argI(args, 3), outBlock = argI(args, 4), offset = argI(args, 5);
  const begin = shareBegin(tid, nth, n, 4), end = shareEnd(tid, nth, n, 4);
  let i = begin;
  while (i < end) {
    const k = i / block, r = i % block, len = min(end - i, block - r);
    const there = at(whole, k * outBlock + offset + r), here = at(input, i);
    const bytes = <usize>len << 2;
    if (place) memory.copy(there, here, bytes);
    else memory.copy(here, there, bytes);
    i += len;
  }
}

/** cat_place: out[(i / block) * out_block + offset + i % block] = src[i]. */
export function cat_place(tid: i32, nth: i32, args: usize): void { blocks(tid, nth, args, true); }

/** cat_slice: dx[i] = g[(i / block) * out_block + offset + i % block]. */
export function cat_slice(tid: i32, nth: i32, args: usize): void { blocks(tid, nth, args, false); }

/**
 * gather_rows: out[e] = src[index[start + e / row] * row + e % row]; bindings src, index (i32), out;
 * uniforms n, row, start.
 */
export function gather_rows(tid: i32, nth: i32, args: usize): void {
  const src = argP(args, 0), index = argP(args, 1), out = argP(args, 2);
  const n = argI(args, 3), row = argI(args, 4), start = argI(args, 5);
  const begin = shareBegin(tid, nth, n, 4), end = shareEnd(tid, nth, n, 4);
  let e = begin;
  while (e < end) {
    const r = e / row, c = e % row, len = min(end - e, row - c);
    const from = at(src, load<i32>(at(index, start + r)) * row + c);
    memory.copy(at(out, e), from, <usize>len << 2);
    e += len;
  }
}
