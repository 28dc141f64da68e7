/**
 * The ChatGLM-6B (v1) forward pass (README §3) as an ONNX opset-17 graph with the KV cache as
 * inputs and outputs, so one graph serves prefill (P = 0) and incremental decoding (s = 1).
 *
 * Inputs:  input_ids [b, s] int64; position_ids [b, 2, s] int64 (§4); attention_mask [b, s, C + s]
 *          bool, true = may NOT attend; past_key_<l>, past_value_<l> [b, heads, C, d] f32 (keys
 *          after rotary): the runner's cache buffer of capacity C (C may be 0), whose unused
 *          positions the mask hides.
 * Outputs: logits [b, s, V] f32; new_key_<l>, new_value_<l> [b, heads, s, d] f32 (the new
 *          positions only: the runner writes them into its buffer; graph_parts.ts
 *          `cachedAttention`).
 *
 * Weights are stored f32, or f16 ("f16" export: every weight, biases and LayerNorm included, is
 * stored f16 and Cast to f32 in the graph, so compute stays f32 as in the `weights_rounded.f16`
 * goldens). Measured with onnxruntime-node 1.30 on x64 CPU: ORT constant-folds Cast(initializer)
 * at session creation, so an f16 export runs at f32 speed and holds f32 weights in RAM; it only
 * halves the files. An f16 MatMul (activations cast to f16) has no x64 CPU kernel: ORT inserts
 * casts back to f32, and with optimizations off it ran 2–4× slower. So f32 is the CPU default.
 * Linear weights are stored transposed ([in, out]) so MatMul consumes them directly. A LoRA
 * adapter is merged into its targets (W' = W + scaling·B·A) before writing. Rotary angles come
 * from cos/sin tables (θ = f32(p · f16(inv_freq)), §3.2) gathered by position.
 */

import type { LoraAdapter } from "../adapters/lora_weights.ts";
import { type ChatGLMConfig, RESIDUAL_ALPHA } from "../models/chatglm/config.ts";
import { rotaryInvFreq } from "../models/chatglm/rotary.ts";
import { linearModuleName } from "../models/chatglm/params.ts";
import { createGraphBuilder } from "./graph_builder.ts";
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
  transpose,
  type WeightReader,
} from "./graph_parts.ts";

export {
  cacheNames,
  type GraphQuantization,
  type OnnxWeightDtype,
  type WeightReader,
} from "./graph_parts.ts";

/** Bumped whenever the graph's inputs, outputs or numerics change. */
export const EXPORTER_VERSION = "medglm-chatglm-onnx/2";
export const ONNX_OPSET = 17;

export interface ChatGLMGraphOptions {
  /** int8/int4 weights (adapters cannot be merged into them). */
  quant?: GraphQuantization | null;
  dtype?: OnnxWeightDtype;
  /** Merged into the weights as they are read. */
  adapter?: LoraAdapter | null;
  /** Rows of the rotary tables: positions 0 .. maxPositions−1 (default max_sequence_length). */
  maxPositions?: number;
}

/**
 * cos and sin tables [maxPositions, r]: row p = concat(t, t) with t[i] = cos/sin(f32(p·inv_freq[i])),
 * the "rotate half" angle layout of §3.2.
 */
export function rotaryTables(
  headDim: number,
  maxPositions: number,
): { cos: Float32Array; sin: Float32Array } {
  const r = headDim / 2;
  const invFreq = rotaryInvFreq(r);
  const cos = new Float32Array(maxPositions * r);
  const sin = new Float32Array(maxPositions * r);
  for (let p = 0; p < maxPositions; p++) {
    for (let i = 0; i < r / 2; i++) {
      const theta = Math.fround(p * invFreq[i]);
      const c = Math.cos(theta), s = Math.sin(theta);
      cos[p * r + i] = cos[p * r + i + r / 2] = c;
      sin[p * r + i] = sin[p * r + i + r / 2] = s;
    }
  }
  return { cos, sin };
}

/**
 * Builds the graph. Weight data is read lazily through `read` when the model is encoded or
 * written, one tensor at a time in graph order.
 */
export function buildChatGLMGraph(
  config: ChatGLMConfig,
  read: WeightReader,
  options: ChatGLMGraphOptions = {},
): OnnxGraph {
  const maxPositions = options.maxPositions ?? config.maxSequenceLength;
  if (!Number.isInteger(maxPositions) || maxPositions < 1) {
    throw new Error(`ONNX export: maxPositions ${maxPositions} must be a positive integer`);
  }
  const adapter = options.adapter ?? null;
  const quant = options.quant ?? null;
  const { hiddenSize: h, numHeads: heads, headDim: d, innerHiddenSize: inner, vocabSize: V } =
    config;
  const r = d / 2;
  const g = createGraphBuilder();
  const w = graphWeights(g, read, { dtype: options.dtype, adapter, quant });
  const linear = (x: string, module: string, out: number, inF: number) =>
    w.linear(x, module, out, inF, true);
  const layerNorm = (x: string, prefix: string) =>
    g.op("LayerNormalization", [
      x,
      w.tensor(`${prefix}.weight`, [h]),
      w.tensor(`${prefix}.bias`, [h]),
    ], {
      attributes: { axis: attr.int(-1), epsilon: attr.float(config.layernormEpsilon) },
      name: prefix,
    });

  // Embedding.
  const embName = "transformer.word_embeddings.weight";
  let x = w.embedding(embName, V, h).x;

  // Rotary cos/sin per (row, position), laid out [b, s, 1, d] to broadcast over heads: the first
  // half of each head uses position_ids[:, 0], the second half position_ids[:, 1].
  const tables = rotaryTables(d, maxPositions);
  const rotaryOf = (which: "cos" | "sin") => {
    const table = g.constant(
      `rotary_${which}`,
      "float32",
      [maxPositions, r],
      f32Bytes(tables[which]),
    );
    const gathered = g.op("Gather", [table, "position_ids"], {
      attributes: { axis: attr.int(0) },
      name: `rotary_${which}.gather`,
    }); // [b, 2, s, r]
    const t = g.op("Transpose", [gathered], { attributes: { perm: attr.ints([0, 2, 1, 3]) } });
    return g.op("Reshape", [t, g.int64s("shape_rot", [0, 0, 1, d])], { name: `rotary_${which}` });
  };
  // Each half of a head is rotated by its own position (2 chunks, rotate half within each).
  const rotary = { cos: rotaryOf("cos"), sin: rotaryOf("sin"), heads, d, chunks: 2 };
  const rotate = (t: string, what: string) => rotateHalf(g, t, rotary, what);
  const mask = scoreMask(g, 1);
  const alpha = g.scalar("alpha", RESIDUAL_ALPHA);
  const toHeads = (t: string) => swapHeadsAndSeq(g, t); // [b, heads, s, d]

  for (let l = 0; l < config.numLayers; l++) {
    const p = `transformer.layers.${l}`;
    const c = l + 1;
    const a = layerNorm(x, `${p}.input_layernorm`);
    const qkvModule = linearModuleName(l, "attention.query_key_value");
    const qkv = linear(a, qkvModule, 3 * h, h);
    // Per-head interleaved layout (§3.1): [b, s, heads, 3d] → q, k, v of d each.
    const perHead = g.op("Reshape", [qkv, g.int64s("shape_qkv", [0, 0, heads, 3 * d])]);
    const [q, k, v] = g.node("Split", [perHead], {
      attributes: { axis: attr.int(3) },
      count: 3,
      name: `${p}.qkv`,
    });
    // §3.3: q / (sqrt(d)·c) · kᵀ (the division before the rotary: graph_parts `scaleQueries`),
    // masked to −10000, then ×c, softmax in f32.
    const qh = toHeads(rotate(scaleQueries(g, q, Math.sqrt(d) * c, l), `${p}.q`));
    const kh = toHeads(rotate(k, `${p}.k`));
    const vh = toHeads(v);
    const ctx = cachedAttention(g, qh, kh, vh, {
      layer: l,
      heads,
      kvHeads: heads,
      d,
      mask,
      maskedScore: -10000,
      scoreScale: c,
      name: p,
    }); // [b, heads, s, d]
    const ctxFlat = g.op("Reshape", [toHeads(ctx), g.int64s("shape_hidden", [0, 0, h])]);
    const o = linear(ctxFlat, linearModuleName(l, "attention.dense"), h, h);
    const hmid = g.op("Add", [g.op("Mul", [a, alpha]), o], { name: `${p}.attn_residual` });
    const m = layerNorm(hmid, `${p}.post_attention_layernorm`);
    const up = linear(m, linearModuleName(l, "mlp.dense_h_to_4h"), inner, h);
    const act = gelu(g, up, `${p}.gelu`);
    const f = linear(act, linearModuleName(l, "mlp.dense_4h_to_h"), h, inner);
    x = g.op("Add", [g.op("Mul", [m, alpha]), f], { name: `${p}.out` });
  }
  const y = layerNorm(x, "transformer.final_layernorm");
  const headName = "lm_head.weight";
  // The quantized head: the embedding table when tied (the reader maps the name), else its own.
  if (quant?.embeddings) quantizedLogits(g, y, V, h, quant);
  else {
    const head = g.initializer({
      name: headName,
      dtype: w.onnxDtype,
      dims: [h, V],
      data: async () => w.store(transpose(await w.read(headName, V * h), V, h)),
    });
    g.node("MatMul", [y, w.asF32(head)], { outputs: ["logits"], name: "lm_head" });
  }

  const inputs: OnnxValueInfo[] = [
    { name: "input_ids", dtype: "int64", shape: ["batch", "seq"] },
    { name: "position_ids", dtype: "int64", shape: ["batch", 2, "seq"] },
    { name: "attention_mask", dtype: "bool", shape: ["batch", "seq", "keys"] },
  ];
  const outputs: OnnxValueInfo[] = [{
    name: "logits",
    dtype: "float32",
    shape: ["batch", "seq", V],
  }];
  const cache = cacheValueInfos(config.numLayers, heads, d);
  inputs.push(...cache.inputs);
  outputs.push(...cache.outputs);
  return g.build("chatglm", inputs, outputs);
}

/** tanh GeLU (§3.5), in the original's operation order. */
function gelu(g: ReturnType<typeof createGraphBuilder>, x: string, name: string): string {
  const inner = g.op("Mul", [
    g.op("Mul", [g.scalar("gelu_k", 0.7978845608028654), x]),
    g.op("Add", [
      g.scalar("one", 1),
      g.op("Mul", [g.op("Mul", [g.scalar("gelu_c", 0.044715), x]), x]),
    ]),
  ]);
  const t = g.op("Add", [g.scalar("one", 1), g.op("Tanh", [inner])]);
  return g.op("Mul", [g.op("Mul", [g.scalar("half", 0.5), x]), t], { name });
}
