/**
 * Continuous batching: each row of a cache is a slot holding its own sequence with its own
 * length. Prompts enter alone (`prefillSlot`) or batched (`prefillSlots`: a left-padded lockstep
 * prefill whose keys and values then move to their slots); `decodeSlots` appends one token to any
 * subset of slots in one step (spec §5 per row; the spec is tests/fixtures/chatglm6b-tiny/README.md).
 */

import { slotAttention } from "./attention.ts";
import {
  cacheRows,
  type ChatGLMCache,
  checkCache,
  checkSlot,
  checkSlotPrompts,
  checkSlotSteps,
  createCache,
  leftPadded,
  moveRowsToSlots,
} from "./cache.ts";
import { layoutRows, positionAt, type RowLayout } from "./inputs.ts";
import { checkLength, prefill, runRows } from "./lockstep.ts";
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
  if (Array.isArray(entries) && entries.length === 1) {
    return await prefillSlot(model, entries[0].ids, cache, entries[0].slot);
  }
  const layouts: RowLayout[] = [];
  checkSlotPrompts(cache, entries, (ids, i) => {
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
    layouts.push(row);
  });
  const { rows, width } = leftPadded(entries, config.padTokenId);
  for (const { slot } of entries) cache.slots[slot] = { length: 0, layout: null };
  // A left-padded batch gives each row the numbers it gets alone (spec §4.2); its keys and
  // values then move to the slots, real positions only.
  const temp = createCache(model, entries.length, width);
  try {
    const logits = await prefill(model, rows, temp);
    await moveRowsToSlots(gpu, temp, cache, entries, width);
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
  const { info, maxKeys } = checkSlotSteps(cache, steps, model.config.vocabSize);
  const layouts = steps.map(({ slot }) => cache.slots[slot].layout!);
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
