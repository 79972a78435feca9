// The package's shape, checked from the sources: the library never imports the FLANNEL application, which
// uses only the public library (mod.ts); nothing refers outside the repository; npm packages are named in
// src/npm.ts alone, with the versions package.json installs and the paths tsconfig.json gives Bun; the two
// manifests (deno.json for JSR, package.json for npm) agree on version and entry points. The packed
// package itself is installed and used by tests/consumer.ts.
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, statSync } from "node:fs";
import process from "node:process";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { assert, assertEquals, test } from "./harness.ts";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const json = (f: string) => JSON.parse(readFileSync(join(ROOT, f), "utf8"));

function tsFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir)).flatMap((f) => {
    const rel = join(dir, f);
    if (statSync(join(ROOT, rel)).isDirectory()) return rel === "src/kernels/wasm" ? [] : tsFiles(rel);
    return f.endsWith(".ts") ? [rel] : [];
  });
}

/** The module specifiers of a file's static imports and re-exports. */
function specifiers(file: string): string[] {
  const text = readFileSync(join(ROOT, file), "utf8");
  return [
    ...text.matchAll(
      /^(?:import|export)\b[^;]*?\bfrom\s+"([^"]+)"|^import\s+"([^"]+)"|\bimport\("([^"]+)"\)/gms,
    ),
  ].map((m) => m[1] ?? m[2] ?? m[3]);
}

const LIBRARY = [...tsFiles("src"), "mod.ts"].filter((f) =>
  !f.startsWith("src/flannel/") && !f.startsWith("src/cli/")
);
const APPLICATION = tsFiles("src/flannel");
/** The command line: cli.ts dispatches to one module per command in src/cli/. */
const COMMAND_LINE = ["cli.ts", ...tsFiles("src/cli")];

test("the library never imports the FLANNEL application, nor anything outside the repository", () => {
  assert(
    LIBRARY.length > 40 && APPLICATION.length > 10,
    `found ${LIBRARY.length} and ${APPLICATION.length} files`,
  );
  const bad: string[] = [];
  for (const file of [...LIBRARY, ...APPLICATION, ...COMMAND_LINE]) {
    for (const s of specifiers(file)) {
      if (!s.startsWith(".")) continue;
      const target = relative(ROOT, resolve(ROOT, dirname(file), s));
      if (target.startsWith("..")) bad.push(`${file} imports ${s}, outside the repository`);
      if (LIBRARY.includes(file) && target.startsWith("src/flannel/")) bad.push(`${file} imports ${s}`);
    }
    if (/\.\.\/shared\b/.test(readFileSync(join(ROOT, file), "utf8"))) bad.push(`${file} mentions ../shared`);
  }
  assertEquals(bad, []);
});

test("FLANNEL uses only the public library: src/flannel imports mod.ts, its own files, the platform module and src/npm.ts; the command line only the two entry points", () => {
  // The runtime's APIs come through src/platform/runtime.ts (which the browser build swaps), npm packages
  // through src/npm.ts, where each is named once.
  const allowed = (file: string, s: string) => {
    const target = relative(ROOT, resolve(ROOT, dirname(file), s));
    return target === "mod.ts" || target === "src/platform/runtime.ts" || target === "src/npm.ts" ||
      (target.startsWith("src/flannel/") && /^(\.\/|\.\.\/)[a-z0-9_/]+\.ts$/.test(s));
  };
  const bad = APPLICATION.flatMap((file) =>
    specifiers(file).filter((s) => !allowed(file, s)).map((s) => `${file}: ${s}`)
  );
  assertEquals(bad, []);
  // The command line, like a user's program: the two public entry points, node: modules and its own files.
  const cli = COMMAND_LINE.flatMap((file) =>
    specifiers(file).filter((s) => {
      if (s.startsWith("node:")) return false;
      const target = relative(ROOT, resolve(ROOT, dirname(file), s));
      return !(target === "mod.ts" || target === "src/flannel/mod.ts" || COMMAND_LINE.includes(target));
    }).map((s) => `${file}: ${s}`)
  );
  assertEquals(cli, [], "the command line imports beyond the two public entry points");
});

test("runtime APIs are named once: no file of src/ but src/platform/runtime.ts imports a node: module", () => {
  const files = [...LIBRARY, ...APPLICATION];
  const importers = files.filter((f) => specifiers(f).some((s) => s.startsWith("node:")));
  assertEquals(importers, ["src/platform/runtime.ts"]);
});

test("npm packages are named once (src/npm.ts), at the versions package.json and tsconfig.json name", () => {
  const pkg = json("package.json"), tsconfig = json("tsconfig.json");
  const named = [...new Set(specifiers("src/npm.ts"))];
  assert(named.length >= 2, `src/npm.ts names ${named.length} packages`);
  for (const spec of named) {
    const m = /^npm:((?:@[^/]+\/)?[^@]+)@([^/]+)(\/.+)?$/.exec(spec);
    assert(m, `${spec} is not npm:name@version[/subpath]`);
    assertEquals(pkg.dependencies[m[1]], m[2], `package.json dependency ${m[1]}`);
    assert(
      spec in tsconfig.compilerOptions.paths,
      `tsconfig.json paths lack ${spec} (Bun resolves it there)`,
    );
  }
  assertEquals(Object.keys(tsconfig.compilerOptions.paths).sort(), [...named].sort(), "tsconfig.json paths");
  // Any other bare specifier in the library would fail in a Deno script that imports mod.ts by path.
  const bare = [...LIBRARY, ...APPLICATION, ...COMMAND_LINE].flatMap((file) =>
    specifiers(file).filter((s) => !s.startsWith(".") && !s.startsWith("node:") && !s.startsWith("npm:"))
      .map((s) => `${file}: ${s}`)
  );
  assertEquals(bare, []);
  const npmElsewhere = LIBRARY.filter((f) =>
    f !== "src/npm.ts" && specifiers(f).some((s) => s.startsWith("npm:"))
  );
  assertEquals(npmElsewhere, [], "files naming npm: packages besides src/npm.ts");
});

test("deno.json (JSR) and package.json (npm) agree on version, license and entry points", () => {
  const deno = json("deno.json"), pkg = json("package.json");
  assert(/^@[a-z0-9-]+\/[a-z0-9-]+$/.test(deno.name), `deno.json name ${deno.name} is not scoped`);
  assertEquals(deno.version, pkg.version, "version");
  assertEquals(deno.license, pkg.license, "license");
  const npmEntries = Object.keys(pkg.exports).filter((k) => k !== "./package.json").sort();
  assertEquals(Object.keys(deno.exports).sort(), npmEntries, "entry points");
  for (const [entry, source] of Object.entries(deno.exports as Record<string, string>)) {
    const built = pkg.exports[entry].default as string;
    assertEquals(built, source.replace(/^\.\//, "./dist/").replace(/\.ts$/, ".js"), `npm build of ${entry}`);
    assertEquals(pkg.exports[entry].types, built.replace(/\.js$/, ".d.ts"), `types of ${entry}`);
  }
  assertEquals(pkg.bin.flannel, pkg.exports["./cli"].default, "bin");
  assertEquals(pkg.files.sort(), ["LICENSE", "README.md", "dist/"], "package.json files");
});

test("an op module imported alone (without mod.ts) differentiates: the tape comes with the ops", () => {
  const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";
  const args = [...(isBun ? ["run"] : ["run", "-A"]), join(ROOT, "tests/fixtures/direct_op_import.ts")];
  const r = spawnSync(process.execPath, args, { cwd: ROOT, encoding: "utf8", timeout: 60_000 });
  assertEquals(r.status, 0, `exit status (stderr: ${r.stderr})`);
  assertEquals(r.stdout.trim(), "grad 2,4,6");
});
