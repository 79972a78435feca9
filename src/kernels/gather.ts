// Row gathers on the device: mini-batches drawn from a data set that was uploaded once.
import { defineKernel, main1d } from "../backend/kernel.ts";
import { Tensor } from "../autograd/tensor.ts";
import { dispatch1d } from "./basic.ts";
import { fmtShape } from "./shape.ts";
import { refuse, tracer } from "../onnx/trace.ts";

// Bits are copied as u32, so the same kernel serves float32 and int32 tensors.
const gatherKernel = defineKernel({
  name: "gather_rows",
  storage: [
    { name: "src", access: "read", type: "u32" },
    { name: "index", access: "read", type: "i32" },
    { name: "out", access: "rw", type: "u32" },
  ],
  uniforms: [{ name: "n", type: "u32" }, { name: "row", type: "u32" }, { name: "start", type: "u32" }],
  body: `${main1d("e", "u.n")}
  let r = e / u.row;
  out[e] = src[u32(index[u.start + r]) * u.row + e % u.row];
}`,
});

/**
 * Rows `index[start .. start + count)` of `src` (first dim indexed), as a new tensor [count, ...rest].
 * Indices must be in range: they are not checked on the device. No gradient.
 */
export function gatherRows(src: Tensor, index: Tensor, start: number, count: number): Tensor {
  if (tracer) refuse("gatherRows");
  if (index.dtype !== "int32" || index.rank !== 1) {
    throw new Error(`gatherRows: index must be an int32 vector, got ${fmtShape(index.shape)}`);
  }
  if (start < 0 || count < 0 || start + count > index.size) {
    throw new Error(`gatherRows: rows ${start}..${start + count} are outside the ${index.size} indices`);
  }
  const rowShape = src.shape.slice(1);
  const row = rowShape.reduce((a, b) => a * b, 1);
  const out = Tensor.empty([count, ...rowShape], src.dtype);
  dispatch1d(gatherKernel, [src, index, out], [count * row, row, start], count * row);
  return out;
}
