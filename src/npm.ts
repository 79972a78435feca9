// The npm packages the library runs on, each named once here with its exact version. `npm:` specifiers
// resolve in Deno without any import map (also when a script in another folder imports this checkout's
// mod.ts) and on JSR; Bun maps them to node_modules through tsconfig.json's `paths`; the npm build
// (tools/build_npm.ts) rewrites them to bare names. tests/package.test.ts checks that the versions here,
// in package.json and in tsconfig.json agree.
// @ts-types="npm:@types/upng-js@2.1.5"
export { default as UPNG } from "npm:upng-js@2.1.0";
export { default as jpeg } from "npm:jpeg-js@0.4.4";
export { deflateSync, inflateSync } from "npm:fflate@0.8.3";
export { mat3 } from "npm:wgpu-matrix@3.4.2";
export { default as protobuf } from "npm:protobufjs@8.8.1";
