// `deno task parity` (or `bun run tests/parity.ts`): each full-size base learner (and EfficientNet-B4,
// COVID-Net and AI-Covid) built in PyTorch with
// random weights and BatchNorm statistics, saved as safetensors by tests/fixtures/make_parity.py, loaded
// here, and run on the same 1x3x224x224 input (299x299 for Inception v3): the logits must agree to 1e-3
// relative. Not part of the suite: it needs Debian's python3-torch and writes ~1.3 GB to a temp folder.
//   deno task parity [model ...]
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import process from "node:process";
import * as fl from "../mod.ts";
import { PYTHON } from "./cli_children.ts";

type Builder = () => fl.nn.Module;
const BUILDERS: Record<string, Builder> = {
  resnet152: () => fl.models.resnet152({ numClasses: 4, init: "default" }),
  resnext101_32x8d: () => fl.models.resnext101_32x8d({ numClasses: 4, init: "default" }),
  vgg19_bn: () => fl.models.vgg19_bn({ numClasses: 4, init: "default" }),
  densenet161: () => fl.models.densenet161({ numClasses: 4 }),
  inception_v3: () => fl.models.inception_v3({ numClasses: 4, auxLogits: true }),
  efficientnet_b4: () => fl.models.efficientnet_b4({ numClasses: 4, init: "default" }),
  covidnet: () => fl.models.covidnet({ numClasses: 4 }),
  aicovid: () => fl.models.aicovid({ numClasses: 4, init: "default" }),
};

const names = process.argv.slice(2).filter((a) => !a.startsWith("-"));
for (const n of names) {
  if (!(n in BUILDERS)) throw new Error(`unknown model ${n}; one of ${Object.keys(BUILDERS).join(", ")}`);
}
const models = names.length ? names : Object.keys(BUILDERS);
const info = await fl.init();
const dir = mkdtempSync(join(tmpdir(), "flannel-parity-"));
const script = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "make_parity.py");
const rows: string[] = [];
let failures = 0;
try {
  for (const name of models) {
    const py = spawnSync(PYTHON, [script, dir, name], { encoding: "utf8" });
    if (py.status !== 0) {
      throw new Error(`make_parity.py ${name} failed (is python3-torchvision installed?):\n${py.stderr}`);
    }
    const t0 = performance.now();
    const record = await fl.io.loadSafetensors(join(dir, `${name}.safetensors`));
    rmSync(join(dir, `${name}.safetensors`));
    const { __input__: input, __logits__: expected, ...stateDict } = record;
    const model = BUILDERS[name]();
    model.loadStateDict(stateDict);
    model.eval();
    const t1 = performance.now();
    const logits = await fl.scope(() =>
      fl.noGrad(() => model.forward(fl.tensor(input.data as Float32Array, input.shape))).toArray()
    );
    const t2 = performance.now();
    const scaleOf = Math.max(...Array.from(expected.data, Math.abs));
    const diff = Math.max(...Array.from(logits, (v, i) => Math.abs(v - expected.data[i])));
    const ok = diff <= 1e-3 * scaleOf;
    if (!ok) failures++;
    rows.push(
      `| ${name} | ${model.parameterCount().toLocaleString("en")} | ${(diff / scaleOf).toExponential(2)} | ${
        ok ? "ok" : "FAIL"
      } | ${((t1 - t0) / 1000).toFixed(1)} s | ${((t2 - t1) / 1000).toFixed(1)} s |`,
    );
    console.log(rows[rows.length - 1]);
    model.dispose();
    fl.trimPool();
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
console.log(`\n${info.runtime} on ${info.adapter}\n`);
console.log("| model | parameters | max |diff| / max |logit| | 1e-3 | load | forward |");
console.log("|---|---|---|---|---|---|");
for (const r of rows) console.log(r);
process.exit(failures ? 1 : 0);
