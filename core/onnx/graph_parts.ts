/**
 * Graph pieces both exporters build from (export_chatglm.ts, export_llama.ts): weights stored
 * f32 or f16 (Cast to f32 in the graph, so compute stays f32), linear layers with a LoRA adapter
 * merged in as they are read, the rotate-half rotary, and attention over a KV cache that is a
 * graph input (`past_*`) and output (`present_*`), grouped-query included.
 */

import { f32ToF16 } from "../io/dtype.ts";
import { mergeLoraWeight } from "../adapters/merge.ts";
import type { LoraAdapter } from "../adapters/lora_weights.ts";
import type { GraphBuilder } from "./graph_builder.ts";
import { attr, type OnnxDtype, type OnnxValueInfo } from "./onnx_model.ts";

export type OnnxWeightDtype = "f32" | "f16";

/** Reads one checkpoint tensor as f32 values. */
export type WeightReader = (name: string) => Promise<Float32Array>;

/** Names of the graph's cache inputs and outputs for layer `l`. */
export const cacheNames = (l: number) => ({
  pastKey: `past_key_${l}`,
  pastValue: `past_value_${l}`,
  presentKey: `present_key_${l}`,
  presentValue: `present_value_${l}`,
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

export interface GraphWeightOptions {
  dtype?: OnnxWeightDtype;
  /** Merged into its target linears (W' = W + scaling·B·A) as they are read. */
  adapter?: LoraAdapter | null;
  /**
   * Replaces the float MatMul of a linear layer (e.g. a quantized MatMulNBits); returns the
   * product `x · Wᵀ` for checkpoint weight `<module>.weight` [out, inF].
   */
  matmul?: ((x: string, module: string, out: number, inF: number) => string) | null;
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
   * Cast); returns the rows and the stored table (a tied head reads it too).
   */
  embedding(name: string, V: number, h: number): { x: string; table: string };
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
      const y = options.matmul
        ? options.matmul(x, module, out, inF)
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
  /** Queries are divided by this before q·kᵀ. */
  queryDivisor: number;
  /** What a masked score becomes. */
  maskedScore: number;
  /** Scores are multiplied by this after masking (1: no node). */
  scoreScale: number;
  name: string;
}

/**
 * Attention of queries qh [b, heads, s, d] over the layer's cache: kh, vh [b, kvHeads, s, d] are
 * appended to `past_key_<l>` / `past_value_<l>` (outputs `present_*`), query head n reads kv head
 * n / (heads / kvHeads) (contiguous groups: the queries of a group become one run of group·s rows,
 * so no key or value is copied). Returns ctx [b, heads, s, d].
 */
export function cachedAttention(
  g: GraphBuilder,
  qh: string,
  kh: string,
  vh: string,
  a: AttentionSpec,
): string {
  const names = cacheNames(a.layer);
  const keys = g.op("Concat", [names.pastKey, kh], {
    attributes: { axis: attr.int(2) },
    outputs: [names.presentKey],
  });
  const values = g.op("Concat", [names.pastValue, vh], {
    attributes: { axis: attr.int(2) },
    outputs: [names.presentValue],
  });
  const grouped = a.heads !== a.kvHeads;
  let q = g.op("Div", [qh, g.scalar(`qk_scale_${a.layer}`, a.queryDivisor)]);
  if (grouped) q = g.op("Reshape", [q, g.int64s("shape_q_groups", [0, a.kvHeads, -1, a.d])]);
  const kt = g.op("Transpose", [keys], { attributes: { perm: attr.ints([0, 1, 3, 2]) } });
  let scores = g.op("MatMul", [q, kt], { name: `${a.name}.scores` });
  scores = g.op("Where", [a.mask, g.scalar("masked_score", a.maskedScore), scores]);
  if (a.scoreScale !== 1) {
    scores = g.op("Mul", [scores, g.scalar(`layer_coeff_${a.layer}`, a.scoreScale)]);
  }
  const probs = g.op("Softmax", [scores], { attributes: { axis: attr.int(-1) } });
  const ctx = g.op("MatMul", [probs, values], { name: `${a.name}.ctx` });
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
    inputs.push({ name: n.pastKey, dtype: "float32", shape: ["batch", kvHeads, "past", d] });
    inputs.push({ name: n.pastValue, dtype: "float32", shape: ["batch", kvHeads, "past", d] });
    outputs.push({ name: n.presentKey, dtype: "float32", shape: ["batch", kvHeads, "total", d] });
    outputs.push({ name: n.presentValue, dtype: "float32", shape: ["batch", kvHeads, "total", d] });
  }
  return { inputs, outputs };
}
