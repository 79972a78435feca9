// Shape-only ops: the result shares the input's device memory.
import { checkShape, shapeSize, type Tensor } from "../autograd/tensor.ts";
import { record } from "../autograd/tape.ts";
import { fmtShape, normAxis } from "./shape.ts";
import { traceComposite, tracer } from "../onnx/trace.ts";

/** Same values, new shape; one dim may be -1 (inferred). */
export function reshape(x: Tensor, shape: number[]): Tensor {
  const inferred = shape.filter((d) => d === -1).length;
  if (inferred > 1) throw new Error(`reshape: only one dim may be -1, got ${fmtShape(shape)}`);
  let target = shape;
  if (inferred === 1) {
    const known = shape.reduce((a, d) => (d === -1 ? a : a * d), 1);
    if (known === 0 || x.size % known !== 0) {
      throw new Error(`reshape: cannot infer -1 in ${fmtShape(shape)} for ${x.size} elements`);
    }
    target = shape.map((d) => (d === -1 ? x.size / known : d));
  }
  checkShape(target, "reshape: shape");
  if (shapeSize(target) !== x.size) {
    throw new Error(`reshape: ${fmtShape(x.shape)} (${x.size} elements) cannot become ${fmtShape(target)}`);
  }
  const out = x.view(target);
  // A 0 in ONNX's shape copies the input's dim: a batch dim kept this way stays dynamic in the graph.
  tracer?.node(
    "Reshape",
    [x, tracer.int64s(target.map((d, i) => (i === 0 && d === x.shape[0] ? 0 : d)))],
    out,
  );
  return record(out, "reshape", [x], (g) => [g.view([...x.shape])]);
}

/** Merges dims startDim..endDim into one (PyTorch's flatten). */
export function flatten(x: Tensor, startDim = 1, endDim = -1): Tensor {
  if (x.rank === 0) return reshape(x, [1]);
  const s = normAxis(startDim, x.rank, "flatten"), e = normAxis(endDim, x.rank, "flatten");
  if (s > e) throw new Error(`flatten: startDim ${startDim} comes after endDim ${endDim}`);
  const merged = x.shape.slice(s, e + 1).reduce((a, b) => a * b, 1);
  const shape = [...x.shape.slice(0, s), merged, ...x.shape.slice(e + 1)];
  // ONNX's Flatten always makes 2-D [d0 x ... x d(axis-1), the rest]: that is flatten(x, 1) to the last dim.
  if (s === 1 && e === x.rank - 1) {
    return traceComposite("Flatten", [x], { axis: 1 }, () => reshape(x, shape));
  }
  return reshape(x, shape);
}
