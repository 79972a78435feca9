// Builds a kernel's WGSL from its bindings, so each op writes only its body.
import type { Access, KernelSpec, ScalarType } from "./engine.ts";
import { getEngine } from "./device.ts";
import {
  calledFunctions,
  type ExprFunction,
  functionsWgsl,
  type PointwiseProgram,
  pointwiseWgsl,
} from "./expr.ts";

export interface KernelDef {
  name: string;
  storage: { name: string; access: Access; type?: "f32" | "i32" | "u32" | "atomic<u32>" | "vec4<f32>" }[];
  uniforms?: { name: string; type: ScalarType }[];
  workgroupSize?: number;
  /** WGSL extensions the body uses (`subgroups`): `enable` directives at the top of the shader. */
  enable?: string[];
  /** WGSL after the bindings; declares `@compute @workgroup_size(WG) fn main(...)`. */
  body: string;
  /**
   * The WebAssembly twin's export name (src/kernels/wasm); defaults to `name`. null: a WebGPU-only kernel,
   * for an op that takes another path on WebAssembly (the GEMM kernels: the Wasm GEMM packs its panels).
   */
  wasm?: string | null;
  /**
   * The name under which the twins see this kernel's argument slots (src/kernels/wasm/layout.ts), where a
   * family's kernels take the same arguments and their twins share code (every `unary_*`: "unary"); the
   * build checks that they do. Defaults to the twin's export name.
   */
  layout?: string;
  /**
   * The name of a uniform list that several kernels share while their bindings differ (the pooling kernels:
   * "pool"), for twins that read the uniforms relative to the first one; layout.ts then holds each uniform's
   * offset under that name, and the build checks that every kernel naming it has the same list.
   */
  uniformBlock?: string;
  /**
   * Expression functions the body calls (src/backend/expr.ts): their WGSL goes before the body, and
   * tools/build_wasm.ts writes the same functions for the twins (src/kernels/wasm/functions.ts).
   */
  functions?: ExprFunction[];
  /** The program a pointwise kernel's body and its whole twin are generated from (see pointwiseKernel). */
  pointwise?: PointwiseProgram;
}

/**
 * Every kernel declared so far, by name, and the families whose variants are listed: what
 * tools/build_wasm.ts generates the twins' argument slots from (src/kernels/wasm/layout.ts) and checks the
 * twins against.
 */
const declared = new Map<string, KernelDef>();
const listedFamilies: (() => void)[] = [];

/**
 * Every kernel declaration: those made so far and every listed variant of every family (instantiated here).
 * Families without a variant list must be WebGPU-only (`wasm: null`); the build checks that too.
 */
export function declaredKernels(): KernelDef[] {
  for (const instantiate of listedFamilies) instantiate();
  return [...declared.values()];
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
  // Kernels with a twin are declared by name; WebGPU-only ones (shape-specialised GEMMs) share names across
  // their variants and are not part of the twins' contract.
  if (def.wasm !== null) {
    const earlier = declared.get(def.name);
    if (earlier && (earlier.body !== def.body || earlier.wasm !== def.wasm)) {
      throw new Error(`kernel ${def.name} is declared twice with different code`);
    }
    declared.set(def.name, def);
  }
  const wg = def.workgroupSize ?? 256;
  const uniforms = def.uniforms ?? [];
  const lines: string[] = (def.enable ?? []).map((e) => `enable ${e};`);
  def.storage.forEach((s, i) => {
    const access = s.access === "read" ? "read" : "read_write";
    lines.push(`@group(0) @binding(${i}) var<storage, ${access}> ${s.name}: array<${s.type ?? "f32"}>;`);
  });
  if (uniforms.length > 0) {
    lines.push(`struct Params { ${uniforms.map((u) => `${u.name}: ${u.type},`).join(" ")} }`);
    lines.push(`@group(0) @binding(${def.storage.length}) var<uniform> u: Params;`);
  }
  lines.push(`const WG: u32 = ${wg}u;`, FLAT_ID);
  if (def.functions) lines.push(functionsWgsl(def.functions));
  lines.push(def.body);
  const code = lines.join("\n");
  return {
    name: def.name,
    key: `${def.name}\n${code}`,
    code,
    wasm: def.wasm === null ? undefined : def.wasm ?? def.name,
    storage: def.storage.map((s) => s.access),
    uniforms: uniforms.map((u) => u.type),
  };
}

/**
 * The declaration of a kernel whose elements are independent, from its program: the WGSL body (one thread
 * per element) here, the WebAssembly twin (f32x4 lanes and a scalar tail) by tools/build_wasm.ts.
 */
export function pointwiseKernel(
  def: Omit<KernelDef, "body" | "pointwise"> & { program: PointwiseProgram },
): KernelDef {
  const { program, ...rest } = def;
  const called = calledFunctions([...program.lets, ...program.stores].map(([, e]) => e));
  return {
    ...rest,
    ...(called.length ? { functions: [...(rest.functions ?? []), ...called] } : {}),
    body: pointwiseWgsl(program, main1d("i", `u.${program.count}`)),
    pointwise: program,
  };
}

/** u32 uniforms by name, in order: the sizes and flags of a kernel that exists only on WebAssembly. */
export const u32Uniforms = (names: string[]): { name: string; type: "u32" }[] =>
  names.map((name) => ({ name, type: "u32" as const }));

/**
 * A kernel that exists only on the WebAssembly backend, for an op whose Wasm path is decomposed
 * differently from its WGSL one (convolution: packed GEMM panels instead of one implicit-GEMM pass).
 */
export function wasmKernel(def: Pick<KernelDef, "name" | "storage" | "uniforms">): KernelSpec {
  declared.set(def.name, { ...def, body: "" });
  return {
    name: def.name,
    key: `wasm:${def.name}`,
    code: "",
    wasm: def.name,
    storage: def.storage.map((s) => s.access),
    uniforms: (def.uniforms ?? []).map((u) => u.type),
  };
}

/**
 * Memoises kernels built from a variant key (an op name, a flag). `variants` lists every key where the
 * family has WebAssembly twins, so that the build sees each declaration; families keyed by shapes (the GEMM
 * kernels) list none and must be WebGPU-only.
 */
export function kernelFamily<K extends string | number>(
  build: (variant: K) => KernelDef,
  variants?: readonly K[],
): (variant: K) => KernelSpec {
  const cache = new Map<K, KernelSpec>();
  const get = (variant: K) => {
    let spec = cache.get(variant);
    if (!spec) {
      const def = build(variant);
      if (!variants && def.wasm !== null) {
        throw new Error(`kernel family of ${def.name} lists no variants but has WebAssembly twins`);
      }
      cache.set(variant, spec = defineKernel(def));
    }
    return spec;
  };
  if (variants) listedFamilies.push(() => variants.forEach(get));
  return get;
}

/** Each op's implementation per backend, registered by the op's module (as tfjs registers its kernels). */
const implementations = new Map<string, { webgpu?: unknown; wasm?: unknown }>();

/**
 * Registers how `op` runs on one backend; an op whose computation differs between the backends (its WGSL is
 * a shape-specialised implicit GEMM, its WebAssembly a packed one) registers one per backend and looks it up
 * with {@link implementation}, instead of branching on the backend itself.
 */
export function registerImplementation<F>(op: string, backend: "webgpu" | "wasm", impl: F): void {
  const entry = implementations.get(op) ?? {};
  if (entry[backend]) throw new Error(`${op} already has an implementation for ${backend}`);
  entry[backend] = impl;
  implementations.set(op, entry);
}

/** The open backend's implementation of `op` (see {@link registerImplementation}). */
export function implementation<F>(op: string): F {
  const kind = getEngine().kind;
  const impl = implementations.get(op)?.[kind];
  if (!impl) throw new Error(`${op} has no implementation on the ${kind} backend`);
  return impl as F;
}
