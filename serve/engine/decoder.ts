/**
 * The small interface the generation loop drives, so that one scheduler serves every backend:
 * a fixed number of sequence slots, each prefilled on its own, all live slots advanced together
 * by one batched decode step. The WebGPU implementation keeps the KV cache in one slot cache of
 * the ChatGLM model (`prefillSlot` / `decodeSlots`); the ONNX Runtime one (serve/onnx/decoder.ts)
 * implements the same calls with its cache kept in ORT.
 */

/** A KV cache with per-slot rows, as a slot model makes it. */
export interface SlotCache {
  free(): void;
}

/**
 * What the WebGPU decoder needs of a model: a cache of slots and the three slot calls. ChatGLM-6B's
 * model has them; any architecture that implements them (the Llama family) is served by the same
 * engine, scheduler and front ends.
 */
export interface SlotModel<C extends SlotCache = SlotCache> {
  /** `vocabSize`: the length of a logits row. */
  readonly config: { readonly vocabSize: number };
  readonly maxContext: number;
  /** Directory the model came from (shown to front ends). */
  readonly source: string;
  createCache(slots: number, maxContext?: number): C;
  prefillSlot(ids: number[], cache: C, slot: number): Promise<Float32Array>;
  prefillSlots(entries: { slot: number; ids: number[] }[], cache: C): Promise<Float32Array>;
  decodeSlots(steps: { slot: number; id: number }[], cache: C): Promise<Float32Array>;
  /** Optional: k steps sampled on the GPU, ids read back once (see {@link Decoder.decodeGroup}). */
  decodeSlotsGroup?(group: DecodeGroup, cache: C): Promise<Int32Array>;
  /** Optional, with `decodeSlotsGroup`: keeps a slot's first `length` positions. */
  rewindSlot?(cache: C, slot: number, length: number): void;
  /** Optional, with `decodeSlotsGroup`: frees what it keeps between groups. */
  endGroups?(cache: C): void;
  releaseSlot(cache: C, slot: number): void;
  dispose(): void;
}

/**
 * k decode steps over some slots with the next ids sampled on the GPU (core/kernels/sampling) and
 * fed to the next step there; the host sees the ids once, after the k steps.
 */
export interface DecodeGroup {
  /** Slots (prefilled, distinct); row i of every step is `slots[i]`. */
  slots: number[];
  /** The id each slot is fed at the first step. */
  ids: number[];
  steps: number;
  /**
   * Start from the previous group's last ids while they are still on the GPU (same slots in the
   * same order; `ids` ignored): the host may start this group before it reads the previous one.
   */
  follow?: boolean;
  /** Ids at and above this are never sampled. */
  textVocab: number;
  /** Per step, per row: `packSamplingRows` words (with each step's draw), steps concatenated. */
  settings: Uint32Array;
  /** The ids the settings' histories point at (the ids before the group). */
  history: Int32Array;
  /** The UTF-8 mask of the rows that ask for it (group_decode.ts `packGroup`). */
  utf8?: { idOf: ArrayLike<number>; byteOf: ArrayLike<number>; state: Uint32Array };
}

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
  /**
   * Optional: runs a {@link DecodeGroup}; the sampled ids [steps, slots] (step-major), -1 where
   * a backend could not choose (the caller rewinds and redoes that step on the host; WebGPU's
   * sampler always chooses). Each
   * slot grows by `steps` positions at once: the group is recorded and submitted before the call
   * returns its promise, so the caller may start a `follow` group before awaiting this one.
   */
  decodeGroup?(group: DecodeGroup): Promise<Int32Array>;
  /** With `decodeGroup`: keeps the slot's first `length` positions (drops a group's tail). */
  rewind?(slot: number, length: number): void;
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
 * A decoder over a loaded slot model (ChatGLM-6B, or any architecture with the slot calls). The
 * slot cache is allocated when the first sequence arrives and returned to the buffer pool whenever no sequence is live, so an idle engine holds
 * only the weights.
 */
export function webgpuDecoder<C extends SlotCache>(
  model: SlotModel<C>,
  opts: WebGpuDecoderOptions,
): Decoder {
  const maxContext = opts.maxContext ?? model.maxContext;
  if (!Number.isInteger(opts.slots) || opts.slots < 1) {
    throw new RangeError(`decoder slots must be an integer >= 1, got ${opts.slots}`);
  }
  let cache: C | null = null;
  const live = new Set<number>();
  const cacheFor = () => cache ??= model.createCache(opts.slots, maxContext);
  const group = model.decodeSlotsGroup && model.rewindSlot
    ? {
      async decodeGroup(g: DecodeGroup) {
        if (!cache) throw new Error("decodeGroup: no slot has been prefilled");
        return await model.decodeSlotsGroup!(g, cache);
      },
      rewind(slot: number, length: number) {
        if (!cache) throw new Error("rewind: no slot has been prefilled");
        model.rewindSlot!(cache, slot, length);
      },
    }
    : {};
  return {
    ...group,
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
        model.endGroups?.(cache);
        cache.free();
        cache = null;
      }
    },
    close() {
      if (cache) model.endGroups?.(cache);
      cache?.free();
      cache = null;
      if (opts.ownsModel ?? true) model.dispose();
    },
  };
}
