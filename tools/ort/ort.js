#!/usr/bin/env node
// ort.js - runs an ONNX model with ONNX Runtime 1.30 (npm onnxruntime-node 1.30.0, CPU provider).
//
// Used by shrink's C++ Catch2 tests (three-way parity: shrink's int8 simulation, shrink's runtime,
// ONNX Runtime) and by the benchmark scripts under bench/. Install with tools/ort/install.
//
// Session options, identical for both commands (and for the empty-call model of `bench`):
//   executionProviders: ['cpu'], graphOptimizationLevel: 'all', executionMode: 'sequential',
//   intraOpNumThreads: --threads (default 1), interOpNumThreads: 1, logSeverityLevel: 3 (errors
//   only), optimizedModelFilePath: --optimized when given (ORT writes the graph after its
//   optimizations, e.g. QDQ Conv -> QLinearConv; with level 'all' it may hold CPU-specific ops such
//   as com.microsoft NCHWc ops).
//
// Commands (tensors are raw little-endian float32 files, no header):
//   node tools/ort/ort.js run MODEL.onnx --input X.f32 --shape N,C,H,W|N,F --out Y.f32
//        [--threads T] [--optimized OUT.onnx] [--outputs DIR]
//     With --outputs, every float32 output of the model is also written, as DIR/NAME.f32 (a model
//     shrink exported with --expose-layers has one per layer: the per-layer parity report).
//     Feeds X to the model's first input, writes its first output to Y, prints one JSON line
//     {"input": first input name, "output": first output name, "output_shape": [...]}.
//   node tools/ort/ort.js bench MODEL.onnx --shape N,C,H,W|N,F [--threads T] [--seconds S]
//        [--warmup K]
//     Random input (fixed seed), K untimed warm-up calls (default 5), then times each
//     `await session.run(feeds)` alone with process.hrtime.bigint() for about S seconds
//     (default 2), prints one JSON line {batch, threads, p50_ms, p90_ms, p99_ms, mean_ms,
//     throughput_per_s (batch / mean), iterations, empty_call_ms}. empty_call_ms is the p50 of
//     session.run on a 1-float Identity model with the same options: the cost of the
//     JavaScript/N-API boundary, included in every timing above.
//
// Errors a user can cause (missing file, bad shape, bad option, ORT error) print one line to stderr
// and exit with code 2. Output files are written to a temporary name and renamed.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');

// Minimal model for empty_call_ms: graph y = Identity(x), x and y float[1], opset 13, IR 8.
// Generated once with:
//   /usr/bin/python3 -c "import onnx, onnx.helper as h, base64
//   g=h.make_graph([h.make_node('Identity',['x'],['y'])],'e',[h.make_tensor_value_info('x',1,[1])],
//                  [h.make_tensor_value_info('y',1,[1])])
//   m=h.make_model(g,opset_imports=[h.make_opsetid('',13)],ir_version=8,producer_name='')
//   onnx.checker.check_model(m); print(base64.b64encode(m.SerializeToString()).decode())"
const IDENTITY_MODEL_B64 =
  'CAgSADo3ChAKAXgSAXkiCElkZW50aXR5EgFlWg8KAXgSCgoICAESBAoCCAFiDwoBeRIKCggIARIECgIIAUIECgAQDQ==';

class UserError extends Error {}

function fail(msg) {
  throw new UserError(msg);
}

const USAGE =
  'usage: ort.js run MODEL.onnx --input X.f32 --shape N,C,H,W --out Y.f32 [--threads T] ' +
  '[--optimized OUT.onnx] [--outputs DIR] | ort.js bench MODEL.onnx --shape N,C,H,W [--threads T] ' +
  '[--seconds S] [--warmup K]';

const ALLOWED = {
  run: ['input', 'shape', 'out', 'threads', 'optimized', 'outputs'],
  bench: ['shape', 'threads', 'seconds', 'warmup'],
};
const REQUIRED = { run: ['input', 'shape', 'out'], bench: ['shape'] };

function parseArgs(argv) {
  const [command, model, ...rest] = argv;
  if (!command || !(command in ALLOWED)) fail(`unknown or missing command '${command || ''}'; ${USAGE}`);
  if (!model || model.startsWith('--')) fail(`missing MODEL.onnx; ${USAGE}`);
  const opts = {};
  for (let i = 0; i < rest.length; i++) {
    let key = rest[i];
    let value;
    if (!key.startsWith('--')) fail(`unexpected argument '${key}'; ${USAGE}`);
    key = key.slice(2);
    const eq = key.indexOf('=');
    if (eq >= 0) {
      value = key.slice(eq + 1);
      key = key.slice(0, eq);
    } else {
      if (i + 1 >= rest.length) fail(`option --${key} needs a value`);
      value = rest[++i];
    }
    if (!ALLOWED[command].includes(key)) fail(`unknown option --${key} for '${command}'; ${USAGE}`);
    if (key in opts) fail(`option --${key} given twice`);
    opts[key] = value;
  }
  for (const key of REQUIRED[command]) if (!(key in opts)) fail(`missing --${key}; ${USAGE}`);
  return { command, model, opts };
}

function parseShape(text) {
  const parts = text.split(',');
  const dims = parts.map((p) => (/^[0-9]+$/.test(p.trim()) ? Number(p.trim()) : NaN));
  if (dims.length < 1 || dims.length > 8 || dims.some((d) => !Number.isSafeInteger(d) || d < 1)) {
    fail(`bad --shape '${text}': expected positive integers separated by commas, e.g. 1,3,32,32`);
  }
  return dims;
}

function parsePositiveInt(name, text, min) {
  if (!/^[0-9]+$/.test(text) || Number(text) < min) fail(`bad --${name} '${text}': expected an integer >= ${min}`);
  return Number(text);
}

function parsePositiveNumber(name, text) {
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || v <= 0) fail(`bad --${name} '${text}': expected a number > 0`);
  return v;
}

function requireFile(what, file) {
  let st;
  try {
    st = fs.statSync(file);
  } catch (e) {
    fail(`${what} not found: ${file}`);
  }
  if (!st.isFile()) fail(`${what} is not a regular file: ${file}`);
}

function loadOrt() {
  try {
    return require('onnxruntime-node');
  } catch (e) {
    fail(`cannot load onnxruntime-node (run tools/ort/install): ${String(e.message).split('\n')[0]}`);
  }
}

function sessionOptions(threads, optimizedPath) {
  const o = {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    logSeverityLevel: 3,
  };
  if (optimizedPath) o.optimizedModelFilePath = optimizedPath;
  return o;
}

async function createSession(ort, model, options) {
  try {
    return await ort.InferenceSession.create(model, options);
  } catch (e) {
    fail(`ONNX Runtime cannot load ${typeof model === 'string' ? model : 'model'}: ${oneLine(e)}`);
  }
}

async function runSession(session, feeds, what) {
  try {
    return await session.run(feeds);
  } catch (e) {
    fail(`ONNX Runtime failed running ${what}: ${oneLine(e)}`);
  }
}

function oneLine(e) {
  return String(e && e.message ? e.message : e).replace(/\s+/g, ' ').trim();
}

function tmpName(file) {
  return path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`);
}

function writeAtomic(file, data) {
  const tmp = tmpName(file);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (e) {
    try { fs.unlinkSync(tmp); } catch (_) { /* ignore */ }
    fail(`cannot write ${file}: ${oneLine(e)}`);
  }
}

function toFloat32(buf) {
  // Copy into an aligned buffer; the host is little-endian (checked in main).
  const ab = new ArrayBuffer(buf.length);
  new Uint8Array(ab).set(buf);
  return new Float32Array(ab);
}

async function cmdRun(ort, model, opts) {
  const dims = parseShape(opts.shape);
  const threads = 'threads' in opts ? parsePositiveInt('threads', opts.threads, 1) : 1;
  requireFile('model file', model);
  requireFile('input file', opts.input);
  const count = dims.reduce((a, b) => a * b, 1);
  const buf = fs.readFileSync(opts.input);
  if (buf.length !== count * 4) {
    fail(`input file ${opts.input} has ${buf.length} bytes, shape ${dims.join(',')} needs ${count * 4} (float32)`);
  }
  let optTmp = null;
  if (opts.optimized) optTmp = tmpName(opts.optimized);
  let session;
  try {
    session = await createSession(ort, model, sessionOptions(threads, optTmp));
  } catch (e) {
    if (optTmp) try { fs.unlinkSync(optTmp); } catch (_) { /* not written */ }
    throw e;
  }
  if (optTmp) {
    try {
      fs.renameSync(optTmp, opts.optimized);
    } catch (e) {
      fail(`ONNX Runtime did not write the optimized model ${opts.optimized}: ${oneLine(e)}`);
    }
  }
  const inName = session.inputNames[0];
  const outName = session.outputNames[0];
  const input = new ort.Tensor('float32', toFloat32(buf), dims);
  const results = await runSession(session, { [inName]: input }, model);
  const y = results[outName];
  if (y.type !== 'float32') fail(`first output '${outName}' of ${model} is ${y.type}, not float32`);
  writeAtomic(opts.out, Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
  if (opts.outputs) {
    fs.mkdirSync(opts.outputs, { recursive: true });
    for (const name of session.outputNames) {
      const t = results[name];
      if (t.type !== 'float32') continue;
      writeAtomic(path.join(opts.outputs, name.replace(/[^A-Za-z0-9_.-]/g, '_') + '.f32'),
        Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    }
  }
  console.log(JSON.stringify({ input: inName, output: outName, output_shape: Array.from(y.dims) }));
}

function percentile(sorted, q) {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

// Times each call alone; stops after `seconds` of wall time or maxIters calls (at least 1 call).
async function timeCalls(session, feeds, what, warmup, seconds, maxIters) {
  for (let i = 0; i < warmup; i++) await runSession(session, feeds, what);
  const times = [];
  const deadline = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
  do {
    const t0 = process.hrtime.bigint();
    await runSession(session, feeds, what);
    const t1 = process.hrtime.bigint();
    times.push(Number(t1 - t0) / 1e6);
  } while (times.length < maxIters && process.hrtime.bigint() < deadline);
  return times;
}

const round = (x) => Math.round(x * 1e6) / 1e6;

async function cmdBench(ort, model, opts) {
  const dims = parseShape(opts.shape);
  const threads = 'threads' in opts ? parsePositiveInt('threads', opts.threads, 1) : 1;
  const seconds = 'seconds' in opts ? parsePositiveNumber('seconds', opts.seconds) : 2;
  const warmup = 'warmup' in opts ? parsePositiveInt('warmup', opts.warmup, 0) : 5;
  requireFile('model file', model);

  const session = await createSession(ort, model, sessionOptions(threads, null));
  const count = dims.reduce((a, b) => a * b, 1);
  const data = new Float32Array(count);
  let s = 12345; // fixed-seed LCG: uniform in [-1, 1)
  for (let i = 0; i < count; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s / 2147483648 - 1;
  }
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', data, dims) };
  const times = await timeCalls(session, feeds, model, warmup, seconds, Infinity);

  const empty = await createSession(ort, Buffer.from(IDENTITY_MODEL_B64, 'base64'), sessionOptions(threads, null));
  const emptyFeeds = { x: new ort.Tensor('float32', new Float32Array([1]), [1]) };
  const emptyTimes = await timeCalls(empty, emptyFeeds, 'the empty-call model', 50, 0.25, 2000);

  const sorted = times.slice().sort((a, b) => a - b);
  const mean = times.reduce((a, b) => a + b, 0) / times.length;
  console.log(JSON.stringify({
    batch: dims[0],
    threads,
    p50_ms: round(percentile(sorted, 0.5)),
    p90_ms: round(percentile(sorted, 0.9)),
    p99_ms: round(percentile(sorted, 0.99)),
    mean_ms: round(mean),
    throughput_per_s: round((dims[0] * 1000) / mean),
    iterations: times.length,
    empty_call_ms: round(percentile(emptyTimes.sort((a, b) => a - b), 0.5)),
  }));
}

async function main() {
  if (os.endianness() !== 'LE') fail('this tool reads and writes little-endian float32 and needs a little-endian host');
  const { command, model, opts } = parseArgs(process.argv.slice(2));
  const ort = loadOrt();
  if (command === 'run') await cmdRun(ort, model, opts);
  else await cmdBench(ort, model, opts);
}

main().then(
  () => { process.exitCode = 0; },
  (e) => {
    if (e instanceof UserError) {
      process.stderr.write(`ort.js: ${e.message}\n`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`ort.js: internal error: ${e && e.stack ? e.stack : e}\n`);
      process.exitCode = 1;
    }
  },
);
