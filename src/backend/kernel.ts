// Builds a kernel's WGSL from its bindings, so each op writes only its body.
import type { Access, KernelSpec, ScalarType } from "./engine.ts";

export interface KernelDef {
  name: string;
  storage: { name: string; access: Access; type?: "f32" | "i32" | "u32" | "atomic<u32>" | "vec4<f32>" }[];
  uniforms?: { name: string; type: ScalarType }[];
  workgroupSize?: number;
  /** WGSL after the bindings; declares `@compute @workgroup_size(WG) fn main(...)`. */
  body: string;
  /** The WebAssembly twin's export name (src/kernels/wasm); defaults to `name`. */
  wasm?: string;
}

/**
 * `flat_id(gid, nwg)` turns a 2-D grid (x up to the per-dimension limit, then y) into one index, for ops
 * dispatched with `Engine.grid`.
 */
const FLAT_ID = `fn flat_id(gid: vec3u, nwg: vec3u) -> u32 { return gid.x + gid.y * nwg.x * WG; }`;

/** The opening of a kernel with one thread per element: `index` in [0, count), the rest return. */
export function main1d(index: string, count: string): string {
  return `@compute @workgroup_size(WG) fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let ${index} = flat_id(gid, nwg);
  if (${index} >= ${count}) { return; }`;
}

export function defineKernel(def: KernelDef): KernelSpec {
  const wg = def.workgroupSize ?? 256;
  const uniforms = def.uniforms ?? [];
  const lines: string[] = [];
  def.storage.forEach((s, i) => {
    const access = s.access === "read" ? "read" : "read_write";
    lines.push(`@group(0) @binding(${i}) var<storage, ${access}> ${s.name}: array<${s.type ?? "f32"}>;`);
  });
  if (uniforms.length > 0) {
    lines.push(`struct Params { ${uniforms.map((u) => `${u.name}: ${u.type},`).join(" ")} }`);
    lines.push(`@group(0) @binding(${def.storage.length}) var<uniform> u: Params;`);
  }
  lines.push(`const WG: u32 = ${wg}u;`, FLAT_ID, def.body);
  const code = lines.join("\n");
  return {
    name: def.name,
    key: `${def.name}\n${code}`,
    code,
    wasm: def.wasm ?? def.name,
    storage: def.storage.map((s) => s.access),
    uniforms: uniforms.map((u) => u.type),
  };
}

/**
 * A kernel that exists only on the WebAssembly backend, for an op whose Wasm path is decomposed
 * differently from its WGSL one (convolution: packed GEMM panels instead of one implicit-GEMM pass).
 */
export function wasmKernel(def: Pick<KernelDef, "name" | "storage" | "uniforms">): KernelSpec {
  return {
    name: def.name,
    key: `wasm:${def.name}`,
    code: "",
    wasm: def.name,
    storage: def.storage.map((s) => s.access),
    uniforms: (def.uniforms ?? []).map((u) => u.type),
  };
}

/** Memoises kernels built from a variant key (an op name, a flag). */
export function kernelFamily<K extends string | number>(
  build: (variant: K) => KernelDef,
): (variant: K) => KernelSpec {
  const cache = new Map<K, KernelSpec>();
  return (variant) => {
    let spec = cache.get(variant);
    if (!spec) cache.set(variant, spec = defineKernel(build(variant)));
    return spec;
  };
}
