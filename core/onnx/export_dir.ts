/**
 * Exporting a model directory (HF config.json + weights, optionally a PEFT adapter merged in) to
 * an ONNX export directory: `model.onnx` (+ `model.onnx.data` for large models) and
 * `onnx_export.json`, which says what the graph was made from so a runner can refuse an export
 * made for another model. ChatGLM-6B (export_chatglm.ts) and the Llama family (export_llama.ts)
 * share the directory, the info file and the checks; `exportModelToOnnx` picks by `model_type`.
 */

import { createProgress, readJsonFile, writeJsonAtomic } from "../../base/mod.ts";
import { concatArrays } from "../io/concat.ts";
import { type Checkpoint, openCheckpoint, readTensor, readTensorAsF32 } from "../io/checkpoint.ts";
import { loadLoraAdapter, type LoraAdapter } from "../adapters/lora_weights.ts";
import { type ChatGLMConfig, parseChatGLMConfig } from "../models/chatglm/config.ts";
import { checkParameters, linearModules, parameterTable } from "../models/chatglm/params.ts";
import {
  LLAMA_MODEL_TYPES,
  type LlamaConfig,
  type LlamaModelType,
  parseLlamaConfig,
} from "../models/llama/config.ts";
import {
  checkParameters as checkLlamaParameters,
  linearShapes as llamaLinearShapes,
} from "../models/llama/params.ts";
import { KNOWN_MODEL_TYPES } from "../models/load.ts";
import { buildChatGLMGraph, EXPORTER_VERSION, ONNX_OPSET } from "./export_chatglm.ts";
import { buildLlamaGraph, LLAMA_EXPORTER_VERSION } from "./export_llama.ts";
import type { OnnxWeightDtype } from "./graph_parts.ts";
import { initializerByteLength, type OnnxGraph, writeOnnxModel } from "./onnx_model.ts";
import { MS_DOMAIN } from "./matmul_nbits.ts";
import { convertBytes, viewAs } from "../io/dtype.ts";
import { type QuantizedMatrix, quantizeF16, unpackInt4 } from "../quant/arith.ts";
import { isPerRowModule, type QuantSpec } from "../quant/format.ts";
import {
  checkQuantizedCheckpoint,
  type QuantizeOption,
  resolveQuantization,
} from "../models/chatglm/quantized.ts";

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
interface ModelConfigFiles<C extends OnnxModelConfig = OnnxModelConfig> {
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

async function readConfigJson(dir: string): Promise<ModelConfigFiles> {
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
function adapterBase(config: OnnxModelConfig, name: string) {
  return {
    linearModules: isLlamaConfig(config) ? llamaLinearShapes(config) : linearModules(config),
    name,
  };
}

export interface ExportOnnxOptions {
  /** A PEFT adapter directory (or one already loaded) to merge into the weights. */
  adapter?: string | LoraAdapter | null;
  dtype?: OnnxWeightDtype;
  /**
   * Initializers in `model.onnx.data`: "auto" (default) when the weights exceed 1.5 GiB (ONNX
   * files cannot exceed 2 GiB), or always / never.
   */
  externalData?: "auto" | boolean;
  /** Default: the config's max_sequence_length. */
  maxPositions?: number;
  /** Progress bar on stderr. */
  progress?: boolean;
  /**
   * Quantize the weights (int8/int4 MatMulNBits, core/onnx/matmul_nbits.ts); a pre-quantized
   * checkpoint is exported quantized without it.
   */
  quantize?: QuantizeOption;
  /**
   * How MatMulNBits multiplies (see GraphQuantization.accuracyLevel): "f32" (default; matches the
   * WebGPU path) or "int8" (ORT's fast path: activations rounded to int8 per block; on the tiny
   * random fixture this moved logits by ~10% of their range, so it is opt-in).
   */
  quantAccuracy?: "int8" | "f32";
}

const EXTERNAL_AUTO_BYTES = 1.5 * 2 ** 30;

/** What an architecture's exporter hands to the shared writer. */
interface PreparedExport {
  exporter: string;
  graph: OnnxGraph;
  files: ModelConfigFiles;
  dtype: OnnxWeightDtype;
  maxPositions: number;
  adapter: LoraAdapter | null;
  quantization: QuantSpec | null;
}

/**
 * Exports the model directory `modelDir` (ChatGLM-6B or the Llama family, by config.json's
 * `model_type`) to `outDir`; returns the written `onnx_export.json` contents.
 */
export async function exportModelToOnnx(
  modelDir: string,
  outDir: string,
  options: ExportOnnxOptions = {},
): Promise<OnnxExportInfo> {
  const root = modelDir.replace(/\/+$/, "") || modelDir;
  const files = await readConfigJson(root);
  const prepared = isLlamaConfig(files.config)
    ? await prepareLlama(root, files as ModelConfigFiles<LlamaConfig>, options)
    : await prepareChatGLM(root, files as ModelConfigFiles<ChatGLMConfig>, options);
  return await writeExport(root, outDir, prepared, options);
}

/** The name from when ChatGLM-6B was the only architecture: `exportModelToOnnx` itself. */
export const exportChatGLMToOnnx = exportModelToOnnx;

function checkDtype(dtype: string): OnnxWeightDtype {
  if (dtype !== "f32" && dtype !== "f16") {
    throw new Error(`export-onnx: --dtype ${JSON.stringify(dtype)} is not supported (f32 or f16)`);
  }
  return dtype;
}

async function loadAdapterOption(
  option: ExportOnnxOptions["adapter"],
  config: OnnxModelConfig,
  root: string,
): Promise<LoraAdapter | null> {
  return typeof option === "string"
    ? await loadLoraAdapter(option, adapterBase(config, root))
    : option ?? null;
}

async function prepareChatGLM(
  root: string,
  files: ModelConfigFiles<ChatGLMConfig>,
  options: ExportOnnxOptions,
): Promise<PreparedExport> {
  const { config } = files;
  const dtype = checkDtype(options.dtype ?? "f32");
  const adapter = await loadAdapterOption(options.adapter, config, root);
  const ckpt = await openCheckpoint(root);
  const quant = resolveQuantization(config, options.quantize, root);
  let tied = false;
  if (quant) tied = checkQuantizedCheckpoint(config, ckpt, quant.spec, quant.prequantized).tied;
  else {
    // A float checkpoint without lm_head.weight ties the output layer to the embeddings.
    tied = checkParameters(
      config,
      ckpt.tensorNames.map((name) => ({ name, shape: ckpt.locate.get(name)!.tensor.shape })),
      root,
    ).tiedHead;
  }
  const maxPositions = options.maxPositions ?? config.maxSequenceLength;
  const readFloat = (name: string) =>
    readTensorAsF32(
      ckpt,
      tied && name === "lm_head.weight" ? "transformer.word_embeddings.weight" : name,
    );
  const graph = buildChatGLMGraph(config, readFloat, {
    dtype,
    adapter,
    maxPositions,
    quant: quant
      ? {
        bits: quant.spec.bits,
        groupSize: quant.spec.groupSize,
        embeddings: quant.spec.embeddings,
        accuracyLevel: options.quantAccuracy === "int8" ? 4 : 0,
        read: (name) =>
          readQuantized(
            ckpt,
            config,
            quant.spec,
            quant.prequantized,
            tied && name === "lm_head.weight" ? "transformer.word_embeddings.weight" : name,
          ),
      }
      : null,
  });
  return {
    exporter: EXPORTER_VERSION,
    graph,
    files,
    dtype,
    maxPositions,
    adapter,
    quantization: quant?.spec ?? null,
  };
}

async function prepareLlama(
  root: string,
  files: ModelConfigFiles<LlamaConfig>,
  options: ExportOnnxOptions,
): Promise<PreparedExport> {
  const { config } = files;
  if (options.quantize !== undefined && options.quantize !== null) {
    throw new Error(
      `export-onnx: --quantize is implemented for ChatGLM-6B only; ${root} holds a ` +
        `${config.modelType} model (export it with float weights: leave out --quantize)`,
    );
  }
  const dtype = checkDtype(options.dtype ?? "f32");
  const adapter = await loadAdapterOption(options.adapter, config, root);
  const ckpt = await openCheckpoint(root);
  checkLlamaParameters(
    config,
    ckpt.tensorNames.map((name) => ({ name, shape: ckpt.locate.get(name)!.tensor.shape })),
    ckpt.dir,
  );
  // The graph computes its rotary angles, so any position works: the limit is the config's.
  const maxPositions = options.maxPositions ?? config.maxPositionEmbeddings;
  if (!Number.isInteger(maxPositions) || maxPositions < 1) {
    throw new Error(`export-onnx: maxPositions ${maxPositions} must be a positive integer`);
  }
  // BF16 / F16 checkpoints are widened to f32 exactly as they are read.
  const graph = buildLlamaGraph(config, (name) => readTensorAsF32(ckpt, name), {
    dtype,
    adapter,
  });
  return {
    exporter: LLAMA_EXPORTER_VERSION,
    graph,
    files,
    dtype,
    maxPositions,
    adapter,
    quantization: null,
  };
}

/** Writes the graph and then `onnx_export.json` (last: its presence marks a finished export). */
async function writeExport(
  root: string,
  outDir: string,
  p: PreparedExport,
  options: ExportOnnxOptions,
): Promise<OnnxExportInfo> {
  const { graph, adapter, dtype } = p;
  const quant = p.quantization;
  const weightBytes = graph.initializers.reduce((a, t) => a + initializerByteLength(t), 0);
  const external = options.externalData === undefined || options.externalData === "auto"
    ? weightBytes > EXTERNAL_AUTO_BYTES
    : options.externalData;
  await Deno.mkdir(outDir, { recursive: true });
  const progress = options.progress
    ? createProgress({ label: "exporting ONNX", total: weightBytes, unit: "B" })
    : undefined;
  const info: OnnxExportInfo = {
    exporter: p.exporter,
    opset: ONNX_OPSET,
    dtype,
    quantization: quant,
    ...(quant ? { quantAccuracy: options.quantAccuracy ?? "f32" } : {}),
    configHash: await configHash(p.files.config),
    config: p.files.json,
    ...(isLlamaConfig(p.files.config) ? { generationConfig: p.files.generation } : {}),
    maxPositions: p.maxPositions,
    externalData: external ? ONNX_DATA_FILE : null,
    source: {
      model: root,
      adapter: adapter
        ? {
          dir: typeof options.adapter === "string" ? options.adapter : adapter.source,
          hash: await adapterHash(adapter),
          r: adapter.config.r,
          alpha: adapter.config.loraAlpha,
          scaling: adapter.scaling,
          targets: [...adapter.config.targetModules],
        }
        : null,
    },
    createdAt: new Date().toISOString(),
  };
  // The info file goes last: its presence says the export is complete. A stale one from an
  // earlier export is removed first, so an interrupted export is never taken for finished.
  await Deno.remove(`${outDir}/${ONNX_EXPORT_INFO}`).catch(() => {});
  await writeOnnxModel(`${outDir}/${ONNX_MODEL_FILE}`, graph, {
    opset: ONNX_OPSET,
    opsets: quant ? { [MS_DOMAIN]: 1 } : undefined,
    producerName: "medglm",
    producerVersion: p.exporter,
    externalData: external ? ONNX_DATA_FILE : undefined,
    metadata: { exporter: p.exporter, dtype, config_hash: info.configHash },
    onProgress: progress ? (done) => progress.update(done) : undefined,
  });
  progress?.done();
  if (!external) await Deno.remove(`${outDir}/${ONNX_DATA_FILE}`).catch(() => {});
  await writeJsonAtomic(`${outDir}/${ONNX_EXPORT_INFO}`, info);
  return info;
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

/** A weight's quantized form: read as stored (pre-quantized) or quantized now from the floats. */
async function readQuantized(
  ckpt: Checkpoint,
  config: ChatGLMConfig,
  spec: QuantSpec,
  prequantized: boolean,
  name: string,
): Promise<QuantizedMatrix> {
  const [rows, cols] = parameterTable(config).find((p) => p.name === name)!.shape;
  const module = name.slice(0, -".weight".length);
  const groupSize = isPerRowModule(module) || spec.groupSize === null ? cols : spec.groupSize;
  if (!prequantized) {
    const t = await readTensor(ckpt, name);
    const w16 = viewAs(convertBytes(t.data, t.dtype, "F16"), Uint16Array);
    return quantizeF16(w16, rows, cols, spec.bits, groupSize, name);
  }
  const stored = await readTensor(ckpt, name);
  const bytes = new Int8Array(stored.data.buffer, stored.data.byteOffset, stored.data.byteLength);
  const scales = viewAs((await readTensor(ckpt, `${module}.weight_scale`)).data, Uint16Array);
  const q = spec.bits === 8 ? bytes : unpackInt4(bytes, rows, cols);
  return { bits: spec.bits, rows, cols, groupSize, q, scales };
}
