// Half precision storage: float16 tensors on WebGPU devices with `shader-f16`. A kernel is written once, for
// float32 bindings; where a float16 tensor is bound, the engine compiles a variant of the same WGSL whose
// binding holds f16 and whose every read widens to f32 and every write rounds to f16. Arithmetic stays in
// float32 (GEMM and reduction accumulators included): only storage is halved.

/**
 * The storage types a float16 tensor may be bound to, and their widened and narrowed forms. A u32 binding
 * moves bits (concatenation, gathers): its accesses stay as they are and move f16 values, which works where
 * every binding the values move between holds float16 (WGSL rejects the kernel otherwise).
 */
const HALF_TYPES: Record<string, { wide: string; narrow: string } | null> = {
  "f32": { wide: "f32", narrow: "f16" },
  "vec4<f32>": { wide: "vec4<f32>", narrow: "vec4<f16>" },
  "u32": null,
};

/** `@group(0) @binding(i) var<storage, access> name: array<T>;` as defineKernel writes it. */
const BINDING = /@group\(0\) @binding\((\d+)\) var<storage, (read|read_write)> (\w+): array<(.+?)>;/g;

/** The index just past the bracket or parenthesis that closes the one at `open`. */
function closing(code: string, open: number): number {
  let depth = 0;
  for (let i = open; i < code.length; i++) {
    const c = code[i];
    if (c === "[" || c === "(") depth++;
    else if (c === "]" || c === ")") {
      if (--depth === 0) return i + 1;
    }
  }
  throw new Error(`unbalanced brackets after ${JSON.stringify(code.slice(open, open + 40))}`);
}

/** The index of the `;` that ends the statement running from `from`, outside brackets. */
function statementEnd(code: string, from: number): number {
  let depth = 0;
  for (let i = from; i < code.length; i++) {
    const c = code[i];
    if (c === "[" || c === "(") depth++;
    else if (c === "]" || c === ")") depth--;
    else if (c === ";" && depth === 0) return i;
  }
  throw new Error(`a statement without ";" after ${JSON.stringify(code.slice(from, from + 40))}`);
}

/**
 * `code` (a kernel's WGSL as defineKernel writes it) with the storage bindings at `halfBindings` holding
 * f16: `name[i]` read becomes `f32(name[i])`, `name[i] = v` becomes `name[i] = f16(v)` and `name[i] += v`
 * becomes `name[i] = f16(f32(name[i]) + (v))` (vec4 bindings likewise). Throws, naming the kernel, where a
 * binding is not a float array, or where the body uses the name in a way this cannot rewrite (a pointer to
 * the array, a write to one component, a local that shadows it).
 */
export function halfPrecisionWgsl(kernel: string, code: string, halfBindings: readonly number[]): string {
  const types = new Map<string, { wide: string; narrow: string }>();
  const declared = new Map<number, { name: string; type: string }>();
  for (const m of code.matchAll(BINDING)) declared.set(Number(m[1]), { name: m[3], type: m[4] });
  let out = code;
  for (const b of halfBindings) {
    const d = declared.get(b);
    if (!d) throw new Error(`kernel ${kernel}: no storage binding ${b} to hold a float16 tensor`);
    const t = HALF_TYPES[d.type];
    if (t === undefined) {
      throw new Error(
        `kernel ${kernel}: binding ${b} (${d.name}) is array<${d.type}>, which cannot hold a float16 tensor`,
      );
    }
    if (t) types.set(d.name, t);
    out = out.replace(
      new RegExp(`(@binding\\(${b}\\) var<storage, \\w+> ${d.name}: array<)${escapeRegExp(d.type)}>`),
      `$1${t?.narrow ?? "f16"}>`,
    );
  }
  for (const name of types.keys()) {
    if (new RegExp(`\\b(let|var|const)\\s+${name}\\b|[(,]\\s*${name}\\s*:`).test(out)) {
      throw new Error(`kernel ${kernel}: a local named ${name} shadows the float16 binding`);
    }
    if (new RegExp(`&\\s*${name}\\b(?!\\))`).test(out)) {
      throw new Error(`kernel ${kernel}: takes a pointer into the float16 binding ${name}`);
    }
  }
  // the declarations have no brackets after the name, so only accesses are rewritten
  return `enable f16;\n${rewriteAccesses(kernel, out, types)}`;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Rewrites every read and write of the named arrays in `code` (see {@link halfPrecisionWgsl}). */
function rewriteAccesses(
  kernel: string,
  code: string,
  types: Map<string, { wide: string; narrow: string }>,
): string {
  if (types.size === 0) return code;
  const access = new RegExp(`(?<![\\w.])(${[...types.keys()].join("|")})\\s*\\[`, "g");
  let out = "";
  let at = 0;
  for (;;) {
    access.lastIndex = at;
    const m = access.exec(code);
    if (!m) return out + code.slice(at);
    const name = m[1], t = types.get(name)!;
    const open = m.index + m[0].length - 1;
    const close = closing(code, open);
    const index = rewriteAccesses(kernel, code.slice(open + 1, close - 1), types);
    const element = `${name}[${index}]`;
    out += code.slice(at, m.index);
    const rest = code.slice(close);
    const op = /^\s*([+\-*/]?=)(?!=)/.exec(rest);
    if (/^\s*\.\w+\s*[+\-*/]?=(?!=)/.test(rest)) {
      throw new Error(`kernel ${kernel}: writes one component of the float16 binding ${name}`);
    }
    if (op) {
      const from = close + op[0].length;
      const end = statementEnd(code, from);
      const value = rewriteAccesses(kernel, code.slice(from, end), types).trim();
      const wide = op[1] === "=" ? value : `${t.wide}(${element}) ${op[1][0]} (${value})`;
      out += `${element} = ${t.narrow}(${wide})`;
      at = end;
    } else {
      out += `${t.wide}(${element})`;
      at = close;
    }
  }
}

/** The float16 nearest `value` (ties to even), as its 16 bits; out of range gives ±Infinity, NaN stays NaN. */
export function halfBits(value: number): number {
  const f = new Float32Array([value]);
  const x = new Uint32Array(f.buffer)[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  // the value's exponent for a half; below -14 the half is subnormal, with fewer mantissa bits kept
  const e = exp - 127;
  if (e > 15) return sign | 0x7c00;
  const shift = e >= -14 ? 13 : 13 + (-14 - e);
  if (shift > 24) return sign; // under half the smallest subnormal: zero
  const full = exp === 0 ? mant : mant | 0x800000; // with the hidden bit
  const kept = Math.floor(full / 2 ** shift);
  const dropped = full - kept * 2 ** shift, half = 2 ** (shift - 1);
  const rounded = dropped > half || (dropped === half && (kept & 1) === 1) ? kept + 1 : kept;
  // a normal half: drop the hidden bit and add the biased exponent; a carry into it is still right
  const bits = e >= -14 ? ((e + 14) << 10) + rounded : rounded;
  return sign | Math.min(bits, 0x7c00);
}

/** The value of a float16 given as its 16 bits. */
export function halfValue(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  if (exp === 0) return sign * mant * 2 ** -24;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Float16 values (two bytes each, little-endian) widened to float32. */
export function halfsToFloats(bytes: ArrayBuffer, count: number): Float32Array {
  const halves = new Uint16Array(bytes, 0, count);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = halfValue(halves[i]);
  return out;
}
