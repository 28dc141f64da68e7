/**
 * A Llama-family model (Qwen2 / Qwen2.5, Qwen3, Llama 3) on the GPU: its fields and its step
 * functions (`LLAMA_STEPS`) behind the model methods shared with ChatGLM (chatglm/model.ts,
 * `assembleModel`). The math is in block.ts (one block), forward.ts (the pass), attention.ts
 * (attention variants); the steps in lockstep.ts.
 * README.md maps the spec (tests/fixtures/llama-family/README.md) to these functions.
 */

import type { Gpu } from "../../gpu/device.ts";
import type { LoraAdapter } from "../../adapters/lora_weights.ts";
import type { Embedding } from "../../nn/embedding.ts";
import type { Linear } from "../../nn/linear.ts";
import type { RmsNorm } from "../../nn/rms_norm.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import {
  assembleModel,
  type ModelMethods,
  type ModelSteps,
  type PartsOf,
} from "../chatglm/model.ts";
import { decodeSlots, prefillSlot, prefillSlots } from "./slots.ts";
import { decodeSlotsGroup } from "./decode_group.ts";
import { blockLinears, type LlamaBlock } from "./block.ts";
import type { LlamaConfig } from "./config.ts";
import { cacheOwner, decodeStep, forward, prefill } from "./lockstep.ts";
import { createCache } from "../chatglm/cache.ts";

export interface LlamaModel extends ModelMethods {
  readonly architecture: "llama";
  readonly config: LlamaConfig;
  /** Storage dtype of the base weights (compute is f32). */
  readonly dtype: "f32" | "f16";
  readonly gpu: Gpu;
  readonly maxContext: number;
  readonly source: string;
  readonly embedding: Embedding;
  readonly layers: LlamaBlock[];
  readonly norm: RmsNorm;
  /** The output layer; tied models use the embedding's tensor as its weight. */
  readonly lmHead: Linear;
  /** inv_freq [d/2] of the rotary (after Llama 3 scaling where configured). */
  readonly invFreq: Float32Array;
  /**
   * Largest activation buffer of one pass (default: the device's maxStorageBufferBindingSize);
   * a prefill whose activations exceed it runs in groups of rows.
   */
  readonly maxActivationBytes?: number;
  adapter: LoraAdapter | null;
}

/** Parts a model is assembled from (see load.ts): its fields without the methods. */
export type LlamaParts = Omit<PartsOf<LlamaModel>, "architecture">;

/** The Llama family's step functions behind the shared model methods (chatglm/model.ts). */
const LLAMA_STEPS: ModelSteps<LlamaModel> = {
  forward,
  createCache: (model, batch, maxLen) => createCache(cacheOwner(model), batch, maxLen),
  prefill,
  decodeStep,
  prefillSlot,
  prefillSlots,
  decodeSlots,
  decodeSlotsGroup,
  parameters: llamaModelParameters,
  loraLinears: (model) => model.layers.flatMap(blockLinears),
};

export function assembleLlama(parts: LlamaParts): LlamaModel {
  return assembleModel<LlamaModel>({ architecture: "llama", ...parts }, LLAMA_STEPS);
}

/** Every base parameter by checkpoint name (spec §3 order); a tied head is not listed twice. */
export function llamaModelParameters(model: LlamaModel): Map<string, Tensor> {
  const m = new Map<string, Tensor>();
  m.set(`${model.embedding.name}.weight`, model.embedding.weight);
  for (const l of model.layers) {
    m.set(`${l.inputNorm.name}.weight`, l.inputNorm.weight);
    for (const lin of blockLinears(l)) {
      m.set(`${lin.name}.weight`, lin.weight);
      if (lin.bias) m.set(`${lin.name}.bias`, lin.bias);
    }
    if (l.qNorm) m.set(`${l.qNorm.name}.weight`, l.qNorm.weight);
    if (l.kNorm) m.set(`${l.kNorm.name}.weight`, l.kNorm.weight);
    m.set(`${l.postNorm.name}.weight`, l.postNorm.weight);
  }
  m.set(`${model.norm.name}.weight`, model.norm.weight);
  if (model.lmHead.weight !== model.embedding.weight) m.set("lm_head.weight", model.lmHead.weight);
  return m;
}
