/**
 * The attention variants a Llama-family step passes to the block (spec §4.2–4.3, §5–6:
 * tests/fixtures/llama-family/README.md): q and k rotated by 1-D positions (rotate half, the
 * model's table), scores scaled by 1/√d, masked keys get a finite lowest score (a pad query with
 * no allowed key stays finite), f32 softmax, query head n reads kv head n / (nh / nkv).
 * - `fullAttention`: the step's own keys (training; differentiable);
 * - `cachedAttention`: rows in lockstep append k, v (nkv heads) to the KV cache at `past` and
 *   attend over it under the compact mask (left pads, causal by index).
 */

import { groupedAttentionOp } from "../../autograd/ops.ts";
import { forwardOnly, free } from "../../autograd/tape.ts";
import { attention, headsRotary } from "../../kernels/mod.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import type { CacheView } from "../chatglm/cache.ts";
import type { Attend } from "./block.ts";
import type { LlamaConfig } from "./config.ts";

/**
 * Score of a masked key. The reference adds float32 lowest; any value that makes exp() vanish
 * next to a visible score gives the same weights, and a fully masked (pad) row becomes uniform.
 */
export const MASK_VALUE = -1e30;

/** Attention over the step's own positions `pos` i32 [b, s] (training, with backward). */
export function fullAttention(
  config: LlamaConfig,
  pos: Tensor,
  table: Tensor,
  maskInfo: Tensor,
): Attend {
  return (t, q, k, v) =>
    groupedAttentionOp(t, q, k, v, {
      heads: config.numHeads,
      kvHeads: config.numKvHeads,
      pos,
      table,
      maskInfo,
      maskValue: MASK_VALUE,
    });
}

/**
 * Lockstep KV cache (spec §6): the step's k (normalized, rotated) and v land at positions
 * `past ..` of every row of `cache` ([b, nkv, capacity, d]), and the queries attend over all
 * `past + s` keys.
 */
export function cachedAttention(
  config: LlamaConfig,
  cache: CacheView,
  pos: Tensor,
  table: Tensor,
  maskInfo: Tensor,
  past: number,
): Attend {
  const s = pos.shape[1];
  return (t, q, k, v, l) =>
    forwardOnly(t, "cachedAttention", [q, k, v], () => {
      const rec = t.rec;
      const qh = headsRotary(rec, q.value, pos, table, { heads: config.numHeads });
      const kv = { heads: config.numKvHeads, past };
      headsRotary(rec, k.value, pos, table, { ...kv, out: cache.k[l] });
      headsRotary(rec, v.value, null, null, { ...kv, out: cache.v[l] });
      const ctx = attention(rec, qh, cache.k[l], cache.v[l], {
        keys: past + s,
        maskValue: MASK_VALUE,
        maskInfo,
      });
      free(rec, qh);
      return ctx;
    });
}
