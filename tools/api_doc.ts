// The API reference, generated from the doc comments of the public surface:
//   deno task doc        writes docs/api/ (deno doc --html; open docs/api/index.html; not committed)
//   deno task doc:lint   fails on an exported name without a doc comment, or a public signature that
//                        names a private type (deno doc --lint); the suite's package step runs the same check
import { spawnSync } from "node:child_process";
import { dirname, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

/** The modules whose exports make the public surface (the entry points and the namespaces they export). */
export const DOC_ENTRIES = [
  "mod.ts",
  "src/flannel/mod.ts",
  "cli.ts",
  "src/functional.ts",
  "src/nn/index.ts",
  "src/optim/optimizers.ts",
  "src/models/index.ts",
  "src/io/index.ts",
  "src/data/index.ts",
  "src/train/metrics.ts",
  "src/train/index.ts",
  "src/train/plots.ts",
  "src/onnx/index.ts",
];

if (import.meta.main) {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
  const lint = process.argv.includes("--lint");
  const args = lint
    ? ["doc", "--lint", ...DOC_ENTRIES]
    : ["doc", "--html", "--name=flannel-webgpu", "--output=docs/api", ...DOC_ENTRIES];
  const { status } = spawnSync("deno", args, { cwd: root, stdio: "inherit" });
  if (status === 0 && !lint) console.log(`wrote ${resolve(root, "docs/api/index.html")}`);
  process.exit(status ?? 1);
}
