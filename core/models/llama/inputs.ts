/**
 * Inputs of a left-padded batch (spec §5: tests/fixtures/llama-family/README.md): pads are the
 * leading run of the pad id; position ids count the real tokens before each one (pads 0);
 * query i may attend key j iff j ≤ i (by index) and j is real. The attention kernel takes the
 * compact form (pads, 0) per row; decode positions continue per row.
 */

import type { LlamaConfig } from "./config.ts";

/** Left pads of each row; throws for a ragged batch or a row of pads only. */
export function leftPads(inputIds: number[][], config: LlamaConfig, what = "inputIds"): number[] {
  if (!Array.isArray(inputIds) || inputIds.length === 0) {
    throw new Error(`${what}: expected at least one row of token ids`);
  }
  const s = inputIds[0].length;
  return inputIds.map((row, i) => {
    if (!Array.isArray(row) || row.length !== s) {
      throw new Error(`${what}[${i}] has ${row?.length} ids; rows must be left-padded to ${s}`);
    }
    row.forEach((id, j) => {
      if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) {
        throw new Error(
          `${what}[${i}][${j}] = ${id} is not a token id (vocab_size ${config.vocabSize})`,
        );
      }
    });
    let pads = 0;
    while (pads < s && row[pads] === config.padTokenId) pads++;
    if (pads === s && s > 0) {
      throw new Error(`${what}[${i}] holds only the pad id ${config.padTokenId}`);
    }
    return pads;
  });
}

/** Position ids [b, s] of tokens at indices start .. start + s − 1 of rows with `pads`. */
export function positionIds(pads: number[], start: number, s: number): Int32Array {
  const pos = new Int32Array(pads.length * s);
  pads.forEach((p, i) => {
    for (let j = 0; j < s; j++) pos[i * s + j] = Math.max(0, start + j - p);
  });
  return pos;
}

/** The compact mask i32 [b, 2] = (pads, 0): causal by index, pads never seen. */
export function compactMask(pads: number[]): Int32Array {
  const info = new Int32Array(pads.length * 2);
  pads.forEach((p, i) => (info[i * 2] = p));
  return info;
}
