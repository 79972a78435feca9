// Twins of src/kernels/concat.ts (cat_place, cat_slice) and src/kernels/gather.ts (gather_rows). All move
// 32-bit words (float32 or int32 alike) in contiguous runs, so each run is one memory.copy.
import { argI, argP, at, shareBegin, shareEnd } from "./common";
import * as L from "./layout";

// Seen along the cat dim a tensor is blocks of `block` words; input block k sits in the output at
// k * outBlock + offset.

/** Copies words [begin, end) of the input between `input` and the blocks of `whole`; `place` writes whole. */
@inline function blocks(
  tid: i32, nth: i32, input: usize, whole: usize, n: i32, block: i32, outBlock: i32, offset: i32, place: bool,
): void {
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
export function cat_place(tid: i32, nth: i32, args: usize): void {
  blocks(
    tid, nth, argP(args, L.cat_place.src), argP(args, L.cat_place.out), argI(args, L.cat_place.n),
    argI(args, L.cat_place.block), argI(args, L.cat_place.out_block), argI(args, L.cat_place.offset), true,
  );
}

/** cat_slice: dx[i] = g[(i / block) * out_block + offset + i % block]. */
export function cat_slice(tid: i32, nth: i32, args: usize): void {
  blocks(
    tid, nth, argP(args, L.cat_slice.dx), argP(args, L.cat_slice.g), argI(args, L.cat_slice.n),
    argI(args, L.cat_slice.block), argI(args, L.cat_slice.out_block), argI(args, L.cat_slice.offset), false,
  );
}

/**
 * gather_rows: out[e] = src[index[start + e / row] * row + e % row]; bindings src, index (i32), out;
 * uniforms n, row, start.
 */
export function gather_rows(tid: i32, nth: i32, args: usize): void {
  const src = argP(args, L.gather_rows.src), index = argP(args, L.gather_rows.index), out = argP(args, L.gather_rows.out);
  const n = argI(args, L.gather_rows.n), row = argI(args, L.gather_rows.row), start = argI(args, L.gather_rows.start);
  const begin = shareBegin(tid, nth, n, 4), end = shareEnd(tid, nth, n, 4);
  let e = begin;
  while (e < end) {
    const r = e / row, c = e % row, len = min(end - e, row - c);
    const from = at(src, load<i32>(at(index, start + r)) * row + c);
    memory.copy(at(out, e), from, <usize>len << 2);
    e += len;
  }
}
