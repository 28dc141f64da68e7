/**
 * ChatGLM-6B's quantized checkpoint layout (tests/fixtures/chatglm6b-tiny-quantized/README.md):
 * which tensors are quantized, their stored names, dtypes and shapes, and the checks that refuse
 * a bad checkpoint naming the tensor and the rule.
 *
 * - The four linear layers of each block store `<layer>.weight` as int8 ([out, in] for 8 bits,
 *   [out, in / 2] packed for 4 bits) and `<layer>.weight_scale` f16 [out] (per row) or, our
 *   extension, [out, in / G] with `medglm_quantization_group_size: G` in config.json.
 * - With `quantization_embeddings`, `transformer.word_embeddings.weight` is quantized the same way
 *   (per row) and the tied output layer reads it (a stored `lm_head.weight` that differs from the
 *   embeddings is quantized per row too, as `lm_head.weight` + `lm_head.weight_scale`).
 * - Everything else is float16; `lm_head.weight` may be absent (tied to the embeddings).
 */

import type { QuantBits } from "./arith.ts";

/** The block's linear layers the original quantizes. */
export const QUANTIZED_MODULES = [
  "attention.query_key_value",
  "attention.dense",
  "mlp.dense_h_to_4h",
  "mlp.dense_4h_to_h",
] as const;

export const EMBEDDING_NAME = "transformer.word_embeddings";

/** Our config.json key for group-wise scales (absent = per row, the original's layout). */
export const GROUP_SIZE_KEY = "medglm_quantization_group_size";

/** How a checkpoint (or a load) is quantized. */
export interface QuantSpec {
  bits: QuantBits;
  /** Input columns per scale for the linear layers; null = per row. */
  groupSize: number | null;
  /** The embeddings (and so the tied head) are quantized too, per row. */
  embeddings: boolean;
}

/** True for a block linear layer's module name (`transformer.layers.N.<module>`). */
export function isQuantizedModule(module: string): boolean {
  return /^transformer\.layers\.\d+\./.test(module) &&
    QUANTIZED_MODULES.some((m) => module.endsWith(`.${m}`));
}

/** True when the tensor `name` is stored quantized under `spec` (weights, not scales). */
export function isQuantizedWeight(name: string, spec: QuantSpec): boolean {
  if (!name.endsWith(".weight")) return false;
  const module = name.slice(0, -".weight".length);
  return isQuantizedModule(module) || (spec.embeddings && isPerRowModule(module));
}

/**
 * The embeddings and the output layer: quantized (with `quantization_embeddings`) always per row.
 * The head is usually tied (absent); a checkpoint whose head differs from its embeddings (the
 * demo model's, trained untied) keeps its own quantized head.
 */
export function isPerRowModule(module: string): boolean {
  return module === EMBEDDING_NAME || module === HEAD_NAME;
}

export const HEAD_NAME = "lm_head";

/** The stored shapes of a quantized weight [out, in]: values and scales. */
export function storedShapes(
  out: number,
  inp: number,
  bits: QuantBits,
  groupSize: number | null,
): { weight: number[]; scale: number[] } {
  return {
    weight: bits === 8 ? [out, inp] : [out, inp / 2],
    scale: groupSize === null ? [out] : [out, inp / groupSize],
  };
}

/**
 * Reads the quantization keys of a config.json object: `quantization_bit` (0/absent, 4 or 8),
 * `quantization_embeddings`, and our group size. `source` names the file in errors.
 */
export function readQuantSpec(c: Record<string, unknown>, source: string): QuantSpec | null {
  const bits = c.quantization_bit;
  const fail = (msg: string): never => {
    throw new Error(`${source}: ${msg}`);
  };
  if (bits === undefined || bits === null || bits === 0) {
    if (c.quantization_embeddings === true) {
      fail("quantization_embeddings is true but quantization_bit is not 4 or 8");
    }
    if (c[GROUP_SIZE_KEY] !== undefined && c[GROUP_SIZE_KEY] !== null) {
      fail(`${GROUP_SIZE_KEY} is set but quantization_bit is not 4 or 8`);
    }
    return null;
  }
  if (bits !== 4 && bits !== 8) {
    fail(
      `quantization_bit is ${
        JSON.stringify(bits)
      }: only 4 and 8 (or 0, not quantized) are supported`,
    );
  }
  const g = c[GROUP_SIZE_KEY];
  let groupSize: number | null = null;
  if (g !== undefined && g !== null) {
    if (typeof g !== "number" || !Number.isInteger(g) || g < 8 || g % 8 !== 0) {
      fail(`${GROUP_SIZE_KEY} must be a positive multiple of 8 (got ${JSON.stringify(g)})`);
    }
    groupSize = g as number;
  }
  const emb = c.quantization_embeddings;
  if (emb !== undefined && emb !== null && typeof emb !== "boolean") {
    fail(`quantization_embeddings must be true or false (got ${JSON.stringify(emb)})`);
  }
  return { bits: bits as QuantBits, groupSize, embeddings: emb === true };
}

/** The config.json keys that record `spec` (what `deno task quantize` writes). */
export function quantConfigKeys(spec: QuantSpec): Record<string, unknown> {
  const keys: Record<string, unknown> = { quantization_bit: spec.bits };
  if (spec.embeddings) keys.quantization_embeddings = true;
  if (spec.groupSize !== null) keys[GROUP_SIZE_KEY] = spec.groupSize;
  return keys;
}
