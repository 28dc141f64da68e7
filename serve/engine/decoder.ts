/**
 * The small interface the generation loop drives, so that one scheduler serves every backend:
 * a fixed number of sequence slots, each prefilled on its own, all live slots advanced together
 * by one batched decode step. The WebGPU implementation keeps the KV cache in one slot cache of
 * the ChatGLM model (`prefillSlot` / `decodeSlots`); an ONNX Runtime runner implements the same
 * four calls with its cache kept in ORT.
 */

import type { ChatGLMCache, ChatGLMModel } from "../../core/models/chatglm/model.ts";

export interface Decoder {
  /** Length of one logits row (the model's vocab_size, text ids and beyond). */
  readonly vocabSize: number;
  /** Positions (prompt + generated) one slot holds. */
  readonly maxContext: number;
  /** Number of slots: sequences that can decode together. */
  readonly slots: number;
  /** Runs the prompt into `slot` (free); logits of its last position [vocabSize]. */
  prefill(slot: number, ids: number[]): Promise<Float32Array>;
  /**
   * Optional: several prompts into their slots in one batched pass; logits
   * [entries.length, vocabSize] in order. Without it the scheduler calls `prefill` per prompt.
   */
  prefillMany?(entries: { slot: number; ids: number[] }[]): Promise<Float32Array>;
  /** Feeds one token to each listed slot in one batched step; logits [steps.length, vocabSize]. */
  decode(steps: { slot: number; id: number }[]): Promise<Float32Array>;
  /** The slot's sequence is over (finished or aborted): its cache rows may be reused. */
  release(slot: number): void;
  /** Called when no slot is in use: a backend may give its cache memory back. */
  idle(): void;
  /** Frees everything (the model too when the decoder owns it). */
  close(): void | Promise<void>;
}

export interface WebGpuDecoderOptions {
  slots: number;
  /** Positions per slot (default and maximum: the model's maxContext). */
  maxContext?: number;
  /** Dispose the model on close (default true). */
  ownsModel?: boolean;
}

/**
 * A decoder over a loaded ChatGLM model. The slot cache is allocated when the first sequence
 * arrives and returned to the buffer pool whenever no sequence is live, so an idle engine holds
 * only the weights.
 */
export function webgpuDecoder(model: ChatGLMModel, opts: WebGpuDecoderOptions): Decoder {
  const maxContext = opts.maxContext ?? model.maxContext;
  if (!Number.isInteger(opts.slots) || opts.slots < 1) {
    throw new RangeError(`decoder slots must be an integer >= 1, got ${opts.slots}`);
  }
  let cache: ChatGLMCache | null = null;
  const live = new Set<number>();
  const cacheFor = () => cache ??= model.createCache(opts.slots, maxContext);
  return {
    vocabSize: model.config.vocabSize,
    maxContext,
    slots: opts.slots,
    async prefill(slot, ids) {
      const c = cacheFor();
      live.add(slot);
      return await model.prefillSlot(ids, c, slot);
    },
    async prefillMany(entries) {
      const c = cacheFor();
      for (const e of entries) live.add(e.slot);
      return await model.prefillSlots(entries, c);
    },
    async decode(steps) {
      if (!cache) throw new Error("decode: no slot has been prefilled");
      return await model.decodeSlots(steps, cache);
    },
    release(slot) {
      live.delete(slot);
      if (cache) model.releaseSlot(cache, slot);
    },
    idle() {
      if (live.size === 0 && cache) {
        cache.free();
        cache = null;
      }
    },
    close() {
      cache?.free();
      cache = null;
      if (opts.ownsModel ?? true) model.dispose();
    },
  };
}

/** A model with the lockstep cache API (both the WebGPU model and the ONNX Runtime runner). */
export interface LockstepModel<C extends { free(): void }> {
  readonly maxContext: number;
  readonly config: { readonly vocabSize: number };
  createCache(batch: number, maxLen?: number): C;
  prefill(inputIds: number[][], cache: C): Promise<Float32Array>;
  decodeStep(nextIds: number[], cache: C): Promise<Float32Array>;
}

export interface LockstepDecoderOptions {
  slots: number;
  maxContext?: number;
  /** Frees the model when the decoder closes. */
  dispose?: () => void | Promise<void>;
}

/**
 * A decoder over a model that only advances whole caches in lockstep (the ONNX Runtime runner
 * today): every slot gets a cache of its own, and a step runs the live slots one after the other.
 * Sequences still join and leave at any step; they just do not share one batched matmul. (Batching
 * them would need per-row cache lengths in the exported graph, as the WebGPU model has.)
 */
export function lockstepDecoder<C extends { free(): void }>(
  model: LockstepModel<C>,
  opts: LockstepDecoderOptions,
): Decoder {
  const maxContext = Math.min(opts.maxContext ?? model.maxContext, model.maxContext);
  const caches = new Map<number, C>();
  const release = (slot: number) => {
    caches.get(slot)?.free();
    caches.delete(slot);
  };
  return {
    vocabSize: model.config.vocabSize,
    maxContext,
    slots: opts.slots,
    async prefill(slot, ids) {
      release(slot);
      const cache = model.createCache(1, maxContext);
      caches.set(slot, cache);
      return await model.prefill([ids], cache);
    },
    async decode(steps) {
      const V = model.config.vocabSize;
      const out = new Float32Array(steps.length * V);
      for (const [i, { slot, id }] of steps.entries()) {
        const cache = caches.get(slot);
        if (!cache) throw new Error(`decode: slot ${slot} is free; prefill it first`);
        out.set((await model.decodeStep([id], cache)).subarray(0, V), i * V);
      }
      return out;
    },
    release,
    idle() {},
    async close() {
      for (const slot of [...caches.keys()]) release(slot);
      await opts.dispose?.();
    },
  };
}
