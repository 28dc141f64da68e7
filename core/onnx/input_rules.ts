/**
 * What a runner feeds an exported graph besides the ids, per architecture: the row layouts of a
 * left-padded batch, the position ids (ChatGLM's 2-D positions, README §4 of
 * tests/fixtures/chatglm6b-tiny; one position per token counting real tokens for the Llama family,
 * spec §5 of tests/fixtures/llama-family), the explicit mask (1 = may NOT attend) and the cache
 * tensor shape. Both architectures reuse their model's own input helpers, so ONNX and WebGPU see
 * the same inputs.
 */

import {
  buildMask,
  buildPositions,
  layoutRows,
  positionAt,
  type RowLayout,
} from "../models/chatglm/inputs.ts";
import { leftPads, positionIds } from "../models/llama/inputs.ts";
import { isLlamaConfig, type OnnxModelConfig } from "./export_info.ts";

export interface OnnxInputRules {
  /** "chatglm", or the Llama family's model type. */
  readonly architecture: string;
  /** Position ids per token: 2 for ChatGLM (position, block position), 1 otherwise. */
  readonly positionsPerToken: 1 | 2;
  /** Heads of the cache tensors [b, heads, length, d] (the key/value heads). */
  readonly cacheHeads: number;
  readonly headDim: number;
  readonly numLayers: number;
  readonly vocabSize: number;
  readonly padTokenId: number;
  /** Layouts of left-padded rows (pads: the config's pad id); checks every id. */
  layout(inputIds: number[][]): RowLayout[];
  /** The position ids (`positionsPerToken` of them) of absolute index `t` of a row. */
  positionAt(row: RowLayout, t: number): number[];
  /** Position ids [b, positionsPerToken, s] (Llama: [b, s]) of indices start .. start+s−1. */
  positions(rows: RowLayout[], start: number, s: number): Int32Array;
  /** Mask [b, s, total] of queries start .. start+s−1 over keys 0 .. total−1. */
  mask(rows: RowLayout[], start: number, s: number, total: number): Uint8Array;
}

export function onnxInputRules(config: OnnxModelConfig): OnnxInputRules {
  const common = {
    headDim: config.headDim,
    numLayers: config.numLayers,
    vocabSize: config.vocabSize,
    padTokenId: config.padTokenId,
    mask: buildMask,
  };
  if (!isLlamaConfig(config)) {
    return {
      ...common,
      architecture: "chatglm",
      positionsPerToken: 2,
      cacheHeads: config.numHeads,
      layout: (ids) => layoutRows(ids, config),
      positionAt: (row, t) => positionAt(row, t),
      positions: buildPositions,
    };
  }
  // Causal by index with the pads hidden is ChatGLM's layout rule without a bidirectional prefix.
  return {
    ...common,
    architecture: config.modelType,
    positionsPerToken: 1,
    cacheHeads: config.numKvHeads,
    layout: (ids) => leftPads(ids, config).map((pads) => ({ pads, ctx: 0, mpos: 0 })),
    positionAt: (row, t) => [Math.max(0, t - row.pads)],
    positions: (rows, start, s) => positionIds(rows.map((r) => r.pads), start, s),
  };
}
