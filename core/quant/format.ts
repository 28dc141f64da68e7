/**
 * Quantized checkpoint layouts, one table per architecture (ChatGLM-6B's is the original's,
 * tests/fixtures/chatglm6b-tiny-quantized/README.md; the Llama family's is ours, core/quant/README.md):
 * which tensors are quantized, their stored names, dtypes and shapes, and the config.json keys
 * that record the quantization. Everything else (loading, writing, planning) is one code path
 * that reads the architecture's table.
 *
 * - The block linear layers store `<layer>.weight` as int8 ([out, in] for 8 bits, [out, in / 2]
 *   packed for 4 bits) and `<layer>.weight_scale` f16 [out] (per row) or, our extension,
 *   [out, in / G] (group-wise: G input columns per scale).
 * - With `embeddings`, the embedding table is quantized the same way (per row) and a tied output
 *   layer reads it (a stored `lm_head.weight` that differs from the embeddings is quantized per row
 *   too, as `lm_head.weight` + `lm_head.weight_scale`).
 * - Everything else is float: f16 (ChatGLM) or as the source stored it (the Llama family);
 *   `lm_head.weight` may be absent (tied to the embeddings).
 */

import type { QuantBits } from "./arith.ts";
import { LINEAR_MODULES } from "../models/chatglm/params.ts";
import { LLAMA_LINEARS } from "../models/llama/params.ts";

/** How a checkpoint (or a load) is quantized. */
export interface QuantSpec {
  bits: QuantBits;
  /** Input columns per scale for the linear layers; null = per row. */
  groupSize: number | null;
  /** The embeddings (and so the tied head) are quantized too, per row. */
  embeddings: boolean;
}

/** One architecture's quantized layout. */
export interface QuantLayout {
  /** For messages: "ChatGLM-6B", "Llama family (Qwen2, Qwen3, Llama 3)". */
  architecture: string;
  /** The blocks' module prefix: `<layers>.N.<module>`. */
  layers: string;
  /** The block linear layers that are quantized (module-name suffixes). */
  modules: readonly string[];
  /** The embedding table's module name (quantized per row with `embeddings`). */
  embedding: string;
  /** The output layer's module name (per row with `embeddings`; usually tied, then absent). */
  head: string;
  /** config.json without `tie_word_embeddings` means tied (ChatGLM) or untied (Llama family). */
  tiedByDefault: boolean;
  /**
   * The tensors left in float keep their stored dtype (Llama family: bf16 stays bf16) instead of
   * f16 (ChatGLM, as its quantized releases).
   */
  floatsAsStored: boolean;
  /** Reads the quantization keys of a config.json object (null: not quantized). */
  readSpec(c: Record<string, unknown>, source: string): QuantSpec | null;
  /** The config.json keys that record `spec` (what `deno task quantize` writes). */
  configKeys(spec: QuantSpec): Record<string, unknown>;
}

/** Our config.json key for ChatGLM's group-wise scales (absent = per row, the original's layout). */
export const GROUP_SIZE_KEY = "medglm_quantization_group_size";

/** Our config.json key of a quantized Llama-family checkpoint: `{ bits, group_size, embeddings }`. */
export const LLAMA_QUANT_KEY = "medglm_quantization";

/**
 * ChatGLM-6B: the original's `quantization_bit` and `quantization_embeddings`, our group size.
 */
export const CHATGLM_QUANT_LAYOUT: QuantLayout = {
  architecture: "ChatGLM-6B",
  layers: "transformer.layers",
  // The block's four linear layers (the model's table).
  modules: LINEAR_MODULES,
  embedding: "transformer.word_embeddings",
  head: "lm_head",
  tiedByDefault: true,
  floatsAsStored: false,
  readSpec: readChatGLMQuantSpec,
  configKeys(spec) {
    const keys: Record<string, unknown> = { quantization_bit: spec.bits };
    if (spec.embeddings) keys.quantization_embeddings = true;
    if (spec.groupSize !== null) keys[GROUP_SIZE_KEY] = spec.groupSize;
    return keys;
  },
};

/**
 * The Llama family (Qwen2 / Qwen2.5, Qwen3, Llama 3): the seven projections of each layer, the
 * embedding `model.embed_tokens`. Its config key is our own object (`medglm_quantization`), never
 * HF's `quantization_config` (which names GPTQ/AWQ/bitsandbytes formats we do not read).
 */
export const LLAMA_QUANT_LAYOUT: QuantLayout = {
  architecture: "Llama family (Qwen2, Qwen3, Llama 3)",
  layers: "model.layers",
  // The seven projections (the model's table).
  modules: LLAMA_LINEARS,
  embedding: "model.embed_tokens",
  head: "lm_head",
  tiedByDefault: false,
  floatsAsStored: true,
  readSpec: readLlamaQuantSpec,
  configKeys(spec) {
    return {
      [LLAMA_QUANT_KEY]: {
        bits: spec.bits,
        group_size: spec.groupSize,
        embeddings: spec.embeddings,
      },
    };
  },
};

/** The layout table of each config.json `model_type`. */
const LAYOUTS: Record<string, QuantLayout> = {
  chatglm: CHATGLM_QUANT_LAYOUT,
  qwen2: LLAMA_QUANT_LAYOUT,
  qwen3: LLAMA_QUANT_LAYOUT,
  llama: LLAMA_QUANT_LAYOUT,
};

/** The layout of a config.json `model_type`; throws naming the known ones. */
export function quantLayoutOf(modelType: string): QuantLayout {
  const layout = Object.hasOwn(LAYOUTS, modelType) ? LAYOUTS[modelType] : undefined;
  if (!layout) {
    throw new Error(
      `model_type ${JSON.stringify(modelType)} has no int8/int4 layout (known: ${
        Object.keys(LAYOUTS).join(", ")
      })`,
    );
  }
  return layout;
}

/** ChatGLM's quantized block modules (kept for callers that name them directly). */
export const QUANTIZED_MODULES = CHATGLM_QUANT_LAYOUT.modules;
export const EMBEDDING_NAME = CHATGLM_QUANT_LAYOUT.embedding;
export const HEAD_NAME = "lm_head";

/** True for a block linear layer's module name (`<layers>.N.<module>`). */
export function isQuantizedModule(
  module: string,
  layout: QuantLayout = CHATGLM_QUANT_LAYOUT,
): boolean {
  const prefix = `${layout.layers}.`;
  if (!module.startsWith(prefix)) return false;
  const rest = module.slice(prefix.length);
  const dot = rest.indexOf(".");
  return dot > 0 && /^\d+$/.test(rest.slice(0, dot)) &&
    layout.modules.includes(rest.slice(dot + 1));
}

/** True when the tensor `name` is stored quantized under `spec` (weights, not scales). */
export function isQuantizedWeight(
  name: string,
  spec: QuantSpec,
  layout: QuantLayout = CHATGLM_QUANT_LAYOUT,
): boolean {
  if (!name.endsWith(".weight")) return false;
  const module = name.slice(0, -".weight".length);
  return isQuantizedModule(module, layout) || (spec.embeddings && isPerRowModule(module, layout));
}

/**
 * The embeddings and the output layer: quantized (with `embeddings`) always per row. The head is
 * usually tied (absent); a checkpoint whose head differs from its embeddings (the demo model's,
 * trained untied) keeps its own quantized head.
 */
export function isPerRowModule(
  module: string,
  layout: QuantLayout = CHATGLM_QUANT_LAYOUT,
): boolean {
  return module === layout.embedding || module === layout.head;
}

/** Input columns per scale of a quantized module under `spec` (null = per row). */
export function groupSizeOf(
  module: string,
  spec: QuantSpec,
  layout: QuantLayout = CHATGLM_QUANT_LAYOUT,
): number | null {
  return isPerRowModule(module, layout) ? null : spec.groupSize;
}

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

/** Bytes of a quantized weight [out, in] as stored and held: packed values + f16 scales. */
export function quantizedBytes(
  out: number,
  inp: number,
  bits: QuantBits,
  groupSize: number | null,
): number {
  return (out * inp * bits) / 8 + out * (groupSize === null ? 1 : inp / groupSize) * 2;
}

/** Checks bits, group size and embeddings of a spec; `fail` throws with the caller's source. */
function checkSpecValues(
  bits: unknown,
  groupSize: unknown,
  embeddings: unknown,
  keys: { bits: string; group: string; embeddings: string },
  fail: (msg: string) => never,
): QuantSpec {
  if (bits !== 4 && bits !== 8) {
    fail(
      `${keys.bits} is ${JSON.stringify(bits)}: only 4 and 8 (or 0, not quantized) are supported`,
    );
  }
  let g: number | null = null;
  if (groupSize !== undefined && groupSize !== null) {
    if (
      typeof groupSize !== "number" || !Number.isInteger(groupSize) || groupSize < 8 ||
      groupSize % 8 !== 0
    ) {
      fail(`${keys.group} must be a positive multiple of 8 (got ${JSON.stringify(groupSize)})`);
    }
    g = groupSize as number;
  }
  if (embeddings !== undefined && embeddings !== null && typeof embeddings !== "boolean") {
    fail(`${keys.embeddings} must be true or false (got ${JSON.stringify(embeddings)})`);
  }
  return { bits: bits as QuantBits, groupSize: g, embeddings: embeddings === true };
}

/**
 * ChatGLM's keys: `quantization_bit` (0/absent, 4 or 8), `quantization_embeddings`, and our group
 * size. `source` names the file in errors.
 */
export function readChatGLMQuantSpec(
  c: Record<string, unknown>,
  source: string,
): QuantSpec | null {
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
  return checkSpecValues(bits, c[GROUP_SIZE_KEY], c.quantization_embeddings, {
    bits: "quantization_bit",
    group: GROUP_SIZE_KEY,
    embeddings: "quantization_embeddings",
  }, fail);
}

/** ChatGLM's reader under its old name. */
export const readQuantSpec = readChatGLMQuantSpec;

/**
 * The Llama family's key: `medglm_quantization: { bits: 4 | 8, group_size: G | null,
 * embeddings: bool }`. HF's `quantization_config` (GPTQ, AWQ, bitsandbytes …) is refused by name:
 * those store other tensors than ours.
 */
export function readLlamaQuantSpec(
  c: Record<string, unknown>,
  source: string,
): QuantSpec | null {
  const fail = (msg: string): never => {
    throw new Error(`${source}: ${msg}`);
  };
  const hf = c.quantization_config;
  if (hf !== undefined && hf !== null) {
    const method = (hf as Record<string, unknown>)?.quant_method;
    fail(
      `quantization_config${
        typeof method === "string" ? ` (quant_method ${JSON.stringify(method)})` : ""
      } is not supported: load the full-precision checkpoint, with --quantize for int8/int4`,
    );
  }
  const raw = c[LLAMA_QUANT_KEY];
  if (raw === undefined || raw === null) return null;
  if (typeof raw !== "object" || Array.isArray(raw)) {
    fail(`${LLAMA_QUANT_KEY} must be an object { bits, group_size, embeddings }`);
  }
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!["bits", "group_size", "embeddings"].includes(k)) {
      fail(`${LLAMA_QUANT_KEY}.${k} is not a known key (bits, group_size, embeddings)`);
    }
  }
  return checkSpecValues(o.bits, o.group_size, o.embeddings, {
    bits: `${LLAMA_QUANT_KEY}.bits`,
    group: `${LLAMA_QUANT_KEY}.group_size`,
    embeddings: `${LLAMA_QUANT_KEY}.embeddings`,
  }, fail);
}

/** ChatGLM's config.json keys that record `spec` (see {@link QuantLayout.configKeys}). */
export function quantConfigKeys(spec: QuantSpec): Record<string, unknown> {
  return CHATGLM_QUANT_LAYOUT.configKeys(spec);
}

/** "int4, group size 32, embeddings quantized" and the like. */
export function describeQuant(spec: QuantSpec): string {
  return `int${spec.bits}${spec.groupSize ? `, group size ${spec.groupSize}` : ", per-row scales"}${
    spec.embeddings ? ", embeddings quantized" : ""
  }`;
}
