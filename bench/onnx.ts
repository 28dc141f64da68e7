/**
 * ONNX Runtime decode throughput: the exported ChatGLM graph (core/onnx) run by onnxruntime-node
 * in a bare loop (feeds built by hand, one cache buffer per layer fed whole as `past_*`, each run's
 * `new_*` keys/values written into it) beside the same session
 * driven through our runner (serve/onnx/runner.ts: masks/positions from row layouts, cache
 * bookkeeping). The ratio column is the runner's overhead figure (DESIGN.md target ≥ 0.9×).
 * Models: the tiny fixture, and a "small" random config (hidden 1024, 8 layers, 16 heads,
 * vocab 32000) exported in memory, f32 weights and f16-stored weights (Cast to f32 in the graph).
 * Last, the small Qwen3 of bench/llama.ts beside that small ChatGLM on ORT (prefill and the
 * engine decoder's decode rate), as the WebGPU table of bench/llama.ts has them.
 *
 * `deno run --allow-all bench/onnx.ts [--quick] [--qwen-only] [--io]` (needs --allow-ffi for
 * onnxruntime-node; `--qwen-only`: just the Qwen3 / ChatGLM table; `--io`: just what
 * onnxruntime-node copies, inputs against outputs).
 */

import { parseArgs } from "node:util";
import {
  buildChatGLMGraph,
  buildLlamaGraph,
  cacheNames,
  type ChatGLMConfig,
  createGraphBuilder,
  encodeOnnxModel,
  EXPORTER_VERSION,
  getGpu,
  isLlamaConfig,
  LLAMA_EXPORTER_VERSION,
  type LlamaConfig,
  llamaParameters,
  loadChatGLM as loadModel,
  ONNX_OPSET,
  type OnnxExportInfo,
  type OnnxModelConfig,
  type OnnxWeightDtype,
  openCheckpoint,
  parameterTable,
  parseChatGLMConfig,
  readTensorAsF32,
  type WeightReader,
  writeSafetensors,
} from "../core/mod.ts";
import {
  createOnnxModel,
  loadOrt,
  onnxDecoder,
  type OrtModule,
  type OrtSession,
  type OrtTensor,
} from "../serve/mod.ts";
import { smallQwenConfig } from "./llama.ts";
import { smallConfigJson } from "./small_model.ts";

const TINY_DIR = new URL("../tests/fixtures/chatglm6b-tiny", import.meta.url).pathname;

export interface BenchModel<C extends OnnxModelConfig = ChatGLMConfig> {
  label: string;
  config: C;
  json: Record<string, unknown>;
  read: WeightReader;
}

/** The small ChatGLM of bench/small_model.ts with seeded random weights (bench/engine.ts `--small` too). */
export function smallModel(): BenchModel {
  const json = smallConfigJson(2048);
  const config = parseChatGLMConfig(json, "small bench config");
  const shapes = new Map(parameterTable(config).map((p) => [p.name, p.shape]));
  const read = randomReader(shapes, (name) => name.endsWith("layernorm.weight"));
  return { label: "small h1024 L8", config, json, read };
}

/** The small Qwen3 of bench/llama.ts (hidden 1024, 8 layers, 16/8 heads of 64, tied). */
function smallQwenModel(): BenchModel<LlamaConfig> {
  const config = smallQwenConfig();
  const shapes = new Map(llamaParameters(config).map((p) => [p.name, p.shape]));
  const read = randomReader(shapes, (name) => name.endsWith("norm.weight"));
  return { label: "small qwen3 h1024 L8", config, json: { model_type: "qwen3" }, read };
}

/** Seeded xorshift weights in ±0.04 for the bench models (norm weights 1, biases 0). */
function randomReader(shapes: Map<string, number[]>, isNorm: (name: string) => boolean) {
  let seed = 12345;
  const read: WeightReader = (name) => {
    const shape = shapes.get(name)!;
    const n = shape.reduce((a, b) => a * b, 1);
    const out = new Float32Array(n);
    if (isNorm(name)) return Promise.resolve(out.fill(1));
    if (shape.length === 1) return Promise.resolve(out);
    let x = (seed += 7919) | 1;
    for (let i = 0; i < n; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = ((x & 0xffff) / 65536 - 0.5) * 0.08;
    }
    return Promise.resolve(out);
  };
  return read;
}

async function tinyModel(): Promise<BenchModel> {
  const json = JSON.parse(await Deno.readTextFile(`${TINY_DIR}/config.json`));
  const config = parseChatGLMConfig(json, `${TINY_DIR}/config.json`);
  const ckpt = await openCheckpoint(TINY_DIR);
  return { label: "tiny fixture", config, json, read: (name) => readTensorAsF32(ckpt, name) };
}

/** An ORT CPU session on `m`'s exported graph (`dtype`: how the weights are stored). */
export async function session(
  ort: OrtModule,
  m: BenchModel<OnnxModelConfig>,
  dtype: OnnxWeightDtype,
) {
  const graph = isLlamaConfig(m.config)
    ? buildLlamaGraph(m.config, m.read, { dtype })
    : buildChatGLMGraph(m.config, m.read, { dtype });
  const bytes = await encodeOnnxModel(graph, { opset: ONNX_OPSET });
  return await ort.InferenceSession.create(bytes, {
    executionProviders: ["cpu"],
    graphOptimizationLevel: "all",
  });
}

/** Unpadded prompts of one length: text ids (ChatGLM: then [gMASK], <sop>). */
function prompts(config: OnnxModelConfig, batch: number, len: number): number[][] {
  const tail = isLlamaConfig(config) ? [] : [config.gmaskTokenId, config.bosTokenId];
  return Array.from({ length: batch }, (_, b) => [
    ...Array.from({ length: len - tail.length }, (_, i) => 100 + ((b * 31 + i * 7) % 1000)),
    ...tail,
  ]);
}

function argmaxRows(logits: Float32Array, b: number, V: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < b; r++) {
    let best = 0;
    for (let v = 1; v < V; v++) if (logits[r * V + v] > logits[r * V + best]) best = v;
    out.push(best);
  }
  return out;
}

export interface DecodeRate {
  /** Tokens per second over the timed steps. */
  rate: number;
  /** Time per step spent outside `session.run` (feeds, masks, bookkeeping), microseconds. */
  overheadUs: number;
  /** Time per step inside `session.run`, microseconds. */
  ortUs: number;
}

/** The session with `run` timed, so the JS work around ORT can be told apart from ORT's own. */
function timedSession(sess: OrtSession) {
  let ms = 0;
  const session = Object.create(sess) as OrtSession;
  Object.defineProperty(session, "run", {
    value: async (...args: Parameters<OrtSession["run"]>) => {
      const t0 = performance.now();
      try {
        return await sess.run(...args);
      } finally {
        ms += performance.now() - t0;
      }
    },
  });
  let started = 0;
  return {
    session,
    start() {
      ms = 0;
      started = performance.now();
    },
    finish(tokens: number, steps: number): DecodeRate {
      const total = performance.now() - started;
      return {
        rate: tokens / (total / 1000),
        overheadUs: ((total - ms) / steps) * 1000,
        ortUs: (ms / steps) * 1000,
      };
    },
  };
}

/** ORT by itself: feeds built by hand (all rows the same length, so no mask is ever set). */
async function decodeRaw(
  ort: OrtModule,
  sess: OrtSession,
  config: ChatGLMConfig,
  rows: number[][],
  steps: number,
): Promise<DecodeRate> {
  const timer = timedSession(sess);
  sess = timer.session;
  const b = rows.length, s = rows[0].length, L = config.numLayers, V = config.vocabSize;
  const ctx = s - 1, mpos = s - 2;
  const feeds: Record<string, OrtTensor> = {
    input_ids: new ort.Tensor("int64", BigInt64Array.from(rows.flat(), BigInt), [b, s]),
    position_ids: new ort.Tensor(
      "int64",
      BigInt64Array.from(
        rows.flatMap(() => [
          ...Array.from({ length: s }, (_, i) => (i < ctx ? i : mpos)),
          ...Array.from({ length: s }, (_, i) => (i < ctx ? 0 : i - ctx + 1)),
        ]),
        BigInt,
      ),
      [b, 2, s],
    ),
    attention_mask: new ort.Tensor(
      "bool",
      Uint8Array.from({ length: b * s * s }, (_, k) => {
        const i = Math.floor(k / s) % s, j = k % s;
        return j < ctx || j <= i ? 0 : 1;
      }),
      [b, s, s],
    ),
  };
  const H = config.numHeads, d = config.headDim;
  for (let l = 0; l < L; l++) {
    const n = cacheNames(l);
    feeds[n.pastKey] = new ort.Tensor("float32", new Float32Array(0), [b, H, 0, d]);
    feeds[n.pastValue] = new ort.Tensor("float32", new Float32Array(0), [b, H, 0, d]);
  }
  // One buffer per layer's keys/values for every position of the run, fed whole each step (the
  // mask hides the columns not filled yet); each run's new keys/values are written at column t.
  const cap = s + steps;
  const buffers = Array.from({ length: 2 * L }, () => new Float32Array(b * H * cap * d));
  const pastFeeds = buffers.map((x) => new ort.Tensor("float32", x, [b, H, cap, d]));
  const store = (out: Record<string, OrtTensor>, n: number, at: number) => {
    for (let l = 0; l < L; l++) {
      const names = cacheNames(l);
      for (const [i, name] of [[2 * l, names.newKey], [2 * l + 1, names.newValue]] as const) {
        const src = out[name].data as Float32Array;
        for (let r = 0; r < b * H; r++) {
          buffers[i].set(src.subarray(r * n * d, (r + 1) * n * d), (r * cap + at) * d);
        }
      }
    }
  };
  let out = await sess.run(feeds);
  store(out, s, 0);
  const prefill = out.logits.data as Float32Array;
  const last = new Float32Array(b * V);
  for (let r = 0; r < b; r++) {
    last.set(prefill.subarray(((r + 1) * s - 1) * V, (r + 1) * s * V), r * V);
  }
  let next = argmaxRows(last, b, V);
  timer.start();
  for (let t = s; t < s + steps; t++) {
    const mask = new Uint8Array(b * (cap + 1));
    for (let r = 0; r < b; r++) mask.fill(1, r * (cap + 1) + t, r * (cap + 1) + cap);
    const step: Record<string, OrtTensor> = {
      input_ids: new ort.Tensor("int64", BigInt64Array.from(next, BigInt), [b, 1]),
      position_ids: new ort.Tensor(
        "int64",
        BigInt64Array.from(next.flatMap(() => [mpos, t - ctx + 1]), BigInt),
        [b, 2, 1],
      ),
      attention_mask: new ort.Tensor("bool", mask, [b, 1, cap + 1]),
    };
    for (let l = 0; l < L; l++) {
      const n = cacheNames(l);
      step[n.pastKey] = pastFeeds[2 * l];
      step[n.pastValue] = pastFeeds[2 * l + 1];
    }
    out = await sess.run(step);
    store(out, 1, t);
    next = argmaxRows(out.logits.data as Float32Array, b, V);
  }
  return timer.finish(b * steps, steps);
}

function benchModel(
  ort: OrtModule,
  sess: OrtSession,
  m: BenchModel<OnnxModelConfig>,
  dtype: OnnxWeightDtype,
) {
  const llama = isLlamaConfig(m.config);
  const info: OnnxExportInfo = {
    exporter: llama ? LLAMA_EXPORTER_VERSION : EXPORTER_VERSION,
    opset: ONNX_OPSET,
    dtype,
    configHash: "",
    config: m.json,
    maxPositions: isLlamaConfig(m.config)
      ? m.config.maxPositionEmbeddings
      : m.config.maxSequenceLength,
    externalData: null,
    source: { model: m.label, adapter: null },
    createdAt: new Date().toISOString(),
  };
  return createOnnxModel(ort, sess, m.config, info, m.label, ["cpu"]);
}

/** The same session through the runner's lockstep cache (prefill / decodeStep). */
async function decodeRunner(
  ort: OrtModule,
  sess: OrtSession,
  m: BenchModel,
  dtype: OnnxWeightDtype,
  rows: number[][],
  steps: number,
): Promise<DecodeRate> {
  const timer = timedSession(sess);
  const model = benchModel(ort, timer.session, m, dtype);
  const b = rows.length, V = m.config.vocabSize;
  const cache = model.createCache(b, rows[0].length + steps + 1);
  let logits = await model.prefill(rows, cache);
  timer.start();
  for (let i = 0; i < steps; i++) logits = await model.decodeStep(argmaxRows(logits, b, V), cache);
  const rate = timer.finish(b * steps, steps);
  cache.free();
  return rate;
}

/** The same session through the engine's slot decoder (steady state: one group, no repacking). */
export async function decodeDecoder(
  ort: OrtModule,
  sess: OrtSession,
  m: BenchModel<OnnxModelConfig>,
  rows: number[][],
  steps: number,
): Promise<DecodeRate> {
  const timer = timedSession(sess);
  const dec = onnxDecoder(benchModel(ort, timer.session, m, "f32"), {
    slots: rows.length,
    ownsModel: false,
  });
  const V = m.config.vocabSize;
  let next: number[] = [];
  for (const [slot, ids] of rows.entries()) {
    next.push(argmaxRows(await dec.prefill(slot, ids), 1, V)[0]);
  }
  // The first step packs the slots into one group; time the steady state after it.
  next = argmaxRows(await dec.decode(next.map((id, slot) => ({ slot, id }))), rows.length, V);
  timer.start();
  for (let i = 0; i < steps; i++) {
    const logits = await dec.decode(next.map((id, slot) => ({ slot, id })));
    next = argmaxRows(logits, rows.length, V);
  }
  const rate = timer.finish(rows.length * steps, steps);
  dec.close();
  return rate;
}

/** Writes a bench model as an HF directory (config.json + model.safetensors) in a temp dir. */
export async function writeModelDir(m: BenchModel): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "medglm-bench-onnx-" });
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(m.json));
  await writeSafetensors(
    `${dir}/model.safetensors`,
    parameterTable(m.config).map((p) => ({
      name: p.name,
      dtype: "F32" as const,
      shape: p.shape,
      data: () => m.read(p.name),
    })),
    { format: "pt" },
  );
  return dir;
}

/** Lockstep decode on our WebGPU model (the same prompts as the ORT runs). */
async function decodeWebGpu(
  dir: string,
  dtype: "f32" | "f16",
  rows: number[][],
  steps: number,
): Promise<number> {
  const model = await loadModel(dir, {
    dtype,
    log: () => {},
    progressBar: false,
    maxContext: rows[0].length + steps + 4,
    maxBatch: rows.length,
  });
  try {
    const V = model.config.vocabSize, b = rows.length;
    const cache = model.createCache(b, rows[0].length + steps + 2);
    try {
      let logits = await model.prefill(rows, cache);
      logits = await model.decodeStep(argmaxRows(logits, b, V), cache); // warm-up: pipelines
      const started = performance.now();
      for (let i = 0; i < steps; i++) {
        logits = await model.decodeStep(argmaxRows(logits, b, V), cache);
      }
      return (b * steps) / ((performance.now() - started) / 1000);
    } finally {
      cache.free();
    }
  } finally {
    model.dispose();
  }
}

/**
 * WebGPU (our kernels, on whatever adapter this machine has) beside the ONNX Runtime backend on
 * the same model and prompts, in the same run.
 */
async function webgpuVsOnnx(
  plans: { model: BenchModel; dir: string | null }[],
  onnxRates: Map<string, number>,
  batches: number[],
  steps: (m: BenchModel) => number,
): Promise<void> {
  let gpu;
  try {
    gpu = await getGpu();
  } catch (err) {
    console.log(`\nWebGPU vs ONNX Runtime: skipped (no WebGPU adapter: ${(err as Error).message})`);
    return;
  }
  const adapter = gpu.adapterInfo.description || gpu.adapterInfo.device || "unknown adapter";
  console.log(
    `\nWebGPU (${adapter}${gpu.isSoftware ? ", software" : ""}) vs ONNX Runtime CPU, same ` +
      "model and prompts, decode tokens/s; onnx = the engine decoder's rate from the table above",
  );
  const dtypes: ("f32" | "f16")[] = gpu.hasF16 ? ["f32", "f16"] : ["f32"];
  console.log(
    ["model", "batch", ...dtypes.map((d) => `webgpu ${d}`), "onnx", "onnx/webgpu best"].join(" | "),
  );
  for (const { model: m, dir: given } of plans) {
    const dir = given ?? await writeModelDir(m);
    try {
      for (const b of batches) {
        const rows = prompts(m.config, b, 32);
        const rates: number[] = [];
        for (const dtype of dtypes) rates.push(await decodeWebGpu(dir, dtype, rows, steps(m)));
        const onnx = onnxRates.get(`${m.label}/${b}`) ?? NaN;
        console.log(
          [m.label, b, ...rates.map(fmt), fmt(onnx), (onnx / Math.max(...rates)).toFixed(2)].join(
            " | ",
          ),
        );
      }
    } finally {
      if (!given) await Deno.remove(dir, { recursive: true });
    }
  }
}

/**
 * The small Qwen3 beside the small ChatGLM on ONNX Runtime (f32), one model in memory at a time:
 * a 64-token prefill (best of 3) and the engine decoder's decode rate (best of 2) at batch 1 and 4.
 */
async function qwenBesideChatGLM(ort: OrtModule, quick: boolean): Promise<void> {
  const steps = quick ? 8 : 24, batches = [1, 4];
  console.log(
    `\nsmall Qwen3 vs small ChatGLM on ORT CPU (f32): prefill 64 tokens (ms, best of 3); ` +
      `decode tokens/s through the engine decoder (prompt 32, ${steps} steps, best of 2)`,
  );
  console.log(["model", "prefill ms", ...batches.map((b) => `decode b=${b}`)].join(" | "));
  const times: number[][] = [];
  for (const m of [smallModel(), smallQwenModel()] as BenchModel<OnnxModelConfig>[]) {
    const sess = await session(ort, m, "f32");
    try {
      const model = benchModel(ort, sess, m, "f32");
      const prompt = prompts(m.config, 1, 64);
      let prefill = Infinity;
      for (let rep = 0; rep < 4; rep++) {
        const t0 = performance.now();
        await model.forward(prompt);
        if (rep > 0) prefill = Math.min(prefill, performance.now() - t0); // rep 0 warms up
      }
      const rates: number[] = [];
      for (const b of batches) {
        const rows = prompts(m.config, b, 32);
        let best = 0;
        for (let rep = 0; rep < 2; rep++) {
          best = Math.max(best, (await decodeDecoder(ort, sess, m, rows, steps)).rate);
        }
        rates.push(best);
      }
      times.push([prefill, ...rates.map((r) => 1 / r)]);
      console.log([m.label, prefill.toFixed(0), ...rates.map(fmt)].join(" | "));
    } finally {
      await sess.release();
    }
  }
  const [glm, qwen] = times;
  console.log(
    ["time Qwen ÷ ChatGLM", ...qwen.map((t, i) => (t / glm[i]).toFixed(2))].join(" | "),
  );
}

const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));

/**
 * What onnxruntime-node copies (the KV cache design of serve/onnx/kv_buffer.ts rests on it): an
 * input's typed array is wrapped as it is (a run of `Shape` on a 1 GiB input costs what it costs
 * on a 4 KiB one), while an output is copied into JS memory (`Identity` of 256 MiB).
 */
async function ioCosts(ort: OrtModule): Promise<void> {
  const graphOf = async (op: string, out: "int64" | "float32") => {
    const g = createGraphBuilder();
    g.node(op, ["x"], { outputs: ["y"] });
    const graph = g.build(op, [{ name: "x", dtype: "float32", shape: ["a", 1024] }], [
      { name: "y", dtype: out, shape: out === "int64" ? [2] : ["a", 1024] },
    ]);
    return await ort.InferenceSession.create(await encodeOnnxModel(graph, { opset: ONNX_OPSET }));
  };
  const msPerRun = async (sess: OrtSession, values: number, reps: number) => {
    const x = new ort.Tensor("float32", new Float32Array(values), [values / 1024, 1024]);
    await sess.run({ x });
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) await sess.run({ x });
    return (performance.now() - t0) / reps;
  };
  console.log("onnxruntime-node copies, ms per run (inputs: best of 3)");
  console.log("what | 4 KiB | 256 MiB | 1 GiB");
  const shape = await graphOf("Shape", "int64");
  const input = [];
  for (const n of [1024, 64 * 2 ** 20, 256 * 2 ** 20]) {
    let best = Infinity;
    for (let rep = 0; rep < 3; rep++) best = Math.min(best, await msPerRun(shape, n, 5));
    input.push(best);
  }
  console.log(["input (Shape of it)", ...input.map((x) => x.toFixed(3))].join(" | "));
  await shape.release();
  const identity = await graphOf("Identity", "float32");
  const output = [];
  for (const n of [1024, 64 * 2 ** 20]) output.push(await msPerRun(identity, n, 1));
  console.log(["output (Identity)", ...output.map((x) => x.toFixed(1)), "-"].join(" | "));
  await identity.release();
}

export async function bench(
  options: { quick?: boolean; qwenOnly?: boolean; io?: boolean } = {},
): Promise<void> {
  let ort: OrtModule;
  try {
    ort = await loadOrt();
  } catch (err) {
    console.log(`onnx: skipped (${(err as Error).message})`);
    return;
  }
  if (options.io) return await ioCosts(ort);
  if (options.qwenOnly) return await qwenBesideChatGLM(ort, options.quick ?? false);
  const promptLen = 32;
  const plans: { model: BenchModel; steps: number; batches: number[]; f16: boolean }[] = [
    { model: await tinyModel(), steps: options.quick ? 32 : 128, batches: [1, 4, 16], f16: false },
    {
      model: smallModel(),
      steps: options.quick ? 8 : 24,
      batches: options.quick ? [1, 4] : [1, 4, 16],
      f16: true,
    },
  ];
  console.log(
    "decode tokens/s, ORT CPU (f32 compute), prompt 32 tokens. raw = ORT alone on the exported " +
      "graph (feeds built by hand); runner = the same session through serve/onnx/runner.ts " +
      "(lockstep cache); decoder = the engine's slot decoder (serve/onnx/decoder.ts), the path " +
      "`serve --backend onnx` uses; f16 = f16-stored weights through the runner. Rates: best of " +
      "2 alternating runs. µs/step columns split each step into time inside session.run (ORT) " +
      "and the JS work around it; `est` = (ORT + raw's JS) / (ORT + decoder's JS), the ratio " +
      "with machine-load noise taken out.",
  );
  const header = [
    "model",
    "batch",
    "raw",
    "runner",
    "runner/raw",
    "decoder",
    "decoder/raw",
    "ORT µs",
    "JS µs raw/runner/decoder",
    "est",
    "f16",
    "f16/f32",
  ];
  console.log(header.join(" | "));
  const onnxRates = new Map<string, number>();
  for (const plan of plans) {
    const m = plan.model;
    const s32 = await session(ort, m, "f32");
    const s16 = plan.f16 ? await session(ort, m, "f16") : null;
    for (const b of plan.batches) {
      const rows = prompts(m.config, b, promptLen);
      // Warm-up, then alternate so drift on a shared machine hits every side alike.
      await decodeRunner(ort, s32, m, "f32", rows, 2);
      const raw: DecodeRate[] = [], run: DecodeRate[] = [], dec: DecodeRate[] = [];
      for (let rep = 0; rep < 2; rep++) {
        raw.push(await decodeRaw(ort, s32, m.config, rows, plan.steps));
        run.push(await decodeRunner(ort, s32, m, "f32", rows, plan.steps));
        dec.push(await decodeDecoder(ort, s32, m, rows, plan.steps));
      }
      const best = (xs: DecodeRate[]) => Math.max(...xs.map((x) => x.rate));
      const js = (xs: DecodeRate[]) => Math.min(...xs.map((x) => x.overheadUs));
      const r = best(raw), u = best(run), d = best(dec);
      onnxRates.set(`${m.label}/${b}`, d);
      const ortUs = Math.min(...[...raw, ...run, ...dec].map((x) => x.ortUs));
      const est = (ortUs + js(raw)) / (ortUs + js(dec));
      let f16 = "-", f16ratio = "-";
      if (s16) {
        await decodeRunner(ort, s16, m, "f16", rows, 2);
        const r16 = (await decodeRunner(ort, s16, m, "f16", rows, plan.steps)).rate;
        f16 = fmt(r16);
        f16ratio = (r16 / u).toFixed(2);
      }
      console.log(
        [
          m.label,
          b,
          fmt(r),
          fmt(u),
          (u / r).toFixed(2),
          fmt(d),
          (d / r).toFixed(2),
          ortUs.toFixed(0),
          [js(raw), js(run), js(dec)].map((x) => x.toFixed(0)).join("/"),
          est.toFixed(2),
          f16,
          f16ratio,
        ].join(" | "),
      );
    }
    await s32.release();
    await s16?.release();
  }
  await webgpuVsOnnx(
    [{ model: plans[0].model, dir: TINY_DIR }, { model: plans[1].model, dir: null }],
    onnxRates,
    [1, 4],
    (m) => (m === plans[0].model ? 16 : 4),
  );
  await qwenBesideChatGLM(ort, options.quick ?? false);
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      "qwen-only": { type: "boolean", default: false },
      io: { type: "boolean", default: false },
    },
  });
  await bench({ quick: values.quick, qwenOnly: values["qwen-only"], io: values.io });
}
