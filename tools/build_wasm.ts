// Builds the WebAssembly kernels in three steps:
// 1. From every kernel declaration (the `defineKernel`s of src/kernels/*.ts: bindings and uniforms by name)
//    it generates src/kernels/wasm/layout.ts: the argument slot of each binding and uniform, the WGSL grid
//    and the scratch base, as named AssemblyScript constants. No twin types a slot number. From the
//    per-element expressions of src/kernels/maps.ts it generates src/kernels/wasm/maps.ts: the element-wise
//    twins' arithmetic and their exports.
// 2. It compiles the AssemblyScript sources (src/kernels/wasm) with the pinned compiler from node_modules.
// 3. It checks that every declared kernel with a twin has its export and every export a declaration, then
//    writes the binary, base64-encoded, into src/backend/wasm/kernels_wasm.ts: a module the library imports
//    like any other, so an installed package (npm, JSR, a path import) needs no file access, no compiler
//    and no build step.
// The output depends only on the sources and the compiler version, so a rebuild is byte-identical;
// tests/wasm_backend.test.ts checks that both generated files are current.
//   deno task build:wasm
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import process from "node:process";
import { Buffer } from "node:buffer";
import {
  calledFunctions,
  type Expr,
  type ExprFunction,
  functionAssemblyScript,
  hoistUniform,
  type Naming,
  programInputs,
  repeatedSubexpressions,
  toAssemblyScript,
  toLanes,
  toWgsl,
} from "../src/backend/expr.ts";
import type { KernelDef } from "../src/backend/kernel.ts";
import { MEMORY64_PAGES } from "../src/backend/wasm/protocol.ts";

const KERNEL_DIR = fileURLToPath(new URL("../src/kernels/", import.meta.url));
const KERNEL_SOURCE_DIR = join(KERNEL_DIR, "wasm");
/** The generated slot constants of the twins. */
export const LAYOUT_MODULE: string = join(KERNEL_SOURCE_DIR, "layout.ts");
/** The generated per-element maps of the element-wise twins (from src/kernels/maps.ts), and their exports. */
export const MAPS_MODULE: string = join(KERNEL_SOURCE_DIR, "maps.ts");
export const MAP_KERNELS_MODULE: string = join(KERNEL_SOURCE_DIR, "map_kernels.ts");
/** The generated expression functions that kernels declare (`KernelDef.functions`: the loss's). */
export const FUNCTIONS_MODULE: string = join(KERNEL_SOURCE_DIR, "functions.ts");
/** The generated twins of the pointwise kernels (`KernelDef.pointwise`: the optimizer updates). */
export const POINTWISE_MODULE: string = join(KERNEL_SOURCE_DIR, "pointwise_kernels.ts");
/** The generated module that the engine loads the kernels from. */
export const KERNELS_MODULE: string = fileURLToPath(
  new URL("../src/backend/wasm/kernels_wasm.ts", import.meta.url),
);

/** Compiler flags: shared imported memory (threads), SIMD, no GC runtime, no assertions. */
const ASC_FLAGS = ("-O3 --noAssert --runtime stub --importMemory --sharedMemory --initialMemory 1 " +
  "--maximumMemory 65536 --enable threads --enable simd --use abort=").split(" ");

/** What follows the uniforms in every argument block: the WGSL grid and the thread's scratch base. */
const TRAILER = ["GRID_X", "GRID_Y", "GRID_Z", "SCRATCH_BASE"];

/** AssemblyScript keywords that a binding or uniform name may not be. */
const RESERVED = new Set(
  ("abstract as break case catch class const continue default delete do else enum export extends false " +
    "finally for from function if import in instanceof is let namespace new null of return static super " +
    "switch this throw true try type typeof var void while with yield").split(" "),
);

/** Arguments by name, in slot order, and the kernels that take them. */
export interface ArgumentLayout {
  storage: string[];
  uniforms: string[];
  kernels: string[];
}

/** What the declarations say the twins take: layouts and uniform blocks by name, twin exports by name. */
export interface TwinDeclarations {
  /** Argument layouts by name (`KernelDef.layout`, else the twin's export name). */
  layouts: Map<string, ArgumentLayout>;
  /** Uniform lists shared by kernels whose bindings differ (`KernelDef.uniformBlock`). */
  blocks: Map<string, ArgumentLayout>;
  /** Twin export name -> the kernels it serves. */
  twins: Map<string, string[]>;
}

/**
 * Every kernel declaration with a twin, all of src/kernels/*.ts imported, by name (the order of declaration
 * depends on which ops ran first in the process, and the generated files must not).
 */
async function twinKernels(): Promise<KernelDef[]> {
  for (const f of readdirSync(KERNEL_DIR).filter((f) => f.endsWith(".ts")).sort()) {
    await import(pathToFileURL(join(KERNEL_DIR, f)).href);
  }
  const { declaredKernels } = await import("../src/backend/kernel.ts");
  return declaredKernels().filter((def) => def.wasm !== null).sort((a, b) => a.name.localeCompare(b.name));
}

/** Reads every kernel declaration and checks what they share. */
export async function twinDeclarations(): Promise<TwinDeclarations> {
  const layouts = new Map<string, ArgumentLayout>(), blocks = new Map<string, ArgumentLayout>();
  const twins = new Map<string, string[]>();
  /** Adds a kernel under a name, or checks it against the kernels already there. */
  const share = (into: Map<string, ArgumentLayout>, name: string, kernel: string, args: ArgumentLayout) => {
    const earlier = into.get(name);
    if (!earlier) return void into.set(name, args);
    if (earlier.storage.join() !== args.storage.join() || earlier.uniforms.join() !== args.uniforms.join()) {
      throw new Error(
        `kernels ${earlier.kernels.join(", ")} and ${kernel} share ${name} with other arguments`,
      );
    }
    earlier.kernels.push(kernel);
  };
  for (const def of await twinKernels()) {
    const twin = def.wasm ?? def.name;
    twins.set(twin, [...(twins.get(twin) ?? []), def.name]);
    const storage = def.storage.map((b) => b.name), uniforms = (def.uniforms ?? []).map((u) => u.name);
    share(layouts, def.layout ?? twin, def.name, { storage, uniforms, kernels: [def.name] });
    if (def.uniformBlock) {
      share(blocks, def.uniformBlock, def.name, { storage: [], uniforms, kernels: [def.name] });
    }
  }
  for (const name of blocks.keys()) {
    if (layouts.has(name)) throw new Error(`the uniform block ${name} has the name of an argument layout`);
  }
  const sorted = <V>(m: Map<string, V>) => new Map([...m].sort(([a], [b]) => a.localeCompare(b)));
  return { layouts: sorted(layouts), blocks: sorted(blocks), twins: sorted(twins) };
}

/**
 * src/kernels/wasm/layout.ts. For each layout, a namespace holding the slot of each binding and uniform in the
 * order the engine writes them (src/backend/wasm/engine.ts `dispatch`), then GRID_X, GRID_Y, GRID_Z, SCRATCH_BASE
 * and UNIFORMS (the first uniform's slot); for each uniform block, a namespace of offsets from its first.
 */
export function layoutModuleSource(
  { layouts, blocks }: Pick<TwinDeclarations, "layouts" | "blocks">,
): string {
  const lines = [
    "// Generated by tools/build_wasm.ts from the kernel declarations of src/kernels/*.ts: do not edit.",
    '// A twin reads its arguments by name (`argI(args, L.fill.n)` after `import * as L from "./layout"`), never',
    "// by slot number; tests/wasm_backend.test.ts fails when this file is not what the declarations generate.",
  ];
  const entries = [
    ...[...layouts].map(([name, l]) => ({
      name,
      l,
      names: [...l.storage, ...l.uniforms, ...TRAILER],
      block: false,
    })),
    ...[...blocks].map(([name, l]) => ({ name, l, names: l.uniforms, block: true })),
  ];
  for (const { name, l, names, block } of entries) {
    for (const n of [name, ...names]) {
      const why = RESERVED.has(n) || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(n)
        ? "is not an AssemblyScript identifier"
        : names.indexOf(n) !== names.lastIndexOf(n)
        ? "names two arguments"
        : "";
      if (why) throw new Error(`kernel ${l.kernels[0]}: the name ${JSON.stringify(n)} ${why}`);
    }
    const what = block
      ? `the uniforms of ${[...l.kernels].sort().join(", ")}, as offsets from the first`
      : `${[...l.kernels].sort().join(", ")}: bindings ${l.storage.join(", ")}${
        l.uniforms.length ? `; uniforms ${l.uniforms.join(", ")}` : ""
      }`;
    lines.push(
      "",
      `/** ${what}. */`,
      `export namespace ${name} {`,
      ...names.map((n, i) => `  export const ${n}: i32 = ${i};`),
      ...(block ? [] : [`  export const UNIFORMS: i32 = ${l.storage.length};`]),
      "}",
    );
  }
  return lines.join("\n") + "\n";
}

/** A map's constant name: `addScalar` -> `ADD_SCALAR`. */
const constantName = (prefix: string, op: string) =>
  `${prefix}_${op.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;

/**
 * The dispatch of one table of maps in AssemblyScript: the op constants, `<fn>(op, values...)` on f32,
 * `<fn>HasLanes(op)`, and `<fn>Lanes(op, values...)` on v128 for the maps whose every operation has a lane
 * form. Called with a constant op, each folds to one map.
 */
function mapFunctions(prefix: string, fn: string, table: Record<string, Expr>, params: string[]): string[] {
  const ops = Object.keys(table);
  const lanes = ops.filter((op) => toLanes(table[op]) !== null);
  const scalarParams = params.map((p) => `${p}: f32`).join(", ");
  const laneParams = params.map((p) => `${p}: v128`).join(", ");
  // A map's case: its repeated subexpressions into locals s0, s1, ... first, then the value.
  const mapCase = (op: string, express: (e: Expr, naming: Naming) => string | null) => {
    const computed = new Map<string, string>(), lets: string[] = [];
    for (const [text, e] of repeatedSubexpressions(table[op])) {
      lets.push(`const s${computed.size} = ${express(e, { computed })};`);
      computed.set(text, `s${computed.size}`);
    }
    const value = `return ${express(table[op], { computed })};`;
    return `  if (op == ${constantName(prefix, op)}) ${
      lets.length ? `{ ${lets.join(" ")} ${value} }` : value
    }`;
  };
  return [
    ...ops.map((op, i) => `export const ${constantName(prefix, op)}: i32 = ${i};`),
    "",
    `@inline export function ${fn}(op: i32, ${scalarParams}): f32 {`,
    ...ops.map((op) => mapCase(op, toAssemblyScript)),
    "  unreachable();",
    "  return 0;",
    "}",
    "",
    `@inline export function ${fn}HasLanes(op: i32): bool {`,
    `  return ${
      lanes.length ? lanes.map((op) => `op == ${constantName(prefix, op)}`).join(" || ") : "false"
    };`,
    "}",
    "",
    `@inline export function ${fn}Lanes(op: i32, ${laneParams}): v128 {`,
    ...lanes.map((op) => mapCase(op, toLanes)),
    "  unreachable();",
    "  return f32x4.splat(0);",
    "}",
  ];
}

/** The expressions of src/kernels/maps.ts, by table. */
async function mapTables() {
  const { BINARY_MAPS, UNARY_MAPS } = await import("../src/kernels/maps.ts");
  return {
    binary: BINARY_MAPS as Record<string, Expr>,
    fwd: Object.fromEntries(Object.entries(UNARY_MAPS).map(([op, m]) => [op, m.fwd])),
    grad: Object.fromEntries(Object.entries(UNARY_MAPS).map(([op, m]) => [op, m.grad])),
  };
}

const GENERATED = (from: string) => [
  `// Generated by tools/build_wasm.ts from ${from}: do not edit.`,
  "// The WGSL kernels are built from the same expressions; tests/wasm_backend.test.ts fails when this file",
  "// is not current.",
];

/** The import of src/kernels/wasm/math.ts's functions that generated `code` calls (expr.ts emits them for exp). */
function mathImport(code: string[]): string[] {
  const used = ["expf", "expf4"].filter((fn) => code.some((line) => line.includes(`${fn}(`)));
  return used.length ? [`import { ${used.join(", ")} } from "./math";`] : [];
}

/** src/kernels/wasm/maps.ts: the element-wise twins' arithmetic, from the expressions of src/kernels/maps.ts. */
export async function mapsModuleSource(): Promise<string> {
  const t = await mapTables();
  const body = [
    ...mapFunctions("BINARY", "binaryMap", t.binary, ["x", "y", "scale"]),
    "",
    ...mapFunctions("UNARY", "unaryMap", t.fwd, ["x", "alpha"]),
    "",
    ...mapFunctions("UNARY", "unaryGradMap", t.grad, ["g", "x", "y", "alpha"]).filter((l) =>
      !l.startsWith("export const")
    ),
    "",
  ];
  return [...GENERATED("the expressions of src/kernels/maps.ts"), ...mathImport(body), "", ...body].join(
    "\n",
  );
}

/** src/kernels/wasm/map_kernels.ts: one export per element-wise WGSL kernel (`unary_relu`, ...). */
export async function mapKernelsModuleSource(): Promise<string> {
  const t = await mapTables();
  const exported = (kernel: string, schedule: string, constant: string) =>
    `export function ${kernel}(tid: i32, nth: i32, args: usize): void { ${schedule}(${constant}, tid, nth, args); }`;
  const binaryOps = Object.keys(t.binary).filter((op) => op !== "scale"), unaryOps = Object.keys(t.fwd);
  const constants = [
    ...binaryOps.map((op) => constantName("BINARY", op)),
    ...unaryOps.map((op) => constantName("UNARY", op)),
  ];
  return [
    ...GENERATED("the maps of src/kernels/maps.ts"),
    'import { binary, unary, unaryGrad } from "./elementwise";',
    `import { ${constants.sort().join(", ")} } from "./maps";`,
    "",
    ...binaryOps.map((op) => exported(`binary_${op}`, "binary", constantName("BINARY", op))),
    ...unaryOps.map((op) => exported(`unary_${op}`, "unary", constantName("UNARY", op))),
    ...unaryOps.map((op) => exported(`unary_grad_${op}`, "unaryGrad", constantName("UNARY", op))),
    "",
  ].join("\n");
}

/** src/kernels/wasm/functions.ts: every kernel's expression functions, callees first, for the twins. */
export async function functionsModuleSource(): Promise<string> {
  const byName = new Map<string, ExprFunction>();
  const kernels = await twinKernels();
  for (const fn of calledFunctions(kernels.flatMap((k) => k.functions ?? []).map(callOf))) {
    const earlier = byName.get(fn.name);
    if (earlier && functionAssemblyScript(earlier) !== functionAssemblyScript(fn)) {
      throw new Error(`two different expression functions are named ${fn.name}`);
    }
    byName.set(fn.name, fn);
  }
  const body = [...byName.values()].flatMap((fn) => ["", functionAssemblyScript(fn)]);
  return [
    ...GENERATED("the expression functions of the kernel declarations (KernelDef.functions)"),
    ...mathImport(body),
    ...body,
    "",
  ].join("\n");
}

const callOf = (fn: ExprFunction): Expr => ({
  kind: "call",
  fn,
  args: fn.params.map((name) => ({ kind: "value", name })),
});

/**
 * The twin of a pointwise kernel (src/backend/expr.ts PointwiseProgram): each thread takes its share of the
 * elements, four at a time in f32x4 lanes where every expression has a lane form, then one at a time; the
 * inputs are read first, the lets computed in order, the stores written, as in the WGSL. Subexpressions of
 * uniforms only are computed once.
 */
export function pointwiseTwin(def: KernelDef): string[] {
  const program = def.pointwise!;
  const twin = def.wasm ?? def.name, layout = def.layout ?? twin;
  const fail = (why: string) => {
    throw new Error(`pointwise kernel ${def.name}: ${why}`);
  };
  const bindings = new Map(def.storage.map((b) => [b.name, b]));
  const uniformTypes = new Map((def.uniforms ?? []).map((u) => [u.name, u.type]));
  const inputs = programInputs(program);
  for (const name of inputs) if (!bindings.has(name)) fail(`${name} is neither a binding nor a let`);
  for (const [name] of program.stores) {
    if (bindings.get(name)?.access !== "rw") fail(`it stores to ${name}, which is not a writable binding`);
  }
  if (uniformTypes.get(program.count) !== "u32") fail(`its count ${program.count} is not a u32 uniform`);
  const exprs = [...program.lets, ...program.stores].map(([, e]) => e);
  const hoisted = [...hoistUniform(exprs)];
  const scalarComputed = new Map(hoisted.map(([text], i) => [text, `k${i}`]));
  const laneComputed = new Map(hoisted.map(([text], i) => [text, `k${i}_x4`]));
  // The uniforms read outside the hoisted subexpressions (f32: splat for the lanes) and inside them.
  const perElement = new Set<string>(), all = new Set<string>(), flags = new Set<string>();
  const visit = (e: Expr, inHoisted: boolean) => {
    if (e.kind === "uniform") {
      if (uniformTypes.get(e.name) !== "f32") fail(`uniform ${e.name} is not an f32 uniform`);
      all.add(e.name);
      if (!inHoisted) perElement.add(e.name);
    }
    if (e.kind === "flag") {
      if (uniformTypes.get(e.name) !== "u32") fail(`flag ${e.name} is not a u32 uniform`);
      flags.add(e.name);
    }
    if (e.kind === "op" || e.kind === "call") {
      e.args.forEach((a) => visit(a, inHoisted || scalarComputed.has(toWgsl(a))));
    }
  };
  exprs.forEach((e) => visit(e, scalarComputed.has(toWgsl(e))));
  const leaf = (lanes: boolean): Naming["leaf"] => (e) =>
    e.kind === "value" && inputs.includes(e.name)
      ? `${e.name}_in`
      : e.kind === "uniform" && lanes
      ? `${e.name}_x4`
      : e.name;
  const scalar: Naming = { leaf: leaf(false), computed: scalarComputed };
  const lanes: Naming = { leaf: leaf(true), computed: laneComputed };
  const laneForms = exprs.every((e) => toLanes(e, lanes) !== null);
  const slot = (name: string) => `L.${layout}.${name}`;
  const loop = (v: boolean) => {
    const n: Naming = v ? lanes : scalar;
    const read = (b: string) => v ? `v128.load(at(${b}_ptr, i))` : `load<f32>(at(${b}_ptr, i))`;
    const write = (b: string, x: string) =>
      v ? `v128.store(at(${b}_ptr, i), ${x});` : `store<f32>(at(${b}_ptr, i), ${x});`;
    const express = (e: Expr) => v ? toLanes(e, n)! : toAssemblyScript(e, n);
    return [
      v ? "  for (; i + 4 <= end; i += 4) {" : "  for (; i < end; i++) {",
      ...inputs.map((b) => `    const ${b}_in = ${read(b)};`),
      ...program.lets.map(([name, e]) => `    const ${name} = ${express(e)};`),
      ...program.stores.map(([b, e]) => `    ${write(b, express(e))}`),
      "  }",
    ];
  };
  const align = laneForms ? 4 : 1;
  return [
    `/** ${def.name}: generated from its pointwise program (the kernel's declaration). */`,
    `export function ${twin}(tid: i32, nth: i32, args: usize): void {`,
    ...def.storage.filter((b) => inputs.includes(b.name) || program.stores.some(([s]) => s === b.name))
      .map((b) => `  const ${b.name}_ptr = argP(args, ${slot(b.name)});`),
    `  const elements = argI(args, ${slot(program.count)});`,
    ...[...all].map((u) => `  const ${u} = argF(args, ${slot(u)});`),
    ...[...flags].map((f) => `  const ${f} = argI(args, ${slot(f)}) != 0;`),
    ...hoisted.map(([text, e]) =>
      `  const ${scalarComputed.get(text)}: f32 = ${toAssemblyScript(e, { leaf: leaf(false) })};`
    ),
    `  const begin = shareBegin(tid, nth, elements, ${align}), end = shareEnd(tid, nth, elements, ${align});`,
    "  let i = begin;",
    ...(laneForms
      ? [
        ...[...perElement].map((u) => `  const ${u}_x4 = f32x4.splat(${u});`),
        ...hoisted.map(([text]) =>
          `  const ${laneComputed.get(text)} = f32x4.splat(${scalarComputed.get(text)});`
        ),
        ...loop(true),
      ]
      : []),
    ...loop(false),
    "}",
  ];
}

/** src/kernels/wasm/pointwise_kernels.ts: the twins of every pointwise kernel. */
export async function pointwiseModuleSource(): Promise<string> {
  const kernels = (await twinKernels()).filter((k) => k.pointwise);
  const fns = calledFunctions(
    kernels.flatMap((k) => [...k.pointwise!.lets, ...k.pointwise!.stores].map(([, e]) => e)),
  );
  const body = kernels.flatMap((k) => ["", ...pointwiseTwin(k)]);
  return [
    ...GENERATED("the pointwise programs of the kernel declarations (KernelDef.pointwise)"),
    'import { argF, argI, argP, at, shareBegin, shareEnd } from "./common";',
    ...(fns.length ? [`import { ${fns.map((f) => f.name).join(", ")} } from "./functions";`] : []),
    'import * as L from "./layout";',
    ...mathImport(body),
    ...body,
    "",
  ].join("\n");
}

/** The generated AssemblyScript modules and what they should hold now. */
export async function generatedModules(): Promise<[string, string][]> {
  return [
    [LAYOUT_MODULE, layoutModuleSource(await twinDeclarations())],
    [MAPS_MODULE, await mapsModuleSource()],
    [MAP_KERNELS_MODULE, await mapKernelsModuleSource()],
    [FUNCTIONS_MODULE, await functionsModuleSource()],
    [POINTWISE_MODULE, await pointwiseModuleSource()],
  ];
}

/**
 * The four builds of the kernels: `exact` (plain SIMD, the default) and `fast` (relaxed SIMD, fastMath), each
 * for a 32-bit memory (every engine) and a 64-bit one (`exact64`, `fast64`: where the engine has memory64).
 */
export interface KernelBuilds {
  exact: Uint8Array<ArrayBuffer>;
  fast: Uint8Array<ArrayBuffer>;
  exact64: Uint8Array<ArrayBuffer>;
  fast64: Uint8Array<ArrayBuffer>;
}

/**
 * Compiles the AssemblyScript sources four times, without and with relaxed SIMD (the GEMM's multiply-add, see
 * src/kernels/wasm/gemm.ts `madd`), for 32- and 64-bit memories; checks their exports against the
 * declarations, returns the binaries.
 */
export async function compileKernels(): Promise<KernelBuilds> {
  const relaxed = ["--enable", "relaxed-simd"];
  return {
    exact: await compileBuild([], false),
    fast: await compileBuild(relaxed, false),
    exact64: await compileBuild([], true),
    fast64: await compileBuild(relaxed, true),
  };
}

/**
 * The places in the pinned compiler (assemblyscript 0.28.20, node_modules/assemblyscript/dist) that keep it
 * from emitting a 64-bit memory. Its code generator has the Wasm64 target (usize is 64 bits, addresses are
 * i64), but the command line always selects Wasm32 and the memory is always declared 32-bit. The 64-bit
 * build runs copies of the two files with these replaced; each must occur exactly once.
 */
const WASM64_PATCHES: { file: string; from: string; to: string }[] = [
  // asc: the Wasm64 target (Target.Wasm64 = 2) instead of Wasm32, and the patched compiler beside it
  { file: "asc.js", from: "g.setTarget(T,0)", to: "g.setTarget(T,2)" },
  { file: "asc.js", from: 'from"assemblyscript"', to: `from"./assemblyscript.wasm64.${process.pid}.js"` },
  // Module.setMemory: the memory64 flag of BinaryenSetMemory follows the target (it is hard-coded false)
  { file: "assemblyscript.js", from: "c,l,!1,p),ee(I)", to: "c,l,n==2,p),ee(I)" },
];

/**
 * The compiler's `main`: the pinned one, or for `wasm64` the copies that {@link WASM64_PATCHES} makes, written
 * beside the originals (their bare imports resolve from there) and removed by `cleanup`.
 */
async function loadCompiler(wasm64: boolean): Promise<{ asc: AscModule; cleanup: () => void }> {
  try {
    if (!wasm64) return { asc: await import("assemblyscript/asc"), cleanup: () => {} };
    const dist = dirname(fileURLToPath(import.meta.resolve("assemblyscript/asc")));
    const written: string[] = [];
    const cleanup = () => written.forEach((f) => rmSync(f, { force: true }));
    try {
      for (const file of ["assemblyscript.js", "asc.js"]) {
        let text = readFileSync(join(dist, file), "utf8");
        for (const p of WASM64_PATCHES.filter((p) => p.file === file)) {
          if (text.split(p.from).length !== 2) {
            throw new Error(
              `the 64-bit build patches ${file} of assemblyscript 0.28.20, and ${JSON.stringify(p.from)} ` +
                "is not in it exactly once: another compiler version is installed (./setup.sh pins it)",
            );
          }
          text = text.replace(p.from, p.to);
        }
        // named by process: the test that rebuilds the kernels may run in two runtimes at once
        const target = join(dist, file.replace(/\.js$/, `.wasm64.${process.pid}.js`));
        writeFileSync(target, text);
        written.push(target);
      }
      return { asc: await import(pathToFileURL(join(dist, `asc.wasm64.${process.pid}.js`)).href), cleanup };
    } catch (err) {
      cleanup();
      throw err;
    }
  } catch (err) {
    throw new Error(
      `The AssemblyScript compiler could not be loaded (${(err as Error).message}). ` +
        "Run ./setup.sh (or `bun install`) in the project.",
    );
  }
}

type AscModule = {
  main: (args: string[], options: object) => Promise<{ error: Error | null; stderr: { toString(): string } }>;
};

async function compileBuild(extraFlags: string[], wasm64: boolean): Promise<Uint8Array<ArrayBuffer>> {
  const { asc, cleanup } = await loadCompiler(wasm64);
  const dir = mkdtempSync(join(tmpdir(), "flannel-asc-"));
  try {
    const out = join(dir, "kernels.wasm");
    const memory = wasm64 ? ["--enable", "memory64", "--maximumMemory", String(MEMORY64_PAGES)] : [];
    const { error, stderr } = await asc.main(
      [join(KERNEL_SOURCE_DIR, "index.ts"), "-o", out, ...ASC_FLAGS, ...extraFlags, ...memory],
      {},
    );
    if (error) {
      throw new Error(`Building the WebAssembly kernels failed: ${error.message}\n${stderr.toString()}`);
    }
    const wasm = Uint8Array.from(readFileSync(out));
    checkExports(wasm, (await twinDeclarations()).twins);
    return wasm;
  } finally {
    rmSync(dir, { recursive: true, force: true });
    cleanup();
  }
}

/**
 * The names of a module's exported functions, read from its export section (section 7) by hand: the engine
 * running the build may lack a feature of the module (Bun has no memory64), and only the names are needed.
 */
export function exportedFunctions(wasm: Uint8Array): string[] {
  let at = 8; // past the magic number and the version
  const leb = () => {
    let value = 0, shift = 0, byte: number;
    do {
      byte = wasm[at++];
      value += (byte & 0x7f) * 2 ** shift;
      shift += 7;
    } while (byte & 0x80);
    return value;
  };
  const names: string[] = [];
  while (at < wasm.length) {
    const id = wasm[at++], size = leb(), end = at + size;
    if (id === 7) {
      for (let count = leb(); count > 0; count--) {
        const length = leb();
        const name = new TextDecoder().decode(wasm.subarray(at, at + length));
        at += length;
        const kind = wasm[at++];
        leb(); // the index
        if (kind === 0) names.push(name);
      }
    }
    at = end;
  }
  return names;
}

/** Every declared twin exported, and every export a declared twin (or heap_base, the engine's). */
export function checkExports(wasm: Uint8Array<ArrayBuffer>, twins: Map<string, string[]>): void {
  const exports = new Set(exportedFunctions(wasm));
  const missing = [...twins].filter(([twin]) => !exports.has(twin))
    .map(([twin, kernels]) => `${kernels.join(", ")} (export ${twin})`);
  const orphans = [...exports].filter((e) => e !== "heap_base" && !twins.has(e));
  if (missing.length || orphans.length) {
    throw new Error(
      "The WebAssembly kernels do not match the declarations:" +
        (missing.length
          ? ` no twin for ${missing.join("; ")} in src/kernels/wasm (exported by index.ts).`
          : "") +
        (orphans.length ? ` Exports without a declared kernel: ${orphans.join(", ")}.` : ""),
    );
  }
}

/** The generated TypeScript module holding both builds (base64 in lines of 100 characters). */
export function kernelsModuleSource({ exact, fast, exact64, fast64 }: KernelBuilds): string {
  const constant = (name: string, doc: string, wasm: Uint8Array) => {
    const b64 = Buffer.from(wasm).toString("base64");
    const lines: string[] = [];
    for (let i = 0; i < b64.length; i += 100) lines.push(`  "${b64.slice(i, i + 100)}",`);
    return [
      `/** ${doc} (${wasm.length} bytes), base64. */`,
      `export const ${name}: string = [`,
      ...lines,
      '].join("");',
    ];
  };
  return [
    "// Generated by tools/build_wasm.ts from src/kernels/wasm (AssemblyScript): do not edit. `deno task build:wasm`",
    "// rebuilds it; tests/wasm_backend.test.ts fails when it is not what the sources build to.",
    ...constant("KERNELS_WASM_BASE64", "The WebAssembly kernels", exact),
    ...constant("KERNELS_WASM_FAST_BASE64", "The same kernels built with relaxed SIMD, for fastMath", fast),
    ...constant("KERNELS_WASM64_BASE64", "The kernels for a 64-bit memory (memory64)", exact64),
    ...constant("KERNELS_WASM64_FAST_BASE64", "The relaxed-SIMD kernels for a 64-bit memory", fast64),
    "",
  ].join("\n");
}

if (import.meta.main || process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const [file, source] of await generatedModules()) {
    if (!existsSync(file) || readFileSync(file, "utf8") !== source) {
      writeFileSync(file, source);
      console.log(`wrote ${file}`);
    }
  }
  const builds = await compileKernels();
  const tmp = `${KERNELS_MODULE}.${process.pid}.tmp`;
  writeFileSync(tmp, kernelsModuleSource(builds));
  renameSync(tmp, KERNELS_MODULE);
  console.log(
    `built ${KERNELS_MODULE}: bytes of WebAssembly, 32-bit memory ${builds.exact.length} (relaxed SIMD ` +
      `${builds.fast.length}), 64-bit memory ${builds.exact64.length} (relaxed SIMD ${builds.fast64.length})`,
  );
}
