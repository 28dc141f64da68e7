/**
 * What the scorers need from a model, kept small so they run on the WebGPU ChatGLM model, on a
 * CPU reference in tests, or on a hand-made model whose log-probs a test computes by hand.
 */

import type { CausalLM } from "../core/mod.ts";

export interface LogitsModel {
  /** Logits [b, s, V] (row-major) for left-padded rows of equal length s. */
  forward(ids: number[][]): Promise<Float32Array>;
  /**
   * Logits of the last position only, [b, V] (optional). Scoring one-token continuations needs
   * nothing else, and V × s floats per row are gigabytes for the real vocabulary (130 528).
   */
  forwardLast?(ids: number[][]): Promise<Float32Array>;
  readonly vocabSize: number;
  readonly padId: number;
}

/** The tokenizer calls the scorers make (`ChatGLMTokenizer` has them). */
export interface TokenEncoder {
  /** Text ids; with `special` (default) ChatGLM appends `[gMASK]`, `<sop>`. */
  encode(text: string, opts?: { special?: boolean }): number[];
}

/**
 * The WebGPU model (ChatGLM-6B or the Llama family) as a `LogitsModel`: `forward` is the model's
 * full forward; the last-position path runs a prefill into a KV cache sized for the batch and
 * frees it at once.
 */
export function fromCausalLM(model: CausalLM): LogitsModel {
  return {
    vocabSize: model.config.vocabSize,
    padId: model.config.padTokenId,
    forward: (ids) => model.forward(ids),
    forwardLast: async (ids) => {
      const cache = model.createCache(ids.length, ids[0]?.length ?? 1);
      try {
        return await model.prefill(ids, cache);
      } finally {
        cache.free();
      }
    },
  };
}

/** {@link fromCausalLM} under its earlier name. */
export const fromChatGLMModel = fromCausalLM;

/**
 * The scorers' encoder for a tokenizer. A prompt the model's chat template rendered already holds
 * every special token (Llama 3's `<|begin_of_text|>` too), so with `templated` the prompt is
 * encoded without adding the post-processor's (as transformers' apply_chat_template); plain
 * prompts get them (ChatGLM's `[gMASK]` `<sop>`, Llama 3's BOS).
 */
export function promptEncoder(tok: TokenEncoder, templated: boolean): TokenEncoder {
  if (!templated) return tok;
  return { encode: (text, opts) => tok.encode(text, { special: opts?.special ?? false }) };
}

/** Left-pads rows to the longest one. */
export function leftPad(rows: readonly number[][], padId: number): number[][] {
  const s = Math.max(...rows.map((r) => r.length));
  return rows.map((r) => [...new Array(s - r.length).fill(padId), ...r]);
}

/** log Σ exp over `logits[off .. off + n)`, in float64. */
export function logSumExp(
  logits: Float32Array,
  off: number,
  n: number,
): number {
  let max = -Infinity;
  for (let v = 0; v < n; v++) if (logits[off + v] > max) max = logits[off + v];
  if (max === -Infinity) return -Infinity;
  let sum = 0;
  for (let v = 0; v < n; v++) sum += Math.exp(logits[off + v] - max);
  return max + Math.log(sum);
}
