/**
 * ChatGLM-6B (v1) configuration: parses and validates an HF `config.json`. Everything the model
 * needs comes from here, so one code path serves the tiny fixture and the real checkpoint.
 */

import { readJsonFile } from "../../../base/mod.ts";
import { type QuantSpec, readQuantSpec } from "../../quant/format.ts";

export interface ChatGLMConfig {
  hiddenSize: number;
  numHeads: number;
  headDim: number;
  numLayers: number;
  innerHiddenSize: number;
  vocabSize: number;
  layernormEpsilon: number;
  maxSequenceLength: number;
  bosTokenId: number;
  eosTokenId: number;
  maskTokenId: number;
  gmaskTokenId: number;
  padTokenId: number;
  /** The dtype the checkpoint says it was saved in (informational; file dtypes win). */
  torchDtype: string | null;
  /** How the stored weights are quantized (`quantization_bit` 4/8), or null for float weights. */
  quantization?: QuantSpec | null;
  /** `tie_word_embeddings` when config.json sets it (absent: the output layer may be tied). */
  tieWordEmbeddings?: boolean | null;
}

/**
 * Upper bounds of the sizes a config may declare: far above any real ChatGLM (hidden 4096, 28
 * layers, FFN 16384, vocab 130528, context 2048), yet small enough that a hostile config is
 * refused before anything is sized from it (1e9 layers would otherwise run out of memory).
 */
export const CONFIG_LIMITS = {
  hidden_size: 65536,
  num_attention_heads: 1024,
  num_layers: 1024,
  inner_hidden_size: 262144,
  vocab_size: 4_194_304,
  max_sequence_length: 1_048_576,
} as const;

/** A model of more parameters than this is refused (10× the largest dense models of today). */
export const MAX_PARAMETERS = 1e13;

/**
 * The residual scale. The original builds its blocks without passing `num_layers`, so every
 * block uses the default of 28 layers: α = sqrt(2·28) whatever the config says.
 */
export const RESIDUAL_ALPHA: number = Math.sqrt(56);

/** Reads and validates `<dir>/config.json` (size-capped: a 2 GiB file is refused unread). */
export async function readChatGLMConfig(dir: string): Promise<ChatGLMConfig> {
  const path = `${dir.replace(/\/+$/, "")}/config.json`;
  const json = await readJsonFile(path, {
    notFoundHint: "a model directory needs an HF config.json",
  });
  return parseChatGLMConfig(json, path);
}

/** Validates a parsed `config.json`; `source` names the file in error messages. */
export function parseChatGLMConfig(json: unknown, source = "config.json"): ChatGLMConfig {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new Error(`${source}: expected a JSON object`);
  }
  const c = json as Record<string, unknown>;
  const fail = (msg: string): never => {
    throw new Error(`${source}: ${msg}`);
  };

  if (c.model_type !== undefined && c.model_type !== "chatglm") {
    fail(
      `model_type ${JSON.stringify(c.model_type)} is not supported (only "chatglm", ChatGLM-6B v1)`,
    );
  }
  if (c.architectures !== undefined) {
    const known = ["ChatGLMModel", "ChatGLMForConditionalGeneration"];
    if (!Array.isArray(c.architectures) || !c.architectures.every((a) => known.includes(a))) {
      fail(
        `architectures ${JSON.stringify(c.architectures)} is not supported (expected one of ${
          known.join(", ")
        })`,
      );
    }
  }
  // ChatGLM2/3 configs carry these keys instead of ours; say so rather than fail on a missing key.
  if ("multi_query_attention" in c || "padded_vocab_size" in c) {
    fail("this is a ChatGLM2/3 config; only ChatGLM-6B (v1) is implemented");
  }
  if (!("num_layers" in c) && "num_hidden_layers" in c) {
    fail(
      "this looks like a Llama-style config (num_hidden_layers); only ChatGLM-6B (v1) is implemented",
    );
  }
  if (c.position_encoding_2d !== true) {
    fail(
      `position_encoding_2d must be true (got ${JSON.stringify(c.position_encoding_2d)}); ` +
        "only the 2-D rotary positions of ChatGLM-6B are implemented",
    );
  }
  if (c.pre_seq_len !== undefined && c.pre_seq_len !== null) {
    fail(
      `pre_seq_len is set (${JSON.stringify(c.pre_seq_len)}): p-tuning prefixes are not supported`,
    );
  }
  // int8/int4 weights (ChatGLM's own format, core/quant); refuses other bit widths.
  const quantization = readQuantSpec(c, source);

  const int = (key: string, min: number): number => {
    const v = c[key];
    const max = (CONFIG_LIMITS as Record<string, number>)[key] ?? Number.MAX_SAFE_INTEGER;
    if (typeof v !== "number" || !Number.isInteger(v) || v < min) {
      fail(`${key} must be an integer >= ${min} (got ${JSON.stringify(v)})`);
    }
    if ((v as number) > max) {
      fail(
        `${key} ${v} is over the limit of ${max} (real ChatGLM checkpoints are far smaller; ` +
          "is this config.json corrupt?)",
      );
    }
    return v as number;
  };
  const hiddenSize = int("hidden_size", 1);
  const numHeads = int("num_attention_heads", 1);
  if (hiddenSize % numHeads !== 0) {
    fail(`hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads}`);
  }
  const headDim = hiddenSize / numHeads;
  // 2-D rotary halves the head, then pairs i with i + r/2 inside each half.
  if (headDim % 4 !== 0) fail(`head dim ${headDim} (hidden_size / heads) must be a multiple of 4`);
  const numLayers = int("num_layers", 1);
  const innerHiddenSize = c.inner_hidden_size === undefined
    ? 4 * hiddenSize
    : int("inner_hidden_size", 1);
  const vocabSize = int("vocab_size", 1);
  const eps = c.layernorm_epsilon ?? 1e-5;
  if (typeof eps !== "number" || !(eps > 0)) {
    fail(`layernorm_epsilon must be a positive number (got ${JSON.stringify(eps)})`);
  }
  const maxSequenceLength = c.max_sequence_length === undefined
    ? 2048
    : int("max_sequence_length", 1);
  const tokenId = (key: string): number => {
    const v = int(key, 0);
    if (v >= vocabSize) fail(`${key} ${v} is outside the vocabulary (vocab_size ${vocabSize})`);
    return v;
  };
  const torchDtype = typeof c.torch_dtype === "string" ? c.torch_dtype : null;
  const tie = c.tie_word_embeddings;
  if (tie !== undefined && tie !== null && typeof tie !== "boolean") {
    fail(`tie_word_embeddings must be true or false (got ${JSON.stringify(tie)})`);
  }
  // Each bound alone is generous; together they could still describe an absurd model.
  const params = vocabSize * hiddenSize * 2 +
    numLayers * (4 * hiddenSize * hiddenSize + 2 * hiddenSize * innerHiddenSize);
  if (params > MAX_PARAMETERS) {
    fail(
      `the sizes (hidden_size ${hiddenSize}, num_layers ${numLayers}, inner_hidden_size ` +
        `${innerHiddenSize}, vocab_size ${vocabSize}) describe ${params.toExponential(2)} ` +
        `parameters, over the limit of ${MAX_PARAMETERS.toExponential(0)}`,
    );
  }
  return {
    hiddenSize,
    numHeads,
    headDim,
    numLayers,
    innerHiddenSize,
    vocabSize,
    layernormEpsilon: eps as number,
    maxSequenceLength,
    bosTokenId: tokenId("bos_token_id"),
    eosTokenId: tokenId("eos_token_id"),
    maskTokenId: tokenId("mask_token_id"),
    gmaskTokenId: tokenId("gmask_token_id"),
    padTokenId: tokenId("pad_token_id"),
    torchDtype,
    quantization,
    tieWordEmbeddings: typeof tie === "boolean" ? tie : null,
  };
}
