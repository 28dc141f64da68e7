/**
 * The KV cache (spec §5: tests/fixtures/chatglm6b-tiny/README.md): per layer, the keys (after
 * rotary) and values of every position so far, [rows, heads, capacity, d] f32. A cache is used in
 * lockstep (`prefill` / `decodeStep`: every row has the same length) or as slots (`prefillSlot(s)`
 * / `decodeSlots`: each row an independent sequence with its own length), not both.
 */

import type { Gpu } from "../../gpu/device.ts";
import { beginRecording, discardRecording, submit } from "../../gpu/recording.ts";
import { copyRowsToSlots } from "../../kernels/mod.ts";
import {
  emptyTensor,
  releaseTensor,
  sliceRows,
  type Tensor,
  uploadTensor,
} from "../../tensor/tensor.ts";
import type { ChatGLMConfig } from "./config.ts";
import type { RowLayout } from "./inputs.ts";
import type { SlotPrompt, SlotStep } from "./model.ts";

/** Per-layer keys (after rotary) and values of every position so far, plus each row's layout. */
export interface ChatGLMCache {
  readonly batch: number;
  /** Positions the cache can hold (prompt + generated tokens). */
  readonly capacity: number;
  /** Positions filled so far (the same for every row: rows advance in lockstep). */
  length: number;
  /** Each row's pads / context / mask position, set by prefill. */
  rows: RowLayout[];
  /** [layer] → [b, heads, capacity, d] f32. */
  readonly k: Tensor[];
  readonly v: Tensor[];
  /**
   * Continuous batching: per-row state when rows are used as independent slots
   * (`prefillSlot` / `decodeSlots`). A cache is used either in lockstep (`prefill` /
   * `decodeStep`) or as slots, not both.
   */
  readonly slots: CacheSlot[];
  freed: boolean;
  /** Returns the cache's GPU memory to the pool. */
  free(): void;
}

/** One row of a cache used as a slot: its own length and layout (null while free). */
export interface CacheSlot {
  /** Positions filled in this row. */
  length: number;
  layout: RowLayout | null;
}

/** The cache tensors one step writes: the whole cache or a view of some of its rows. */
export interface CacheView {
  capacity: number;
  k: Tensor[];
  v: Tensor[];
}

/** What a cache is sized from. */
export interface CacheOwner {
  readonly gpu: Gpu;
  /** Heads stored per row (kv heads), their dim, heads·d, layers: all a cache is sized from. */
  readonly config: Pick<ChatGLMConfig, "numHeads" | "headDim" | "hiddenSize" | "numLayers">;
  readonly maxContext: number;
}

class KvCache implements ChatGLMCache {
  length = 0;
  rows: RowLayout[] = [];
  readonly slots: CacheSlot[];
  freed = false;

  constructor(
    readonly batch: number,
    readonly capacity: number,
    readonly k: Tensor[],
    readonly v: Tensor[],
  ) {
    this.slots = Array.from({ length: batch }, () => ({ length: 0, layout: null }));
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    for (const t of [...this.k, ...this.v]) releaseTensor(t);
  }
}

/** An empty cache for `batch` rows of up to `maxLen` positions. */
export function createCache(
  model: CacheOwner,
  batch: number,
  maxLen = model.maxContext,
): ChatGLMCache {
  const { config, gpu } = model;
  if (!Number.isInteger(batch) || batch < 1) {
    throw new Error(`createCache: batch ${batch} must be >= 1`);
  }
  if (!Number.isInteger(maxLen) || maxLen < 1 || maxLen > model.maxContext) {
    throw new Error(
      `createCache: maxLen ${maxLen} must be in [1, ${model.maxContext}] (the model's maxContext)`,
    );
  }
  // Rows of the cache are addressed through views when a prefill runs in row groups; round the
  // allocation up so that each row starts on the storage offset alignment.
  const align = gpu.limits.minStorageBufferOffsetAlignment ?? 256;
  let rowsAllocated = maxLen;
  while ((config.hiddenSize * rowsAllocated * 4) % align !== 0) rowsAllocated++;
  const shape = [batch, config.numHeads, rowsAllocated, config.headDim];
  const k: Tensor[] = [], v: Tensor[] = [];
  for (let l = 0; l < config.numLayers; l++) {
    k.push(emptyTensor(gpu, shape, "f32", { label: `cache.k.${l}` }));
    v.push(emptyTensor(gpu, shape, "f32", { label: `cache.v.${l}` }));
  }
  return new KvCache(batch, maxLen, k, v);
}

/** Rows `start .. start + n − 1` of the cache, as views (a row group, or one slot). */
export function cacheRows(cache: ChatGLMCache, start: number, n: number): CacheView {
  return {
    capacity: cache.capacity,
    k: cache.k.map((t) => sliceRows(t, start, n)),
    v: cache.v.map((t) => sliceRows(t, start, n)),
  };
}

export function checkCache(cache: ChatGLMCache, what: string): void {
  if (cache.freed) throw new Error(`${what}: the cache was freed`);
}

export function checkSlot(cache: ChatGLMCache, slot: number, what: string): void {
  if (!Number.isInteger(slot) || slot < 0 || slot >= cache.batch) {
    throw new Error(`${what}: slot ${slot} is not a row of a cache of batch ${cache.batch}`);
  }
}

/** Marks a slot free (its rows are overwritten by the next prefillSlot). */
export function releaseSlot(cache: ChatGLMCache, slot: number): void {
  checkSlot(cache, slot, "releaseSlot");
  cache.slots[slot].length = 0;
  cache.slots[slot].layout = null;
}

/**
 * Checks a batched slot prefill (any architecture): at least one entry, distinct slots of this
 * cache; `checkPrompt(ids, i)` checks each prompt by the architecture's own rules.
 */
export function checkSlotPrompts(
  cache: ChatGLMCache,
  entries: SlotPrompt[],
  checkPrompt: (ids: number[], i: number) => void,
): void {
  checkCache(cache, "prefillSlots");
  if (!Array.isArray(entries) || entries.length === 0) {
    throw new Error("prefillSlots: expected at least one { slot, ids }");
  }
  const seen = new Set<number>();
  entries.forEach(({ slot, ids }, i) => {
    checkSlot(cache, slot, "prefillSlots");
    if (seen.has(slot)) throw new Error(`prefillSlots: slot ${slot} appears twice`);
    seen.add(slot);
    checkPrompt(ids, i);
  });
}

/** The prompts left-padded to one width with `pad` (a batched prefill's rows). */
export function leftPadded(
  entries: SlotPrompt[],
  pad: number,
): { rows: number[][]; width: number } {
  const width = Math.max(...entries.map((e) => e.ids.length));
  const rows = entries.map(({ ids }) => [...new Array(width - ids.length).fill(pad), ...ids]);
  return { rows, width };
}

/**
 * Moves the real positions of a batched prefill's rows (`temp`, left-padded to `width`) into
 * their slots of `cache`: one dispatch per layer and k/v, submitted at once.
 */
export async function moveRowsToSlots(
  gpu: Gpu,
  temp: ChatGLMCache,
  cache: ChatGLMCache,
  entries: SlotPrompt[],
  width: number,
): Promise<void> {
  const info = new Int32Array(entries.length * 3);
  entries.forEach(({ slot, ids }, i) => info.set([slot, width - ids.length, ids.length], i * 3));
  const infoT = uploadTensor(gpu, info, [entries.length, 3], "i32", { label: "slot rows" });
  const rec = beginRecording(gpu);
  try {
    for (let l = 0; l < cache.k.length; l++) {
      copyRowsToSlots(rec, temp.k[l], cache.k[l], infoT, width);
      copyRowsToSlots(rec, temp.v[l], cache.v[l], infoT, width);
    }
    await submit(rec);
  } catch (err) {
    discardRecording(rec);
    throw err;
  } finally {
    releaseTensor(infoT);
  }
}

/**
 * Checks a batched slot decode step (any architecture): distinct prefilled slots with room for
 * one more token, token ids below `vocabSize`. Returns each row's (slot, length) for the slot
 * attention and the most keys any row attends to.
 */
export function checkSlotSteps(
  cache: ChatGLMCache,
  steps: SlotStep[],
  vocabSize: number,
): { info: Int32Array; maxKeys: number } {
  checkCache(cache, "decodeSlots");
  if (!Array.isArray(steps) || steps.length === 0) {
    throw new Error("decodeSlots: expected at least one { slot, id }");
  }
  const seen = new Set<number>();
  const info = new Int32Array(steps.length * 2);
  let maxKeys = 0;
  steps.forEach(({ slot, id }, i) => {
    checkSlot(cache, slot, "decodeSlots");
    if (seen.has(slot)) throw new Error(`decodeSlots: slot ${slot} appears twice`);
    seen.add(slot);
    const state = cache.slots[slot];
    if (!state.layout || state.length === 0) {
      throw new Error(`decodeSlots: slot ${slot} is free; run prefillSlot on it first`);
    }
    if (state.length + 1 > cache.capacity) {
      throw new Error(`decodeSlots: slot ${slot} is full (${cache.capacity} positions)`);
    }
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new Error(`steps[${i}].id = ${id} is not a token id (vocab_size ${vocabSize})`);
    }
    info.set([slot, state.length], i * 2);
    maxKeys = Math.max(maxKeys, state.length + 1);
  });
  return { info, maxKeys };
}
