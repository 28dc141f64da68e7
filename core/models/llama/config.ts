/**
 * Llama-family configuration (Qwen2 / Qwen2.5, Qwen3, Llama 3): parses and validates an HF
 * `config.json` in both layouts in circulation (spec §2: tests/fixtures/llama-family/README.md):
 * transformers 5 (`rope_parameters`, `dtype`) and transformers 4 (`rope_theta` + `rope_scaling`,
 * `torch_dtype`), plus `generation_config.json` when present (eos list, pad id).
 */

import { isJsonObject, readJsonFile } from "../../../base/mod.ts";
import { type QuantSpec, readLlamaQuantSpec } from "../../quant/format.ts";

export type LlamaModelType = "qwen2" | "qwen3" | "llama";
export const LLAMA_MODEL_TYPES: readonly LlamaModelType[] = ["qwen2", "qwen3", "llama"];

/** Rotary parameters (spec §4.2): default, or Llama 3's frequency-dependent scaling. */
export type RopeConfig =
  | { type: "default"; theta: number }
  | {
    type: "llama3";
    theta: number;
    factor: number;
    lowFreqFactor: number;
    highFreqFactor: number;
    originalMaxPositions: number;
  };

export interface LlamaConfig {
  modelType: LlamaModelType;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  /** nh: query heads. */
  numHeads: number;
  /** nkv: key/value heads (nh is a multiple). */
  numKvHeads: number;
  /** d: from `head_dim` when present, else hidden / nh. */
  headDim: number;
  rmsNormEps: number;
  rope: RopeConfig;
  tieWordEmbeddings: boolean;
  /** Biases on q, k, v (qwen2 always; qwen3/llama: attention_bias). */
  qkvBias: boolean;
  /** Bias on o (qwen3/llama: attention_bias; qwen2 never). */
  oBias: boolean;
  /** Biases on gate/up/down (llama: mlp_bias). */
  mlpBias: boolean;
  /** Qwen3's per-head q/k RMSNorm. */
  qkNorm: boolean;
  maxPositionEmbeddings: number;
  bosTokenId: number | null;
  /** End-of-sequence ids (generation_config's list when present, else config's), never empty. */
  eosTokenIds: number[];
  /**
   * Pad id of left-padded inputs: config's `pad_token_id`, else generation_config's, else the first
   * eos id (what greedy generation feeds finished rows, spec §6).
   */
  padTokenId: number;
  /** The dtype the checkpoint says it was saved in (informational; file dtypes win). */
  torchDtype: string | null;
  /**
   * int8/int4 weights (core/quant/format.ts, our `medglm_quantization` key): how the checkpoint
   * is stored, or, on a loaded model, how its weights were quantized at load. null: float.
   */
  quantization: QuantSpec | null;
}

/** Reads `<dir>/config.json` (and `generation_config.json` when there is one). */
export async function readLlamaConfig(dir: string): Promise<LlamaConfig> {
  const root = dir.replace(/\/+$/, "") || dir;
  const path = `${root}/config.json`;
  const json = await readJsonFile(path, {
    notFoundHint: "a model directory needs an HF config.json",
  });
  let generation: unknown = null;
  try {
    generation = await readJsonFile(`${root}/generation_config.json`);
  } catch (err) {
    if (!/not found/.test((err as Error).message)) throw err;
  }
  return parseLlamaConfig(json, path, generation);
}

/** Validates a parsed `config.json`; `source` names the file in error messages. */
export function parseLlamaConfig(
  json: unknown,
  source = "config.json",
  generation: unknown = null,
): LlamaConfig {
  if (!isJsonObject(json)) throw new Error(`${source}: expected a JSON object`);
  const c = json as Record<string, unknown>;
  const fail = (msg: string): never => {
    throw new Error(`${source}: ${msg}`);
  };
  const modelType = c.model_type;
  if (!LLAMA_MODEL_TYPES.includes(modelType as LlamaModelType)) {
    fail(
      `model_type ${JSON.stringify(modelType)} is not a Llama-family model (known: ` +
        `${LLAMA_MODEL_TYPES.join(", ")})`,
    );
  }
  const type = modelType as LlamaModelType;
  const int = (key: string, min = 1): number => {
    const v = c[key];
    if (typeof v !== "number" || !Number.isInteger(v) || v < min) {
      fail(`${key} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    }
    return v as number;
  };
  const optInt = (key: string): number | null => {
    const v = c[key];
    return v === undefined || v === null ? null : int(key, 0);
  };
  const positive = (obj: Record<string, unknown>, key: string, where: string): number => {
    const v = obj[key];
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      fail(`${where}${key} must be a positive number, got ${JSON.stringify(v)}`);
    }
    return v as number;
  };
  const bool = (key: string, fallback: boolean): boolean => {
    const v = c[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "boolean") fail(`${key} must be true or false, got ${JSON.stringify(v)}`);
    return v as boolean;
  };

  const hiddenSize = int("hidden_size");
  const numHeads = int("num_attention_heads");
  const numKvHeads = optInt("num_key_value_heads") ?? numHeads;
  if (numKvHeads < 1 || numHeads % numKvHeads !== 0) {
    fail(`num_attention_heads ${numHeads} must be a multiple of num_key_value_heads ${numKvHeads}`);
  }
  let headDim = optInt("head_dim");
  if (headDim === null) {
    if (hiddenSize % numHeads !== 0) {
      fail(`hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
    }
    headDim = hiddenSize / numHeads;
  }
  if (headDim < 2 || headDim % 2 !== 0) fail(`head_dim ${headDim} must be even (rotate half)`);
  const act = c.hidden_act ?? "silu";
  if (act !== "silu") fail(`hidden_act ${JSON.stringify(act)} is not supported (only "silu")`);
  if (c.partial_rotary_factor !== undefined && c.partial_rotary_factor !== null) {
    if (c.partial_rotary_factor !== 1) {
      fail(`partial_rotary_factor ${c.partial_rotary_factor} is not supported (only 1)`);
    }
  }
  if (type !== "llama") {
    if (c.use_sliding_window === true) {
      fail("use_sliding_window: true is not supported (sliding-window attention)");
    }
  }
  if (c.layer_types !== undefined && c.layer_types !== null) {
    if (!Array.isArray(c.layer_types)) fail("layer_types must be a list");
    (c.layer_types as unknown[]).forEach((t, i) => {
      if (t !== "full_attention") {
        fail(`layer_types[${i}] is ${JSON.stringify(t)}; only "full_attention" is supported`);
      }
    });
  }
  const eps = c.rms_norm_eps ?? 1e-6;
  if (typeof eps !== "number" || !(eps > 0)) fail(`rms_norm_eps must be a positive number`);

  const rope = parseRope(c, source, fail, positive);
  const attentionBias = bool("attention_bias", false);
  const mlpBias = type === "llama" ? bool("mlp_bias", false) : false;
  const maxPositionEmbeddings = optInt("max_position_embeddings") ?? 2048;

  const idList = (v: unknown, key: string, where: string): number[] | null => {
    if (v === undefined || v === null) return null;
    const list = Array.isArray(v) ? v : [v];
    if (list.length === 0) return null;
    for (const x of list) {
      if (typeof x !== "number" || !Number.isInteger(x) || x < 0) {
        fail(`${where}${key} must be a token id or a list of them, got ${JSON.stringify(v)}`);
      }
    }
    return list as number[];
  };
  const gen = isJsonObject(generation) ? generation as Record<string, unknown> : {};
  const eos = idList(gen.eos_token_id, "eos_token_id", "generation_config.json: ") ??
    idList(c.eos_token_id, "eos_token_id", "");
  if (!eos) fail("eos_token_id is missing (config.json and generation_config.json)");
  const pad = idList(c.pad_token_id, "pad_token_id", "")?.[0] ??
    idList(gen.pad_token_id, "pad_token_id", "generation_config.json: ")?.[0] ?? eos![0];
  const vocabSize = int("vocab_size");
  for (const id of [...eos!, pad]) {
    if (id >= vocabSize) fail(`token id ${id} is outside the vocabulary (vocab_size ${vocabSize})`);
  }
  const dtype = c.dtype ?? c.torch_dtype ?? null;

  return {
    modelType: type,
    vocabSize,
    hiddenSize,
    intermediateSize: int("intermediate_size"),
    numLayers: int("num_hidden_layers"),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: eps as number,
    rope,
    // Absent → false for these three model types (spec §2).
    tieWordEmbeddings: bool("tie_word_embeddings", false),
    qkvBias: type === "qwen2" ? true : attentionBias,
    oBias: type === "qwen2" ? false : attentionBias,
    mlpBias,
    qkNorm: type === "qwen3",
    maxPositionEmbeddings,
    bosTokenId: optInt("bos_token_id"),
    eosTokenIds: eos!,
    padTokenId: pad,
    torchDtype: typeof dtype === "string" ? dtype : null,
    quantization: readLlamaQuantSpec(c, source),
  };
}

/**
 * v5 `rope_parameters`, or v4 `rope_theta` + `rope_scaling` (whose `rope_type` may be spelled
 * `type`). A value inside the object wins over the top-level `rope_theta`; θ defaults to 10000.
 */
function parseRope(
  c: Record<string, unknown>,
  source: string,
  fail: (msg: string) => never,
  positive: (obj: Record<string, unknown>, key: string, where: string) => number,
): RopeConfig {
  const key = c.rope_parameters !== undefined && c.rope_parameters !== null
    ? "rope_parameters"
    : "rope_scaling";
  const raw = c[key];
  if (raw !== undefined && raw !== null && !isJsonObject(raw)) {
    fail(`${key} must be an object or null`);
  }
  const obj = (raw ?? {}) as Record<string, unknown>;
  const typeValue = obj.rope_type ?? obj.type ?? "default";
  let theta = 10000;
  if (c.rope_theta !== undefined && c.rope_theta !== null) theta = positive(c, "rope_theta", "");
  if (obj.rope_theta !== undefined && obj.rope_theta !== null) {
    theta = positive(obj, "rope_theta", `${key}.`);
  }
  if (typeValue === "default") return { type: "default", theta };
  if (typeValue !== "llama3") {
    fail(
      `${key}.rope_type ${
        JSON.stringify(typeValue)
      } is not supported (default or llama3) in ${source}`,
    );
  }
  const orig = obj.original_max_position_embeddings ?? c.max_position_embeddings;
  if (typeof orig !== "number" || !Number.isInteger(orig) || orig < 1) {
    fail(`${key}.original_max_position_embeddings must be a positive integer`);
  }
  const lowFreqFactor = positive(obj, "low_freq_factor", `${key}.`);
  const highFreqFactor = positive(obj, "high_freq_factor", `${key}.`);
  if (!(highFreqFactor > lowFreqFactor)) {
    fail(`${key}: high_freq_factor must exceed low_freq_factor`);
  }
  return {
    type: "llama3",
    theta,
    factor: positive(obj, "factor", `${key}.`),
    lowFreqFactor,
    highFreqFactor,
    originalMaxPositions: orig as number,
  };
}
