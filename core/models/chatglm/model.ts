/**
 * ChatGLM-6B (v1) on the GPU: the blocks built from `core/nn` layers, the forward pass of README
 * §3 recorded into one command encoder per step, and KV-cache prefill / decode (§5).
 *
 * A step records every kernel of every layer and submits once; intermediate tensors go back to
 * the pool inside the recording, so a later kernel of the same step reuses their buffers.
 */

import type { Gpu } from "../../gpu/device.ts";
import {
  beginRecording,
  discardRecording,
  recordCopy,
  type Recording,
  submit,
} from "../../gpu/recording.ts";
import { attention } from "../../kernels/attention.ts";
import { attentionSlots, copyRowsToSlots, qkvRotarySlots } from "../../kernels/attention_slots.ts";
import { addScaled, gelu } from "../../kernels/elementwise.ts";
import { qkvRotary } from "../../kernels/rotary.ts";
import {
  assertUnchunked,
  emptyTensor,
  readTensor,
  releaseTensor,
  reshape,
  sliceRows,
  type Tensor,
  uploadTensor,
} from "../../tensor/tensor.ts";
import { type Embedding, embeddingForward } from "../../nn/embedding.ts";
import { type LayerNorm, layerNormForward } from "../../nn/layer_norm.ts";
import { type Linear, linearForward } from "../../nn/linear.ts";
import { type LoraLinear, loraLinearForward } from "../../nn/lora_linear.ts";
import type { LoraAdapter } from "../../adapters/lora_weights.ts";
import { type ChatGLMConfig, RESIDUAL_ALPHA } from "./config.ts";
import { layoutRows, positionAt, type RowLayout } from "./inputs.ts";
import type { WeightDtype } from "./weights.ts";

export interface ChatGLMBlock {
  index: number;
  inputLayerNorm: LayerNorm;
  queryKeyValue: LoraLinear;
  dense: LoraLinear;
  postAttentionLayerNorm: LayerNorm;
  denseHTo4h: LoraLinear;
  dense4hToH: LoraLinear;
}

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

export interface ChatGLMModel {
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
  /** The attached LoRA adapter (null when none or after a merge). */
  adapter: LoraAdapter | null;
  /** Logits [b, s, V] for left-padded ChatGLM inputs; masks and positions derived from the ids. */
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
  /** Marks a slot free (its rows are overwritten by the next prefillSlot). */
  releaseSlot(cache: ChatGLMCache, slot: number): void;
  /** Every base parameter by checkpoint name. */
  parameters(): Map<string, Tensor>;
  /** Releases every GPU tensor of the model (and its adapter). */
  dispose(): void;
  disposed: boolean;
  /** When set, every step waits for the GPU once more and reports its timing here (benchmarks). */
  profiler: ((p: StepProfile) => void) | null;
}

/** Parts a model is assembled from (see load.ts). */
export interface ChatGLMParts {
  config: ChatGLMConfig;
  dtype: WeightDtype;
  gpu: Gpu;
  maxContext: number;
  source: string;
  embedding: Embedding;
  layers: ChatGLMBlock[];
  finalLayerNorm: LayerNorm;
  lmHead: Linear;
  adapter: LoraAdapter | null;
  /**
   * Largest activation buffer of one pass (default: the device's maxStorageBufferBindingSize);
   * a prefill whose activations exceed it runs in groups of rows.
   */
  maxActivationBytes?: number;
}

/** Rotary angle table size: enough for every position of a cache of `capacity`. */
function rotaryTableSize(capacity: number): number {
  return Math.max(8192, 2 ** Math.ceil(Math.log2(capacity + 2)));
}

interface StepInput {
  ids: Int32Array; // [b, s]
  pos: Int32Array; // [b, 2, s]
  batch: number;
  seq: number;
  past: number;
}

/**
 * Records one forward step over `input` into `rec`, appending k, v to `cache` at `past`. Returns
 * the final LayerNorm output [b, s, h]. `keep` receives the hidden states when given (the caller
 * reads and releases them).
 */
/** The cache tensors one step writes: the whole cache or a view of some of its rows. */
interface CacheView {
  capacity: number;
  k: Tensor[];
  v: Tensor[];
}

/**
 * How a step attends: given layer l's fused qkv [b, s, 3h] and the positions, store k, v and
 * return the attention output [b, s, h]. Lockstep steps use the cache at `past` with the compact
 * mask; slot decode steps use per-row slots.
 */
type Attend = (rec: Recording, l: number, qkv: Tensor, pos: Tensor) => Tensor;

function lockstepAttend(
  model: ChatGLMParts,
  cache: CacheView,
  maskInfo: Tensor,
  input: StepInput,
): Attend {
  const { config } = model;
  const { batch: b, seq: s, past } = input;
  const tableSize = rotaryTableSize(cache.capacity);
  return (rec, l, qkv, pos) => {
    const q = qkvRotary(
      rec,
      reshape(qkv, [b, s, 3 * config.hiddenSize]),
      pos,
      cache.k[l],
      cache.v[l],
      {
        mode: "2d",
        heads: config.numHeads,
        past,
        layout: "interleaved",
        maxPosition: tableSize,
      },
    );
    const ctx = attention(rec, q, cache.k[l], cache.v[l], {
      keys: past + s,
      layerScale: l + 1,
      maskValue: -10000,
      maskInfo,
    });
    releaseTensor(q, rec);
    return ctx;
  };
}

function recordStep(
  rec: Recording,
  model: ChatGLMParts,
  attend: Attend,
  input: StepInput,
  uploads: Tensor[],
  keep?: Tensor[],
): Tensor {
  const { gpu } = model;
  const { batch: b, seq: s } = input;
  const ids = uploadTensor(gpu, input.ids, [b, s], "i32", { label: "ids" });
  const pos = uploadTensor(gpu, input.pos, [b, 2, s], "i32", { label: "pos" });
  uploads.push(ids, pos);
  const drop = (t: Tensor) => {
    if (!keep?.includes(t)) releaseTensor(t, rec);
  };
  let x = embeddingForward(rec, model.embedding, ids);
  keep?.push(x);
  for (const layer of model.layers) {
    const l = layer.index;
    const a = layerNormForward(rec, layer.inputLayerNorm, x);
    drop(x);
    const qkv = loraLinearForward(rec, layer.queryKeyValue, a);
    const ctx = attend(rec, l, qkv, pos);
    releaseTensor(qkv, rec);
    const o = loraLinearForward(rec, layer.dense, ctx);
    releaseTensor(ctx, rec);
    // Both residuals add the LayerNorm output times α = sqrt(56), not the block input (§3.4).
    const hmid = addScaled(rec, a, RESIDUAL_ALPHA, o);
    releaseTensor(a, rec);
    releaseTensor(o, rec);
    const m = layerNormForward(rec, layer.postAttentionLayerNorm, hmid);
    releaseTensor(hmid, rec);
    const up = loraLinearForward(rec, layer.denseHTo4h, m);
    const act = gelu(rec, up);
    releaseTensor(up, rec);
    const f = loraLinearForward(rec, layer.dense4hToH, act);
    releaseTensor(act, rec);
    x = addScaled(rec, m, RESIDUAL_ALPHA, f);
    releaseTensor(m, rec);
    releaseTensor(f, rec);
    keep?.push(x);
  }
  const y = layerNormForward(rec, model.finalLayerNorm, x);
  drop(x);
  keep?.push(y);
  return y;
}

/** Copies position `t` of every row of y [b, s, h] into a new [b, 1, h] tensor. */
function lastPositions(rec: Recording, y: Tensor, t: number): Tensor {
  const [b, s, h] = y.shape;
  assertUnchunked(y, "lastPositions", "hidden");
  const out = emptyTensor(rec.gpu, [b, 1, h], "f32", { rec, label: "last hidden" });
  for (let i = 0; i < b; i++) {
    recordCopy(
      rec,
      y.buffer,
      y.byteOffset + (i * s + t) * h * 4,
      out.buffer,
      out.byteOffset + i * h * 4,
      h * 4,
    );
  }
  return out;
}

function checkIds(ids: readonly number[], config: ChatGLMConfig, what: string): void {
  ids.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) {
      throw new Error(`${what}[${i}] = ${id} is not a token id (vocab_size ${config.vocabSize})`);
    }
  });
}

function stepInputs(
  rows: RowLayout[],
  inputIds: number[][],
  start: number,
  past: number,
): StepInput {
  const b = rows.length, s = inputIds[0].length;
  const ids = new Int32Array(b * s);
  const pos = new Int32Array(b * 2 * s);
  for (let i = 0; i < b; i++) {
    for (let j = 0; j < s; j++) {
      ids[i * s + j] = inputIds[i][j];
      const [p0, p1] = positionAt(rows[i], start + j);
      pos[(i * 2) * s + j] = p0;
      pos[(i * 2 + 1) * s + j] = p1;
    }
  }
  return { ids, pos, batch: b, seq: s, past };
}

function concat(parts: Float32Array[]): Float32Array {
  if (parts.length === 1) return parts[0];
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) out.set(p, o), o += p.length;
  return out;
}

function maskInfoTensor(gpu: Gpu, rows: RowLayout[]): Tensor {
  const info = new Int32Array(rows.length * 2);
  rows.forEach((r, i) => {
    info[i * 2] = r.pads;
    info[i * 2 + 1] = r.ctx;
  });
  return uploadTensor(gpu, info, [rows.length, 2], "i32", { label: "maskInfo" });
}

/** Builds the model object around its parts. */
export function assembleChatGLM(parts: ChatGLMParts): ChatGLMModel {
  const { config, gpu } = parts;
  const assertLive = () => {
    if (model.disposed) throw new Error(`model ${parts.source} was disposed`);
  };

  const createCache = (batch: number, maxLen = parts.maxContext): ChatGLMCache => {
    assertLive();
    if (!Number.isInteger(batch) || batch < 1) {
      throw new Error(`createCache: batch ${batch} must be >= 1`);
    }
    if (!Number.isInteger(maxLen) || maxLen < 1 || maxLen > parts.maxContext) {
      throw new Error(
        `createCache: maxLen ${maxLen} must be in [1, ${parts.maxContext}] (the model's maxContext)`,
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
    const cache: ChatGLMCache = {
      batch,
      capacity: maxLen,
      length: 0,
      rows: [],
      slots: Array.from({ length: batch }, () => ({ length: 0, layout: null })),
      k,
      v,
      freed: false,
      free() {
        if (cache.freed) return;
        cache.freed = true;
        for (const t of [...k, ...v]) releaseTensor(t);
      },
    };
    return cache;
  };

  const checkCache = (cache: ChatGLMCache, what: string) => {
    assertLive();
    if (cache.freed) throw new Error(`${what}: the cache was freed`);
  };

  const checkSlot = (cache: ChatGLMCache, slot: number, what: string) => {
    if (!Number.isInteger(slot) || slot < 0 || slot >= cache.batch) {
      throw new Error(`${what}: slot ${slot} is not a row of a cache of batch ${cache.batch}`);
    }
  };

  /**
   * Runs one step over `input` (rows advance together) and returns the logits of every position
   * ([b, s, V]) or of the last one ([b, V]). A long prefill runs in groups of rows, each group's
   * activations within one storage binding, writing its rows of the cache through views.
   */
  const run = async (
    cache: ChatGLMCache,
    input: StepInput,
    which: "all" | "last",
    hook?: ForwardOptions["onHidden"],
  ): Promise<Float32Array> => {
    const group = rowsPerPass(input.seq, input.batch);
    if (group >= input.batch) {
      return await runGroup(cache, cache.rows, input, which, hook);
    }
    const parts: Float32Array[] = [];
    const hidden = new Map<number, Float32Array[]>();
    const groupHook = hook
      ? (i: number, x: Float32Array) => hidden.set(i, [...(hidden.get(i) ?? []), x])
      : undefined;
    for (let start = 0; start < input.batch; start += group) {
      const n = Math.min(group, input.batch - start);
      const view: CacheView = {
        capacity: cache.capacity,
        k: cache.k.map((t) => sliceRows(t, start, n)),
        v: cache.v.map((t) => sliceRows(t, start, n)),
      };
      const sub: StepInput = {
        ...input,
        batch: n,
        ids: input.ids.subarray(start * input.seq, (start + n) * input.seq),
        pos: input.pos.subarray(start * 2 * input.seq, (start + n) * 2 * input.seq),
      };
      parts.push(await runGroup(view, cache.rows.slice(start, start + n), sub, which, groupHook));
    }
    if (hook) { for (const [i, xs] of hidden) hook(i, concat(xs)); }
    return concat(parts);
  };

  const runGroup = (
    cache: CacheView,
    rows: RowLayout[],
    input: StepInput,
    which: "all" | "last",
    hook?: ForwardOptions["onHidden"],
  ): Promise<Float32Array> => {
    const makeAttend = (uploads: Tensor[]) => {
      const maskInfo = maskInfoTensor(gpu, rows);
      uploads.push(maskInfo);
      return lockstepAttend(parts, cache, maskInfo, input);
    };
    return runRecorded(makeAttend, input, which, hook);
  };

  /** Records one step with the given attention, submits it once and reads the logits back. */
  const runRecorded = async (
    makeAttend: (uploads: Tensor[]) => Attend,
    input: StepInput,
    which: "all" | "last",
    hook?: ForwardOptions["onHidden"],
  ): Promise<Float32Array> => {
    const uploads: Tensor[] = [];
    const keep: Tensor[] | undefined = hook ? [] : undefined;
    const t0 = performance.now();
    const rec = beginRecording(gpu);
    let logits: Tensor | null = null;
    try {
      const attend = makeAttend(uploads);
      const y = recordStep(rec, parts, attend, input, uploads, keep);
      let head = y;
      if (which === "last" && input.seq > 1) {
        head = lastPositions(rec, y, input.seq - 1);
        if (!keep) releaseTensor(y, rec);
      }
      logits = linearForward(rec, parts.lmHead, head);
      if (head !== y || !keep) releaseTensor(head, rec);
      const t1 = performance.now();
      await submit(rec);
      let t2 = t1;
      if (model.profiler) {
        // An extra GPU round trip, only when profiling: separates GPU work from the readback.
        await gpu.device.queue.onSubmittedWorkDone();
        t2 = performance.now();
      }
      const out = await readTensor(logits) as Float32Array;
      model.profiler?.({
        tokens: input.batch * input.seq,
        dispatches: rec.dispatches,
        recordMs: t1 - t0,
        gpuMs: t2 - t1,
        readMs: performance.now() - t2,
      });
      if (keep && hook) {
        for (let i = 0; i < keep.length; i++) hook(i, await readTensor(keep[i]) as Float32Array);
      }
      return out;
    } catch (err) {
      discardRecording(rec);
      throw err;
    } finally {
      if (logits) releaseTensor(logits);
      for (const t of keep ?? []) releaseTensor(t);
      for (const t of uploads) releaseTensor(t);
    }
  };

  /** Rows per pass so that the widest activation ([rows, s, max(3h, inner)] f32) fits a binding. */
  const rowsPerPass = (seq: number, batch: number): number => {
    const widest = seq * Math.max(3 * config.hiddenSize, config.innerHiddenSize) * 4;
    const limit = parts.maxActivationBytes ?? gpu.limits.maxStorageBufferBindingSize;
    const rows = Math.floor(limit / widest);
    if (rows < 1) {
      throw new Error(
        `${seq} tokens need ${widest} bytes of activations in one binding, over this GPU's ` +
          `limit of ${limit}; use a shorter input`,
      );
    }
    return Math.min(rows, batch);
  };

  const checkLength = (seq: number, what: string) => {
    if (seq > parts.maxContext) {
      throw new Error(
        `${what}: ${seq} tokens exceed the model's context of ${parts.maxContext} ` +
          `(max_sequence_length ${config.maxSequenceLength}; set maxContext to change)`,
      );
    }
  };

  const model: ChatGLMModel = {
    ...parts,
    get adapter() {
      return parts.adapter;
    },
    set adapter(a: LoraAdapter | null) {
      parts.adapter = a;
    },
    disposed: false,
    profiler: null,

    async forward(inputIds, options = {}) {
      assertLive();
      const rows = layoutRows(inputIds, config);
      const seq = inputIds[0].length;
      checkLength(seq, "forward");
      const cache = createCache(rows.length, Math.max(seq, 1));
      try {
        cache.rows = rows;
        const out = await run(cache, stepInputs(rows, inputIds, 0, 0), "all", options.onHidden);
        return out;
      } finally {
        cache.free();
      }
    },

    createCache,

    async prefill(inputIds, cache, options = {}) {
      checkCache(cache, "prefill");
      const rows = layoutRows(inputIds, config);
      const seq = inputIds[0].length;
      checkLength(seq, "prefill");
      if (rows.length !== cache.batch) {
        throw new Error(`prefill: ${rows.length} rows for a cache of batch ${cache.batch}`);
      }
      if (seq > cache.capacity) {
        throw new Error(`prefill: ${seq} tokens exceed the cache capacity ${cache.capacity}`);
      }
      cache.rows = rows;
      cache.length = 0;
      const out = await run(
        cache,
        stepInputs(rows, inputIds, 0, 0),
        options.allLogits ? "all" : "last",
      );
      cache.length = seq;
      return out;
    },

    async decodeStep(nextIds, cache) {
      checkCache(cache, "decodeStep");
      if (cache.length === 0) throw new Error("decodeStep: run prefill on the cache first");
      if (!Array.isArray(nextIds) || nextIds.length !== cache.batch) {
        throw new Error(
          `decodeStep: expected ${cache.batch} ids (one per row), got ${nextIds?.length}`,
        );
      }
      checkIds(nextIds, config, "nextIds");
      const t = cache.length;
      if (t + 1 > cache.capacity) {
        throw new Error(`decodeStep: the cache is full (${cache.capacity} positions)`);
      }
      // The new token's position stays at the mask position, its block position counts on (§5).
      const out = await run(cache, stepInputs(cache.rows, nextIds.map((id) => [id]), t, t), "last");
      cache.length = t + 1;
      return out;
    },

    async prefillSlot(ids, cache, slot) {
      checkCache(cache, "prefillSlot");
      checkSlot(cache, slot, "prefillSlot");
      const rows = layoutRows([ids], config);
      const seq = ids.length;
      checkLength(seq, "prefillSlot");
      if (seq > cache.capacity) {
        throw new Error(`prefillSlot: ${seq} tokens exceed the cache capacity ${cache.capacity}`);
      }
      if (rows[0].pads !== 0) {
        throw new Error("prefillSlot: the prompt starts with pad ids; give it unpadded");
      }
      rowsPerPass(seq, 1);
      const state = cache.slots[slot];
      state.length = 0;
      state.layout = rows[0];
      const view: CacheView = {
        capacity: cache.capacity,
        k: cache.k.map((t) => sliceRows(t, slot, 1)),
        v: cache.v.map((t) => sliceRows(t, slot, 1)),
      };
      try {
        const out = await runGroup(view, rows, stepInputs(rows, [ids], 0, 0), "last");
        state.length = seq;
        return out;
      } catch (err) {
        state.layout = null;
        throw err;
      }
    },

    async prefillSlots(entries, cache) {
      checkCache(cache, "prefillSlots");
      if (!Array.isArray(entries) || entries.length === 0) {
        throw new Error("prefillSlots: expected at least one { slot, ids }");
      }
      if (entries.length === 1) {
        return await model.prefillSlot(entries[0].ids, cache, entries[0].slot);
      }
      const seen = new Set<number>();
      const layouts = entries.map(({ slot, ids }, i) => {
        checkSlot(cache, slot, "prefillSlots");
        if (seen.has(slot)) throw new Error(`prefillSlots: slot ${slot} appears twice`);
        seen.add(slot);
        const [row] = layoutRows([ids], config);
        if (row.pads !== 0) {
          throw new Error(`prefillSlots: prompt ${i} starts with pad ids; give it unpadded`);
        }
        if (ids.length > cache.capacity) {
          throw new Error(
            `prefillSlots: prompt ${i} has ${ids.length} tokens, over the cache capacity ` +
              `${cache.capacity}`,
          );
        }
        return row;
      });
      const width = Math.max(...entries.map((e) => e.ids.length));
      const pad = config.padTokenId;
      const rows = entries.map(({ ids }) => [...new Array(width - ids.length).fill(pad), ...ids]);
      for (const { slot } of entries) cache.slots[slot] = { length: 0, layout: null };
      // A left-padded batch gives each row the numbers it gets alone (README §4.2); its keys and
      // values then move to the slots, real positions only (one dispatch per layer and k/v).
      const temp = createCache(entries.length, width);
      try {
        const logits = await model.prefill(rows, temp);
        const info = new Int32Array(entries.length * 3);
        entries.forEach(({ slot, ids }, i) =>
          info.set([slot, width - ids.length, ids.length], i * 3)
        );
        const infoT = uploadTensor(gpu, info, [entries.length, 3], "i32", { label: "slot rows" });
        const rec = beginRecording(gpu);
        try {
          for (let l = 0; l < config.numLayers; l++) {
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
        entries.forEach(({ slot, ids }, i) => {
          cache.slots[slot] = { length: ids.length, layout: layouts[i] };
        });
        return logits;
      } finally {
        temp.free();
      }
    },

    async decodeSlots(steps, cache) {
      checkCache(cache, "decodeSlots");
      if (!Array.isArray(steps) || steps.length === 0) {
        throw new Error("decodeSlots: expected at least one { slot, id }");
      }
      const seen = new Set<number>();
      const layouts: RowLayout[] = [];
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
        checkIds([id], config, `steps[${i}].id`);
        layouts.push(state.layout);
        info[i * 2] = slot;
        info[i * 2 + 1] = state.length;
        maxKeys = Math.max(maxKeys, state.length + 1);
      });
      // Each row's new token sits at its own index; positions follow §5 per row.
      const n = steps.length;
      const ids = new Int32Array(n);
      const pos = new Int32Array(n * 2);
      steps.forEach(({ slot, id }, i) => {
        ids[i] = id;
        const [p0, p1] = positionAt(layouts[i], cache.slots[slot].length);
        pos[i * 2] = p0;
        pos[i * 2 + 1] = p1;
      });
      const input: StepInput = { ids, pos, batch: n, seq: 1, past: 0 };
      const tableSize = rotaryTableSize(cache.capacity);
      const makeAttend = (uploads: Tensor[]): Attend => {
        const slotInfo = uploadTensor(gpu, info, [n, 2], "i32", { label: "slotInfo" });
        uploads.push(slotInfo);
        return (rec, l, qkv, posT) => {
          const q = qkvRotarySlots(
            rec,
            reshape(qkv, [n, 1, 3 * config.hiddenSize]),
            posT,
            cache.k[l],
            cache.v[l],
            slotInfo,
            { heads: config.numHeads, layout: "interleaved", maxPosition: tableSize },
          );
          const ctx = attentionSlots(rec, q, cache.k[l], cache.v[l], slotInfo, {
            maxKeys,
            layerScale: l + 1,
          });
          releaseTensor(q, rec);
          return ctx;
        };
      };
      const out = await runRecorded(makeAttend, input, "last");
      for (const { slot } of steps) cache.slots[slot].length++;
      return out;
    },

    releaseSlot(cache, slot) {
      checkSlot(cache, slot, "releaseSlot");
      cache.slots[slot].length = 0;
      cache.slots[slot].layout = null;
    },

    parameters() {
      const m = new Map<string, Tensor>();
      m.set(`${parts.embedding.name}.weight`, parts.embedding.weight);
      const addNorm = (n: LayerNorm) => {
        m.set(`${n.name}.weight`, n.weight);
        m.set(`${n.name}.bias`, n.bias);
      };
      const addLinear = (n: Linear) => {
        m.set(`${n.name}.weight`, n.weight);
        if (n.bias) m.set(`${n.name}.bias`, n.bias);
      };
      for (const layer of parts.layers) {
        addNorm(layer.inputLayerNorm);
        addLinear(layer.queryKeyValue);
        addLinear(layer.dense);
        addNorm(layer.postAttentionLayerNorm);
        addLinear(layer.denseHTo4h);
        addLinear(layer.dense4hToH);
      }
      addNorm(parts.finalLayerNorm);
      addLinear(parts.lmHead);
      return m;
    },

    dispose() {
      if (model.disposed) return;
      // A tied lm_head is the embedding tensor itself: release each tensor once.
      for (const t of new Set(model.parameters().values())) releaseTensor(t);
      for (const layer of parts.layers) {
        for (const lin of [layer.queryKeyValue, layer.dense, layer.denseHTo4h, layer.dense4hToH]) {
          if (lin.lora) {
            releaseTensor(lin.lora.a);
            releaseTensor(lin.lora.b);
            lin.lora = null;
          }
        }
      }
      model.disposed = true;
    },
  };
  return model;
}
