/**
 * ChatGLM model throughput: prefill and decode tokens/s for the tiny fixture model and a "small"
 * random model (hidden 1024, 8 layers, 16 heads, vocab 32000), f32 and f16 weights, with each
 * step's time split into GPU time (kernels, net of one measured GPU round trip) and host
 * overhead (recording the step, the round trip, reading logits back).
 *
 * Run alone: `deno run --allow-all bench/model.ts`.
 */

import { getGpu, type Gpu } from "../core/gpu/device.ts";
import { uploadTensor } from "../core/tensor/tensor.ts";
import { createEmbedding } from "../core/nn/embedding.ts";
import { createLayerNorm } from "../core/nn/layer_norm.ts";
import { createLinear } from "../core/nn/linear.ts";
import { createLoraLinear } from "../core/nn/lora_linear.ts";
import { type ChatGLMConfig, parseChatGLMConfig } from "../core/models/chatglm/config.ts";
import { loadModel } from "../core/models/chatglm/load.ts";
import {
  assembleChatGLM,
  type ChatGLMBlock,
  type ChatGLMModel,
  type StepProfile,
} from "../core/models/chatglm/model.ts";
import type { WeightDtype } from "../core/models/chatglm/weights.ts";

const TINY_DIR = new URL("../tests/fixtures/chatglm6b-tiny", import.meta.url).pathname;

/** A deterministic normal(0, std) generator (xorshift + Box-Muller). */
function randn(seed: number): (std: number) => number {
  let s = seed >>> 0 || 1;
  const u = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) + 0.5) / 4294967296;
  };
  return (std) => std * Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

/** A ChatGLM model with random weights, built in memory (no checkpoint file). */
function randomModel(gpu: Gpu, config: ChatGLMConfig, dtype: WeightDtype): ChatGLMModel {
  const rand = randn(1234);
  const tensor = (shape: number[], std: number, mean = 0) => {
    const n = shape.reduce((a, d) => a * d, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = mean + rand(std);
    return uploadTensor(gpu, data, shape, dtype);
  };
  const h = config.hiddenSize, inner = config.innerHiddenSize;
  const norm = (name: string) =>
    createLayerNorm(name, tensor([h], 0.1, 1), tensor([h], 0.05), config.layernormEpsilon);
  const lin = (name: string, out: number, inF: number) =>
    createLoraLinear(createLinear(name, tensor([out, inF], 0.02), tensor([out], 0.02)));
  const layers: ChatGLMBlock[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const p = `transformer.layers.${l}`;
    layers.push({
      index: l,
      inputLayerNorm: norm(`${p}.input_layernorm`),
      queryKeyValue: lin(`${p}.attention.query_key_value`, 3 * h, h),
      dense: lin(`${p}.attention.dense`, h, h),
      postAttentionLayerNorm: norm(`${p}.post_attention_layernorm`),
      denseHTo4h: lin(`${p}.mlp.dense_h_to_4h`, inner, h),
      dense4hToH: lin(`${p}.mlp.dense_4h_to_h`, h, inner),
    });
  }
  return assembleChatGLM({
    config,
    dtype,
    gpu,
    maxContext: config.maxSequenceLength,
    source: "random",
    embedding: createEmbedding("transformer.word_embeddings", tensor([config.vocabSize, h], 1)),
    layers,
    finalLayerNorm: norm("transformer.final_layernorm"),
    lmHead: createLinear("lm_head", tensor([config.vocabSize, h], 0.02), null),
    adapter: null,
  });
}

const SMALL_CONFIG = {
  architectures: ["ChatGLMModel"],
  model_type: "chatglm",
  hidden_size: 1024,
  num_attention_heads: 16,
  num_layers: 8,
  inner_hidden_size: 4096,
  vocab_size: 32000,
  layernorm_epsilon: 1e-5,
  max_sequence_length: 512,
  position_encoding_2d: true,
  bos_token_id: 31004,
  eos_token_id: 31005,
  mask_token_id: 31000,
  gmask_token_id: 31001,
  pad_token_id: 3,
};

/** A prompt of `n` ids ending in [gMASK] <sop>. */
function prompt(config: ChatGLMConfig, n: number): number[] {
  const ids = Array.from({ length: n - 2 }, (_, i) => 5 + ((i * 7919) % 1000));
  return [...ids, config.gmaskTokenId, config.bosTokenId];
}

interface Row {
  model: string;
  dtype: string;
  phase: string;
  tokens: number;
  tokPerS: number;
  msPerStep: number;
  gpuMs: number;
  hostMs: number;
  dispatches: number;
}

async function roundTripMs(gpu: Gpu): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    gpu.device.queue.submit([]);
    await gpu.device.queue.onSubmittedWorkDone();
    times.push(performance.now() - t);
  }
  return times.sort((a, b) => a - b)[2];
}

async function measure(
  name: string,
  model: ChatGLMModel,
  promptLen: number,
  decodeSteps: number,
  rtt: number,
): Promise<Row[]> {
  const ids = prompt(model.config, promptLen);
  const run = async () => {
    const cache = model.createCache(1, promptLen + decodeSteps + 1);
    try {
      let t = performance.now();
      await model.prefill([ids], cache);
      const prefillMs = performance.now() - t;
      t = performance.now();
      for (let i = 0; i < decodeSteps; i++) await model.decodeStep([5 + i], cache);
      return { prefillMs, decodeMs: performance.now() - t };
    } finally {
      cache.free();
    }
  };
  await run(); // warm-up: compiles every pipeline
  const wall = await run();
  // A second, profiled run splits each step into GPU time and the rest.
  const profiles: StepProfile[] = [];
  model.profiler = (p) => profiles.push(p);
  await run();
  model.profiler = null;
  const prefill = profiles.slice(0, profiles.length - decodeSteps);
  const decode = profiles.slice(profiles.length - decodeSteps);

  const row = (phase: string, wallMs: number, ps: StepProfile[], tokens: number): Row => {
    const mean = (f: (p: StepProfile) => number) => ps.reduce((a, p) => a + f(p), 0) / ps.length;
    return {
      model: name,
      dtype: model.dtype,
      phase,
      tokens,
      tokPerS: (tokens / wallMs) * 1000,
      msPerStep: wallMs / ps.length,
      gpuMs: mean((p) => Math.max(0, p.gpuMs - rtt)),
      hostMs: mean((p) => p.recordMs + p.readMs),
      dispatches: ps[0].dispatches,
    };
  };
  return [
    row(`prefill ${promptLen}`, wall.prefillMs, prefill, promptLen),
    row(`decode ×${decodeSteps}`, wall.decodeMs, decode, decodeSteps),
  ];
}

function table(rows: Row[], rtt: number): string {
  const head = [
    "model",
    "weights",
    "phase",
    "tok/s",
    "ms/step",
    "GPU ms",
    "host ms",
    "host %",
    "dispatches",
  ];
  const body = rows.map((r) => [
    r.model,
    r.dtype,
    r.phase,
    r.tokPerS.toFixed(1),
    r.msPerStep.toFixed(1),
    r.gpuMs.toFixed(1),
    r.hostMs.toFixed(1),
    `${((r.hostMs / (r.hostMs + r.gpuMs)) * 100).toFixed(0)}%`,
    String(r.dispatches),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i])).join("  ");
  return [
    line(head),
    ...body.map(line),
    `tok/s and ms/step: unprofiled run. Split per step from a profiled run: GPU ms = submit → ` +
    `work done minus one GPU round trip (${rtt.toFixed(1)} ms); host ms = recording + uploads + ` +
    "logits readback (one round trip). Batch 1.",
  ].join("\n");
}

export async function bench(): Promise<void> {
  const gpu = await getGpu();
  console.log(
    `\n## ChatGLM model (bench/model.ts) — ${gpu.adapterInfo.description} (${gpu.backend})`,
  );
  const rtt = await roundTripMs(gpu);
  const rows: Row[] = [];
  for (const dtype of ["f32", "f16"] as const) {
    const tiny = await loadModel(TINY_DIR, { dtype, log: () => {}, progressBar: false });
    try {
      rows.push(...await measure("tiny", tiny, 40, 16, rtt));
    } finally {
      tiny.dispose();
    }
  }
  const small = parseChatGLMConfig(SMALL_CONFIG, "small config");
  for (const dtype of ["f32", "f16"] as const) {
    const model = randomModel(gpu, small, dtype);
    try {
      rows.push(...await measure("small", model, 64, 8, rtt));
    } finally {
      model.dispose();
    }
  }
  console.log(table(rows, rtt));
}

if (import.meta.main) await bench();
