// A Deno script in a folder of its own that imports the checkout by path (tests/consumer.ts copies it out
// and puts the checkout's mod.ts path in place of CHECKOUT): npm dependencies must resolve without the
// checkout's configuration (upng-js and jpeg-js load with src/io/images.ts). Writes and decodes a PNG and runs
// an op on the WebAssembly backend.
import * as fl from "CHECKOUT/mod.ts";

await fl.init({ backend: "wasm" });
const png = fl.io.encodePngGray({ width: 2, height: 1, data: new Float32Array([0, 1]) });
const gray = fl.io.decodeImage(png, "two.png");
const y = await fl.F.relu(fl.tensor(new Float32Array([-1, 2]), [2])).toArray();
console.log(JSON.stringify({ png: [...gray.data], relu: [...y] }));
