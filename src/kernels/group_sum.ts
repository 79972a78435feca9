// Sums across a workgroup, written once for the kernels that reduce within one (batch norm's per-channel
// sums, the reduction of many values to one): a tree in workgroup memory, or, where the device offers the
// `subgroups` feature (Bun's Dawn on lavapipe does; most GPUs do) and `fl.init({ subgroups: true })` asked
// for it, subgroupAdd within each subgroup first, so the workgroup memory and its barriers serve only one
// value per subgroup. Opt-in because it adds in another order: a seeded experiment's PR-AUC moved by 0.006
// between Deno (no subgroups) and Bun with them, where the tree gives both the same bits.
import { getEngine } from "../backend/device.ts";

/** How a workgroup sums: halving steps in workgroup memory, or subgroupAdd and one pass over subgroups. */
export type GroupSum = "tree" | "subgroup";

/** Set by {@link setSubgroupSums}; null: as `fl.init`'s `subgroups` option says. */
let override: boolean | null = null;

/**
 * Turns the subgroup sums on or off for the kernels dispatched next (null: back to what `fl.init` asked
 * for), e.g. to compare them with the tree; returns the previous setting. Where the device has no subgroups,
 * the tree runs whatever this says.
 */
export function setSubgroupSums(on: boolean | null): boolean | null {
  const before = override;
  override = on;
  return before;
}

/** How workgroups of the open device sum now. */
export function groupSum(): GroupSum {
  const engine = getEngine();
  return (override ?? engine.subgroupSums) && engine.subgroups ? "subgroup" : "tree";
}

/** The WGSL extensions a kernel summing this way enables. */
export const groupSumEnables = (sum: GroupSum): string[] => (sum === "subgroup" ? ["subgroups"] : []);

/** The builtins `main` takes (after its own) for this way of summing. */
export const groupSumBuiltins = (sum: GroupSum): string =>
  sum === "subgroup"
    ? ", @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_size) sg_size: u32"
    : "";

/**
 * WGSL statements that leave in `arrays[i][0]` the sum over the workgroup's threads of `values[i]` (an
 * expression each thread has evaluated), every thread past a barrier, so all may read it. `arrays` are
 * `var<workgroup>` arrays of WG f32s; `main` reads `lid` (local_invocation_id) and, for "subgroup", the
 * builtins of {@link groupSumBuiltins}. The subgroup form takes a 1-D workgroup's subgroups to be runs of
 * consecutive invocations (what Vulkan, D3D12 and Metal drivers give) and adds the subgroups' sums in order on
 * thread 0: the same values as the tree within float32 rounding, not bit for bit.
 */
export function groupSums(sum: GroupSum, arrays: string[], values: string[]): string {
  return groupReduce(sum, "add", arrays, values);
}

/** As {@link groupSums}, for the largest of `values[i]` over the workgroup (exact either way). */
export function groupMaxes(sum: GroupSum, arrays: string[], values: string[]): string {
  return groupReduce(sum, "max", arrays, values);
}

function groupReduce(sum: GroupSum, op: "add" | "max", arrays: string[], values: string[]): string {
  // `into op= from`, as WGSL statements (the sums' text as it always was: same kernels, same cache keys)
  const fold = (into: string, from: string) =>
    op === "add" ? `${into} += ${from};` : `${into} = max(${into}, ${from});`;
  if (sum === "tree") {
    return `${arrays.map((a, i) => `${a}[lid.x] = ${values[i]};`).join(" ")}
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid.x < s) { ${arrays.map((a) => fold(`${a}[lid.x]`, `${a}[lid.x + s]`)).join(" ")} }
    workgroupBarrier();
  }`;
  }
  // A block of its own: a kernel may reduce more than once, and the locals must not clash.
  const [part, subgroupOp, start] = op === "add"
    ? ["sg_sum", "subgroupAdd", "0.0"]
    : ["sg_max", "subgroupMax", "-0x1.fffffep+127f"];
  return `{
    ${arrays.map((_, i) => `let ${part}_${i} = ${subgroupOp}(${values[i]});`).join(" ")}
    if (sg_lane == 0u) { ${arrays.map((a, i) => `${a}[lid.x / sg_size] = ${part}_${i};`).join(" ")} }
    workgroupBarrier();
    if (lid.x == 0u) {
      ${arrays.map((_, i) => `var total_${i} = ${start};`).join(" ")}
      for (var k = 0u; k < WG / sg_size; k++) { ${
    arrays.map((a, i) => fold(`total_${i}`, `${a}[k]`)).join(" ")
  } }
      ${arrays.map((a, i) => `${a}[0] = total_${i};`).join(" ")}
    }
    workgroupBarrier();
  }`;
}
