/**
 * The Llama family beside ChatGLM-6B: prefill and decode tokens/s and a LoRA training step for a
 * "small" Qwen3-shaped random model (hidden 1024, 8 layers, 16 query / 8 kv heads of 64, q/k
 * norm, SwiGLU 2816, vocab 32000, tied) and the "small" random ChatGLM (hidden 1024, 8 layers,
 * 16 heads, GeLU 4096, vocab 32000) — about the same parameter count — in the same run, f32 base
 * weights, batch 1 for inference, batch 2 × 64 for the training step (LoRA r 8 on every linear).
 * One model is in memory at a time (under 2 GB on a software adapter).
 * The ratio columns are Qwen ÷ ChatGLM time, wall and process CPU (below 1: Qwen faster); the
 * CPU ratio is the steadier one on a loaded machine.
 *
 * Run alone: `deno task bench llama`.
 */

import {
  attachAdapter,
  attachLlamaAdapter,
  buildTrainBatchFor,
  type CausalLM,
  getGpu,
  initLoraAdapter,
  linearModules,
  llamaLinearShapes as linearShapes,
  type LoraAdapter,
  parseLlamaConfig,
  parseLoraConfig,
  prepareTrainingFor,
  randomChatGLM,
  randomLlama,
} from "../core/mod.ts";
import process from "node:process";
import { runMicroStep } from "../train/mod.ts";
import { smallConfig } from "./small_model.ts";

const PROMPT = 64, DECODE = 8, TRAIN_B = 2, TRAIN_S = 64;

export function smallQwenConfig() {
  return parseLlamaConfig({
    model_type: "qwen3",
    vocab_size: 32000,
    hidden_size: 1024,
    intermediate_size: 2816,
    num_hidden_layers: 8,
    num_attention_heads: 16,
    num_key_value_heads: 8,
    head_dim: 64,
    hidden_act: "silu",
    rms_norm_eps: 1e-6,
    rope_theta: 1000000,
    tie_word_embeddings: true,
    max_position_embeddings: 512,
    eos_token_id: 2,
  }, "small qwen config");
}

function adapterFor(
  linears: Map<string, readonly [number, number]>,
  targets: string[],
): LoraAdapter {
  const cfg = parseLoraConfig({
    peft_type: "LORA",
    r: 8,
    lora_alpha: 16,
    lora_dropout: 0,
    target_modules: targets,
  }, "bench adapter");
  let x = 1;
  return initLoraAdapter(
    cfg,
    { linearModules: linears },
    () => ((x = (x * 48271) % 2147483647) / 2147483647),
  );
}

/** Wall and process CPU milliseconds (all threads: llvmpipe's workers are ours). */
interface Cost {
  ms: number;
  cpuMs: number;
}

function cpuNow(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/**
 * Mean cost of `reps` runs after a warm-up (pipeline compiles). CPU time is reported next to wall
 * time because on a shared machine wall time includes waiting for other processes' work.
 */
async function timeIt(f: () => Promise<unknown>, reps: number): Promise<Cost> {
  await f();
  const c = cpuNow(), t = performance.now();
  for (let i = 0; i < reps; i++) await f();
  return { ms: (performance.now() - t) / reps, cpuMs: (cpuNow() - c) / reps };
}

async function measure(model: CausalLM, promptIds: number[]) {
  const prefill = await timeIt(async () => {
    const cache = model.createCache(1, PROMPT + DECODE + 1);
    try {
      await model.prefill([promptIds], cache);
    } finally {
      cache.free();
    }
  }, 2);
  const cache = model.createCache(1, PROMPT + DECODE + 2);
  let decode: Cost;
  try {
    await model.prefill([promptIds], cache);
    let i = 0;
    decode = await timeIt(() => model.decodeStep([5 + i++], cache), DECODE);
  } finally {
    cache.free();
  }
  return { prefill, decode };
}

async function trainStep(model: CausalLM, ids: number[][], labels: number[][]) {
  const tm = prepareTrainingFor(model, "lora");
  try {
    const batch = buildTrainBatchFor(model, ids, labels);
    return await timeIt(() => runMicroStep(tm, batch, { zeroGrads: true, dropout: 0 }), 2);
  } finally {
    tm.dispose();
  }
}

/** Inference and a LoRA step of one model, then it is disposed (one model in memory at a time). */
async function measureModel(
  model: CausalLM,
  prompt: number[],
  trainIds: number[][],
  attach: () => void,
) {
  try {
    const inference = await measure(model, prompt);
    attach();
    const labels = trainIds.map((r) => r.map((v, i) => (i < TRAIN_S / 2 ? -100 : v)));
    return { ...inference, train: await trainStep(model, trainIds, labels) };
  } finally {
    model.dispose();
  }
}

export async function bench(): Promise<void> {
  const gpu = await getGpu();
  console.log(`\n## Llama family beside ChatGLM (bench/llama.ts) — ${gpu.adapterInfo.description}`);
  const glmConfig = smallConfig();
  const qwenConfig = smallQwenConfig();
  const content = Array.from({ length: PROMPT - 2 }, (_, i) => 5 + ((i * 7919) % 1000));
  const rotations = (row: number[]) =>
    Array.from({ length: TRAIN_B }, (_, r) => [...row.slice(r), ...row.slice(0, r)]);
  // ChatGLM rows end their prompt with [gMASK] <sop> (its input format); Qwen rows need nothing.
  const glmPrompt = [...content, glmConfig.gmaskTokenId, glmConfig.bosTokenId];
  const glmTrain = rotations(content).map((r) => {
    const row = [...r, 9, 9];
    row[TRAIN_S / 2 - 2] = glmConfig.gmaskTokenId;
    row[TRAIN_S / 2 - 1] = glmConfig.bosTokenId;
    return row;
  });
  const qwenPrompt = [...content, 1, 2];
  const qwenTrain = rotations(qwenPrompt);
  const glm = randomChatGLM(gpu, glmConfig, { dtype: "f32", maxContext: 512 });
  const g = await measureModel(glm, glmPrompt, glmTrain, () =>
    attachAdapter(
      glm,
      adapterFor(linearModules(glmConfig), [
        "query_key_value",
        "dense",
        "dense_h_to_4h",
        "dense_4h_to_h",
      ]),
    ));
  const qwen = randomLlama(gpu, qwenConfig, { dtype: "f32", maxContext: 512 });
  const q = await measureModel(qwen, qwenPrompt, qwenTrain, () =>
    attachLlamaAdapter(
      qwen,
      adapterFor(linearShapes(qwenConfig), [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
      ]),
    ));
  const line = (phase: string, a: Cost, b: Cost, tokens: number) =>
    `| ${phase} | ${(tokens / a.ms * 1000).toFixed(1)} | ${(tokens / b.ms * 1000).toFixed(1)} | ${
      (b.ms / a.ms).toFixed(2)
    } | ${(b.cpuMs / a.cpuMs).toFixed(2)} |`;
  console.log(
    "| phase | ChatGLM small tok/s | Qwen3 small tok/s | wall time Qwen ÷ ChatGLM | " +
      "CPU time Qwen ÷ ChatGLM |",
  );
  console.log("| --- | --- | --- | --- | --- |");
  console.log(line(`prefill ${PROMPT}`, g.prefill, q.prefill, PROMPT));
  console.log(line("decode (batch 1)", g.decode, q.decode, 1));
  console.log(line(`LoRA train step ${TRAIN_B}×${TRAIN_S}`, g.train, q.train, TRAIN_B * TRAIN_S));
}

if (import.meta.main) await bench();
