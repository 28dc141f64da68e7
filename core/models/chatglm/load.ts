/**
 * `loadModel(dir, options)`: a ChatGLM-6B model from an HF model directory (config.json + weights
 * in any layout core/io reads), optionally with a PEFT LoRA adapter; plus attaching, detaching and
 * merging adapters on a loaded model.
 */

import { getGpu, type Gpu } from "../../gpu/device.ts";
import { type Checkpoint, openCheckpoint } from "../../io/checkpoint.ts";
import { readTensor, releaseTensor, type Tensor, uploadTensor } from "../../tensor/tensor.ts";
import { createEmbedding } from "../../nn/embedding.ts";
import { createLayerNorm } from "../../nn/layer_norm.ts";
import { createLinear } from "../../nn/linear.ts";
import { createLoraLinear, type LoraLinear } from "../../nn/lora_linear.ts";
import { loadLoraAdapter, type LoraAdapter } from "../../adapters/lora_weights.ts";
import { mergeLoraWeight } from "../../adapters/merge.ts";
import { type ChatGLMConfig, readChatGLMConfig } from "./config.ts";
import type { ChatGLMBlock } from "./block.ts";
import { assembleChatGLM, type ChatGLMModel, type ChatGLMParts } from "./model.ts";
import { assertPlanFits, formatMemoryPlan, planMemory } from "./memory_plan.ts";
import {
  checkParameters,
  linearModules,
  LM_HEAD,
  parameterTable,
  WORD_EMBEDDINGS,
} from "./params.ts";
import {
  defaultWeightDtype,
  type LoadProgress,
  packWeight,
  parameterCount,
  readParameterF32,
  uploadChatGLMWeights,
  type WeightDtype,
} from "./weights.ts";
import { type QuantizeOption, resolveQuantization, uploadQuantizedChatGLM } from "./quantized.ts";

export interface LoadModelOptions {
  /** Storage dtype of the base weights (compute is always f32). Default: `defaultWeightDtype` (by adapter and model size). */
  dtype?: WeightDtype;
  /** A PEFT adapter directory (or an adapter already loaded). */
  adapter?: string | LoraAdapter;
  /** Longest prompt + generation the model accepts (default: config max_sequence_length). */
  maxContext?: number;
  /** Batch rows the memory plan reserves KV cache for (default 1). */
  maxBatch?: number;
  /** Refuse to load when the plan's total exceeds this many bytes of GPU memory. */
  memoryBudgetBytes?: number;
  /**
   * Quantize a full-precision checkpoint's linear layers at load (the original's int8/int4
   * arithmetic; core/models/chatglm/quantized.ts). A pre-quantized checkpoint needs no option.
   */
  quantize?: QuantizeOption;
  /** Storage of quantized weights: "texture" (default on software adapters) or "buffer". */
  quantDesign?: "texture" | "buffer";
  onProgress?: (p: LoadProgress) => void;
  /** Progress bar on stderr (default: when stderr is a terminal). */
  progressBar?: boolean;
  /** Where the memory plan is printed (default: stderr). */
  log?: (line: string) => void;
  /** The device (default: the shared one). */
  gpu?: Gpu;
  /**
   * The model will be trained (LoRA or full): every weight keeps its storage buffer, which the
   * backward kernels read. Default false: on a software adapter each linear weight then lives
   * only as the packed texture the forward kernels read (one copy of the weights, not two).
   */
  trainable?: boolean;
  /** Largest storage chunk of a weight in bytes (default: the binding limit; tests force it small). */
  chunkBytes?: number;
  /**
   * Largest activation buffer of one pass (default: the device's binding limit); longer batched
   * prefills run in groups of rows. Tests set it small.
   */
  maxActivationBytes?: number;
}

/** The largest number of keys the attention kernel handles per row. */
const ATTENTION_MAX_KEYS = 4096;

export async function loadModel(
  dir: string,
  options: LoadModelOptions = {},
): Promise<ChatGLMModel> {
  const root = dir.replace(/\/+$/, "") || dir;
  const config = await readChatGLMConfig(root);
  const gpu = options.gpu ?? await getGpu();
  const dtype: WeightDtype = options.dtype ??
    defaultWeightDtype(gpu, parameterCount(parameterTable(config)));
  if (dtype !== "f32" && dtype !== "f16") {
    throw new Error(`loadModel: dtype ${JSON.stringify(dtype)} is not supported (f32 or f16)`);
  }
  const maxContext = options.maxContext ?? config.maxSequenceLength;
  if (!Number.isInteger(maxContext) || maxContext < 1 || maxContext > ATTENTION_MAX_KEYS) {
    throw new Error(
      `loadModel: maxContext ${maxContext} must be an integer in [1, ${ATTENTION_MAX_KEYS}]`,
    );
  }
  // Read the adapter before any upload, so a wrong adapter fails fast.
  const adapter = typeof options.adapter === "string"
    ? await loadLoraAdapter(options.adapter, { linearModules: linearModules(config), name: root })
    : options.adapter ?? null;
  // Headers only: the weights present are checked against config.json before anything is
  // sized from it or allocated (a quantized checkpoint by its own rules, in quantized.ts).
  const ckpt = await openCheckpoint(root);
  const quant = resolveQuantization(config, options.quantize, root);
  const { tiedHead } = quant?.prequantized
    ? { tiedHead: !ckpt.locate.has(LM_HEAD) }
    : checkParameters(
      config,
      ckpt.tensorNames.map((name) => ({ name, shape: ckpt.locate.get(name)!.tensor.shape })),
      ckpt.dir,
    );
  const plan = planMemory(config, {
    dtype,
    maxContext,
    batch: options.maxBatch ?? 1,
    adapter: adapter ?? undefined,
    tiedHead,
    packedWeights: gpu.isSoftware && !options.trainable,
    largestStoredTensorBytes: largestTensorBytes(ckpt),
    quant: quant?.spec,
  });
  const log = options.log ?? ((line: string) => console.error(line));
  log(formatMemoryPlan(plan));
  assertPlanFits(plan, gpu.limits, options.memoryBudgetBytes);

  let weights: Map<string, Tensor>;
  if (quant) {
    weights = await uploadQuantizedChatGLM(gpu, ckpt, config, {
      dtype,
      onProgress: options.onProgress,
      progressBar: options.progressBar,
      ...quant,
      design: options.quantDesign,
    });
  } else {
    const uploaded = await uploadChatGLMWeights(gpu, ckpt, config, {
      dtype,
      onProgress: options.onProgress,
      progressBar: options.progressBar,
      trainable: options.trainable,
      chunkBytes: options.chunkBytes,
    });
    weights = uploaded.tensors;
    const { readMs, uploadMs, submitMs, waitMs } = uploaded.timing;
    const s = (ms: number) => (ms / 1000).toFixed(1);
    log(
      `${root}: weights read ${s(readMs)} s, handed to the GPU ${s(uploadMs)} s, submitted ${
        s(submitMs)
      } s, GPU wait ${s(waitMs)} s`,
    );
    if (uploaded.tiedHead) log(`${root}: no ${LM_HEAD}; the output layer uses ${WORD_EMBEDDINGS}`);
  }
  const model = assembleChatGLM({
    // The model's config says how its weights were loaded (also when quantized at load).
    config: quant ? { ...config, quantization: quant.spec } : config,
    dtype,
    gpu,
    maxContext,
    source: root,
    ...assembleWeights(config, weights),
    adapter: null,
    maxActivationBytes: options.maxActivationBytes,
  });
  checkpointOf.set(model, ckpt);
  if (adapter) {
    try {
      attachAdapter(model, adapter);
    } catch (err) {
      model.dispose();
      throw err;
    }
  }
  return model;
}

/** Where a loaded model's weights came from (to re-read a weight kept only as a texture). */
const checkpointOf = new WeakMap<ChatGLMModel, Checkpoint>();

/** The largest stored tensor's bytes (a load reads it whole). */
export function largestTensorBytes(ckpt: Checkpoint): number {
  let max = 0;
  for (const { tensor } of ckpt.locate.values()) max = Math.max(max, tensor.byteLength);
  return max;
}

/** The model's layers from its weights by checkpoint name (as loaded or freshly made). */
export function assembleWeights(
  config: ChatGLMConfig,
  w: Map<string, Tensor>,
): Pick<ChatGLMParts, "embedding" | "layers" | "finalLayerNorm" | "lmHead"> {
  const get = (name: string) => {
    const t = w.get(name);
    if (!t) throw new Error(`internal: weight ${name} was not loaded`);
    return t;
  };
  const eps = config.layernormEpsilon;
  const norm = (name: string) =>
    createLayerNorm(name, get(`${name}.weight`), get(`${name}.bias`), eps);
  const lin = (name: string) =>
    createLoraLinear(createLinear(name, get(`${name}.weight`), get(`${name}.bias`)));
  const layers: ChatGLMBlock[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const p = `transformer.layers.${l}`;
    layers.push({
      index: l,
      inputLayerNorm: norm(`${p}.input_layernorm`),
      queryKeyValue: lin(`${p}.attention.query_key_value`),
      dense: lin(`${p}.attention.dense`),
      postAttentionLayerNorm: norm(`${p}.post_attention_layernorm`),
      denseHTo4h: lin(`${p}.mlp.dense_h_to_4h`),
      dense4hToH: lin(`${p}.mlp.dense_4h_to_h`),
    });
  }
  return {
    embedding: createEmbedding(
      "transformer.word_embeddings",
      get("transformer.word_embeddings.weight"),
    ),
    layers,
    finalLayerNorm: norm("transformer.final_layernorm"),
    lmHead: createLinear("lm_head", get("lm_head.weight"), null),
  };
}

/** The model's linear layers by full module name. */
export function modelLinears(model: ChatGLMModel): Map<string, LoraLinear> {
  const out = new Map<string, LoraLinear>();
  for (const layer of model.layers) {
    for (const lin of [layer.queryKeyValue, layer.dense, layer.denseHTo4h, layer.dense4hToH]) {
      out.set(lin.name, lin);
    }
  }
  return out;
}

/** Uploads an adapter's A, B (f32) into the targeted layers. One adapter at a time. */
export function attachAdapter(model: ChatGLMModel, adapter: LoraAdapter): void {
  attachToLinears(model, modelLinears(model), adapter);
}

/** {@link attachAdapter} for any architecture, given its linear layers by module name. */
export function attachToLinears(
  model: { gpu: Gpu; adapter: LoraAdapter | null },
  linears: Map<string, LoraLinear>,
  adapter: LoraAdapter,
): void {
  if (model.adapter) {
    throw new Error("attachAdapter: the model already has an adapter; detach it first");
  }
  for (const [name, m] of adapter.modules) {
    const lin = linears.get(name);
    if (!lin) throw new Error(`attachAdapter: the model has no linear module ${name}`);
    if (lin.inFeatures !== m.inFeatures || lin.outFeatures !== m.outFeatures) {
      throw new Error(
        `attachAdapter: ${name} is [${lin.outFeatures}, ${lin.inFeatures}], the adapter expects ` +
          `[${m.outFeatures}, ${m.inFeatures}]`,
      );
    }
  }
  for (const [name, m] of adapter.modules) {
    const lin = linears.get(name)!;
    lin.lora = {
      r: m.r,
      scaling: adapter.scaling,
      dropout: adapter.config.loraDropout,
      a: uploadTensor(model.gpu, m.a, [m.r, m.inFeatures], "f32", { label: `${name}.lora_A` }),
      b: uploadTensor(model.gpu, m.b, [m.outFeatures, m.r], "f32", { label: `${name}.lora_B` }),
    };
  }
  model.adapter = adapter;
}

/** Removes the adapter's branches (their GPU memory goes back to the pool). */
export function detachAdapter(model: ChatGLMModel): void {
  for (const lin of modelLinears(model).values()) {
    if (!lin.lora) continue;
    releaseTensor(lin.lora.a);
    releaseTensor(lin.lora.b);
    lin.lora = null;
  }
  model.adapter = null;
}

/**
 * The attached adapter with its A, B read back from the GPU (e.g. after training), ready for
 * `saveLoraAdapter`.
 */
export async function adapterFromModel(model: ChatGLMModel): Promise<LoraAdapter> {
  return await adapterFromLinears(model, modelLinears(model));
}

/** {@link adapterFromModel} for any architecture, given its linear layers by module name. */
export async function adapterFromLinears(
  model: { adapter: LoraAdapter | null },
  linears: Map<string, LoraLinear>,
): Promise<LoraAdapter> {
  const adapter = model.adapter;
  if (!adapter) throw new Error("adapterFromModel: the model has no adapter");
  const modules = new Map(adapter.modules);
  for (const [name, m] of adapter.modules) {
    const lora = linears.get(name)?.lora;
    if (!lora) throw new Error(`adapterFromModel: ${name} has no LoRA branch`);
    const a = await readTensor(lora.a) as Float32Array;
    const b = await readTensor(lora.b) as Float32Array;
    modules.set(name, { ...m, a, b });
  }
  return { ...adapter, modules };
}

/** Refuses to merge an adapter into int8/int4 weights (any architecture's linear layers). */
export function assertMergeable(adapter: LoraAdapter, linears: Map<string, LoraLinear>): void {
  if ([...adapter.modules.keys()].some((name) => linears.get(name)?.weight.quant)) {
    throw new Error(
      "mergeAdapter: the model's weights are quantized (int8/int4); an adapter cannot be merged " +
        "into them: keep it attached (leave out --merged) or load the model without --quantize",
    );
  }
}

/**
 * Merge-and-unload on a loaded model: W' = W + scaling · (B · A) for every targeted weight (done on
 * the CPU in f32, then stored back in the model's dtype), and the adapter is detached.
 */
export async function mergeAdapter(model: ChatGLMModel): Promise<void> {
  const adapter = model.adapter;
  if (!adapter) throw new Error("mergeAdapter: the model has no adapter");
  const linears = modelLinears(model);
  assertMergeable(adapter, linears);
  for (const [name, m] of adapter.modules) {
    const lin = linears.get(name)!;
    // A weight kept only as its packed texture has no buffer to read: re-read the checkpoint.
    const packedOnly = Boolean(lin.weight.meta.storageDropped);
    const ckpt = checkpointOf.get(model);
    if (packedOnly && !ckpt) {
      throw new Error(`mergeAdapter: ${name}.weight has no storage and no checkpoint to re-read`);
    }
    const w = packedOnly
      ? await readParameterF32(ckpt!, `${name}.weight`)
      : await readTensor(lin.weight) as Float32Array;
    const merged = mergeLoraWeight(w, m, adapter.scaling);
    const fresh = uploadTensor(model.gpu, merged, [m.outFeatures, m.inFeatures], lin.weight.dtype, {
      label: `${name}.weight`,
    });
    if (packedOnly) await packWeight(model.gpu, fresh, true);
    releaseTensor(lin.weight);
    lin.weight = fresh;
  }
  detachAdapter(model);
}
