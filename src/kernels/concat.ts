// Concatenation along any dim (DenseNet's and Inception's channel concatenation), with a backward that
// slices the gradient back into each input on the device.
import { defineKernel, main1d } from "../backend/kernel.ts";
import { Tensor } from "../autograd/tensor.ts";
import { record } from "../autograd/tape.ts";
import { dispatch1d } from "./basic.ts";
import { fmtShape, normAxis } from "./shape.ts";
import { tracer } from "../onnx/trace.ts";

// Seen along the dim, a tensor is `outer` blocks of `block` = size(dim) * inner contiguous values; input
// block b sits in the output at b * out_block + offset. Bits are moved as u32, so int32 tensors work too.
const uniforms = [
  { name: "n", type: "u32" as const },
  { name: "block", type: "u32" as const },
  { name: "out_block", type: "u32" as const },
  { name: "offset", type: "u32" as const },
];

const placeKernel = defineKernel({
  name: "cat_place",
  storage: [{ name: "src", access: "read", type: "u32" }, { name: "out", access: "rw", type: "u32" }],
  uniforms,
  body: `${main1d("i", "u.n")}
  out[(i / u.block) * u.out_block + u.offset + i % u.block] = src[i];
}`,
});

const sliceKernel = defineKernel({
  name: "cat_slice",
  storage: [{ name: "g", access: "read", type: "u32" }, { name: "dx", access: "rw", type: "u32" }],
  uniforms,
  body: `${main1d("i", "u.n")}
  dx[i] = g[(i / u.block) * u.out_block + u.offset + i % u.block];
}`,
});

/** torch.cat: the tensors must agree in every dim but `dim` (and in dtype). */
export function cat(inputs: Tensor[], dim = 0): Tensor {
  const op = "cat";
  if (!Array.isArray(inputs) || inputs.length === 0) {
    throw new Error(`${op}: expects a non-empty array of tensors`);
  }
  // A copy: the gradient rule keeps the list, and callers (DenseNet) go on appending to theirs.
  const xs = [...inputs];
  xs.forEach((t, i) => {
    if (!(t instanceof Tensor)) throw new Error(`${op}: element ${i} is not a Tensor (${typeof t})`);
  });
  const first = xs[0];
  if (first.rank === 0) throw new Error(`${op}: zero-dimensional tensors cannot be concatenated`);
  const d = normAxis(dim, first.rank, op);
  xs.forEach((t, i) => {
    if (t.dtype !== first.dtype) {
      throw new Error(`${op}: tensor ${i} is ${t.dtype} but tensor 0 is ${first.dtype}`);
    }
    if (t.rank !== first.rank) {
      throw new Error(
        `${op}: tensor ${i} has rank ${t.rank} (shape ${
          fmtShape(t.shape)
        }) but tensor 0 has rank ${first.rank}`,
      );
    }
    const bad = t.shape.findIndex((s, k) => k !== d && s !== first.shape[k]);
    if (bad >= 0) {
      throw new Error(
        `${op}: tensor ${i} has shape ${fmtShape(t.shape)} and tensor 0 ${fmtShape(first.shape)}: ` +
          `they differ in dim ${bad}, but only dim ${d} may differ`,
      );
    }
  });
  const total = xs.reduce((a, t) => a + t.shape[d], 0);
  const shape = first.shape.map((s, k) => (k === d ? total : s));
  const inner = first.shape.slice(d + 1).reduce((a, b) => a * b, 1);
  const out = Tensor.empty(shape, first.dtype);
  const outBlock = total * inner;
  const places: number[][] = [];
  let offset = 0;
  for (const t of xs) {
    const block = t.shape[d] * inner;
    const params = [t.size, Math.max(block, 1), outBlock, offset];
    places.push(params);
    dispatch1d(placeKernel, [t, out], params, t.size);
    offset += block;
  }
  tracer?.node("Concat", xs, out, { axis: d });
  return record(out, op, xs, (g) =>
    xs.map((t, i) => {
      if (!t.requiresGrad) return null;
      const dx = Tensor.empty([...t.shape], t.dtype);
      dispatch1d(sliceKernel, [g, dx], places[i], t.size);
      return dx;
    }));
}
