// One tiled GEMM for every op that is a matrix product in disguise: matmul (plain or transposed
// operands) and convolution forward and backward as implicit GEMMs. An op supplies how to read A (M x K)
// and B (K x N) and where to write C; the tiling, workgroup memory and accumulation live here once.
import type { KernelDef } from "../backend/kernel.ts";

export interface GemmTemplate {
  name: string;
  storage: KernelDef["storage"];
  /** Uniforms beyond M, N, K (which every GEMM has, in that order, first). */
  uniforms: NonNullable<KernelDef["uniforms"]>;
  /** WGSL bodies of `load_a(z, r, k) -> f32`, `load_b(z, k, c) -> f32`, `store_c(z, r, c, v)`; z = wid.z. */
  loadA: string;
  loadB: string;
  store: string;
  /** Extra WGSL (helper functions) placed before the loaders. */
  helpers?: string;
  tile: GemmTile;
}

/** Rows x columns of C per workgroup; each thread computes a 4x4 block. */
export interface GemmTile {
  m: number;
  n: number;
}

const TK = 16;

/** A tile shaped to the problem: thin tiles for few rows (grouped convs), square otherwise. */
export function chooseTile(m: number, n: number): GemmTile {
  if (m <= 8) return { m: 8, n: 128 };
  if (m <= 16) return { m: 16, n: 64 };
  if (n <= 16) return { m: 64, n: 16 };
  return { m: 32, n: 32 };
}

export function gemmWorkgroups(tile: GemmTile, m: number, n: number, z: number): [number, number, number] {
  return [Math.ceil(n / tile.n), Math.ceil(m / tile.m), z];
}

export function gemmKernel(t: GemmTemplate): KernelDef {
  const { m: TM, n: TN } = t.tile;
  const tx = TN / 4, ty = TM / 4, threads = tx * ty;
  return {
    name: `${t.name}_${TM}x${TN}`,
    storage: t.storage,
    uniforms: [{ name: "M", type: "u32" }, { name: "N", type: "u32" }, { name: "K", type: "u32" }, ...t.uniforms],
    workgroupSize: threads,
    body: `${t.helpers ?? ""}
fn load_a(z: u32, r: u32, k: u32) -> f32 { ${t.loadA} }
fn load_b(z: u32, k: u32, c: u32) -> f32 { ${t.loadB} }
fn store_c(z: u32, r: u32, c: u32, v: f32) { ${t.store} }
var<workgroup> As: array<array<f32, ${TM}>, ${TK}>;
var<workgroup> Bs: array<array<f32, ${TN}>, ${TK}>;
@compute @workgroup_size(${tx}, ${ty}, 1) fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let z = wid.z;
  let row0 = wid.y * ${TM}u;
  let col0 = wid.x * ${TN}u;
  let tid = lid.y * ${tx}u + lid.x;
  var acc: array<array<f32, 4>, 4>;
  for (var k0 = 0u; k0 < u.K; k0 += ${TK}u) {
    for (var e = tid; e < ${TM * TK}u; e += ${threads}u) {
      let kk = e / ${TM}u;
      let r = row0 + e % ${TM}u;
      let k = k0 + kk;
      var v = 0.0;
      if (k < u.K && r < u.M) { v = load_a(z, r, k); }
      As[kk][e % ${TM}u] = v;
    }
    for (var e = tid; e < ${TN * TK}u; e += ${threads}u) {
      let kk = e / ${TN}u;
      let c = col0 + e % ${TN}u;
      let k = k0 + kk;
      var v = 0.0;
      if (k < u.K && c < u.N) { v = load_b(z, k, c); }
      Bs[kk][e % ${TN}u] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${TK}u; kk++) {
      var av: array<f32, 4>;
      var bv: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        av[i] = As[kk][lid.y * 4u + i];
        bv[i] = Bs[kk][lid.x * 4u + i];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) { acc[i][j] = fma(av[i], bv[j], acc[i][j]); }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let r = row0 + lid.y * 4u + i;
    if (r >= u.M) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let c = col0 + lid.x * 4u + j;
      if (c < u.N) { store_c(z, r, c, acc[i][j]); }
    }
  }
}`,
  };
}
