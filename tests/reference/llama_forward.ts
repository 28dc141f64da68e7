/**
 * A float64 CPU forward of a Llama-family model (tests/fixtures/llama-family/README.md §4–5)
 * from weights by checkpoint name, composed of the ops in ./llama.ts: embedding, per layer
 * RMSNorm → q/k/v (+ biases) → Qwen3's per-head q/k RMSNorm → rotate-half rotary → grouped-query
 * attention over left-padded rows → o → residual → RMSNorm → SwiGLU → residual, final RMSNorm,
 * output layer (the embedding when tied). Used by tests/llama_quant.test.ts as the reference of
 * the int8/int4 model with its dequantized weights.
 */

import type { LlamaConfig } from "../../core/models/llama/config.ts";
import { leftPads, positionIds } from "../../core/models/llama/inputs.ts";
import { llamaInvFreq } from "../../core/models/llama/rotary.ts";
import { gqaAttention64, headsRotary64, rmsNorm64, siluGate64 } from "./llama.ts";
import { linear64 } from "./backward.ts";

/** Logits [b, s, V] of left-padded `inputIds` (pads: leading runs of the config's pad id). */
export function llamaForward64(
  config: LlamaConfig,
  weights: Map<string, ArrayLike<number>>,
  inputIds: number[][],
): Float64Array {
  const get = (name: string) => {
    const w = weights.get(name);
    if (!w) throw new Error(`reference: no weight ${name}`);
    return w;
  };
  const { hiddenSize: h, numHeads: nh, numKvHeads: nkv, headDim: d, vocabSize: V } = config;
  const b = inputIds.length, s = inputIds[0].length, M = b * s;
  const pads = leftPads(inputIds, config);
  const pos = positionIds(pads, 0, s);
  const invFreq = llamaInvFreq(d, config.rope);
  const eps = config.rmsNormEps;
  const emb = get("model.embed_tokens.weight");
  let x = new Float64Array(M * h);
  inputIds.flat().forEach((id, i) => {
    for (let j = 0; j < h; j++) x[i * h + j] = emb[id * h + j];
  });
  const bias = (name: string) => weights.get(name);
  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}`;
    const a = rmsNorm64(x, get(`${p}.input_layernorm.weight`), h, eps);
    const proj = (m: string, n: number, input: Float64Array) =>
      linear64(
        input,
        get(`${p}.${m}.weight`),
        bias(`${p}.${m}.bias`) ?? null,
        M,
        n,
        input.length / M,
      );
    let q = proj("self_attn.q_proj", nh * d, a);
    let k = proj("self_attn.k_proj", nkv * d, a);
    const v = proj("self_attn.v_proj", nkv * d, a);
    if (config.qkNorm) {
      q = rmsNorm64(q, get(`${p}.self_attn.q_norm.weight`), d, eps);
      k = rmsNorm64(k, get(`${p}.self_attn.k_norm.weight`), d, eps);
    }
    const qh = headsRotary64(q, b, s, nh, d, pos, invFreq);
    const kh = headsRotary64(k, b, s, nkv, d, pos, invFreq);
    const vh = headsRotary64(v, b, s, nkv, d, null, null);
    const ctx = gqaAttention64(qh, kh, vh, { b, nh, nkv, s, S: s, d }, pads);
    const o = proj("self_attn.o_proj", h, ctx);
    x = x.map((xi, i) => xi + o[i]);
    const m = rmsNorm64(x, get(`${p}.post_attention_layernorm.weight`), h, eps);
    const inner = config.intermediateSize;
    const g = proj("mlp.gate_proj", inner, m);
    const u = proj("mlp.up_proj", inner, m);
    const y = proj("mlp.down_proj", h, siluGate64(g, u));
    x = x.map((xi, i) => xi + y[i]);
  }
  const xf = rmsNorm64(x, get("model.norm.weight"), h, eps);
  const head = config.tieWordEmbeddings ? emb : get("lm_head.weight");
  return linear64(xf, head, null, M, V, h);
}
