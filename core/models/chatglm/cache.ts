/**
 * The KV cache (spec §5: tests/fixtures/chatglm6b-tiny/README.md): per layer, the keys (after
 * rotary) and values of every position so far, [rows, heads, capacity, d] f32. A cache is used in
 * lockstep (`prefill` / `decodeStep`: every row has the same length) or as slots (`prefillSlot(s)`
 * / `decodeSlots`: each row an independent sequence with its own length), not both.
 */

import type { Gpu } from "../../gpu/device.ts";
import { emptyTensor, releaseTensor, sliceRows, type Tensor } from "../../tensor/tensor.ts";
import type { ChatGLMConfig } from "./config.ts";
import type { RowLayout } from "./inputs.ts";

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
