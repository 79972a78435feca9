// Compiles the WebAssembly kernels (AssemblyScript sources in src/kernels/wasm) into kernels.wasm with the
// compiler from node_modules. The output depends only on the sources and the pinned compiler version, so a
// rebuild is byte-identical; the engine rebuilds on first use when the sources are newer than the binary.
import { existsSync, readdirSync, renameSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import process from "node:process";

export const KERNEL_SOURCE_DIR = fileURLToPath(new URL("../../kernels/wasm/", import.meta.url));
export const KERNEL_BINARY = join(KERNEL_SOURCE_DIR, "kernels.wasm");

/** Compiler flags: shared imported memory (threads), SIMD, no GC runtime, no assertions. */
const ASC_FLAGS = [
  "-O3",
  "--noAssert",
  "--runtime",
  "stub",
  "--importMemory",
  "--sharedMemory",
  "--initialMemory",
  "1",
  "--maximumMemory",
  "65536",
  "--enable",
  "threads",
  "--enable",
  "simd",
  "--use",
  "abort=",
];

function newestSource(): number {
  return Math.max(
    ...readdirSync(KERNEL_SOURCE_DIR).filter((f) => f.endsWith(".ts")).map((f) =>
      statSync(join(KERNEL_SOURCE_DIR, f)).mtimeMs
    ),
  );
}

export function kernelsStale(): boolean {
  return !existsSync(KERNEL_BINARY) || statSync(KERNEL_BINARY).mtimeMs < newestSource();
}

/** Builds kernels.wasm (written beside, then renamed: a reader never sees half a file). */
export async function buildKernels(out = KERNEL_BINARY): Promise<void> {
  let asc: {
    main: (
      args: string[],
      options: object,
    ) => Promise<{ error: Error | null; stderr: { toString(): string } }>;
  };
  try {
    asc = await import("assemblyscript/asc");
  } catch (err) {
    throw new Error(
      `The WebAssembly kernels need building and the AssemblyScript compiler could not be loaded ` +
        `(${(err as Error).message}). Run ./setup.sh (or \`bun install\`) in the project.`,
    );
  }
  const tmp = `${out}.${process.pid}.tmp`;
  const { error, stderr } = await asc.main(
    [join(KERNEL_SOURCE_DIR, "index.ts"), "-o", tmp, ...ASC_FLAGS],
    {},
  );
  if (error) {
    throw new Error(`Building the WebAssembly kernels failed: ${error.message}\n${stderr.toString()}`);
  }
  renameSync(tmp, out);
}

if (import.meta.main || process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = process.argv[2] ?? KERNEL_BINARY;
  await buildKernels(out);
  console.log(`built ${out} from ${dirname(join(KERNEL_SOURCE_DIR, "index.ts"))}`);
}
