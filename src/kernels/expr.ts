// Per-element arithmetic written once: small float32 expressions that become the WGSL of a kernel and the
// AssemblyScript of its WebAssembly twin (scalar, and f32x4 lanes where every operation has a lane form).
// tools/build_wasm.ts writes the AssemblyScript (src/kernels/wasm/maps.ts) from the same tables the WGSL
// kernels are built from, so the two backends cannot drift apart. Each operation emits the same IEEE
// operation on both sides (no fused multiply-add is introduced), in the order written.

/** An expression over per-element values (`x`, `y`, `g`), scalar uniforms and constants. */
export type Expr =
  | { kind: "value"; name: string }
  | { kind: "uniform"; name: string }
  | { kind: "const"; value: number }
  | { kind: "op"; op: Operation; args: Expr[] };

/** The operations: arithmetic, the math functions both languages have, comparisons and select. */
export type Operation =
  | "neg"
  | "add"
  | "sub"
  | "mul"
  | "div"
  | "max"
  | "abs"
  | "sign"
  | "sqrt"
  | "exp"
  | "log"
  | "gt"
  | "ge"
  | "select";

const op = (operation: Operation, ...args: Expr[]): Expr => ({ kind: "op", op: operation, args });

/** Building blocks: `E.value("x")`, `E.add(a, b)`, `E.select(ifFalse, ifTrue, condition)` as WGSL's select. */
export const E = {
  value: (name: string): Expr => ({ kind: "value", name }),
  uniform: (name: string): Expr => ({ kind: "uniform", name }),
  c: (value: number): Expr => ({ kind: "const", value }),
  neg: (a: Expr): Expr => op("neg", a),
  add: (a: Expr, b: Expr): Expr => op("add", a, b),
  sub: (a: Expr, b: Expr): Expr => op("sub", a, b),
  mul: (a: Expr, b: Expr): Expr => op("mul", a, b),
  div: (a: Expr, b: Expr): Expr => op("div", a, b),
  max: (a: Expr, b: Expr): Expr => op("max", a, b),
  abs: (a: Expr): Expr => op("abs", a),
  sign: (a: Expr): Expr => op("sign", a),
  sqrt: (a: Expr): Expr => op("sqrt", a),
  exp: (a: Expr): Expr => op("exp", a),
  log: (a: Expr): Expr => op("log", a),
  gt: (a: Expr, b: Expr): Expr => op("gt", a, b),
  ge: (a: Expr, b: Expr): Expr => op("ge", a, b),
  select: (ifFalse: Expr, ifTrue: Expr, condition: Expr): Expr => op("select", ifFalse, ifTrue, condition),
};

/** A float literal both languages read as the same f32. */
function literal(v: number): string {
  if (!Number.isFinite(v) || Math.fround(v) !== v) {
    throw new Error(`expression constant ${v} is not an exact f32`);
  }
  const s = String(v);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

const INFIX: Partial<Record<Operation, string>> = {
  add: "+",
  sub: "-",
  mul: "*",
  div: "/",
  gt: ">",
  ge: ">=",
};

/** WGSL: values by their names, uniforms as `u.<name>`. */
export function toWgsl(e: Expr): string {
  switch (e.kind) {
    case "value":
      return e.name;
    case "uniform":
      return `u.${e.name}`;
    case "const":
      return literal(e.value);
  }
  const a = e.args.map(toWgsl);
  if (e.op === "neg") return `(-${a[0]})`;
  const infix = INFIX[e.op];
  if (infix) return `(${a[0]} ${infix} ${a[1]})`;
  return `${e.op}(${a.join(", ")})`;
}

/** AssemblyScript, scalar f32: values and uniforms by their names (the twin's locals). */
export function toAssemblyScript(e: Expr): string {
  switch (e.kind) {
    case "value":
    case "uniform":
      return e.name;
    case "const":
      return `<f32>${literal(e.value)}`;
  }
  const a = e.args.map(toAssemblyScript);
  if (e.op === "neg") return `(-${a[0]})`;
  if (e.op === "select") return `(${a[2]} ? ${a[1]} : ${a[0]})`;
  if (e.op === "max") return `max<f32>(${a[0]}, ${a[1]})`;
  const infix = INFIX[e.op];
  if (infix) return `(${a[0]} ${infix} ${a[1]})`;
  return `Mathf.${e.op}(${a[0]})`;
}

const LANES: Partial<Record<Operation, string>> = {
  neg: "f32x4.neg",
  add: "f32x4.add",
  sub: "f32x4.sub",
  mul: "f32x4.mul",
  div: "f32x4.div",
  max: "f32x4.max",
  sqrt: "f32x4.sqrt",
  gt: "f32x4.gt",
  ge: "f32x4.ge",
};

/**
 * AssemblyScript over four lanes (v128): values and uniforms by their names (v128 locals: uniforms splat),
 * or null where an operation has no lane form (exp, log, abs, sign), so the twin goes element by element.
 * Each lane computes what the scalar form computes, bit for bit.
 */
export function toLanes(e: Expr): string | null {
  switch (e.kind) {
    case "value":
    case "uniform":
      return e.name;
    case "const":
      return `f32x4.splat(<f32>${literal(e.value)})`;
  }
  const a = e.args.map(toLanes);
  if (a.some((s) => s === null)) return null;
  if (e.op === "select") return `v128.bitselect(${a[1]}, ${a[0]}, ${a[2]})`;
  const lane = LANES[e.op];
  return lane ? `${lane}(${a.join(", ")})` : null;
}
