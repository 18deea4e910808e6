// Cross-runtime check: run model.onnx with onnxruntime-node (JavaScript), nothing but the file and raw inputs.
//
// Usage: node tools/onnx_node_check.mjs MODEL.onnx INPUT_NAME X.f32 N,T,F OUT.f32 [LENGTHS_NAME LENGTHS.i64]
//   X.f32        raw features, float32 little-endian, row-major (N, T, F)
//   OUT.f32      written: the first graph output (probabilities), float32 little-endian, (N, 1) or (N, k)
//   LENGTHS.i64  a variable-length model's second input: int64 little-endian (N,)
// Prints one JSON line: {"node": ..., "onnxruntime": ..., "rows": N, "output": name, "dims": [N, k]}.
// onnxruntime-node comes from tools/node/node_modules (make node-deps). Called by
// pipeline/verification/consumers.py, which compares the output with Keras within 1e-5.
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';

const require = createRequire(new URL('./node/package.json', import.meta.url));
const ort = require('onnxruntime-node');
const ortVersion = require('onnxruntime-node/package.json').version;

const [model, inputName, inputFile, shapeText, outFile, lengthsName, lengthsFile] = process.argv.slice(2);
if (!outFile) {
  console.error('usage: node onnx_node_check.mjs MODEL.onnx INPUT_NAME X.f32 N,T,F OUT.f32');
  process.exit(2);
}
const dims = shapeText.split(',').map(Number);
const bytes = readFileSync(inputFile);
const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
if (data.length !== dims.reduce((a, b) => a * b, 1)) {
  console.error(`expected ${dims.join('x')} float32 values in ${inputFile}, got ${data.length}`);
  process.exit(2);
}

const feeds = { [inputName]: new ort.Tensor('float32', data, dims) };
if (lengthsName) {
  const raw = readFileSync(lengthsFile);
  const lengths = new BigInt64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  if (lengths.length !== dims[0]) {
    console.error(`expected ${dims[0]} int64 lengths in ${lengthsFile}, got ${lengths.length}`);
    process.exit(2);
  }
  feeds[lengthsName] = new ort.Tensor('int64', lengths, [dims[0]]);
}
const session = await ort.InferenceSession.create(model);
const outputs = await session.run(feeds);
const result = outputs[session.outputNames[0]];
const proba = result.data; // Float32Array (N * 1) or (N * k)
writeFileSync(outFile, Buffer.from(proba.buffer, proba.byteOffset, proba.byteLength));
console.log(JSON.stringify({ node: process.versions.node, onnxruntime: ortVersion, rows: dims[0],
                             output: session.outputNames[0], dims: result.dims }));
