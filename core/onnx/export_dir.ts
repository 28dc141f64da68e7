/**
 * Exporting a model directory (HF config.json + weights, optionally a PEFT adapter merged in) to
 * an ONNX export directory: `model.onnx` (+ `model.onnx.data` for large models) and
 * `onnx_export.json` (export_info.ts), which says what the graph was made from so a runner can
 * refuse an export made for another model. ChatGLM-6B (export_chatglm.ts) and the Llama family
 * (export_llama.ts) share the directory and the info file; `exportModelToOnnx` picks by
 * `model_type`.
 */

import { createProgress, writeJsonAtomic } from "../../base/mod.ts";
import { type Checkpoint, openCheckpoint, readTensor, readTensorAsF32 } from "../io/checkpoint.ts";
import { loadLoraAdapter, type LoraAdapter } from "../adapters/lora_weights.ts";
import type { ChatGLMConfig } from "../models/chatglm/config.ts";
import { checkParameters } from "../models/chatglm/params.ts";
import type { LlamaConfig } from "../models/llama/config.ts";
import { checkParameters as checkLlamaParameters } from "../models/llama/params.ts";
import { llamaQuantArch } from "../models/llama/load.ts";
import { buildChatGLMGraph, EXPORTER_VERSION, ONNX_OPSET } from "./export_chatglm.ts";
import { buildLlamaGraph, LLAMA_EXPORTER_VERSION } from "./export_llama.ts";
import type { GraphQuantization, OnnxWeightDtype, WeightReader } from "./graph_parts.ts";
import {
  adapterBase,
  adapterHash,
  configHash,
  isLlamaConfig,
  type ModelConfigFiles,
  ONNX_DATA_FILE,
  ONNX_EXPORT_INFO,
  ONNX_MODEL_FILE,
  type OnnxExportInfo,
  type OnnxModelConfig,
  readConfigJson,
} from "./export_info.ts";
import { initializerByteLength, type OnnxGraph, writeOnnxModel } from "./onnx_model.ts";
import { MS_DOMAIN } from "./matmul_nbits.ts";
import { convertBytes, viewAs } from "../io/dtype.ts";
import { type QuantizedMatrix, quantizeF16, unpackInt4 } from "../quant/arith.ts";
import { groupSizeOf, type QuantSpec } from "../quant/format.ts";
import {
  chatglmQuantArch,
  checkQuantizedWeights,
  type QuantArch,
  type QuantizeOption,
  resolveQuantization,
} from "../models/chatglm/quantized.ts";

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
   * How MatMulNBits multiplies (see GraphQuantization.accuracyLevel): "int8" (default: ORT's fast
   * CPU path, activations rounded to int8 per block, the setting ORT's own model builders use on
   * CPU; int4 2.5–7× ORT's f32 MatMul, where f32 activations reach ~2×, and int8 weights have no
   * fast f32-activation kernel at all; the demo model's held-out perplexity moves by < 0.1%,
   * `deno task bench quant --quality`) or "f32" (exact: matches the WebGPU path to 1e-4).
   */
  quantAccuracy?: "int8" | "f32";
}

// What tests imported from here before export_info.ts was split off.
export { ONNX_EXPORT_INFO, readOnnxExportInfo } from "./export_info.ts";

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
  const arch = chatglmQuantArch(config);
  let tied = false;
  if (quant) tied = checkQuantizedWeights(arch, ckpt, quant.spec, quant.prequantized).tied;
  else {
    // A float checkpoint without lm_head.weight ties the output layer to the embeddings.
    tied = checkParameters(
      config,
      ckpt.tensorNames.map((name) => ({ name, shape: ckpt.locate.get(name)!.tensor.shape })),
      root,
    ).tiedHead;
  }
  const maxPositions = options.maxPositions ?? config.maxSequenceLength;
  const record = { exporter: EXPORTER_VERSION, files, dtype, maxPositions, adapter };
  return withGraph(
    record,
    { ckpt, arch, quant, tied },
    options,
    (read, q) => buildChatGLMGraph(config, read, { dtype, adapter, maxPositions, quant: q }),
  );
}

async function prepareLlama(
  root: string,
  files: ModelConfigFiles<LlamaConfig>,
  options: ExportOnnxOptions,
): Promise<PreparedExport> {
  const { config } = files;
  const dtype = checkDtype(options.dtype ?? "f32");
  const adapter = await loadAdapterOption(options.adapter, config, root);
  const ckpt = await openCheckpoint(root);
  // int8/int4: pre-quantized (config `medglm_quantization`) or quantized now (`--quantize`),
  // checked by the same rules as a WebGPU load (loadLlamaModel).
  const quant = resolveQuantization(config, options.quantize ?? undefined, root);
  const arch = llamaQuantArch(config);
  if (!quant?.prequantized) {
    checkLlamaParameters(
      config,
      ckpt.tensorNames.map((name) => ({ name, shape: ckpt.locate.get(name)!.tensor.shape })),
      ckpt.dir,
    );
  }
  const tied = quant
    ? checkQuantizedWeights(arch, ckpt, quant.spec, quant.prequantized).tied
    : config.tieWordEmbeddings;
  // The graph computes its rotary angles, so any position works: the limit is the config's.
  const maxPositions = options.maxPositions ?? config.maxPositionEmbeddings;
  if (!Number.isInteger(maxPositions) || maxPositions < 1) {
    throw new Error(`export-onnx: maxPositions ${maxPositions} must be a positive integer`);
  }
  const record = { exporter: LLAMA_EXPORTER_VERSION, files, dtype, maxPositions, adapter };
  return withGraph(
    record,
    { ckpt, arch, quant, tied },
    options,
    (read, q) => buildLlamaGraph(config, read, { dtype, adapter, quant: q }),
  );
}

/**
 * Both architectures' last step: the graph, built over the checkpoint's weights (widened to f32
 * as they are read; a tied head reads the embeddings) and, for int8/int4, their quantized
 * readers; returned with what the export records.
 */
function withGraph(
  record: Omit<PreparedExport, "graph" | "quantization">,
  src: {
    ckpt: Checkpoint;
    arch: QuantArch;
    quant: { spec: QuantSpec; prequantized: boolean } | null;
    tied: boolean;
  },
  options: ExportOnnxOptions,
  build: (read: WeightReader, quant: GraphQuantization | null) => OnnxGraph,
): PreparedExport {
  const { ckpt, arch, quant, tied } = src;
  const headOf = tiedHeadReader(arch, tied);
  const graph = build(
    (name) => readTensorAsF32(ckpt, headOf(name)),
    quant ? graphQuantization(ckpt, arch, quant, headOf, options) : null,
  );
  return { ...record, graph, quantization: quant?.spec ?? null };
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
    ...(quant ? { quantAccuracy: options.quantAccuracy ?? "int8" } : {}),
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

/** Maps the head's name to the embedding table's when the head is tied (absent as a tensor). */
function tiedHeadReader(arch: QuantArch, tied: boolean): (name: string) => string {
  const head = `${arch.layout.head}.weight`, embedding = `${arch.layout.embedding}.weight`;
  return (name) => tied && name === head ? embedding : name;
}

/** The graph's quantization: the spec, how MatMulNBits multiplies, and each weight's reader. */
function graphQuantization(
  ckpt: Checkpoint,
  arch: QuantArch,
  quant: { spec: QuantSpec; prequantized: boolean },
  headOf: (name: string) => string,
  options: ExportOnnxOptions,
): GraphQuantization {
  const { spec, prequantized } = quant;
  return {
    bits: spec.bits,
    groupSize: spec.groupSize,
    embeddings: spec.embeddings,
    layout: arch.layout,
    accuracyLevel: options.quantAccuracy === "f32" ? 0 : 4,
    read: (name) => readQuantized(ckpt, arch, spec, prequantized, headOf(name)),
  };
}

/**
 * A weight's quantized form: read as stored (pre-quantized) or quantized now from the floats, the
 * way a WebGPU load quantizes it (f16 values, core/quant/arith.ts), so both run the same weights.
 */
async function readQuantized(
  ckpt: Checkpoint,
  arch: QuantArch,
  spec: QuantSpec,
  prequantized: boolean,
  name: string,
): Promise<QuantizedMatrix> {
  const [rows, cols] = arch.parameters.find((p) => p.name === name)!.shape;
  const module = name.slice(0, -".weight".length);
  const groupSize = groupSizeOf(module, spec, arch.layout) ?? cols;
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
