// The npm packages the library runs on, each named once here with its exact version. `npm:` specifiers
// resolve in Deno without any import map (also when a script in another folder imports this checkout's
// mod.ts) and on JSR; Bun maps them to node_modules through tsconfig.json's `paths`; the npm build
// (tools/build_npm.ts) rewrites them to bare names. tests/package.test.ts checks that the versions here,
// in package.json and in tsconfig.json agree.
// @ts-types="npm:@types/upng-js@2.1.5"
export { default as UPNG } from "npm:upng-js@2.1.0";
export { default as jpeg } from "npm:jpeg-js@0.4.4";
export { deflateSync, inflateSync, Unzlib, zlibSync } from "npm:fflate@0.8.3";
export { mat3 } from "npm:wgpu-matrix@3.4.2";
export { default as protobuf } from "npm:protobufjs@8.8.1";
export { sha256 as nobleSha256 } from "npm:@noble/hashes@2.4.0/sha2.js";
/** esbuild, loaded only by the web build (`flannel serve`, `build-web`): a native binary nothing else needs. */
// deno-lint-ignore no-import-prefix -- named here like every other package (a dynamic import, loaded late)
export const importEsbuild = (): Promise<typeof import("npm:esbuild@0.28.2")> => import("npm:esbuild@0.28.2");
export type { PluginBuild as EsbuildPluginBuild } from "npm:esbuild@0.28.2";
