/**
 * Exporting a model directory (HF config.json + weights, optionally a PEFT adapter merged in) to
 * an ONNX export directory: `model.onnx` (+ `model.onnx.data` for large models) and
 * `onnx_export.json`, which says what the graph was made from so a runner can refuse an export
 * made for another model.
 */

import { createProgress, readJsonFile, writeJsonAtomic } from "../../base/mod.ts";
import { concatArrays } from "../io/concat.ts";
import { type Checkpoint, openCheckpoint, readTensor, readTensorAsF32 } from "../io/checkpoint.ts";
import { loadLoraAdapter, type LoraAdapter } from "../adapters/lora_weights.ts";
import { type ChatGLMConfig, parseChatGLMConfig } from "../models/chatglm/config.ts";
import { checkParameters, linearModules, parameterTable } from "../models/chatglm/params.ts";
import {
  buildChatGLMGraph,
  EXPORTER_VERSION,
  ONNX_OPSET,
  type OnnxWeightDtype,
} from "./export_chatglm.ts";
import { initializerByteLength, writeOnnxModel } from "./onnx_model.ts";
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
export async function configHash(config: ChatGLMConfig): Promise<string> {
  const { torchDtype: _informational, quantization, tieWordEmbeddings, ...all } = config;
  // The quantization keys count only when set, so float exports keep their earlier hashes.
  const rest: Record<string, unknown> = { ...all };
  if (quantization) rest.quantization = quantization;
  if (tieWordEmbeddings === false) rest.tieWordEmbeddings = false;
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

async function readConfigJson(
  dir: string,
): Promise<{ json: Record<string, unknown>; config: ChatGLMConfig }> {
  const path = `${dir}/config.json`;
  const json = await readJsonFile(path, {
    notFoundHint: "a model directory needs an HF config.json",
  });
  const config = parseChatGLMConfig(json, path);
  return { json: json as Record<string, unknown>, config };
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
   * How MatMulNBits multiplies (see GraphQuantization.accuracyLevel): "int8" (default: ORT's fast
   * CPU path, activations rounded to int8 per block, the setting ORT's own model builders use on
   * CPU; int4 2.5–7× ORT's f32 MatMul, where f32 activations reach ~2×, and int8 weights have no
   * fast f32-activation kernel at all; the demo model's held-out perplexity moves by < 0.1%,
   * `deno task bench quant --quality`) or "f32" (exact: matches the WebGPU path to 1e-4).
   */
  quantAccuracy?: "int8" | "f32";
}

const EXTERNAL_AUTO_BYTES = 1.5 * 2 ** 30;

/** Exports `modelDir` to `outDir`; returns the written `onnx_export.json` contents. */
export async function exportChatGLMToOnnx(
  modelDir: string,
  outDir: string,
  options: ExportOnnxOptions = {},
): Promise<OnnxExportInfo> {
  const root = modelDir.replace(/\/+$/, "") || modelDir;
  const { json, config } = await readConfigJson(root);
  const dtype = options.dtype ?? "f32";
  if (dtype !== "f32" && dtype !== "f16") {
    throw new Error(`export-onnx: --dtype ${JSON.stringify(dtype)} is not supported (f32 or f16)`);
  }
  const adapter = typeof options.adapter === "string"
    ? await loadLoraAdapter(options.adapter, { linearModules: linearModules(config), name: root })
    : options.adapter ?? null;
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
        accuracyLevel: options.quantAccuracy === "f32" ? 0 : 4,
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
  const weightBytes = graph.initializers.reduce((a, t) => a + initializerByteLength(t), 0);
  const external = options.externalData === undefined || options.externalData === "auto"
    ? weightBytes > EXTERNAL_AUTO_BYTES
    : options.externalData;
  await Deno.mkdir(outDir, { recursive: true });
  const progress = options.progress
    ? createProgress({ label: "exporting ONNX", total: weightBytes, unit: "B" })
    : undefined;
  const info: OnnxExportInfo = {
    exporter: EXPORTER_VERSION,
    opset: ONNX_OPSET,
    dtype,
    quantization: quant?.spec ?? null,
    ...(quant ? { quantAccuracy: options.quantAccuracy ?? "int8" } : {}),
    configHash: await configHash(config),
    config: json,
    maxPositions,
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
    producerVersion: EXPORTER_VERSION,
    externalData: external ? ONNX_DATA_FILE : undefined,
    metadata: { exporter: EXPORTER_VERSION, dtype, config_hash: info.configHash },
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
): Promise<{ info: OnnxExportInfo; config: ChatGLMConfig }> {
  const path = `${dir.replace(/\/+$/, "")}/${ONNX_EXPORT_INFO}`;
  const info = await readJsonFile(path, {
    notFoundHint: `${dir} holds no finished ONNX export ` +
      "(make one with `deno task export-onnx --model DIR --out DIR`)",
  }) as unknown as OnnxExportInfo;
  const fail = (msg: string): never => {
    throw new Error(`${path}: ${msg}`);
  };
  if (info === null || typeof info !== "object") fail("expected a JSON object");
  if (info.exporter !== EXPORTER_VERSION) {
    fail(
      `made by exporter ${JSON.stringify(info.exporter)}, this runner reads ${EXPORTER_VERSION}: ` +
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
  const config = parseChatGLMConfig(info.config, `${path} (config)`);
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
  const adapter = await loadLoraAdapter(adapterDir, {
    linearModules: linearModules(config),
    name: root,
  });
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
