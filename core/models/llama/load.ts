/**
 * `loadLlamaModel(dir, options)`: a Qwen2 / Qwen3 / Llama 3 model from an HF model directory
 * (config.json + safetensors, one file or sharded, F32 / F16 / BF16 — read by core/io), with an
 * optional PEFT LoRA adapter (module names `model.layers.N.self_attn.q_proj` …).
 */

import { getGpu, type Gpu } from "../../gpu/device.ts";
import { openCheckpoint, readTensorAsF32 } from "../../io/checkpoint.ts";
import { readTensor, releaseTensor, type Tensor, uploadTensor } from "../../tensor/tensor.ts";
import { mergeLoraWeight } from "../../adapters/merge.ts";
import { createEmbedding } from "../../nn/embedding.ts";
import { createLinear } from "../../nn/linear.ts";
import { createLoraLinear, disposeLoraBranch, type LoraLinear } from "../../nn/lora_linear.ts";
import { createRmsNorm } from "../../nn/rms_norm.ts";
import { loadLoraAdapter, type LoraAdapter } from "../../adapters/lora_weights.ts";
import {
  defaultWeightDtype,
  parameterCount,
  uploadWeights,
  type WeightDtype,
} from "../chatglm/weights.ts";
import {
  assertMergeable,
  attachToLinears,
  largestTensorBytes,
  type LoadModelOptions,
} from "../chatglm/load.ts";
import { assertPlanFits, formatMemoryPlan, planMemoryOf } from "../chatglm/memory_plan.ts";
import { llamaPlanArch } from "./memory_plan.ts";
import {
  type QuantArch,
  resolveQuantization,
  uploadQuantizedWeights,
} from "../chatglm/quantized.ts";
import { LLAMA_QUANT_LAYOUT } from "../../quant/format.ts";
import type { LlamaBlock } from "./block.ts";
import { type LlamaConfig, readLlamaConfig } from "./config.ts";
import { assembleLlama, type LlamaModel } from "./model.ts";
import {
  checkParameters,
  hasBias,
  isIgnoredTensor,
  linearShapes,
  llamaParameters,
} from "./params.ts";
import { llamaInvFreq } from "./rotary.ts";

/** The largest number of keys the attention kernel handles per row. */
const ATTENTION_MAX_KEYS = 4096;

/** The context a load gets by default: the config's, up to what the attention kernel handles. */
export function defaultLlamaContext(config: LlamaConfig): number {
  return Math.min(config.maxPositionEmbeddings, ATTENTION_MAX_KEYS);
}

export async function loadLlamaModel(
  dir: string,
  options: LoadModelOptions = {},
): Promise<LlamaModel> {
  const root = dir.replace(/\/+$/, "") || dir;
  const config = await readLlamaConfig(root);
  const gpu: Gpu = options.gpu ?? await getGpu();
  // The same default as ChatGLM-6B's (defaultWeightDtype: by adapter and model size).
  const dtype: WeightDtype = options.dtype ??
    defaultWeightDtype(gpu, parameterCount(llamaParameters(config)));
  if (dtype !== "f32" && dtype !== "f16") {
    throw new Error(`loadModel: dtype ${JSON.stringify(dtype)} is not supported (f32 or f16)`);
  }
  const maxContext = options.maxContext ?? defaultLlamaContext(config);
  if (!Number.isInteger(maxContext) || maxContext < 1 || maxContext > ATTENTION_MAX_KEYS) {
    throw new Error(
      `loadModel: maxContext ${maxContext} must be an integer in [1, ${ATTENTION_MAX_KEYS}]`,
    );
  }
  const adapter = typeof options.adapter === "string"
    ? await loadLoraAdapter(options.adapter, { linearModules: linearShapes(config), name: root })
    : options.adapter ?? null;
  const ckpt = await openCheckpoint(root);
  // int8/int4: pre-quantized (config `medglm_quantization`) or quantized at load (`quantize`),
  // checked and uploaded by the one quantized path with this family's layout table.
  const quant = resolveQuantization(config, options.quantize, root);
  if (!quant?.prequantized) {
    const stored = ckpt.tensorNames.map((name) => ({
      name,
      shape: ckpt.locate.get(name)!.tensor.shape,
    }));
    checkParameters(config, stored, ckpt.dir);
    if (config.tieWordEmbeddings && ckpt.locate.has("lm_head.weight")) {
      // Some converters write the tied head too: it must be the embedding (spec §3).
      const [a, b] = await Promise.all([
        readTensorAsF32(ckpt, "lm_head.weight"),
        readTensorAsF32(ckpt, "model.embed_tokens.weight"),
      ]);
      if (a.some((v, i) => v !== b[i])) {
        throw new Error(
          `${ckpt.dir}: lm_head.weight differs from model.embed_tokens.weight in a tied model ` +
            "(tie_word_embeddings: true)",
        );
      }
    }
  }
  // The plan (printed, and checked against the binding limits and a budget) before any upload.
  // Float weights are not packed at load: on a software adapter the forward packs each linear
  // weight's texture beside its buffer.
  const plan = planMemoryOf(llamaPlanArch(config), {
    dtype,
    maxContext,
    batch: options.maxBatch ?? 1,
    adapter: adapter ?? undefined,
    tiedHead: config.tieWordEmbeddings,
    software: gpu.isSoftware,
    packedWeights: false,
    largestStoredTensorBytes: largestTensorBytes(ckpt),
    quant: quant?.spec,
  });
  (options.log ?? ((line: string) => console.error(line)))(formatMemoryPlan(plan));
  // A prompt too long for one binding is refused by the step that gets it ("use a shorter
  // input"): the real 7–8B configs' MLP rows at the default 4096 positions exceed llvmpipe's 128
  // MiB, which must not stop loading them for shorter inputs.
  const loadBindings = plan.bindings.filter((b) => !b.perRow);
  assertPlanFits({ ...plan, bindings: loadBindings }, gpu.limits, options.memoryBudgetBytes);
  const progress = { onProgress: options.onProgress, progressBar: options.progressBar };
  const weights = quant
    ? await uploadQuantizedWeights(gpu, ckpt, llamaQuantArch(config), {
      dtype,
      ...quant,
      design: options.quantDesign,
      ...progress,
    })
    : await uploadWeights(gpu, ckpt, (n) => !isIgnoredTensor(n, config), { dtype, ...progress });
  const model = assembleLlama({
    // The model's config says how its weights were loaded (also when quantized at load).
    config: quant ? { ...config, quantization: quant.spec } : config,
    dtype,
    gpu,
    maxContext,
    source: root,
    ...assembleLlamaWeights(config, weights),
    invFreq: llamaInvFreq(config.headDim, config.rope),
    adapter: null,
    maxActivationBytes: options.maxActivationBytes,
  });
  if (adapter) {
    try {
      attachLlamaAdapter(model, adapter);
    } catch (err) {
      model.dispose();
      throw err;
    }
  }
  return model;
}

/** The Llama family's quantized layout with this config's parameter table. */
export function llamaQuantArch(config: LlamaConfig): QuantArch {
  return {
    layout: LLAMA_QUANT_LAYOUT,
    parameters: llamaParameters(config),
    isIgnored: (name) => isIgnoredTensor(name, config),
    tieWordEmbeddings: config.tieWordEmbeddings,
  };
}

/** The model's layers from its weights by checkpoint name. */
export function assembleLlamaWeights(
  config: LlamaConfig,
  w: Map<string, Tensor>,
): Pick<LlamaModel, "embedding" | "layers" | "norm" | "lmHead"> {
  const get = (name: string) => {
    const t = w.get(name);
    if (!t) throw new Error(`internal: weight ${name} was not loaded`);
    return t;
  };
  const eps = config.rmsNormEps;
  const norm = (name: string) => createRmsNorm(name, get(`${name}.weight`), eps);
  const layers: LlamaBlock[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}`;
    const lin = (suffix: string) =>
      createLoraLinear(
        createLinear(
          `${p}.${suffix}`,
          get(`${p}.${suffix}.weight`),
          hasBias(config, suffix) ? get(`${p}.${suffix}.bias`) : null,
        ),
      );
    layers.push({
      index: l,
      inputNorm: norm(`${p}.input_layernorm`),
      q: lin("self_attn.q_proj"),
      k: lin("self_attn.k_proj"),
      v: lin("self_attn.v_proj"),
      o: lin("self_attn.o_proj"),
      qNorm: config.qkNorm ? norm(`${p}.self_attn.q_norm`) : null,
      kNorm: config.qkNorm ? norm(`${p}.self_attn.k_norm`) : null,
      postNorm: norm(`${p}.post_attention_layernorm`),
      gate: lin("mlp.gate_proj"),
      up: lin("mlp.up_proj"),
      down: lin("mlp.down_proj"),
    });
  }
  const embedding = createEmbedding("model.embed_tokens", get("model.embed_tokens.weight"));
  const head = config.tieWordEmbeddings ? embedding.weight : get("lm_head.weight");
  return { embedding, layers, norm: norm("model.norm"), lmHead: createLinear("lm_head", head) };
}

/** The model's linear layers by full module name. */
export function llamaLinears(model: LlamaModel): Map<string, LoraLinear> {
  const out = new Map<string, LoraLinear>();
  for (const l of model.layers) {
    for (const lin of [l.q, l.k, l.v, l.o, l.gate, l.up, l.down]) out.set(lin.name, lin);
  }
  return out;
}

/** Uploads an adapter's A, B (f32) into the targeted layers. */
export function attachLlamaAdapter(model: LlamaModel, adapter: LoraAdapter): void {
  attachToLinears(model, llamaLinears(model), adapter);
}

/** Removes the adapter's branches (their GPU memory goes back to the pool). */
export function detachLlamaAdapter(model: LlamaModel): void {
  for (const lin of llamaLinears(model).values()) disposeLoraBranch(lin);
  model.adapter = null;
}

/**
 * Merge-and-unload: W' = W + scaling · (B · A) for every targeted weight (on the CPU in f32, then
 * stored back in the model's dtype); the adapter is detached.
 */
export async function mergeLlamaAdapter(model: LlamaModel): Promise<void> {
  const adapter = model.adapter;
  if (!adapter) throw new Error("mergeAdapter: the model has no adapter");
  const linears = llamaLinears(model);
  assertMergeable(adapter, linears);
  for (const [name, m] of adapter.modules) {
    const lin = linears.get(name)!;
    const w = await readTensor(lin.weight) as Float32Array;
    const merged = mergeLoraWeight(w, m, adapter.scaling);
    const fresh = uploadTensor(model.gpu, merged, [m.outFeatures, m.inFeatures], lin.weight.dtype, {
      label: `${name}.weight`,
    });
    releaseTensor(lin.weight);
    lin.weight = fresh;
  }
  detachLlamaAdapter(model);
}
