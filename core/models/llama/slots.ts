/**
 * Continuous batching for the Llama family: each cache row is a slot with its own sequence and
 * length. `prefillSlot` runs one unpadded prompt into its row; `prefillSlots` runs several as one
 * left-padded lockstep prefill (each row gets the numbers it gets alone, spec §5) and moves their
 * keys and values to the slots (the shared `copyRowsToSlots` kernel); `decodeSlots` appends one
 * token to any subset of slots, each at its own position (= its length: slots are unpadded).
 */

import { forwardOnly, free } from "../../autograd/tape.ts";
import { attentionSlots, headsRotary } from "../../kernels/mod.ts";
import type { Tensor } from "../../tensor/tensor.ts";
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
  if (Array.isArray(entries) && entries.length === 1) {
    return await prefillSlot(model, entries[0].ids, cache, entries[0].slot);
  }
  checkSlotPrompts(
    cache,
    entries,
    (ids, i) => checkPrompt(model, ids, cache, `prefillSlots: prompt ${i}`),
  );
  const { rows, width } = leftPadded(entries, model.config.padTokenId);
  for (const { slot } of entries) cache.slots[slot] = { length: 0, layout: null };
  const temp = createCache(cacheOwner(model), entries.length, width);
  try {
    const logits = await prefill(model, rows, temp);
    await moveRowsToSlots(model.gpu, temp, cache, entries, width);
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
  const { info, maxKeys } = checkSlotSteps(cache, steps, model.config.vocabSize);
  const n = steps.length;
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
export function slotAttention(
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
