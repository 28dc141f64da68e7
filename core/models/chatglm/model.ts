/**
 * ChatGLM-6B (v1) on the GPU: the model object and its public interface. The math is in
 * block.ts (one block) and forward.ts (the whole pass), the attention variants in attention.ts,
 * the KV cache in cache.ts, recording a step in step.ts, and the step kinds in lockstep.ts
 * (forward, prefill, decode) and slots.ts (continuous batching). README.md maps the spec
 * (tests/fixtures/chatglm6b-tiny/README.md) to these functions.
 */

import type { Gpu } from "../../gpu/device.ts";
import type { Embedding } from "../../nn/embedding.ts";
import type { LayerNorm } from "../../nn/layer_norm.ts";
import type { Linear } from "../../nn/linear.ts";
import type { LoraLinear } from "../../nn/lora_linear.ts";
import { releaseTensor, type Tensor } from "../../tensor/tensor.ts";
import type { LoraAdapter } from "../../adapters/lora_weights.ts";
import { blockLinears, type ChatGLMBlock } from "./block.ts";
import { type ChatGLMCache, createCache, releaseSlot } from "./cache.ts";
import type { ChatGLMConfig } from "./config.ts";
import { decodeStep, forward, prefill } from "./lockstep.ts";
import { decodeSlots, prefillSlot, prefillSlots } from "./slots.ts";
import { decodeSlotsGroup, endGroups, rewindSlot, type SlotGroup } from "./decode_group.ts";
import type { WeightDtype } from "./weights.ts";

export type { ChatGLMBlock } from "./block.ts";
export type { CacheSlot, ChatGLMCache } from "./cache.ts";

/** One prompt for a batched slot prefill. */
export interface SlotPrompt {
  slot: number;
  ids: number[];
}

/** One sequence's token for a slot decode step. */
export interface SlotStep {
  slot: number;
  id: number;
}

export interface ForwardOptions {
  /**
   * Hidden-state hook: called after the step with (index, [b, s, h] f32): 0 = embedding output,
   * l + 1 = output of layer l, L + 1 = final LayerNorm output.
   */
  onHidden?: (index: number, hidden: Float32Array) => void;
}

export interface PrefillOptions {
  /** Return logits of every position [b, s, V] instead of the last one [b, V]. */
  allLogits?: boolean;
}

/** Timing of one submitted step (see `ChatGLMModel.profiler`). */
export interface StepProfile {
  /** Tokens computed in the step (rows × positions). */
  tokens: number;
  dispatches: number;
  /** Host time spent recording the step (kernel wrappers, bind groups, uploads). */
  recordMs: number;
  /** From submit until the GPU reports the work done (includes one round trip). */
  gpuMs: number;
  /** Reading the logits back. */
  readMs: number;
}

/**
 * The methods of a model object, the same list for every architecture (ChatGLM, the Llama family):
 * each one of the architecture's step functions (its {@link ModelSteps}) after checking the model
 * was not disposed, or a cache operation common to all of them.
 */
export interface ModelMethods {
  /** Logits [b, s, V] for left-padded inputs; masks and positions derived from the ids. */
  forward(inputIds: number[][], options?: ForwardOptions): Promise<Float32Array>;
  /** An empty KV cache for `batch` rows of up to `maxLen` positions (default maxContext). */
  createCache(batch: number, maxLen?: number): ChatGLMCache;
  /** Runs the prompts (left-padded rows) into an empty cache; logits of the last position [b, V]. */
  prefill(
    inputIds: number[][],
    cache: ChatGLMCache,
    options?: PrefillOptions,
  ): Promise<Float32Array>;
  /** Appends one token per row (finished rows feed the pad id) and returns its logits [b, V]. */
  decodeStep(nextIds: number[], cache: ChatGLMCache): Promise<Float32Array>;
  /**
   * Continuous batching: runs one unpadded prompt into row `slot` of the cache (other rows are
   * untouched and may be mid-generation); returns the logits of its last position [V].
   */
  prefillSlot(ids: number[], cache: ChatGLMCache, slot: number): Promise<Float32Array>;
  /**
   * Continuous batching: runs several unpadded prompts into their slots in one batched
   * (left-padded) prefill, then moves each row's keys and values to its slot; logits of each
   * prompt's last position [entries.length, V] in order.
   */
  prefillSlots(entries: SlotPrompt[], cache: ChatGLMCache): Promise<Float32Array>;
  /**
   * Continuous batching: appends one token to each listed slot (any subset of prefilled slots,
   * each with its own length) in one batched step; returns logits [steps.length, V] in order.
   */
  decodeSlots(steps: SlotStep[], cache: ChatGLMCache): Promise<Float32Array>;
  /** k decode steps sampled on the GPU, ids read back once (decode_group.ts); ids [k, slots]. */
  decodeSlotsGroup(group: SlotGroup, cache: ChatGLMCache): Promise<Int32Array>;
  /** Keeps a slot's first `length` positions (a group step redone on the host). */
  rewindSlot(cache: ChatGLMCache, slot: number, length: number): void;
  /** Frees what grouped decoding keeps between groups (call before freeing the cache). */
  endGroups(cache: ChatGLMCache): void;
  /** Marks a slot free (its rows are overwritten by the next prefillSlot). */
  releaseSlot(cache: ChatGLMCache, slot: number): void;
  /**
   * Every base parameter by checkpoint name (a tied output layer's name may map to the
   * embedding's tensor).
   */
  parameters(): Map<string, Tensor>;
  /** Releases every GPU tensor of the model (and its adapter). */
  dispose(): void;
  disposed: boolean;
  /** When set, every step waits for the GPU once more and reports its timing here (benchmarks). */
  profiler: ((p: StepProfile) => void) | null;
}

/** One architecture's step functions, each taking the model first: what its methods run. */
export interface ModelSteps<M> {
  forward(model: M, inputIds: number[][], options?: ForwardOptions): Promise<Float32Array>;
  createCache(model: M, batch: number, maxLen?: number): ChatGLMCache;
  prefill(
    model: M,
    inputIds: number[][],
    cache: ChatGLMCache,
    options?: PrefillOptions,
  ): Promise<Float32Array>;
  decodeStep(model: M, nextIds: number[], cache: ChatGLMCache): Promise<Float32Array>;
  prefillSlot(model: M, ids: number[], cache: ChatGLMCache, slot: number): Promise<Float32Array>;
  prefillSlots(model: M, entries: SlotPrompt[], cache: ChatGLMCache): Promise<Float32Array>;
  decodeSlots(model: M, steps: SlotStep[], cache: ChatGLMCache): Promise<Float32Array>;
  decodeSlotsGroup(model: M, group: SlotGroup, cache: ChatGLMCache): Promise<Int32Array>;
  parameters(model: M): Map<string, Tensor>;
  /** The linear layers that may carry a LoRA (its tensors are released with the model). */
  loraLinears(model: M): Iterable<LoraLinear>;
}

/** A model's fields: everything but the methods (what load.ts assembles). */
export type PartsOf<M extends ModelMethods> = Omit<M, keyof ModelMethods>;

/**
 * The model object of every architecture: its parts, and each method the architecture's step
 * function (or a check around it). One class, so the method list lives once.
 */
class StepModel<M extends ModelMethods> implements ModelMethods {
  disposed = false;
  profiler: ((p: StepProfile) => void) | null = null;
  readonly #steps: ModelSteps<M>;
  readonly #source: string;

  constructor(steps: ModelSteps<M>, source: string) {
    this.#steps = steps;
    this.#source = source;
  }

  async forward(inputIds: number[][], options?: ForwardOptions): Promise<Float32Array> {
    return await this.#steps.forward(this.live(), inputIds, options);
  }

  createCache(batch: number, maxLen?: number): ChatGLMCache {
    return this.#steps.createCache(this.live(), batch, maxLen);
  }

  async prefill(
    ids: number[][],
    cache: ChatGLMCache,
    options?: PrefillOptions,
  ): Promise<Float32Array> {
    return await this.#steps.prefill(this.live(), ids, cache, options);
  }

  async decodeStep(nextIds: number[], cache: ChatGLMCache): Promise<Float32Array> {
    return await this.#steps.decodeStep(this.live(), nextIds, cache);
  }

  async prefillSlot(ids: number[], cache: ChatGLMCache, slot: number): Promise<Float32Array> {
    return await this.#steps.prefillSlot(this.live(), ids, cache, slot);
  }

  async prefillSlots(entries: SlotPrompt[], cache: ChatGLMCache): Promise<Float32Array> {
    return await this.#steps.prefillSlots(this.live(), entries, cache);
  }

  async decodeSlots(steps: SlotStep[], cache: ChatGLMCache): Promise<Float32Array> {
    return await this.#steps.decodeSlots(this.live(), steps, cache);
  }

  async decodeSlotsGroup(group: SlotGroup, cache: ChatGLMCache): Promise<Int32Array> {
    return await this.#steps.decodeSlotsGroup(this.live(), group, cache);
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
    return this.#steps.parameters(this as unknown as M);
  }

  dispose(): void {
    if (this.disposed) return;
    // A tied output layer shares the embedding's tensor: release each tensor once.
    for (const t of new Set(this.parameters().values())) releaseTensor(t);
    for (const lin of this.#steps.loraLinears(this as unknown as M)) {
      if (!lin.lora) continue;
      releaseTensor(lin.lora.a);
      releaseTensor(lin.lora.b);
      lin.lora = null;
    }
    this.disposed = true;
  }

  /** This model, after checking it was not disposed. */
  private live(): M {
    if (this.disposed) throw new Error(`model ${this.#source} was disposed`);
    return this as unknown as M;
  }
}

/** Builds the model object of an architecture around its parts and step functions. */
export function assembleModel<M extends ModelMethods & { readonly source: string }>(
  parts: PartsOf<M>,
  steps: ModelSteps<M>,
): M {
  return Object.assign(new StepModel(steps, parts.source), parts) as unknown as M;
}

export interface ChatGLMModel extends ModelMethods {
  readonly config: ChatGLMConfig;
  /** Storage dtype of the base weights (compute is f32). */
  readonly dtype: WeightDtype;
  readonly gpu: Gpu;
  /** Longest sequence (prompt + generated) this model instance accepts. */
  readonly maxContext: number;
  /** Where the weights came from. */
  readonly source: string;
  readonly embedding: Embedding;
  readonly layers: ChatGLMBlock[];
  readonly finalLayerNorm: LayerNorm;
  readonly lmHead: Linear;
  /**
   * Largest activation buffer of one pass (default: the device's maxStorageBufferBindingSize);
   * a prefill whose activations exceed it runs in groups of rows.
   */
  readonly maxActivationBytes?: number;
  /** The attached LoRA adapter (null when none or after a merge). */
  adapter: LoraAdapter | null;
}

/** Parts a model is assembled from (see load.ts): its fields without the methods. */
export type ChatGLMParts = PartsOf<ChatGLMModel>;

const CHATGLM_STEPS: ModelSteps<ChatGLMModel> = {
  forward,
  createCache,
  prefill,
  decodeStep,
  prefillSlot,
  prefillSlots,
  decodeSlots,
  decodeSlotsGroup,
  parameters: modelParameters,
  loraLinears: (model) => model.layers.flatMap(blockLinears),
};

/** Builds the model object around its parts. */
export function assembleChatGLM(parts: ChatGLMParts): ChatGLMModel {
  return assembleModel<ChatGLMModel>(parts, CHATGLM_STEPS);
}

/** Every base parameter by checkpoint name, in the checkpoint's order. */
export function modelParameters(model: ChatGLMModel): Map<string, Tensor> {
  const m = new Map<string, Tensor>();
  m.set(`${model.embedding.name}.weight`, model.embedding.weight);
  const addNorm = (n: LayerNorm) => {
    m.set(`${n.name}.weight`, n.weight);
    m.set(`${n.name}.bias`, n.bias);
  };
  const addLinear = (n: Linear) => {
    m.set(`${n.name}.weight`, n.weight);
    if (n.bias) m.set(`${n.name}.bias`, n.bias);
  };
  for (const layer of model.layers) {
    addNorm(layer.inputLayerNorm);
    addLinear(layer.queryKeyValue);
    addLinear(layer.dense);
    addNorm(layer.postAttentionLayerNorm);
    addLinear(layer.denseHTo4h);
    addLinear(layer.dense4hToH);
  }
  addNorm(model.finalLayerNorm);
  addLinear(model.lmHead);
  return m;
}
