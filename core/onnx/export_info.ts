/**
 * `onnx_export.json`, the record of what an export was made from (exporter version, dtype, the
 * model's config, the merged adapter), and the checks a runner makes before using an export: a
 * finished export of a known exporter, made from this model directory and this adapter. A model
 * directory's config is read by its `model_type`: ChatGLM-6B or the Llama family.
 */

import { readJsonFile } from "../../base/mod.ts";
import { concatArrays } from "../io/concat.ts";
import { loadLoraAdapter, type LoraAdapter } from "../adapters/lora_weights.ts";
import { type ChatGLMConfig, parseChatGLMConfig } from "../models/chatglm/config.ts";
import { linearModules } from "../models/chatglm/params.ts";
import {
  LLAMA_MODEL_TYPES,
  type LlamaConfig,
  type LlamaModelType,
  parseLlamaConfig,
} from "../models/llama/config.ts";
import { linearShapes as llamaLinearShapes } from "../models/llama/params.ts";
import { KNOWN_MODEL_TYPES } from "../models/load.ts";
import { EXPORTER_VERSION } from "./export_chatglm.ts";
import { LLAMA_EXPORTER_VERSION } from "./export_llama.ts";
import type { OnnxWeightDtype } from "./graph_parts.ts";
import type { QuantSpec } from "../quant/format.ts";

export const ONNX_MODEL_FILE = "model.onnx";
export const ONNX_DATA_FILE = "model.onnx.data";
export const ONNX_EXPORT_INFO = "onnx_export.json";

/** The config of an exported model: ChatGLM-6B or a Llama-family model. */
export type OnnxModelConfig = ChatGLMConfig | LlamaConfig;

/** Whether an export's config is of the Llama family (qwen2, qwen3, llama). */
export function isLlamaConfig(config: OnnxModelConfig): config is LlamaConfig {
  return "modelType" in config;
}

/** Contents of `onnx_export.json`. */
export interface OnnxExportInfo {
  exporter: string;
  opset: number;
  /** Storage dtype of the weights in the graph (compute is f32). */
  dtype: OnnxWeightDtype;
  /** int8/int4 weights (MatMulNBits), or absent/null for float weights. */
  quantization?: QuantSpec | null;
  /** How MatMulNBits multiplies: int8 activations (fast) or f32 (quantized exports only). */
  quantAccuracy?: "int8" | "f32";
  /** sha256 of the canonical model config (see `configHash`). */
  configHash: string;
  /** The model's config.json as read (the runner builds its config from it). */
  config: Record<string, unknown>;
  /**
   * Llama family: the model's generation_config.json as read (its eos and pad ids complete the
   * config), or null when it has none. Absent for ChatGLM.
   */
  generationConfig?: Record<string, unknown> | null;
  /** Rows of the rotary tables: the longest sequence the graph accepts. */
  maxPositions: number;
  /** The external data file, or null when every initializer is inline. */
  externalData: string | null;
  source: {
    model: string;
    adapter: null | {
      dir: string | null;
      /** sha256 of the merged adapter's tensors and scaling (see `adapterHash`). */
      hash: string;
      r: number;
      alpha: number;
      scaling: number;
      targets: string[];
    };
  };
  createdAt: string;
}

/**
 * A hash of what the graph's shape and numerics depend on in config.json (not its formatting
 * or informational keys), so an export and a model directory can be matched.
 */
export async function configHash(config: OnnxModelConfig): Promise<string> {
  let rest: Record<string, unknown>;
  if (isLlamaConfig(config)) {
    const { torchDtype: _informational, ...all } = config;
    rest = all;
  } else {
    const { torchDtype: _informational, quantization, tieWordEmbeddings, ...all } = config;
    // The quantization keys count only when set, so float exports keep their earlier hashes.
    rest = { ...all };
    if (quantization) rest.quantization = quantization;
    if (tieWordEmbeddings === false) rest.tieWordEmbeddings = false;
  }
  const canonical = JSON.stringify(
    Object.keys(rest).sort().map((k) => [k, (rest as Record<string, unknown>)[k]]),
  );
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(canonical));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A hash of an adapter's content: module names, shapes, scaling and the A, B values. */
export async function adapterHash(adapter: LoraAdapter): Promise<string> {
  const parts: Uint8Array[] = [new TextEncoder().encode(`scaling=${adapter.scaling};`)];
  for (const [name, m] of adapter.modules) {
    parts.push(new TextEncoder().encode(`${name}:${m.r}:${m.inFeatures}:${m.outFeatures};`));
    parts.push(new Uint8Array(m.a.buffer, m.a.byteOffset, m.a.byteLength));
    parts.push(new Uint8Array(m.b.buffer, m.b.byteOffset, m.b.byteLength));
  }
  const digest = await crypto.subtle.digest("SHA-256", concatArrays(parts));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A model directory's config (either architecture), as parsed and as the JSON read. */
export interface ModelConfigFiles<C extends OnnxModelConfig = OnnxModelConfig> {
  json: Record<string, unknown>;
  /** generation_config.json (Llama family; null when absent). */
  generation: Record<string, unknown> | null;
  config: C;
}

/** Parses an export's or a model's config JSON by its `model_type`. */
function parseModelConfig(
  json: unknown,
  generation: unknown,
  source: string,
): OnnxModelConfig {
  if (isLlamaJson(json)) return parseLlamaConfig(json, source, generation);
  const type = (json as Record<string, unknown> | null)?.model_type;
  if (type !== undefined && type !== "chatglm") {
    throw new Error(
      `${source}: model_type ${JSON.stringify(type)} has no ONNX export (known: ` +
        `${KNOWN_MODEL_TYPES.join(", ")})`,
    );
  }
  return parseChatGLMConfig(json, source);
}

function isLlamaJson(json: unknown): boolean {
  const type = (json as Record<string, unknown> | null)?.model_type;
  return LLAMA_MODEL_TYPES.includes(type as LlamaModelType);
}

export async function readConfigJson(dir: string): Promise<ModelConfigFiles> {
  const path = `${dir}/config.json`;
  const json = await readJsonFile(path, {
    notFoundHint: "a model directory needs an HF config.json",
  }) as Record<string, unknown>;
  let generation: Record<string, unknown> | null = null;
  if (isLlamaJson(json)) {
    try {
      generation = await readJsonFile(`${dir}/generation_config.json`) as Record<string, unknown>;
    } catch (err) {
      if (!/not found/.test((err as Error).message)) throw err;
    }
  }
  return { json, generation, config: parseModelConfig(json, generation, path) };
}

/** The linear modules an adapter of this model may target ([out, in] by module name). */
export function adapterBase(config: OnnxModelConfig, name: string) {
  return {
    linearModules: isLlamaConfig(config) ? llamaLinearShapes(config) : linearModules(config),
    name,
  };
}

/** Reads and checks `<dir>/onnx_export.json`; says clearly when there is no export. */
export async function readOnnxExportInfo(
  dir: string,
): Promise<{ info: OnnxExportInfo; config: OnnxModelConfig }> {
  const path = `${dir.replace(/\/+$/, "")}/${ONNX_EXPORT_INFO}`;
  const info = await readJsonFile(path, {
    notFoundHint: `${dir} holds no finished ONNX export ` +
      "(make one with `deno task export-onnx --model DIR --out DIR`)",
  }) as unknown as OnnxExportInfo;
  const fail = (msg: string): never => {
    throw new Error(`${path}: ${msg}`);
  };
  if (info === null || typeof info !== "object") fail("expected a JSON object");
  // Each architecture's graph has its own exporter version.
  const exporter = isLlamaJson(info.config) ? LLAMA_EXPORTER_VERSION : EXPORTER_VERSION;
  if (info.exporter !== exporter) {
    fail(
      `made by exporter ${JSON.stringify(info.exporter)}, this runner reads ${exporter}: ` +
        "re-export the model",
    );
  }
  if (info.dtype !== "f32" && info.dtype !== "f16") {
    fail(`dtype ${JSON.stringify(info.dtype)} is unknown`);
  }
  if (!Number.isInteger(info.maxPositions) || info.maxPositions < 1) {
    fail("maxPositions is missing");
  }
  if (typeof info.configHash !== "string") fail("configHash is missing");
  const config = parseModelConfig(info.config, info.generationConfig ?? null, `${path} (config)`);
  if (await configHash(config) !== info.configHash) {
    fail("configHash does not match the config stored beside it (file edited?)");
  }
  return { info, config };
}

/**
 * Refuses an export made for another model: the export's config must equal `modelDir`'s
 * config.json (in every key the graph depends on), and when `adapterDir` is given the export must
 * have exactly that adapter merged (and none when it is not given).
 */
export async function checkExportMatchesModel(
  exportDir: string,
  info: OnnxExportInfo,
  modelDir: string,
  adapterDir?: string | null,
): Promise<void> {
  const root = modelDir.replace(/\/+$/, "") || modelDir;
  const { config } = await readConfigJson(root);
  const hash = await configHash(config);
  if (hash !== info.configHash) {
    throw new Error(
      `${exportDir}: this ONNX export was made for another model (config hash ${
        info.configHash.slice(0, 12)
      }…, ${root}/config.json gives ${hash.slice(0, 12)}…); re-export it from ${root}`,
    );
  }
  const merged = info.source.adapter;
  if (!adapterDir) {
    if (merged) {
      throw new Error(
        `${exportDir}: this ONNX export has the adapter ${merged.dir} merged in; pass that ` +
          "adapter, or export the base model alone",
      );
    }
    return;
  }
  if (!merged) {
    throw new Error(
      `${exportDir}: this ONNX export has no adapter merged in, but ${adapterDir} was given; ` +
        `export with --adapter ${adapterDir}`,
    );
  }
  const adapter = await loadLoraAdapter(adapterDir, adapterBase(config, root));
  if (await adapterHash(adapter) !== merged.hash) {
    throw new Error(
      `${exportDir}: this ONNX export has another adapter merged in (${merged.dir}), not ` +
        `${adapterDir}; re-export with --adapter ${adapterDir}`,
    );
  }
}
