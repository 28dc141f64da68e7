/**
 * Continuous batching for the Llama family: each cache row is a slot with its own sequence and
 * length. `prefillSlot` runs one unpadded prompt into its row; `prefillSlots` runs several as one
 * left-padded lockstep prefill (each row gets the numbers it gets alone, spec §5) and moves their
 * keys and values to the slots (the shared `copyRowsToSlots` kernel); `decodeSlots` appends one
 * token to any subset of slots, each at its own position (= its length: slots are unpadded).
 */

import { beginRecording, discardRecording, submit } from "../../gpu/recording.ts";
import { forwardOnly, free } from "../../autograd/tape.ts";
import { attentionSlots, copyRowsToSlots, headsRotary } from "../../kernels/mod.ts";
import { releaseTensor, type Tensor, uploadTensor } from "../../tensor/tensor.ts";
import {
  cacheRows,
  type ChatGLMCache,
  checkCache,
  checkSlot,
  createCache,
} from "../chatglm/cache.ts";
import type { SlotPrompt, SlotStep } from "../chatglm/model.ts";
import { runModelStep } from "../chatglm/step.ts";
import type { Attend } from "./block.ts";
import { leftPads } from "./inputs.ts";
import {
  cacheOwner,
  checkLength,
  modelTable,
  prefill,
  runRows,
  stackPass,
  stepInput,
} from "./lockstep.ts";
import type { LlamaModel } from "./model.ts";

const UNPADDED = { pads: 0, ctx: 0, mpos: 0 };

function checkPrompt(model: LlamaModel, ids: number[], cache: ChatGLMCache, what: string) {
  const [pads] = leftPads([ids], model.config, what);
  if (pads !== 0) throw new Error(`${what}: the prompt starts with pad ids; give it unpadded`);
  checkLength(model, ids.length, what);
  if (ids.length > cache.capacity) {
    throw new Error(`${what}: ${ids.length} tokens exceed the cache capacity ${cache.capacity}`);
  }
}

/** Runs one unpadded prompt into row `slot`; logits of its last position [V]. */
export async function prefillSlot(
  model: LlamaModel,
  ids: number[],
  cache: ChatGLMCache,
  slot: number,
): Promise<Float32Array> {
  checkCache(cache, "prefillSlot");
  checkSlot(cache, slot, "prefillSlot");
  checkPrompt(model, ids, cache, "prefillSlot");
  const state = cache.slots[slot];
  state.length = 0;
  state.layout = UNPADDED;
  try {
    const out = await runRows(
      model,
      cacheRows(cache, slot, 1),
      [0],
      stepInput([ids], [0], 0),
      "last",
    );
    state.length = ids.length;
    return out;
  } catch (err) {
    state.layout = null;
    throw err;
  }
}

/** Several unpadded prompts into their slots in one batched prefill; last logits [n, V]. */
export async function prefillSlots(
  model: LlamaModel,
  entries: SlotPrompt[],
  cache: ChatGLMCache,
): Promise<Float32Array> {
  checkCache(cache, "prefillSlots");
  if (!Array.isArray(entries) || entries.length === 0) {
    throw new Error("prefillSlots: expected at least one { slot, ids }");
  }
  if (entries.length === 1) return await prefillSlot(model, entries[0].ids, cache, entries[0].slot);
  const seen = new Set<number>();
  entries.forEach(({ slot, ids }, i) => {
    checkSlot(cache, slot, "prefillSlots");
    if (seen.has(slot)) throw new Error(`prefillSlots: slot ${slot} appears twice`);
    seen.add(slot);
    checkPrompt(model, ids, cache, `prefillSlots: prompt ${i}`);
  });
  const width = Math.max(...entries.map((e) => e.ids.length));
  const pad = model.config.padTokenId;
  const rows = entries.map(({ ids }) => [...new Array(width - ids.length).fill(pad), ...ids]);
  for (const { slot } of entries) cache.slots[slot] = { length: 0, layout: null };
  const temp = createCache(cacheOwner(model), entries.length, width);
  try {
    const logits = await prefill(model, rows, temp);
    const info = new Int32Array(entries.length * 3);
    entries.forEach(({ slot, ids }, i) => info.set([slot, width - ids.length, ids.length], i * 3));
    const infoT = uploadTensor(model.gpu, info, [entries.length, 3], "i32", { label: "slot rows" });
    const rec = beginRecording(model.gpu);
    try {
      for (let l = 0; l < model.config.numLayers; l++) {
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
    entries.forEach(({ slot, ids }) => {
      cache.slots[slot] = { length: ids.length, layout: UNPADDED };
    });
    return logits;
  } finally {
    temp.free();
  }
}

/** One token appended to each listed slot, in one batched step; logits [steps.length, V]. */
export async function decodeSlots(
  model: LlamaModel,
  steps: SlotStep[],
  cache: ChatGLMCache,
): Promise<Float32Array> {
  checkCache(cache, "decodeSlots");
  if (!Array.isArray(steps) || steps.length === 0) {
    throw new Error("decodeSlots: expected at least one { slot, id }");
  }
  const seen = new Set<number>();
  const n = steps.length;
  const info = new Int32Array(n * 2);
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
    if (!Number.isInteger(id) || id < 0 || id >= model.config.vocabSize) {
      throw new Error(
        `steps[${i}].id = ${id} is not a token id (vocab_size ${model.config.vocabSize})`,
      );
    }
    info.set([slot, state.length], i * 2);
    maxKeys = Math.max(maxKeys, state.length + 1);
  });
  // A slot is unpadded: the new token's position is the slot's length.
  const ids = Int32Array.from(steps, (s) => s.id);
  const pos = Int32Array.from(steps, (s) => cache.slots[s.slot].length);
  const input = { ids, pos, posShape: [n, 1], batch: n, seq: 1, past: 0 };
  const table = modelTable(model, cache.capacity);
  const out = await runModelStep(model, stackPass(model), input, (upload, posT) => {
    const slotInfo = upload(info, [n, 2], "slotInfo");
    return slotAttention(model, cache, posT, table, slotInfo, maxKeys);
  }, "last");
  for (const { slot } of steps) cache.slots[slot].length++;
  return out;
}

/** Row i (one new token) is sequence `slotInfo[i] = (slot, length)` of the slot cache. */
function slotAttention(
  model: LlamaModel,
  cache: ChatGLMCache,
  pos: Tensor,
  table: Tensor,
  slotInfo: Tensor,
  maxKeys: number,
): Attend {
  const { numHeads, numKvHeads } = model.config;
  return (t, q, k, v, l) =>
    forwardOnly(t, "slotAttention", [q, k, v], () => {
      const rec = t.rec;
      const qh = headsRotary(rec, q.value, pos, table, { heads: numHeads });
      const kv = { heads: numKvHeads, slotInfo };
      headsRotary(rec, k.value, pos, table, { ...kv, out: cache.k[l] });
      headsRotary(rec, v.value, null, null, { ...kv, out: cache.v[l] });
      const ctx = attentionSlots(rec, qh, cache.k[l], cache.v[l], slotInfo, { maxKeys });
      free(rec, qh);
      return ctx;
    });
}
