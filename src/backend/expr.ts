// Per-element arithmetic written once: small float32 expressions that become the WGSL of a kernel and the
// AssemblyScript of its WebAssembly twin (scalar, and f32x4 lanes where every operation has a lane form).
// tools/build_wasm.ts writes the AssemblyScript from the same declarations the WGSL kernels are built from
// (the maps of src/kernels/maps.ts, the functions and pointwise programs of kernel declarations), so the two
// backends cannot drift apart. Each operation emits the same IEEE operation on both sides (no fused
// multiply-add is introduced), in the order written.

/** An expression over per-element values, scalar uniforms, u32 flags, constants and function calls. */
export type Expr =
  | { kind: "value"; name: string }
  | { kind: "uniform"; name: string }
  | { kind: "flag"; name: string }
  | { kind: "const"; value: number }
  | { kind: "op"; op: Operation; args: Expr[] }
  | { kind: "call"; fn: ExprFunction; args: Expr[] };

/** The operations: arithmetic, the math functions both languages have, comparisons, `and` and select. */
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
  | "pow"
  | "gt"
  | "ge"
  | "lt"
  | "le"
  | "eq"
  | "ne"
  | "and"
  | "select";

/**
 * A named f32 function of f32 parameters: `lets` computed in order, then `result`. It becomes a WGSL `fn`
 * (see {@link functionsWgsl}) and an inlined AssemblyScript function of the same name.
 */
export interface ExprFunction {
  name: string;
  params: string[];
  lets: [string, Expr][];
  result: Expr;
}

const op = (operation: Operation, ...args: Expr[]): Expr => ({ kind: "op", op: operation, args });

/** Building blocks: `E.value("x")`, `E.add(a, b)`, `E.select(ifFalse, ifTrue, condition)` as WGSL's select. */
export const E = {
  value: (name: string): Expr => ({ kind: "value", name }),
  uniform: (name: string): Expr => ({ kind: "uniform", name }),
  /** A u32 uniform as a condition: true when it is not 0. */
  flag: (name: string): Expr => ({ kind: "flag", name }),
  /** A constant: an exact f32 (`Math.fround` a decimal), so both languages read the same number. */
  c: (value: number): Expr => (literal(value), { kind: "const", value }),
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
  pow: (a: Expr, b: Expr): Expr => op("pow", a, b),
  gt: (a: Expr, b: Expr): Expr => op("gt", a, b),
  ge: (a: Expr, b: Expr): Expr => op("ge", a, b),
  lt: (a: Expr, b: Expr): Expr => op("lt", a, b),
  le: (a: Expr, b: Expr): Expr => op("le", a, b),
  eq: (a: Expr, b: Expr): Expr => op("eq", a, b),
  ne: (a: Expr, b: Expr): Expr => op("ne", a, b),
  and: (a: Expr, b: Expr): Expr => op("and", a, b),
  select: (ifFalse: Expr, ifTrue: Expr, condition: Expr): Expr => op("select", ifFalse, ifTrue, condition),
  call: (fn: ExprFunction, ...args: Expr[]): Expr => {
    if (args.length !== fn.params.length) {
      throw new Error(`${fn.name} takes ${fn.params.length} arguments, got ${args.length}`);
    }
    return { kind: "call", fn, args };
  },
  /** A function of `params`; `body` gets each parameter as a value and returns its lets and result. */
  fn: (
    name: string,
    params: string[],
    body: (...p: Expr[]) => { lets?: [string, Expr][]; result: Expr },
  ): ExprFunction => {
    const { lets = [], result } = body(...params.map((p) => E.value(p)));
    return { name, params, lets, result };
  },
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
  lt: "<",
  le: "<=",
  eq: "==",
  ne: "!=",
  and: "&&",
};

/**
 * How a target names the leaves of an expression (values, uniforms, flags) and which subexpressions it has
 * already computed (by their WGSL text, see {@link hoistUniform}).
 */
export interface Naming {
  leaf?: (e: Extract<Expr, { kind: "value" | "uniform" | "flag" }>) => string;
  computed?: Map<string, string>;
}

/** WGSL: values by their names, uniforms as `u.<name>`, flags as `(u.<name> != 0u)`. */
export function toWgsl(e: Expr, naming: Naming = {}): string {
  switch (e.kind) {
    case "value":
      return naming.leaf?.(e) ?? e.name;
    case "uniform":
      return naming.leaf?.(e) ?? `u.${e.name}`;
    case "flag":
      return naming.leaf?.(e) ?? `(u.${e.name} != 0u)`;
    case "const":
      return literal(e.value);
  }
  const a = e.args.map((x) => toWgsl(x, naming));
  if (e.kind === "call") return `${e.fn.name}(${a.join(", ")})`;
  if (e.op === "neg") return `(-${a[0]})`;
  const infix = INFIX[e.op];
  if (infix) return `(${a[0]} ${infix} ${a[1]})`;
  return `${e.op}(${a.join(", ")})`;
}

type Composite = Extract<Expr, { kind: "op" | "call" }>;

/**
 * In an AssemblyScript form: the text of a leaf (by name, a constant through `constant`) or of an already
 * computed subexpression (by its local's name), else the composite expression itself to be expanded.
 */
function twinLeaf(e: Expr, naming: Naming, constant: (literal: string) => string): string | Composite {
  const known = naming.computed && e.kind !== "const" ? naming.computed.get(toWgsl(e)) : undefined;
  if (known) return known;
  switch (e.kind) {
    case "value":
    case "uniform":
    case "flag":
      return naming.leaf?.(e) ?? e.name;
    case "const":
      return constant(literal(e.value));
  }
  return e;
}

/** AssemblyScript, scalar f32: values, uniforms and flags by their names (the twin's locals). */
export function toAssemblyScript(expr: Expr, naming: Naming = {}): string {
  const e = twinLeaf(expr, naming, (c) => `<f32>${c}`);
  if (typeof e === "string") return e;
  const a = e.args.map((x) => toAssemblyScript(x, naming));
  if (e.kind === "call") return `${e.fn.name}(${a.join(", ")})`;
  if (e.op === "neg") return `(-${a[0]})`;
  if (e.op === "select") return `(${a[2]} ? ${a[1]} : ${a[0]})`;
  if (e.op === "max") return `max<f32>(${a[0]}, ${a[1]})`;
  const infix = INFIX[e.op];
  if (infix) return `(${a[0]} ${infix} ${a[1]})`;
  if (e.op === "exp") return `expf(${a[0]})`;
  return `Mathf.${e.op}(${a.join(", ")})`;
}

const LANES: Partial<Record<Operation, string>> = {
  neg: "f32x4.neg",
  add: "f32x4.add",
  sub: "f32x4.sub",
  mul: "f32x4.mul",
  div: "f32x4.div",
  max: "f32x4.max",
  sqrt: "f32x4.sqrt",
  abs: "f32x4.abs",
  exp: "expf4",
  gt: "f32x4.gt",
  ge: "f32x4.ge",
  lt: "f32x4.lt",
  le: "f32x4.le",
  eq: "f32x4.eq",
  ne: "f32x4.ne",
  and: "v128.and",
};

/**
 * AssemblyScript over four lanes (v128): values and uniforms by their names (v128 locals: uniforms splat),
 * or null where an operation has no lane form (log, pow, sign, calls), so the twin goes element by
 * element. A select on a flag (one bool for all lanes) picks a whole vector. Each lane computes what the
 * scalar form computes, bit for bit.
 */
export function toLanes(expr: Expr, naming: Naming = {}): string | null {
  const e = twinLeaf(expr, naming, (c) => `f32x4.splat(<f32>${c})`);
  if (typeof e === "string") return e;
  if (e.kind === "call") return null;
  if (e.op === "select" && e.args[2].kind === "flag") {
    const [ifFalse, ifTrue] = [toLanes(e.args[0], naming), toLanes(e.args[1], naming)];
    const flag = toAssemblyScript(e.args[2], naming);
    return ifFalse && ifTrue ? `(${flag} ? ${ifTrue} : ${ifFalse})` : null;
  }
  const a = e.args.map((x) => toLanes(x, naming));
  if (a.some((s) => s === null)) return null;
  if (e.op === "select") return `v128.bitselect(${a[1]}, ${a[0]}, ${a[2]})`;
  const lane = LANES[e.op];
  return lane ? `${lane}(${a.join(", ")})` : null;
}

/** Whether an expression reads only uniforms and constants (the same for every element). */
function isUniform(e: Expr): boolean {
  if (e.kind === "uniform" || e.kind === "const") return true;
  if (e.kind === "op" || e.kind === "call") return e.args.every(isUniform);
  return false;
}

/**
 * The largest subexpressions of `exprs` that read only uniforms (`1 - beta1`, `lr / bias_correction1`):
 * a twin computes each once per dispatch instead of once per element (the same f32 operation, so the same
 * bits). Returns them by WGSL text, in an order where each comes after those it contains.
 */
export function hoistUniform(exprs: Expr[]): Map<string, Expr> {
  const found = new Map<string, Expr>();
  const visit = (e: Expr) => {
    if (e.kind !== "op" && e.kind !== "call") return;
    if (isUniform(e)) found.set(toWgsl(e), e);
    else e.args.forEach(visit);
  };
  exprs.forEach(visit);
  return found;
}

/**
 * The composite subexpressions that `expr` holds more than once (sigmoid's exp(-|x|) in both arms of its
 * select), by WGSL text, each after those it contains: a twin computes each once into a local (the same f32
 * operations, so the same bits) instead of once per occurrence.
 */
export function repeatedSubexpressions(expr: Expr): Map<string, Expr> {
  const seen = new Map<string, { e: Expr; count: number }>();
  const visit = (e: Expr) => {
    if (e.kind !== "op" && e.kind !== "call") return;
    e.args.forEach(visit);
    const text = toWgsl(e), entry = seen.get(text);
    if (entry) entry.count++;
    else seen.set(text, { e, count: 1 });
  };
  visit(expr);
  return new Map([...seen].filter(([, { count }]) => count > 1).map(([text, { e }]) => [text, e]));
}

/** The functions an expression calls, those they call first, each once. */
export function calledFunctions(exprs: Expr[], into: ExprFunction[] = []): ExprFunction[] {
  const visit = (e: Expr) => {
    if (e.kind === "op") e.args.forEach(visit);
    if (e.kind !== "call") return;
    e.args.forEach(visit);
    if (into.includes(e.fn)) return;
    calledFunctions([...e.fn.lets.map(([, x]) => x), e.fn.result], into);
    into.push(e.fn);
  };
  exprs.forEach(visit);
  return into;
}

/** WGSL for functions and everything they call, callees first. */
export function functionsWgsl(fns: ExprFunction[]): string {
  const all = calledFunctions(fns.map((f) => E.call(f, ...f.params.map((p) => E.value(p)))));
  return all.map((f) =>
    [
      `fn ${f.name}(${f.params.map((p) => `${p}: f32`).join(", ")}) -> f32 {`,
      ...f.lets.map(([name, x]) => `  let ${name} = ${toWgsl(x)};`),
      `  return ${toWgsl(f.result)};`,
      "}",
    ].join("\n")
  ).join("\n");
}

/** An inlined AssemblyScript function of the same name and arithmetic as its WGSL `fn`. */
export function functionAssemblyScript(f: ExprFunction): string {
  return [
    `@inline export function ${f.name}(${f.params.map((p) => `${p}: f32`).join(", ")}): f32 {`,
    ...f.lets.map(([name, x]) => `  const ${name} = ${toAssemblyScript(x)};`),
    `  return ${toAssemblyScript(f.result)};`,
    "}",
  ].join("\n");
}

/**
 * A kernel whose every element is independent: each binding named in the expressions is read at the
 * element (once, before any store), `lets` are computed in order, then each store writes its binding at the
 * element. The optimizer updates are such kernels; their WGSL body and their whole WebAssembly twin are
 * generated from it.
 */
export interface PointwiseProgram {
  /** The u32 uniform that counts the elements. */
  count: string;
  lets: [string, Expr][];
  stores: [string, Expr][];
}

/** The bindings a program reads (its values that are not lets), in order of first use. */
export function programInputs(program: PointwiseProgram): string[] {
  const lets = new Set(program.lets.map(([name]) => name));
  const inputs: string[] = [];
  const visit = (e: Expr) => {
    if (e.kind === "value" && !lets.has(e.name) && !inputs.includes(e.name)) inputs.push(e.name);
    if (e.kind === "op" || e.kind === "call") e.args.forEach(visit);
  };
  [...program.lets, ...program.stores].forEach(([, e]) => visit(e));
  return inputs;
}

/** The WGSL body of a pointwise kernel: one thread per element, `index` its position. */
export function pointwiseWgsl(program: PointwiseProgram, opening: string): string {
  const inputs = programInputs(program);
  const leaf: Naming["leaf"] = (e) =>
    e.kind === "value" && inputs.includes(e.name) ? `${e.name}_in` : toWgsl(e);
  return [
    opening,
    ...inputs.map((b) => `  let ${b}_in = ${b}[i];`),
    ...program.lets.map(([name, x]) => `  let ${name} = ${toWgsl(x, { leaf })};`),
    ...program.stores.map(([b, x]) => `  ${b}[i] = ${toWgsl(x, { leaf })};`),
    "}",
  ].join("\n");
}
