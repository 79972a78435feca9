// A lost WebGPU device (driver reset, GPU removed; here GPUDevice.destroy(), which fires `lost` the same
// way) in the middle of stage 1: a clear error, the last checkpoint and the log whole and unchanged, no
// temporary file, and a resume from that checkpoint. The loss happens in a child process: a process's device
// stays lost. WebGPU only: the WebAssembly backend has no device to lose.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import process from "node:process";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as fl from "../mod.ts";
import { assert, assertEquals, test } from "./harness.ts";

await fl.init();
const here = dirname(fileURLToPath(import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), "fl-lost-"));
const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== "undefined";

test.when(fl.backendInfo()?.backend === "webgpu", "a WebGPU device is lost here; this backend has none")(
  "device.lost during stage 1: a clear error, the epoch-1 checkpoint and log intact, no temporary file",
  async () => {
    const ckpt = join(tmp, "lost.safetensors"), log = join(tmp, "lost.jsonl");
    const out = execFileSync(
      process.execPath,
      [...(isBun ? ["run"] : ["run", "-A"]), join(here, "fixtures", "device_lost_child.ts"), ckpt, log],
      { encoding: "utf8", cwd: resolve(here, ".."), stdio: ["ignore", "pipe", "pipe"] },
    );
    const result = JSON.parse(out.trim().split("\n").at(-1)!);
    assert(result.destroyed, "the child never reached epoch 2's third batch");
    assert(
      /^the WebGPU device was lost \(destroyed: [^)]+\); its buffers and the work not yet read back are gone .*restart the process/
        .test(result.error ?? ""),
      `the error: ${result.error}`,
    );
    // Epoch 1's checkpoint, whole (it loads) and not overwritten by anything computed after the loss.
    const meta = await fl.io.readSafetensorsMetadata(ckpt);
    assertEquals(JSON.parse(meta.epoch), 1, "the checkpoint's epoch");
    const tensors = await fl.io.loadSafetensors(ckpt);
    assert(Object.keys(tensors).length > 100, "the checkpoint's tensors");
    for (const [k, t] of Object.entries(tensors)) {
      if (t.dtype === "F32") assert((t.data as Float32Array).every(Number.isFinite), `${k} is not finite`);
    }
    assertEquals(
      readFileSync(log, "utf8").trim().split("\n").map((l) => JSON.parse(l).epoch),
      [1],
      "log epochs",
    );
    assertEquals(readdirSync(tmp).filter((f) => f.endsWith(".tmp")), [], "temporary files");
    // This process's device is fine: the run resumes from the checkpoint here and ends with its 3 epochs.
    const labels = Array.from({ length: 48 }, (_, i) => i % 4);
    const images = labels.map(() => ({ width: 40, height: 40, data: new Float32Array(1600).fill(0.5) }));
    const resumed = await (await import("../src/flannel/mod.ts")).trainStage1({
      model: fl.models.resnet152({ numClasses: 4, scale: "tiny", generator: new fl.Generator(4) }),
      train: { images, labels },
      val: { images, labels },
      epochs: 3,
      batchSize: 8,
      crop: 32,
      checkpointPath: ckpt,
      resume: true,
    });
    assertEquals(resumed.history.map((h) => h.epoch), [1, 2, 3]);
    resumed.model.dispose();
  },
);

test.afterAll(() => rmSync(tmp, { recursive: true, force: true }));
