/**
 * Continuous batching: each row of a cache is a slot holding its own sequence with its own
 * length. Prompts enter alone (`prefillSlot`) or batched (`prefillSlots`: a left-padded lockstep
 * prefill whose keys and values then move to their slots); `decodeSlots` appends one token to any
 * subset of slots in one step (spec §5 per row; the spec is tests/fixtures/chatglm6b-tiny/README.md).
 */

import { beginRecording, discardRecording, submit } from "../../gpu/recording.ts";
import { copyRowsToSlots } from "../../kernels/mod.ts";
import { releaseTensor, uploadTensor } from "../../tensor/tensor.ts";
import { slotAttention } from "./attention.ts";
import { cacheRows, type ChatGLMCache, checkCache, checkSlot, createCache } from "./cache.ts";
import { layoutRows, positionAt, type RowLayout } from "./inputs.ts";
import { checkIds, checkLength, prefill, runRows } from "./lockstep.ts";
import type { ChatGLMModel, SlotPrompt, SlotStep } from "./model.ts";
import { rowsPerPass, runStep, stepInputs } from "./step.ts";

/** Runs one unpadded prompt into row `slot`; logits of its last position [V]. */
export async function prefillSlot(
  model: ChatGLMModel,
  ids: number[],
  cache: ChatGLMCache,
  slot: number,
): Promise<Float32Array> {
  checkCache(cache, "prefillSlot");
  checkSlot(cache, slot, "prefillSlot");
  const rows = layoutRows([ids], model.config);
  const seq = ids.length;
  checkLength(model, seq, "prefillSlot");
  if (seq > cache.capacity) {
    throw new Error(`prefillSlot: ${seq} tokens exceed the cache capacity ${cache.capacity}`);
  }
  if (rows[0].pads !== 0) {
    throw new Error("prefillSlot: the prompt starts with pad ids; give it unpadded");
  }
  rowsPerPass(model, seq, 1);
  const state = cache.slots[slot];
  state.length = 0;
  state.layout = rows[0];
  try {
    const view = cacheRows(cache, slot, 1);
    const out = await runRows(model, view, rows, stepInputs(rows, [ids], 0, 0), "last");
    state.length = seq;
    return out;
  } catch (err) {
    state.layout = null;
    throw err;
  }
}

/**
 * Runs several unpadded prompts into their slots in one batched (left-padded) prefill, then moves
 * each row's keys and values to its slot; logits of each prompt's last position [n, V] in order.
 */
export async function prefillSlots(
  model: ChatGLMModel,
  entries: SlotPrompt[],
  cache: ChatGLMCache,
): Promise<Float32Array> {
  const { config, gpu } = model;
  checkCache(cache, "prefillSlots");
  if (!Array.isArray(entries) || entries.length === 0) {
    throw new Error("prefillSlots: expected at least one { slot, ids }");
  }
  if (entries.length === 1) return await prefillSlot(model, entries[0].ids, cache, entries[0].slot);
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
  // A left-padded batch gives each row the numbers it gets alone (spec §4.2); its keys and
  // values then move to the slots, real positions only (one dispatch per layer and k/v).
  const temp = createCache(model, entries.length, width);
  try {
    const logits = await prefill(model, rows, temp);
    const info = new Int32Array(entries.length * 3);
    entries.forEach(({ slot, ids }, i) => info.set([slot, width - ids.length, ids.length], i * 3));
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
}

/**
 * Appends one token to each listed slot (any subset of prefilled slots, each with its own length)
 * in one batched step; logits [steps.length, V] in order.
 */
export async function decodeSlots(
  model: ChatGLMModel,
  steps: SlotStep[],
  cache: ChatGLMCache,
): Promise<Float32Array> {
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
    checkIds([id], model.config, `steps[${i}].id`);
    layouts.push(state.layout);
    info.set([slot, state.length], i * 2);
    maxKeys = Math.max(maxKeys, state.length + 1);
  });
  // Each row's new token sits at its own index; positions follow §5 per row.
  const n = steps.length;
  const ids = new Int32Array(n);
  const pos = new Int32Array(n * 2);
  steps.forEach(({ slot, id }, i) => {
    ids[i] = id;
    pos.set(positionAt(layouts[i], cache.slots[slot].length), i * 2);
  });
  const input = { ids, pos, batch: n, seq: 1, past: 0 };
  const out = await runStep(model, input, (upload, posT) => {
    const slotInfo = upload(info, [n, 2], "slotInfo");
    return slotAttention(model.config, cache, posT, slotInfo, maxKeys);
  }, "last");
  for (const { slot } of steps) cache.slots[slot].length++;
  return out;
}
