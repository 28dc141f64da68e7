/**
 * A Llama-family model (Qwen2 / Qwen2.5, Qwen3, Llama 3) on the GPU: the model object and its
 * public interface, the same as ChatGLM's for the lockstep steps. The math is in block.ts (one
 * block), forward.ts (the pass), attention.ts (attention variants); the steps in lockstep.ts.
 * README.md maps the spec (tests/fixtures/llama-family/README.md) to these functions.
 */

import type { Gpu } from "../../gpu/device.ts";
import type { LoraAdapter } from "../../adapters/lora_weights.ts";
import type { Embedding } from "../../nn/embedding.ts";
import type { Linear } from "../../nn/linear.ts";
import type { RmsNorm } from "../../nn/rms_norm.ts";
import { releaseTensor, type Tensor } from "../../tensor/tensor.ts";
import type { ChatGLMCache } from "../chatglm/cache.ts";
import type {
  ForwardOptions,
  PrefillOptions,
  SlotPrompt,
  SlotStep,
  StepProfile,
} from "../chatglm/model.ts";
import { decodeSlots, prefillSlot, prefillSlots } from "./slots.ts";
import { decodeSlotsGroup } from "./decode_group.ts";
import { endGroups, rewindSlot, type SlotGroup } from "../chatglm/decode_group.ts";
import { blockLinears, type LlamaBlock } from "./block.ts";
import type { LlamaConfig } from "./config.ts";
import { cacheOwner, decodeStep, forward, prefill } from "./lockstep.ts";
import { createCache, releaseSlot } from "../chatglm/cache.ts";

export interface LlamaModel {
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
  /** Logits [b, s, V] of unpadded or left-padded rows (the config's pad id). */
  forward(inputIds: number[][], options?: ForwardOptions): Promise<Float32Array>;
  createCache(batch: number, maxLen?: number): ChatGLMCache;
  prefill(
    inputIds: number[][],
    cache: ChatGLMCache,
    options?: PrefillOptions,
  ): Promise<Float32Array>;
  decodeStep(nextIds: number[], cache: ChatGLMCache): Promise<Float32Array>;
  /** Continuous batching: one unpadded prompt into row `slot`; logits of its last position [V]. */
  prefillSlot(ids: number[], cache: ChatGLMCache, slot: number): Promise<Float32Array>;
  /** Several unpadded prompts into their slots in one batched prefill; [n, V]. */
  prefillSlots(entries: SlotPrompt[], cache: ChatGLMCache): Promise<Float32Array>;
  /** One token appended to each listed slot (each its own length); [steps.length, V]. */
  decodeSlots(steps: SlotStep[], cache: ChatGLMCache): Promise<Float32Array>;
  /** k steps over some slots with the ids sampled on the GPU, read back once (decode_group.ts). */
  decodeSlotsGroup(group: SlotGroup, cache: ChatGLMCache): Promise<Int32Array>;
  /** Keeps a slot's first `length` positions (a group's tail redone on the host). */
  rewindSlot(cache: ChatGLMCache, slot: number, length: number): void;
  /** Frees what grouped decoding keeps between groups. */
  endGroups(cache: ChatGLMCache): void;
  releaseSlot(cache: ChatGLMCache, slot: number): void;
  /** Every base parameter by checkpoint name (tied: no lm_head entry). */
  parameters(): Map<string, Tensor>;
  dispose(): void;
  disposed: boolean;
  profiler: ((p: StepProfile) => void) | null;
}

export type LlamaParts = Pick<
  LlamaModel,
  | "config"
  | "dtype"
  | "gpu"
  | "maxContext"
  | "source"
  | "embedding"
  | "layers"
  | "norm"
  | "lmHead"
  | "invFreq"
  | "adapter"
  | "maxActivationBytes"
>;

export function assembleLlama(parts: LlamaParts): LlamaModel {
  return new Llama(parts);
}

class Llama implements LlamaModel {
  readonly architecture = "llama" as const;
  readonly config: LlamaConfig;
  readonly dtype: "f32" | "f16";
  readonly gpu: Gpu;
  readonly maxContext: number;
  readonly source: string;
  readonly embedding: Embedding;
  readonly layers: LlamaBlock[];
  readonly norm: RmsNorm;
  readonly lmHead: Linear;
  readonly invFreq: Float32Array;
  readonly maxActivationBytes?: number;
  adapter: LoraAdapter | null;
  disposed = false;
  profiler: ((p: StepProfile) => void) | null = null;

  constructor(p: LlamaParts) {
    this.config = p.config;
    this.dtype = p.dtype;
    this.gpu = p.gpu;
    this.maxContext = p.maxContext;
    this.source = p.source;
    this.embedding = p.embedding;
    this.layers = p.layers;
    this.norm = p.norm;
    this.lmHead = p.lmHead;
    this.invFreq = p.invFreq;
    this.maxActivationBytes = p.maxActivationBytes;
    this.adapter = p.adapter;
  }

  async forward(inputIds: number[][], options?: ForwardOptions): Promise<Float32Array> {
    return await forward(this.live(), inputIds, options);
  }

  createCache(batch: number, maxLen?: number): ChatGLMCache {
    return createCache(cacheOwner(this.live()), batch, maxLen);
  }

  async prefill(
    ids: number[][],
    cache: ChatGLMCache,
    options?: PrefillOptions,
  ): Promise<Float32Array> {
    return await prefill(this.live(), ids, cache, options);
  }

  async decodeStep(nextIds: number[], cache: ChatGLMCache): Promise<Float32Array> {
    return await decodeStep(this.live(), nextIds, cache);
  }

  async prefillSlot(ids: number[], cache: ChatGLMCache, slot: number): Promise<Float32Array> {
    return await prefillSlot(this.live(), ids, cache, slot);
  }

  async prefillSlots(entries: SlotPrompt[], cache: ChatGLMCache): Promise<Float32Array> {
    return await prefillSlots(this.live(), entries, cache);
  }

  async decodeSlots(steps: SlotStep[], cache: ChatGLMCache): Promise<Float32Array> {
    return await decodeSlots(this.live(), steps, cache);
  }

  async decodeSlotsGroup(group: SlotGroup, cache: ChatGLMCache): Promise<Int32Array> {
    return await decodeSlotsGroup(this.live(), group, cache);
  }

  rewindSlot(cache: ChatGLMCache, slot: number, length: number): void {
    rewindSlot(cache, slot, length);
  }

  endGroups(cache: ChatGLMCache): void {
    endGroups(cache);
  }

  releaseSlot(cache: ChatGLMCache, slot: number): void {
    releaseSlot(cache, slot);
  }

  parameters(): Map<string, Tensor> {
    return llamaModelParameters(this);
  }

  dispose(): void {
    if (this.disposed) return;
    for (const t of this.parameters().values()) releaseTensor(t);
    for (const layer of this.layers) {
      for (const lin of blockLinears(layer)) {
        if (!lin.lora) continue;
        releaseTensor(lin.lora.a);
        releaseTensor(lin.lora.b);
        lin.lora = null;
      }
    }
    this.disposed = true;
  }

  private live(): this {
    if (this.disposed) throw new Error(`model ${this.source} was disposed`);
    return this;
  }
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
