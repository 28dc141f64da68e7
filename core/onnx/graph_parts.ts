/**
 * Graph pieces both exporters build from (export_chatglm.ts, export_llama.ts): weights stored
 * f32 or f16 (Cast to f32 in the graph, so compute stays f32), linear layers with a LoRA adapter
 * merged in as they are read or int8/int4 weights as `com.microsoft` MatMulNBits (matmul_nbits.ts),
 * the quantized embedding lookup, the rotate-half rotary, and attention over a KV cache held by
 * the runner: its buffer is a graph input (`past_*`, fed without a copy) and only the new
 * positions' keys/values are outputs (`new_*`), grouped-query included.
 */

import { f16BitsToNumber, f32ToF16 } from "../io/dtype.ts";
import type { QuantizedMatrix } from "../quant/arith.ts";
import { isPerRowModule, type QuantLayout } from "../quant/format.ts";
import { MS_DOMAIN, nbitsBlockSize, type NBitsWeight, toMatMulNBits } from "./matmul_nbits.ts";
import { mergeLoraWeight } from "../adapters/merge.ts";
import type { LoraAdapter } from "../adapters/lora_weights.ts";
import type { GraphBuilder } from "./graph_builder.ts";
import { attr, type OnnxDtype, type OnnxValueInfo } from "./onnx_model.ts";

export type OnnxWeightDtype = "f32" | "f16";

/** Reads one checkpoint tensor as f32 values. */
export type WeightReader = (name: string) => Promise<Float32Array>;

/**
 * Names of the graph's cache inputs and outputs for layer `l`: the past (the runner's capacity
 * buffer, fed as it is) comes in, only the new positions' keys and values go out.
 */
export const cacheNames = (l: number) => ({
  pastKey: `past_key_${l}`,
  pastValue: `past_value_${l}`,
  newKey: `new_key_${l}`,
  newValue: `new_value_${l}`,
});

export function f32Bytes(v: Float32Array): Uint8Array {
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

/** [rows, cols] → [cols, rows]. */
export function transpose(w: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  const B = 32;
  for (let r0 = 0; r0 < rows; r0 += B) {
    for (let c0 = 0; c0 < cols; c0 += B) {
      const r1 = Math.min(rows, r0 + B), c1 = Math.min(cols, c0 + B);
      for (let r = r0; r < r1; r++) {
        for (let c = c0; c < c1; c++) out[c * rows + r] = w[r * cols + c];
      }
    }
  }
  return out;
}

/**
 * Quantized weights (int8/int4, core/quant), for either architecture: the block linears become
 * `com.microsoft` MatMulNBits (see matmul_nbits.ts); with `embeddings`, the head too, and the
 * embedding Gather reads an int8 table with per-row f32 scales. Everything else stays float
 * (the export's dtype, computed in f32): norms, biases, rotary, attention and the KV cache (and
 * the embeddings and head unless quantized).
 */
export interface GraphQuantization {
  bits: 4 | 8;
  /** Input columns per scale of the block linears; null = per row. */
  groupSize: number | null;
  embeddings: boolean;
  /** The architecture's quantized layout: which modules are per row (embeddings, head). */
  layout: QuantLayout;
  /**
   * MatMulNBits' `accuracy_level`: 0 multiplies in f32 (matches the WebGPU path to 1e-4); 4 lets
   * ORT quantize the activations to int8 per block and use integer dot products (its fast CPU
   * path: measured 2–4× faster for int4, and ~30× for int8, which has no fast f32 kernel).
   */
  accuracyLevel: 0 | 4;
  /** The quantized form of a weight by checkpoint name (`<module>.weight`). */
  read: (name: string) => Promise<QuantizedMatrix>;
}

export interface GraphWeightOptions {
  dtype?: OnnxWeightDtype;
  /** Merged into its target linears (W' = W + scaling·B·A) as they are read. */
  adapter?: LoraAdapter | null;
  /**
   * int8/int4 weights: linear layers become MatMulNBits and, with `embeddings`, the embedding
   * lookup reads the quantized table (an adapter cannot be merged into them).
   */
  quant?: GraphQuantization | null;
}

/** The weights of a graph: read lazily (when the model is written), one tensor at a time. */
export interface GraphWeights {
  readonly dtype: OnnxWeightDtype;
  /** A stored weight read as f32 in the graph (a Cast for f16 storage). */
  asF32(name: string): string;
  /** A parameter stored with `dims` as in the checkpoint (norm weights, biases). */
  tensor(name: string, dims: number[]): string;
  /** `x · Wᵀ (+ b)` for a linear module with weight [out, inF] (stored [inF, out], adapter merged). */
  linear(x: string, module: string, out: number, inF: number, bias: boolean): string;
  /**
   * Rows of the embedding table `name` [V, h] for `input_ids` (gathered in the stored dtype, then
   * Cast); returns the rows and the stored float table (a tied head reads it too; null when the
   * embeddings are quantized: the head is then a MatMulNBits of its own, `quantMatMul`).
   */
  embedding(name: string, V: number, h: number): { x: string; table: string | null };
  /** A tensor read as f32 and checked to hold `numel` values. */
  read(name: string, numel: number): Promise<Float32Array>;
  /** Stored bytes of f32 values in the export's dtype. */
  store(v: Float32Array): Uint8Array;
  /** The stored ONNX dtype. */
  readonly onnxDtype: OnnxDtype;
}

export function graphWeights(
  g: GraphBuilder,
  reader: WeightReader,
  options: GraphWeightOptions = {},
): GraphWeights {
  const dtype = options.dtype ?? "f32";
  if (dtype !== "f32" && dtype !== "f16") {
    throw new Error(`ONNX export: dtype ${JSON.stringify(dtype)} is not supported (f32 or f16)`);
  }
  const adapter = options.adapter ?? null;
  const quant = options.quant ?? null;
  if (quant && adapter) {
    throw new Error("ONNX export: an adapter cannot be merged into quantized weights");
  }
  const onnxDtype: OnnxDtype = dtype === "f16" ? "float16" : "float32";
  const store = (v: Float32Array) =>
    dtype === "f16" ? new Uint8Array(f32ToF16(v).buffer) : f32Bytes(v);
  const read = async (name: string, numel: number) => {
    const v = await reader(name);
    if (v.length !== numel) {
      throw new Error(`ONNX export: ${name} has ${v.length} values, expected ${numel}`);
    }
    return v;
  };
  const asF32 = (name: string) =>
    dtype === "f16"
      ? g.op("Cast", [name], { attributes: { to: attr.int(1) }, name: `${name}.f32` })
      : name;
  const tensor = (name: string, dims: number[]) => {
    const numel = dims.reduce((a, b) => a * b, 1);
    return asF32(g.initializer({
      name,
      dtype: onnxDtype,
      dims,
      data: async () => store(await read(name, numel)),
    }));
  };
  const linearWeight = (module: string, out: number, inF: number) => {
    const name = `${module}.weight`;
    return asF32(g.initializer({
      name,
      dtype: onnxDtype,
      dims: [inF, out],
      data: async () => {
        let w = await read(name, out * inF);
        const lora = adapter?.modules.get(module);
        if (lora) w = mergeLoraWeight(w, lora, adapter!.scaling);
        return store(transpose(w, out, inF));
      },
    }));
  };
  return {
    dtype,
    onnxDtype,
    embedding(name, V, h) {
      if (quant?.embeddings) return { x: quantGather(g, name, V, h, quant), table: null };
      const table = g.initializer({
        name,
        dtype: onnxDtype,
        dims: [V, h],
        data: async () => store(await read(name, V * h)),
      });
      let x = g.op("Gather", [table, "input_ids"], {
        attributes: { axis: attr.int(0) },
        name: "embed",
      });
      if (dtype === "f16") {
        x = g.op("Cast", [x], { attributes: { to: attr.int(1) }, name: "embed.f32" });
      }
      return { x, table };
    },
    asF32,
    tensor,
    read,
    store,
    linear(x, module, out, inF, bias) {
      const y = quant
        ? quantMatMul(g, x, `${module}.weight`, out, inF, quant)
        : g.op("MatMul", [x, linearWeight(module, out, inF)], { name: `${module}.mm` });
      return bias
        ? g.op("Add", [y, tensor(`${module}.bias`, [out])], { name: `${module}.out` })
        : y;
    },
  };
}

/**
 * Rotate half, applied per chunk of the head: t [b, s, heads, d] is viewed as `chunks` runs of
 * d / chunks, each split in two halves (x1, x2) → x·cos + (−x2, x1)·sin, where cos/sin broadcast
 * as [b, s, 1, d]. ChatGLM's 2-D rotary has 2 chunks (one per position kind), the Llama family 1.
 */
export function rotateHalf(
  g: GraphBuilder,
  t: string,
  rotary: { cos: string; sin: string; heads: number; d: number; chunks: number },
  name: string,
): string {
  const { heads, d, chunks } = rotary;
  const half = d / chunks / 2;
  const split = g.op("Reshape", [
    t,
    g.int64s(`shape_halves_${heads}`, [0, 0, heads, chunks, 2, half]),
  ]);
  const [x1, x2] = g.node("Split", [split], { attributes: { axis: attr.int(4) }, count: 2 });
  const swapped = g.op("Concat", [g.op("Neg", [x2]), x1], { attributes: { axis: attr.int(4) } });
  const rot = g.op("Reshape", [swapped, g.int64s(`shape_heads_${heads}`, [0, 0, heads, d])]);
  return g.op("Add", [g.op("Mul", [t, rotary.cos]), g.op("Mul", [rot, rotary.sin])], {
    name: `${name}.rot`,
  });
}

/**
 * Queries divided by the attention's divisor (√d, ChatGLM's √d·c) BEFORE the rotary, not right
 * before q·kᵀ: ORT folds a scalar Div feeding a MatMul into the MatMul as `alpha`, and MLAS takes
 * its M = 1 kernels (no packed copy of the keys) only when alpha is 1 — measured at full size, the
 * folded scale made the past scores (q·Kᵀ over the whole cache) the slowest op of a decode step.
 * The rotary is linear, so only rounding changes.
 */
export function scaleQueries(g: GraphBuilder, q: string, divisor: number, layer: number): string {
  return g.op("Div", [q, g.scalar(`qk_scale_${layer}`, divisor)], { name: `q_scaled_${layer}` });
}

/** [b, s, heads, d] ↔ [b, heads, s, d]. */
export function swapHeadsAndSeq(g: GraphBuilder, t: string): string {
  return g.op("Transpose", [t], { attributes: { perm: attr.ints([0, 2, 1, 3]) } });
}

/**
 * The graph input `attention_mask` [b, s, S] (true = may NOT attend) shaped for the scores of
 * `cachedAttention`: [b, 1, group·s, S], the rows repeated once per query head of a group.
 */
export function scoreMask(g: GraphBuilder, group: number): string {
  const mask = g.op("Unsqueeze", ["attention_mask", g.int64s("axis1", [1])], { name: "mask4" });
  if (group === 1) return mask;
  return g.op("Tile", [mask, g.int64s("mask_repeats", [1, 1, group, 1])], { name: "mask_gqa" });
}

export interface AttentionSpec {
  layer: number;
  heads: number;
  kvHeads: number;
  d: number;
  /** From `scoreMask(g, heads / kvHeads)`. */
  mask: string;
  /** What a masked score becomes. */
  maskedScore: number;
  /** Scores are multiplied by this after masking (1: no node). */
  scoreScale: number;
  name: string;
}

/**
 * Attention of queries qh [b, heads, s, d] (already scaled: `scaleQueries`) over the layer's cache: the past keys/values
 * `past_key_<l>` / `past_value_<l>` [b, kvHeads, C, d] (the runner's buffer of capacity C, fed
 * without a copy; the mask hides its unused positions) and the new kh, vh [b, kvHeads, s, d],
 * which are the layer's only cache outputs (`new_key_<l>` / `new_value_<l>`: the runner writes
 * them into its buffer). The past is never concatenated or copied: the scores are computed in two
 * parts (q·kᵀ over the past, over the new positions; ORT fuses each kᵀ into its MatMul), their
 * small rows concatenated, masked and softmaxed together, and the context is
 * probs_past·V_past + probs_new·V_new. Query head n reads kv head n / (heads / kvHeads)
 * (contiguous groups: the queries of a group become one run of group·s rows, so no key or value
 * is copied). Returns ctx [b, heads, s, d].
 */
export function cachedAttention(
  g: GraphBuilder,
  qh: string,
  kh: string,
  vh: string,
  a: AttentionSpec,
): string {
  const names = cacheNames(a.layer);
  g.node("Identity", [kh], { outputs: [names.newKey], name: `${a.name}.new_key` });
  g.node("Identity", [vh], { outputs: [names.newValue], name: `${a.name}.new_value` });
  const grouped = a.heads !== a.kvHeads;
  let q = qh;
  if (grouped) q = g.op("Reshape", [q, g.int64s("shape_q_groups", [0, a.kvHeads, -1, a.d])]);
  const transposed = (k: string) =>
    g.op("Transpose", [k], { attributes: { perm: attr.ints([0, 1, 3, 2]) } });
  const pastScores = g.op("MatMul", [q, transposed(names.pastKey)], {
    name: `${a.name}.scores_past`,
  });
  const newScores = g.op("MatMul", [q, transposed(kh)], { name: `${a.name}.scores_new` });
  let scores = g.op("Concat", [pastScores, newScores], { attributes: { axis: attr.int(-1) } });
  scores = g.op("Where", [a.mask, g.scalar("masked_score", a.maskedScore), scores]);
  if (a.scoreScale !== 1) {
    scores = g.op("Mul", [scores, g.scalar(`layer_coeff_${a.layer}`, a.scoreScale)]);
  }
  const probs = g.op("Softmax", [scores], { attributes: { axis: attr.int(-1) } });
  const lengthOf = (t: string) =>
    g.op("Shape", [t], { attributes: { start: attr.int(2), end: attr.int(3) } });
  const split = g.op("Concat", [lengthOf(names.pastKey), lengthOf(kh)], {
    attributes: { axis: attr.int(0) },
  });
  const [probsPast, probsNew] = g.node("Split", [probs, split], {
    attributes: { axis: attr.int(-1) },
    count: 2,
  });
  const ctx = g.op("Add", [
    g.op("MatMul", [probsPast, names.pastValue], { name: `${a.name}.ctx_past` }),
    g.op("MatMul", [probsNew, vh], { name: `${a.name}.ctx_new` }),
  ], { name: `${a.name}.ctx` });
  return grouped ? g.op("Reshape", [ctx, g.int64s("shape_ctx_heads", [0, a.heads, -1, a.d])]) : ctx;
}

/** The graph's inputs and outputs besides the ids, positions and mask. */
export function cacheValueInfos(
  layers: number,
  kvHeads: number,
  d: number,
): { inputs: OnnxValueInfo[]; outputs: OnnxValueInfo[] } {
  const inputs: OnnxValueInfo[] = [], outputs: OnnxValueInfo[] = [];
  for (let l = 0; l < layers; l++) {
    const n = cacheNames(l);
    inputs.push({ name: n.pastKey, dtype: "float32", shape: ["batch", kvHeads, "capacity", d] });
    inputs.push({ name: n.pastValue, dtype: "float32", shape: ["batch", kvHeads, "capacity", d] });
    outputs.push({ name: n.newKey, dtype: "float32", shape: ["batch", kvHeads, "seq", d] });
    outputs.push({ name: n.newValue, dtype: "float32", shape: ["batch", kvHeads, "seq", d] });
  }
  return { inputs, outputs };
}

/** MatMulNBits' block size for a weight: the group size, or per row (embeddings always per row). */
function blockSizeOf(quant: GraphQuantization, name: string, K: number): number {
  const module = name.slice(0, -".weight".length);
  const perRow = isPerRowModule(module, quant.layout) || quant.groupSize === null;
  return nbitsBlockSize({ cols: K, groupSize: perRow ? K : quant.groupSize! });
}

/**
 * `x · Wᵀ` for a quantized W [N, K] as MatMulNBits; the weight is read (or quantized) and packed
 * when the model is written, blob and scales from one read.
 */
export function quantMatMul(
  g: GraphBuilder,
  x: string,
  name: string,
  N: number,
  K: number,
  quant: GraphQuantization,
  initName = name,
): string {
  const blockSize = blockSizeOf(quant, name, K);
  const kBlocks = Math.ceil(K / blockSize);
  let packed: Promise<NBitsWeight> | null = null;
  const pack = () => packed ??= quant.read(name).then(toMatMulNBits);
  const B = g.initializer({
    name: `${initName}.nbits`,
    dtype: "uint8",
    dims: [N, kBlocks, (blockSize * quant.bits) / 8],
    data: async () => {
      const p = await pack();
      if (p.blockSize !== blockSize) {
        throw new Error(
          `ONNX export: ${name} has block size ${p.blockSize}, expected ${blockSize}`,
        );
      }
      return p.b;
    },
  });
  const S = g.initializer({
    name: `${initName}.scales`,
    dtype: "float32",
    dims: [N * kBlocks],
    data: async () => {
      const p = await pack();
      packed = null; // both written (in this order): drop the packed copy
      return new Uint8Array(p.scales.buffer, p.scales.byteOffset, p.scales.byteLength);
    },
  });
  return g.op("MatMulNBits", [x, B, S], {
    attributes: {
      K: attr.int(K),
      N: attr.int(N),
      bits: attr.int(quant.bits),
      block_size: attr.int(blockSize),
      accuracy_level: attr.int(quant.accuracyLevel),
    },
    domain: MS_DOMAIN,
    name: `${name}.mm`,
  });
}

/**
 * The graph output `logits` [b, s, V] from the final hidden states y [b, s, h] through a quantized
 * head (`lm_head.weight` per row; a tied model's reader maps the name to the embedding table).
 */
export function quantizedLogits(
  g: GraphBuilder,
  y: string,
  V: number,
  h: number,
  quant: GraphQuantization,
): void {
  g.node("Identity", [quantMatMul(g, y, "lm_head.weight", V, h, quant)], {
    outputs: ["logits"],
    name: "lm_head",
  });
}

/**
 * Rows of the quantized embedding table: an int8 [V, h] table (int4 values too, one per byte:
 * ONNX has no 4-bit Gather in the default domain) and f32 per-row scales, Gathered, Cast, scaled.
 */
export function quantGather(
  g: GraphBuilder,
  name: string,
  V: number,
  h: number,
  quant: GraphQuantization,
): string {
  let m: Promise<QuantizedMatrix> | null = null;
  const get = () => m ??= quant.read(name);
  const table = g.initializer({
    name: `${name}.int8`,
    dtype: "int8",
    dims: [V, h],
    data: async () => {
      const q = (await get()).q;
      return new Uint8Array(q.buffer, q.byteOffset, q.byteLength);
    },
  });
  const scales = g.initializer({
    name: `${name}.row_scales`,
    dtype: "float32",
    dims: [V, 1],
    data: async () => {
      const s = (await get()).scales;
      m = null;
      const f = new Float32Array(s.length);
      for (let i = 0; i < s.length; i++) f[i] = f16BitsToNumber(s[i]);
      return new Uint8Array(f.buffer);
    },
  });
  const rows = g.op("Gather", [table, "input_ids"], { attributes: { axis: attr.int(0) } });
  const f = g.op("Cast", [rows], { attributes: { to: attr.int(1) } });
  const s = g.op("Gather", [scales, "input_ids"], { attributes: { axis: attr.int(0) } });
  return g.op("Mul", [f, s], { name: "embed" });
}
