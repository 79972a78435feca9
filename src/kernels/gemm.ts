// One GEMM for every op that is a matrix product in disguise: matmul (plain or transposed operands) and
// convolution forward and backward as implicit GEMMs. An op supplies how to read A (M x K) and B (K x N)
// and where to write C; the blocking lives here once.
//
// Each thread owns a block of `rows` x 4 outputs (4 adjacent columns held in one vec4) and streams K
// straight from global memory: no workgroup memory, no barriers. On lavapipe (the CPU adapter) that runs
// a 512^3 product 2-4x faster than a 32x32-tile kernel staged through workgroup memory, whose barriers
// the software rasterizer pays dearly for; caches give the reuse that workgroup memory gives a GPU.
import { getEngine } from "../backend/device.ts";
import { type KernelDef, wasmKernel } from "../backend/kernel.ts";
import { Tensor } from "../autograd/tensor.ts";
import { recordFlop } from "../backend/profile.ts";

/** One GEMM-shaped op for {@link gemmKernel}: its bindings and the WGSL that reads A and B and writes C. */
export interface GemmTemplate {
  /** Kernel name (also the base of its cache key). */
  name: string;
  /** Storage bindings, in @binding order. */
  storage: KernelDef["storage"];
  /** Uniforms beyond M, N, K (which every GEMM has, in that order, first). */
  uniforms: NonNullable<KernelDef["uniforms"]>;
  /**
   * WGSL bodies of `load_a(z, r, k, kr) -> f32`, `load_b(z, k, col, kr) -> f32` and `store_c(z, s, r, c, v)`,
   * with z = workgroup_id.z (batch or group) and s the K split (0 without splitK). Rows and columns passed
   * to the loaders are clamped into range (their results are dropped at the store), so loaders need no
   * bounds checks of their own.
   */
  loadA: string;
  /** WGSL body of `load_b` (see `loadA`). */
  loadB: string;
  /** WGSL body of `store_c` (see `loadA`). */
  store: string;
  /** Extra WGSL (constants, helper functions) placed before the loaders. */
  helpers?: string;
  /**
   * `{ type, body }`: `b_column(z, c) -> BCol`, made once per thread and column before the K loop and
   * handed to `load_b` as `col`: the place for index arithmetic that depends on the column only (integer
   * division is slow on software adapters). Without it, BCol is the column index.
   */
  bColumn?: { type: string; body: string };
  /**
   * `{ type, init, next }`: per-K-row state `kr` for both loaders, made by `k_row_init(z, k)` for k = 0 and
   * advanced by `k_row_next(kr) -> KRow` (an increment instead of a division per row). Without it, kr = k.
   */
  kRow?: { type: string; init: string; next: string };
  /**
   * `{ when, body }`: a vec4 read of B's four columns c0..c0+3 in one load, `load_b4(z, k, col0, kr)`,
   * used for the whole K loop by threads whose `when` (a WGSL condition on c0 and the uniforms) holds;
   * the others read column by column. Adjacent columns adjacent in memory make this one vector load.
   */
  loadB4?: { when: string; body: string };
  /**
   * Split K: workgroup z = split * z_count + z, and each split sums K rows [split * k_chunk, + k_chunk)
   * into `store_c`'s `s` (the caller adds the splits up). For products with few outputs and a long K
   * (weight gradients: M x N is a filter bank, K runs over every output pixel of the batch), where one
   * thread per output block leaves most of the machine idle. Adds uniforms k_chunk and z_count after K.
   */
  splitK?: boolean;
  /** Per-thread blocking and workgroup shape, usually from {@link chooseTile}. */
  tile: GemmTile;
}

/** Rows and vec4 column groups per thread, and the workgroup's shape in threads (x along columns, y along rows). */
export interface GemmTile {
  /** Output rows per thread (4 or 8). */
  rows: number;
  /** vec4 column groups per thread (1 or 2). */
  vecs: number;
  /** Threads along the columns. */
  wx: number;
  /** Threads along the rows. */
  wy: number;
  /**
   * Stage A and B through workgroup memory in 64 x 64 output tiles (16 x 16 threads of 4 x 4 outputs, K in
   * steps of 16): the classic GPU kernel, chosen on GPUs for products with room for such tiles (see
   * {@link chooseTile}); rows 4, vecs 1, wx = wy = 16 then.
   */
  shared?: boolean;
}

/** Which GEMM WebGPU runs: "auto" (staged on a GPU, streamed on a CPU adapter) or one of them forced. */
export type GemmChoice = "auto" | "staged" | "streamed";
let gemmChoice: GemmChoice = "auto";

/**
 * Forces the staged (workgroup-memory) or streamed GEMM on WebGPU, e.g. to test the GPU kernel on a CPU
 * adapter, and returns the earlier choice. Kernels already dispatched keep theirs.
 */
export function setGemmChoice(choice: GemmChoice): GemmChoice {
  if (choice !== "auto" && choice !== "staged" && choice !== "streamed") {
    throw new Error(`GEMM choice must be "auto", "staged" or "streamed", got ${JSON.stringify(choice)}`);
  }
  const before = gemmChoice;
  gemmChoice = choice;
  return before;
}

/** The staged kernel's tile: 16 x 16 threads of 4 x 4 outputs. */
const STAGED_TILE: GemmTile = { rows: 4, vecs: 1, wx: 16, wy: 16, shared: true };
/** The staged kernel's K step (rows of B, columns of A, staged per barrier). */
const STAGED_K = 16;

/**
 * Eight rows by two vec4s of columns per thread where the output has them: each B element (the costly
 * implicit-im2col read) then feeds eight FMAs and each A element eight. Measured on lavapipe against 8 x 4
 * per thread (8x8 threads): 3x3 convolutions 1.2-1.7x faster, ResNeXt's grouped ones (M = 8 per group)
 * 1.6x. Workgroups of 64 threads, one row of threads when M is too small to fill several.
 */
export function chooseTile(m: number, n: number): GemmTile {
  const staged = gemmChoice === "staged" ||
    (gemmChoice === "auto" && !getEngine().onCpu && m >= 32 && n >= 32);
  if (staged) return STAGED_TILE;
  const vecs = n > 4 && !getEngine().narrowTiles ? 2 : 1;
  if (m <= 8) {
    // One row of threads, no wider than the columns need (idle lanes cost as much as busy ones on a CPU).
    const wx = Math.min(64 / vecs, 2 ** Math.ceil(Math.log2(Math.ceil(n / (4 * vecs)))));
    return { rows: m <= 4 ? 4 : 8, vecs, wx, wy: 1 };
  }
  return { rows: m >= 32 ? 8 : 4, vecs, wx: 16, wy: 4 };
}

/** Threads that do work, for a product of M x N outputs in `z` independent blocks. */
export function gemmThreads(tile: GemmTile, m: number, n: number, z: number): number {
  return Math.ceil(m / tile.rows) * Math.ceil(n / (4 * tile.vecs)) * z;
}

/** The dispatch grid [x, y, z] covering M x N outputs in `z` blocks with `tile`. */
export function gemmWorkgroups(tile: GemmTile, m: number, n: number, z: number): [number, number, number] {
  return [Math.ceil(n / (4 * tile.vecs * tile.wx)), Math.ceil(m / (tile.rows * tile.wy)), z];
}

const COLS = [0, 1, 2, 3];

/** The WGSL functions every GEMM kernel has: the op's loaders and store, and the column and K-row state. */
function gemmFunctions(t: GemmTemplate): string {
  const bCol = t.bColumn ?? { type: "u32", body: "return c;" };
  const kRow = t.kRow ?? { type: "u32", init: "return k;", next: "return kr + 1u;" };
  return `${t.helpers ?? ""}
alias BCol = ${bCol.type};
alias KRow = ${kRow.type};
fn b_column(z: u32, c: u32) -> BCol { ${bCol.body} }
fn k_row_init(z: u32, k: u32) -> KRow { ${kRow.init} }
fn k_row_next(kr: KRow) -> KRow { ${kRow.next} }
fn load_a(z: u32, r: u32, k: u32, kr: KRow) -> f32 { ${t.loadA} }
fn load_b(z: u32, k: u32, col: BCol, kr: KRow) -> f32 { ${t.loadB} }
fn store_c(z: u32, s: u32, r: u32, c: u32, v: f32) { ${t.store} }`;
}

/** M, N, K, the split's uniforms, then the op's. */
function gemmUniforms(t: GemmTemplate): NonNullable<KernelDef["uniforms"]> {
  return [
    { name: "M", type: "u32" },
    { name: "N", type: "u32" },
    { name: "K", type: "u32" },
    ...(t.splitK
      ? [{ name: "k_chunk", type: "u32" as const }, { name: "z_count", type: "u32" as const }]
      : []),
    ...t.uniforms,
  ];
}

/** The split (s), the batch or group (z) and the K range of this workgroup. */
function gemmSplit(t: GemmTemplate): string {
  return `${t.splitK ? "let s = wid.z / u.z_count; let z = wid.z % u.z_count;" : "let s = 0u; let z = wid.z;"}
  let k_begin = ${t.splitK ? "s * u.k_chunk" : "0u"};
  let k_end = ${t.splitK ? "min(u.K, k_begin + u.k_chunk)" : "u.K"};`;
}

/**
 * The staged kernel: each step, the workgroup's 256 threads copy a 64 x 16 block of A and a 16 x 64 block of
 * B into workgroup memory (each thread always the same row of A and column of B, so its b_column is made
 * once), then every thread multiplies its 4 x 4 outputs out of them. Out-of-range rows, columns and K rows
 * are staged as zeros. The loaders take a K row's state from k_row_init (no increments across threads).
 */
function stagedGemmKernel(t: GemmTemplate): KernelDef {
  const T = 64, KS = STAGED_K;
  return {
    name: `${t.name}_staged`,
    wasm: null,
    storage: t.storage,
    uniforms: gemmUniforms(t),
    workgroupSize: 256,
    body: `${gemmFunctions(t)}
var<workgroup> tile_a: array<f32, ${T * KS}>;
var<workgroup> tile_b: array<vec4<f32>, ${KS * (T / 4)}>;
@compute @workgroup_size(16, 16, 1) fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  ${gemmSplit(t)}
  let t = lid.y * 16u + lid.x;
  let row_base = wid.y * ${T}u;
  let col_base = wid.x * ${T}u;
  // What this thread stages: row (t % 64) of A's block and column (t % 64) of B's, at K offsets t / 64 + 4j.
  let stage_row = row_base + t % ${T}u;
  let a_row = min(stage_row, u.M - 1u);
  let stage_col = col_base + t % ${T}u;
  let b_col = b_column(z, min(stage_col, u.N - 1u));
  let k_lane = t / ${T}u;
  var acc: array<vec4<f32>, 4>;
  for (var k0 = k_begin; k0 < k_end; k0 += ${KS}u) {
    for (var j = 0u; j < ${KS / 4}u; j++) {
      let kk = k_lane + 4u * j;
      let k = k0 + kk;
      var av = 0.0;
      var bv = 0.0;
      if (k < k_end) {
        let kr = k_row_init(z, k);
        if (stage_row < u.M) { av = load_a(z, a_row, k, kr); }
        if (stage_col < u.N) { bv = load_b(z, k, b_col, kr); }
      }
      tile_a[(t % ${T}u) * ${KS}u + kk] = av;
      tile_b[kk * ${T / 4}u + (t % ${T}u) / 4u][t % 4u] = bv;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${KS}u; kk++) {
      let b = tile_b[kk * ${T / 4}u + lid.x];
      for (var i = 0u; i < 4u; i++) {
        acc[i] = fma(vec4<f32>(tile_a[(lid.y * 4u + i) * ${KS}u + kk]), b, acc[i]);
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let r = row_base + lid.y * 4u + i;
    for (var j = 0u; j < 4u; j++) {
      let c = col_base + lid.x * 4u + j;
      if (r < u.M && c < u.N) { store_c(z, s, r, c, acc[i][j]); }
    }
  }
}`,
  };
}

/** Builds the WGSL kernel of a GEMM template: the shared blocked K loop around the op's loaders and store. */
export function gemmKernel(t: GemmTemplate): KernelDef {
  if (t.tile.shared) return stagedGemmKernel(t);
  const { rows, vecs, wx, wy } = t.tile;
  const R = [...Array(rows).keys()];
  const V = [...Array(vecs).keys()];
  const fmas = R.map((i) =>
    V.map((g) => `acc${i}_${g} = fma(vec4<f32>(a${i}), bv${g}, acc${i}_${g});`).join(" ")
  ).join("\n    ");
  const aReads = R.map((i) => `let a${i} = load_a(z, r${i}, k, kr);`).join(" ");
  return {
    name: `${t.name}_${rows}r${vecs}v${wx}x${wy}`,
    wasm: null,
    storage: t.storage,
    uniforms: gemmUniforms(t),
    workgroupSize: wx * wy,
    body: `${gemmFunctions(t)}${
      t.loadB4
        ? `\nfn load_b4(z: u32, k: u32, col: BCol, kr: KRow) -> vec4<f32> { ${t.loadB4.body} }
fn b4_fits(c0: u32) -> bool { return c0 + 3u < u.N && (${t.loadB4.when}); }`
        : ""
    }
@compute @workgroup_size(${wx}, ${wy}, 1) fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  ${gemmSplit(t)}
  let row0 = (wid.y * ${wy}u + lid.y) * ${rows}u;
  let c0 = (wid.x * ${wx}u + lid.x) * ${4 * vecs}u;
  if (row0 >= u.M || c0 >= u.N) { return; }
  ${R.map((i) => `let r${i} = min(row0 + ${i}u, u.M - 1u);`).join(" ")}
  ${
      V.map((g) =>
        COLS.map((j) => `let col${g}_${j} = b_column(z, min(c0 + ${4 * g + j}u, u.N - 1u));`).join(" ")
      ).join("\n  ")
    }
  ${R.map((i) => V.map((g) => `var acc${i}_${g} = vec4<f32>();`).join(" ")).join(" ")}
  var kr = k_row_init(z, k_begin);${
      t.loadB4
        ? `
  if (${V.map((g) => `b4_fits(c0 + ${4 * g}u)`).join(" && ")}) {
    for (var k = k_begin; k < k_end; k++) {
      ${V.map((g) => `let bv${g} = load_b4(z, k, col${g}_0, kr);`).join(" ")}
      ${aReads}
      ${fmas}
      kr = k_row_next(kr);
    }
  } else {`
        : "{"
    }
  for (var k = k_begin; k < k_end; k++) {
    ${
      V.map((g) => `let bv${g} = vec4<f32>(${COLS.map((j) => `load_b(z, k, col${g}_${j}, kr)`).join(", ")});`)
        .join("\n    ")
    }
    ${aReads}
    ${fmas}
    kr = k_row_next(kr);
  }
  }
  ${
      R.map((i) =>
        `if (row0 + ${i}u < u.M) { ${
          V.map((g) =>
            COLS.map((j) =>
              `if (c0 + ${4 * g + j}u < u.N) { store_c(z, s, row0 + ${i}u, c0 + ${
                4 * g + j
              }u, acc${i}_${g}[${j}]); }`
            ).join(" ")
          ).join(" ")
        } }`
      ).join("\n  ")
    }
}`,
  };
}

// The WebAssembly backend's GEMM (src/kernels/wasm/gemm.ts): one kernel whose packers read A and B either
// as strided matrices or as a convolution's windows, so matmul and all three convolution passes share it.

/**
 * The tensors of a convolution's fused epilogue (conv.ts ConvEpilogue), in the order the forward kernels
 * bind them: the per-channel scale and bias, then the residual.
 */
export const EPILOGUE_TENSORS = ["scale", "bias", "residual"] as const;
/** What a kernel with the epilogue gets: the tensors (each may be absent) and a ReLU flag. */
type Epilogue = Partial<Record<typeof EPILOGUE_TENSORS[number], Tensor | null>> & { relu?: boolean };
/** The epilogue tensors' read-only bindings, for the WebAssembly kernels that end with it (Winograd, depthwise). */
export const EPILOGUE_BINDINGS = EPILOGUE_TENSORS.map((name) => ({ name, access: "read" as const }));
/** The buffers bound to {@link EPILOGUE_BINDINGS} (`absent` where a tensor is not given: never read then). */
export const epilogueBuffers = (e: Epilogue, absent: Tensor) =>
  EPILOGUE_TENSORS.map((p) => (e[p] ?? absent).buffer);
/** The names of the uniforms that say which parts an epilogue has, and their values: {@link epilogueFlags}. */
export const EPILOGUE_FLAGS = [...EPILOGUE_TENSORS.map((p) => `has_${p}`), "relu"];
/** The uniforms has_scale, has_bias, has_residual and relu. */
export const epilogueFlags = (
  e: Epilogue,
): number[] => [...EPILOGUE_TENSORS.map((p) => e[p] ? 1 : 0), e.relu ? 1 : 0];

/** How the Wasm GEMM reads an operand: a strided matrix, or one of a convolution's implicit matrices. */
export const WASM_A = { strided: 0, weightT: 1, dyImages: 2 } as const;
/**
 * How the Wasm GEMM reads B: a strided matrix, or one of a convolution's implicit matrices (im2col, dy by
 * columns, im2col transposed).
 */
export const WASM_B = { strided: 0, im2col: 1, dyCol: 2, im2colT: 3 } as const;

/** A convolution's sizes as the window packers read them (g_: apart from the GEMM's own c and bindings). */
const GEOMETRY = [
  "g_c",
  "g_h",
  "g_w",
  "g_oc",
  "g_oh",
  "g_ow",
  "g_kh",
  "g_kw",
  "g_sh",
  "g_sw",
  "g_ph",
  "g_pw",
  "g_dh",
  "g_dw",
  "g_groups",
];
const wasmGemmKernel = wasmKernel({
  name: "gemm",
  storage: [
    { name: "a", access: "read" },
    { name: "b", access: "read" },
    { name: "c", access: "rw" },
    { name: "bias", access: "read" },
    { name: "scale", access: "read" },
    { name: "residual", access: "read" },
    { name: "packed_a", access: "rw" },
  ],
  uniforms: [
    ...["M", "N", "K", "rsA", "csA", "rsB", "csB", "ldc", "accumulate", "z1", "z2", "a1", "a2", "b1", "b2"],
    ...[
      "c1",
      "c2",
      "amode",
      "bmode",
      "has_bias",
      "has_scale",
      "has_residual",
      "relu",
      "a_packing",
      "nb_min",
      ...GEOMETRY,
    ],
  ].map((name) => ({ name, type: "u32" as const })),
});

/**
 * Where the GEMM packs A (uniform a_packing): per unit of work, as it goes (a unit is a column block, so A is
 * packed once per column block and per image sharing it); into `packed_a` once for the whole call (the first
 * of two dispatches, "gemm: <use>, A packing" in a profile); or read from `packed_a` (the second).
 */
const A_PACKING = { perUnit: 0, packOnly: 1, prepacked: 2 } as const;
/** The largest pre-packed A (bytes); a larger one is packed per unit, as it goes. */
const PREPACKED_A_LIMIT = 64 << 20;
/** The narrowest column block the GEMM takes (uniform nb_min): up to it, a product is one block. */
const NB_MIN = 32;

/** One call of the WebAssembly GEMM: sizes, how each operand is read, and where C goes. */
export interface WasmGemm {
  /** Rows of A and C. */
  m: number;
  /** Columns of B and C. */
  n: number;
  /** Columns of A, rows of B. */
  k: number;
  /** Mode, strides (row, column; strided mode only) and the offsets per z1 and z2, in elements. */
  a: { mode: number; rs?: number; cs?: number; z1?: number; z2?: number };
  /** B's mode (a {@link WASM_B} value), strides and offsets, as for `a`. */
  b: { mode: number; rs?: number; cs?: number; z1?: number; z2?: number };
  /** C's leading dimension and offsets per z1 and z2, in elements. */
  c: { ld: number; z1?: number; z2?: number };
  /** Products: z1 x z2 (a batch, or images x groups). */
  z?: [number, number];
  /** Add into C instead of overwriting it. */
  accumulate?: boolean;
  /** Added per row: bias[z2 * m + row] (after `scale`). */
  bias?: Tensor | null;
  /** Multiplies each row of the product: scale[z2 * m + row] (a batch norm folded into a convolution). */
  scale?: Tensor | null;
  /** Added element by element at the end, laid out as C (a residual connection). */
  residual?: Tensor | null;
  /** max(0, .) last (a ReLU after the rest). */
  relu?: boolean;
  /** The convolution's sizes, in GEOMETRY's order, for the window packers. */
  geometry?: number[];
  /** What the product computes, for a profile (e.g. "conv2d 3x3 forward"); default "matmul". */
  use?: string;
}

/** C (+)= A B on the WebAssembly backend. */
export function wasmGemm(a: Tensor, b: Tensor, c: Tensor, g: WasmGemm): void {
  const [z1, z2] = g.z ?? [1, 1];
  if (g.accumulate && (g.scale || g.residual || g.relu)) {
    throw new Error("wasmGemm: scale, residual and relu apply to the product alone, not with accumulate");
  }
  const use = g.use ?? "matmul", label = `gemm: ${use}`;
  // A is packed once for the call where a unit of work would pack it again: when products share it (a
  // convolution's images) or when its columns split into blocks. Its strips of four rows, per K chunk, are
  // what every unit reads.
  const distinctA = (g.a.z1 ? z1 : 1) * (g.a.z2 ? z2 : 1);
  const packedBytes = distinctA * Math.ceil(g.m / 4) * 4 * g.k * 4;
  const prepack = packedBytes > 0 && packedBytes <= PREPACKED_A_LIMIT &&
    (distinctA < z1 * z2 || g.n > NB_MIN);
  const packed = prepack ? Tensor.empty([packedBytes / 4]) : c;
  const dispatch = (aPacking: number, name: string) =>
    getEngine().dispatch(
      wasmGemmKernel,
      [a, b, c, g.bias ?? c, g.scale ?? c, g.residual ?? c, packed].map((t) => t.buffer),
      [
        ...[g.m, g.n, g.k, g.a.rs ?? 0, g.a.cs ?? 0, g.b.rs ?? 0, g.b.cs ?? 0, g.c.ld, g.accumulate ? 1 : 0],
        ...[z1, z2, g.a.z1 ?? 0, g.a.z2 ?? 0, g.b.z1 ?? 0, g.b.z2 ?? 0, g.c.z1 ?? 0, g.c.z2 ?? 0],
        ...[
          g.a.mode,
          g.b.mode,
          g.bias ? 1 : 0,
          g.scale ? 1 : 0,
          g.residual ? 1 : 0,
          g.relu ? 1 : 0,
          aPacking,
          NB_MIN,
        ],
        ...(g.geometry ?? GEOMETRY.map(() => 0)),
      ],
      [1],
      name,
    );
  if (prepack) dispatch(A_PACKING.packOnly, `${label}, A packing`);
  recordFlop(label, 2 * g.m * g.n * g.k * z1 * z2);
  dispatch(prepack ? A_PACKING.prepacked : A_PACKING.perUnit, label);
  if (prepack) packed.dispose();
}
