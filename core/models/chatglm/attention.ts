/**
 * The attention variants a ChatGLM step passes to the block (spec §3.1–3.3, §5; the spec is
 * tests/fixtures/chatglm6b-tiny/README.md). All three rotate q and k by the 2-D positions
 * (per-head interleaved qkv, f16-rounded inv_freq), scale scores by 1/(sqrt(d)·c) with c = layer + 1,
 * fill masked scores with −10000 before multiplying by c, and softmax in f32:
 * - `fullAttention`: the step's own keys only (training; differentiable);
 * - `cachedAttention`: rows in lockstep append k, v to the KV cache at `past` and attend over it;
 * - `slotAttention`: each row is its own sequence in its own cache row (continuous batching).
 * The masks are the compact form of inputs.ts (`maskInfo` = pads, context length per row).
 */

import { selfAttentionOp } from "../../autograd/ops.ts";
import { forwardOnly, free } from "../../autograd/tape.ts";
import { attention, qkvAttentionSlots, qkvRotary } from "../../kernels/mod.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import type { Attend } from "./block.ts";
import type { CacheView } from "./cache.ts";
import type { ChatGLMConfig } from "./config.ts";
import { rotaryTableSize } from "./rotary.ts";

/** Masked scores before the layer scale (spec §3.3): finite, so a fully masked row stays finite. */
const MASK_VALUE = -10000;

/** Attention over the step's own positions `pos` i32 [b, 2, s] (training, with backward). */
export function fullAttention(config: ChatGLMConfig, pos: Tensor, maskInfo: Tensor): Attend {
  const maxPosition = rotaryTableSize(pos.shape[2]);
  return (t, qkv, l) =>
    selfAttentionOp(t, qkv, {
      heads: config.numHeads,
      layerScale: l + 1,
      maskInfo,
      pos,
      maxPosition,
    });
}

/**
 * Lockstep KV cache (spec §5): the step's k, v land at positions `past ..` of every row of
 * `cache`, and the queries attend over all `past + s` keys under the compact mask.
 */
export function cachedAttention(
  config: ChatGLMConfig,
  cache: CacheView,
  pos: Tensor,
  maskInfo: Tensor,
  past: number,
): Attend {
  const maxPosition = rotaryTableSize(cache.capacity);
  const s = pos.shape[2];
  return (t, qkv, l) =>
    forwardOnly(t, "cachedAttention", [qkv], () => {
      const rec = t.rec;
      const q = qkvRotary(rec, qkv.value, pos, cache.k[l], cache.v[l], {
        mode: "2d",
        heads: config.numHeads,
        past,
        layout: "interleaved",
        maxPosition,
      });
      const ctx = attention(rec, q, cache.k[l], cache.v[l], {
        keys: past + s,
        layerScale: l + 1,
        maskValue: MASK_VALUE,
        maskInfo,
      });
      free(rec, q);
      return ctx;
    });
}

/**
 * Slots: row i of the step (one new token) is sequence `slotInfo[i] = (slot, length)`; its k, v
 * go to position `length` of cache row `slot` and it attends to that row's first length + 1 keys
 * (a new token sees its whole sequence, spec §5). `maxKeys` bounds the lengths + 1.
 */
export function slotAttention(
  config: ChatGLMConfig,
  cache: CacheView,
  pos: Tensor,
  slotInfo: Tensor,
  maxKeys: number,
): Attend {
  const maxPosition = rotaryTableSize(cache.capacity);
  return (t, qkv, l) =>
    forwardOnly(t, "slotAttention", [qkv], () =>
      // Rotary, cache write and attention in one dispatch (core/kernels/attention/slots.ts).
      qkvAttentionSlots(t.rec, qkv.value, pos, cache.k[l], cache.v[l], slotInfo, {
        heads: config.numHeads,
        layout: "interleaved",
        maxPosition,
        maxKeys,
        layerScale: l + 1,
      }));
}
