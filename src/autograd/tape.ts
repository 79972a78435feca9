// Reverse-mode differentiation: walk the graph behind a scalar in reverse topological order, apply each
// op's gradient rule, and accumulate into the leaves' `.grad`.
import {
  type BackwardOptions,
  type GradNode,
  installBackward,
  isGradEnabled,
  noGrad,
  scope,
  type Tensor,
} from "./tensor.ts";
import { add } from "../kernels/elementwise.ts";
import { axpyInPlace, cast, ones } from "../kernels/basic.ts";
import { fmtShape, sameShape } from "../kernels/shape.ts";
import { profilePhase } from "../backend/profile.ts";
import { tracer } from "../onnx/trace.ts";

/**
 * Records how `out` was made when any input needs a gradient and recording is on; returns `out`.
 * Ops call this after dispatching their forward kernel (and recording their ONNX node, when tracing).
 */
export function record(out: Tensor, op: string, inputs: Tensor[], backward: GradNode["backward"]): Tensor {
  // Under an ONNX trace every op result must have its node by now (src/onnx/trace.ts).
  tracer?.requireNode(out, op);
  if (isGradEnabled() && inputs.some((t) => t.requiresGrad)) {
    out.requiresGrad = true;
    out.isLeaf = false;
    out.node = { op, inputs, backward };
  }
  return out;
}

function topoOrder(root: Tensor): Tensor[] {
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  // Iterative DFS: the graphs of deep CNNs would overflow the call stack with recursion.
  const stack: [Tensor, number][] = [[root, 0]];
  visited.add(root);
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    const [t, next] = top;
    const inputs = t.node?.inputs ?? [];
    if (next < inputs.length) {
      top[1]++;
      const child = inputs[next];
      if (child.requiresGrad && !visited.has(child)) {
        visited.add(child);
        stack.push([child, 0]);
      }
    } else {
      order.push(t);
      stack.pop();
    }
  }
  return order.reverse();
}

function backward(root: Tensor, { freeActivations = false }: BackwardOptions): void {
  if (root.size !== 1) {
    throw new Error(`backward() needs a tensor of one element (a loss), got shape ${fmtShape(root.shape)}`);
  }
  if (!root.requiresGrad) {
    throw new Error(
      "backward(): the tensor does not require grad (no input had requiresGrad, or it was made under noGrad)",
    );
  }
  if (!root.node && !root.isLeaf) {
    throw new Error("backward(): the graph behind this tensor was already used by an earlier backward()");
  }
  profilePhase("backward", () =>
    noGrad(() => {
      const order = topoOrder(root);
      const grads = new Map<Tensor, Tensor>([[root, ones(root.shape)]]);
      for (const t of order) {
        const g = grads.get(t);
        if (!g) continue;
        grads.delete(t);
        if (!t.node) {
          accumulateLeaf(t, g);
          continue;
        }
        const { inputs, backward: rule, op } = t.node;
        for (const input of inputs) {
          if (input.requiresGrad && input.disposed) {
            throw new Error(
              `backward(): an input of ${op} was disposed before backward(); keep it until then`,
            );
          }
        }
        // A rule runs in a scope of its own: what it makes besides the gradients it returns is freed.
        const inputGrads = scope(() => rule(g));
        g.dispose();
        inputs.forEach((input, i) => {
          let gi = inputGrads[i];
          if (!gi) return;
          if (gi.dtype !== input.dtype && input.requiresGrad) {
            // a gradient has its tensor's dtype (a float16 activation's gradient is float16, a float32
            // parameter's float32), whatever mix of dtypes the rule's kernels read
            const converted = cast(gi, input.dtype as "float32" | "float16");
            gi.dispose();
            gi = converted;
          }
          if (!input.requiresGrad) {
            gi.dispose();
            return;
          }
          if (!sameShape(gi.shape, input.shape)) {
            throw new Error(
              `gradient rule of ${op}: input ${i} has shape ${fmtShape(input.shape)}, gradient ${
                fmtShape(gi.shape)
              }`,
            );
          }
          const prev = grads.get(input);
          if (prev) {
            grads.set(input, add(prev, gi));
            prev.dispose();
            gi.dispose();
          } else grads.set(input, gi);
        });
        // The graph is consumed: saved tensors may now be freed by their owners.
        t.node = null;
        // Every consumer of t came earlier in the order, so no rule still to run reads t (a rule reads its
        // inputs and its own output).
        if (freeActivations && t !== root && t.scoped) t.dispose();
      }
    }));
}

function accumulateLeaf(leaf: Tensor, g: Tensor): void {
  if (leaf.grad) {
    axpyInPlace(leaf.grad, g);
    g.dispose();
  } else {
    // A gradient belongs to its leaf, not to the scope the backward ran in.
    leaf.grad = g.keep();
  }
}

installBackward(backward);
