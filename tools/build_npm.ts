// Builds the npm package into dist/: JavaScript and declaration files compiled by the TypeScript compiler
// from the same sources that Deno and JSR use (mod.ts, src/flannel/mod.ts, cli.ts and what they import).
// Deno refuses TypeScript under node_modules and Node cannot run it, so npm gets JavaScript. Relative `.ts`
// imports become `.js` (rewriteRelativeImportExtensions); the `npm:` specifiers of src/npm.ts become the
// bare package names that package.json's dependencies install. `npm pack` runs it (package.json
// `prepack`), so a packed tarball is always built from the sources it ships with.
//   bun run tools/build_npm.ts   (or deno run -A tools/build_npm.ts)
import {
  chmodSync,
  cpSync,
  existsSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import process from "node:process";
import ts from "typescript";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
export const DIST = join(ROOT, "dist");
/**
 * The package's entry points (package.json `exports`, deno.json `exports`), and the web page's sources that
 * only esbuild reads (`flannel serve`, `build-web`: the page, its worker and the browser's platform module).
 */
const ENTRIES = [
  "mod.ts",
  "src/flannel/mod.ts",
  "cli.ts",
  "src/flannel/web/page.ts",
  "src/flannel/web/worker.ts",
  "src/platform/runtime_browser.ts",
];

/** `npm:name@version[/subpath]` specifiers of src/npm.ts -> { name, version, bare: name[/subpath] }. */
export function npmSpecifiers(): { specifier: string; name: string; version: string; bare: string }[] {
  const source = readFileSync(join(ROOT, "src/npm.ts"), "utf8");
  return [...source.matchAll(/(?:from |import\()"(npm:((?:@[^/"]+\/)?[^@"]+)@([^"/]+)(\/[^"]+)?)"/g)].map((
    m,
  ) => ({
    specifier: m[1],
    name: m[2],
    version: m[3],
    bare: m[2] + (m[4] ?? ""),
  }));
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

/** tsconfig.json's paths (what Bun runs), each preceded by its DefinitelyTyped package where there is one. */
function typedPaths(paths: Record<string, string[]>): Record<string, string[]> {
  return Object.fromEntries(
    Object.entries(paths).map(([specifier, targets]) => {
      const typed = targets.map((t) => t.replace("./node_modules/", "./node_modules/@types/"))
        .filter((t) => t.includes("@types/") && existsSync(join(ROOT, t)));
      return [specifier, [...typed, ...targets]];
    }),
  );
}

export function buildNpm(): void {
  rmSync(DIST, { recursive: true, force: true });
  const tsconfig = JSON.parse(readFileSync(join(ROOT, "tsconfig.json"), "utf8"));
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    lib: ["lib.es2023.d.ts", "lib.dom.d.ts"],
    types: ["node", "@webgpu/types"],
    typeRoots: [join(ROOT, "node_modules/@types"), join(ROOT, "node_modules")],
    strict: true,
    noImplicitOverride: true,
    allowImportingTsExtensions: true,
    rewriteRelativeImportExtensions: true,
    esModuleInterop: true,
    skipLibCheck: true,
    declaration: true,
    sourceMap: false,
    rootDir: ROOT,
    outDir: DIST,
    baseUrl: ROOT,
    paths: typedPaths(tsconfig.compilerOptions.paths),
  };
  const program = ts.createProgram(ENTRIES.map((e) => join(ROOT, e)), options);
  const emitted = program.emit();
  const diagnostics = [...ts.getPreEmitDiagnostics(program), ...emitted.diagnostics];
  if (diagnostics.length > 0) {
    const host: ts.FormatDiagnosticsHost = {
      getCanonicalFileName: (f) => f,
      getCurrentDirectory: () => ROOT,
      getNewLine: () => "\n",
    };
    throw new Error(`TypeScript found problems:\n${ts.formatDiagnostics(diagnostics, host)}`);
  }
  const specifiers = npmSpecifiers();
  for (const file of filesUnder(DIST)) {
    let text = readFileSync(file, "utf8");
    for (const s of specifiers) text = text.replaceAll(`"${s.specifier}"`, `"${s.bare}"`);
    if (file === join(DIST, "cli.js")) text = `#!/usr/bin/env node\n${text}`;
    // The public types name WebGPU's (GPUBuffer, GPUPowerPreference): consumers get them from @webgpu/types.
    if (file === join(DIST, "mod.d.ts")) text = `/// <reference types="@webgpu/types" />\n${text}`;
    writeFileSync(file, text);
  }
  chmodSync(join(DIST, "cli.js"), 0o755);
  // The shipped bundle sits where src/flannel/bundle.ts's SHIPPED_BUNDLE URL points from dist/ too.
  for (const name of readdirSync(join(ROOT, "weights")).filter((f) => f.endsWith(".zip"))) {
    cpSync(join(ROOT, "weights", name), join(DIST, "weights", name));
  }
  const stray = filesUnder(DIST).filter((f) => /(from |import\()"npm:/.test(readFileSync(f, "utf8")));
  if (stray.length) {
    throw new Error(`npm: specifiers left in ${stray.map((f) => relative(ROOT, f)).join(", ")}`);
  }
}

if (import.meta.main || process.argv[1] === fileURLToPath(import.meta.url)) {
  buildNpm();
  const files = filesUnder(DIST);
  const bytes = files.reduce((n, f) => n + statSync(f).size, 0);
  console.log(`built ${relative(process.cwd(), DIST) || "."}: ${files.length} files, ${bytes} bytes`);
}
