/**
 * The Llama-family forward pass (Qwen2 / Qwen2.5, Qwen3, Llama 3; spec §4 of
 * tests/fixtures/llama-family/README.md) as an ONNX opset-17 graph with the KV cache as inputs
 * and outputs, in the same contract as the ChatGLM export (export_chatglm.ts), so one graph
 * serves prefill (P = 0) and decoding and the same runner drives both:
 *
 * Inputs:  input_ids [b, s] int64; position_ids [b, s] int64 (spec §5: real tokens counted, so
 *          left pads shift nothing); attention_mask [b, s, C + s] bool, true = may NOT attend;
 *          past_key_<l>, past_value_<l> [b, nkv, C, d] f32 (keys after q/k norm and rotary): the
 *          runner's cache buffer of capacity C, unused positions hidden by the mask.
 * Outputs: logits [b, s, V] f32; new_key_<l>, new_value_<l> [b, nkv, s, d] f32 (the new
 *          positions only).
 *
 * RMSNorm is written as Pow → ReduceMean → Add ε → Sqrt → Div → Mul (the pattern ORT fuses into
 * SimplifiedLayerNormalization). The rotary angles are computed in the graph, θ = f32(p ·
 * inv_freq[i]) with inv_freq from `llamaInvFreq` (Llama 3 scaling included), cos/sin of
 * concat(θ, θ): no position table, so the graph takes any position. Grouped-query attention reads
 * kv head n / (nh / nkv) without copying keys (graph_parts.ts). The head is a Gemm with transB
 * over the [V, h] matrix as stored: a tied model's head is the embedding initializer itself, not a
 * second copy. Quantized weights (int8/int4) make the seven projections `com.microsoft`
 * MatMulNBits (block size = the group size, or per row), and with `embeddings` the embedding
 * lookup an int8 table with per-row scales and the head a per-row MatMulNBits.
 */

import type { LoraAdapter } from "../adapters/lora_weights.ts";
import type { LlamaConfig } from "../models/llama/config.ts";
import { hasBias } from "../models/llama/params.ts";
import { llamaInvFreq } from "../models/llama/rotary.ts";
import { createGraphBuilder, type GraphBuilder } from "./graph_builder.ts";
import { attr, type OnnxGraph, type OnnxValueInfo } from "./onnx_model.ts";
import {
  cachedAttention,
  cacheValueInfos,
  f32Bytes,
  type GraphQuantization,
  graphWeights,
  type OnnxWeightDtype,
  quantizedLogits,
  rotateHalf,
  scaleQueries,
  scoreMask,
  swapHeadsAndSeq,
  type WeightReader,
} from "./graph_parts.ts";

/** Bumped whenever the Llama graph's inputs, outputs or numerics change. */
export const LLAMA_EXPORTER_VERSION = "medglm-llama-onnx/2";

export interface LlamaGraphOptions {
  dtype?: OnnxWeightDtype;
  /** Merged into the weights as they are read. */
  adapter?: LoraAdapter | null;
  /**
   * int8/int4 weights (adapters cannot be merged into them): the seven projections as
   * MatMulNBits, with `embeddings` the embedding lookup and the head too (graph_parts.ts).
   */
  quant?: GraphQuantization | null;
}

/** Masked scores become float32's lowest finite value (spec §11.8: rows stay finite). */
const F32_LOWEST = -3.4028234663852886e38;

/**
 * Builds the graph. Weight data is read lazily through `read` (checkpoint names; a tied model's
 * head reads `model.embed_tokens.weight`) when the model is encoded or written.
 */
export function buildLlamaGraph(
  config: LlamaConfig,
  read: WeightReader,
  options: LlamaGraphOptions = {},
): OnnxGraph {
  const {
    hiddenSize: h,
    numHeads: nh,
    numKvHeads: nkv,
    headDim: d,
    intermediateSize: inner,
    vocabSize: V,
  } = config;
  const g = createGraphBuilder();
  const quant = options.quant ?? null;
  const w = graphWeights(g, read, { dtype: options.dtype, adapter: options.adapter, quant });
  const eps = g.scalar("rms_eps", config.rmsNormEps);
  const rmsNorm = (x: string, weight: string, n: number) => {
    const sq = g.op("Pow", [x, g.scalar("two", 2)]);
    const mean = g.op("ReduceMean", [sq], {
      attributes: { axes: attr.ints([-1]), keepdims: attr.int(1) },
    });
    const norm = g.op("Div", [x, g.op("Sqrt", [g.op("Add", [mean, eps])])]);
    return g.op("Mul", [norm, w.tensor(weight, [n])], { name: weight.replace(/\.weight$/, "") });
  };
  const linear = (x: string, module: string, suffix: string, out: number, inF: number) =>
    w.linear(x, `${module}.${suffix}`, out, inF, hasBias(config, suffix));

  const embedName = "model.embed_tokens.weight";
  const embedding = w.embedding(embedName, V, h);
  let x = embedding.x;

  const rotary = { ...rotaryCosSin(g, llamaInvFreq(d, config.rope)), d, chunks: 1 };
  const mask = scoreMask(g, nh / nkv);
  const heads = (t: string, n: number) =>
    g.op("Reshape", [t, g.int64s(`shape_${n}_heads`, [0, 0, n, d])]);

  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}`;
    const a = rmsNorm(x, `${p}.input_layernorm.weight`, h);
    let q = heads(linear(a, p, "self_attn.q_proj", nh * d, h), nh);
    let k = heads(linear(a, p, "self_attn.k_proj", nkv * d, h), nkv);
    const v = heads(linear(a, p, "self_attn.v_proj", nkv * d, h), nkv);
    if (config.qkNorm) {
      // Qwen3: per head over d, before the rotary (spec §4.4); the cache holds the result.
      q = rmsNorm(q, `${p}.self_attn.q_norm.weight`, d);
      k = rmsNorm(k, `${p}.self_attn.k_norm.weight`, d);
    }
    q = scaleQueries(g, q, Math.sqrt(d), l);
    const qh = swapHeadsAndSeq(g, rotateHalf(g, q, { ...rotary, heads: nh }, `${p}.q`));
    const kh = swapHeadsAndSeq(g, rotateHalf(g, k, { ...rotary, heads: nkv }, `${p}.k`));
    const ctx = cachedAttention(g, qh, kh, swapHeadsAndSeq(g, v), {
      layer: l,
      heads: nh,
      kvHeads: nkv,
      d,
      mask,
      maskedScore: F32_LOWEST,
      scoreScale: 1,
      name: p,
    });
    const ctxFlat = g.op("Reshape", [
      swapHeadsAndSeq(g, ctx),
      g.int64s("shape_ctx", [0, 0, nh * d]),
    ]);
    const o = linear(ctxFlat, p, "self_attn.o_proj", h, nh * d);
    x = g.op("Add", [x, o], { name: `${p}.attn_residual` });
    const m = rmsNorm(x, `${p}.post_attention_layernorm.weight`, h);
    const gate = linear(m, p, "mlp.gate_proj", inner, h);
    const up = linear(m, p, "mlp.up_proj", inner, h);
    // SwiGLU (spec §4.5): down(silu(gate) ⊙ up), silu(z) = z·σ(z).
    const act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up]);
    x = g.op("Add", [x, linear(act, p, "mlp.down_proj", h, inner)], { name: `${p}.out` });
  }
  const y = rmsNorm(x, "model.norm.weight", h);
  if (quant?.embeddings) quantizedLogits(g, y, V, h, quant);
  else {
    // Head: y [b, s, h] as rows [b·s, h] · Wᵀ with W [V, h] as stored (transB), back to [b, s, V].
    const headTable = config.tieWordEmbeddings ? embedding.table! : g.initializer({
      name: "lm_head.weight",
      dtype: w.onnxDtype,
      dims: [V, h],
      data: async () => w.store(await w.read("lm_head.weight", V * h)),
    });
    const rows = g.op("Reshape", [y, g.int64s("shape_rows", [-1, h])]);
    const flat = g.op("Gemm", [rows, w.asF32(headTable)], {
      attributes: { transB: attr.int(1) },
      name: "lm_head",
    });
    const outShape = g.op("Concat", [g.op("Shape", ["input_ids"]), g.int64s("vocab", [V])], {
      attributes: { axis: attr.int(0) },
    });
    g.node("Reshape", [flat, outShape], { outputs: ["logits"], name: "logits" });
  }

  const inputs: OnnxValueInfo[] = [
    { name: "input_ids", dtype: "int64", shape: ["batch", "seq"] },
    { name: "position_ids", dtype: "int64", shape: ["batch", "seq"] },
    { name: "attention_mask", dtype: "bool", shape: ["batch", "seq", "keys"] },
  ];
  const outputs: OnnxValueInfo[] = [{
    name: "logits",
    dtype: "float32",
    shape: ["batch", "seq", V],
  }];
  const cache = cacheValueInfos(config.numLayers, nkv, d);
  inputs.push(...cache.inputs);
  outputs.push(...cache.outputs);
  return g.build(config.modelType, inputs, outputs);
}

/**
 * cos and sin [b, s, 1, d] of the rows' positions (spec §4.2): θ = f32(p · inv_freq[i]) for the
 * pairs (i, i + d/2), i.e. the angles concat(θ, θ), broadcast over heads.
 */
function rotaryCosSin(g: GraphBuilder, invFreq: Float32Array): { cos: string; sin: string } {
  const inv = g.constant("inv_freq", "float32", [invFreq.length], f32Bytes(invFreq));
  const pos = g.op("Unsqueeze", [
    g.op("Cast", ["position_ids"], { attributes: { to: attr.int(1) } }),
    g.int64s("axis_last", [-1]),
  ]); // [b, s, 1]
  const half = g.op("Mul", [pos, inv], { name: "rotary_angles" }); // [b, s, d/2]
  const angles = g.op("Concat", [half, half], { attributes: { axis: attr.int(-1) } });
  const axis2 = g.int64s("axis2", [2]);
  return {
    cos: g.op("Unsqueeze", [g.op("Cos", [angles]), axis2], { name: "rotary_cos" }),
    sin: g.op("Unsqueeze", [g.op("Sin", [angles]), axis2], { name: "rotary_sin" }),
  };
}
