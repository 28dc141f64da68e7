/**
 * ChatGLM input format: which positions attend to which, and the 2-D position ids, derived from
 * the token ids (spec §4.1 for one sequence, §4.2 for a left-padded batch, §5 for decoding; the
 * spec is tests/fixtures/chatglm6b-tiny/README.md).
 *
 * Every row is summarised by three numbers (`RowLayout`), from which both the explicit mask and
 * the compact form the attention kernel uses follow:
 *   query t may see key j  ⇔  j ≥ pads and (j < pads + ctx or j ≤ t)      (pad queries see nothing)
 *   position of t ≥ pads:     [t − pads < ctx ? t − pads : mpos,  t − pads < ctx ? 0 : t − pads − ctx + 1]
 */

import type { ChatGLMConfig } from "./config.ts";

export interface RowLayout {
  /** Left pads before the first real token. */
  pads: number;
  /** Index (counted from the first real token) of the first `<sop>`: the bidirectional prefix. */
  ctx: number;
  /** Index (counted from the first real token) of the `[gMASK]` (else `[MASK]`): position 0 of every token after the prefix. */
  mpos: number;
}

/** Rule §4.1 on an unpadded sequence: context length and mask position. */
export function contextOf(
  ids: ArrayLike<number>,
  config: ChatGLMConfig,
  where = "input",
): { ctx: number; mpos: number } {
  let ctx = -1, gmask = -1, mask = -1;
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i];
    if (ctx < 0 && id === config.bosTokenId) ctx = i;
    if (gmask < 0 && id === config.gmaskTokenId) gmask = i;
    if (mask < 0 && id === config.maskTokenId) mask = i;
  }
  if (ctx < 0) {
    throw new Error(
      `${where}: no <sop> (id ${config.bosTokenId}) in the ids; ChatGLM inputs end their prompt ` +
        "with [gMASK] <sop> (encode with the tokenizer's default special tokens)",
    );
  }
  const mpos = gmask >= 0 ? gmask : mask;
  if (mpos < 0) {
    throw new Error(
      `${where}: neither [gMASK] (id ${config.gmaskTokenId}) nor [MASK] (id ${config.maskTokenId}) ` +
        "in the ids",
    );
  }
  return { ctx, mpos };
}

/**
 * The layout of each row of a batch. Rows are left-padded with the config's pad id; leading pads
 * are stripped before rule §4.1 so positions count from the first real token (trailing pads, as in
 * right-padded training batches, are ordinary causal tokens after `<sop>`).
 */
export function layoutRows(inputIds: number[][], config: ChatGLMConfig): RowLayout[] {
  if (!Array.isArray(inputIds) || inputIds.length === 0) {
    throw new Error("inputIds: expected a non-empty array of rows");
  }
  const seq = inputIds[0].length;
  return inputIds.map((row, b) => {
    if (!Array.isArray(row) && !ArrayBuffer.isView(row)) {
      throw new Error(`inputIds[${b}]: expected an array of token ids`);
    }
    if (row.length !== seq) {
      throw new Error(
        `inputIds[${b}] has ${row.length} ids, row 0 has ${seq}: pad rows on the left to one length`,
      );
    }
    for (let i = 0; i < row.length; i++) {
      const id = row[i];
      if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) {
        throw new Error(
          `inputIds[${b}][${i}] = ${id} is not a token id (vocab_size ${config.vocabSize})`,
        );
      }
    }
    let pads = 0;
    while (pads < row.length && row[pads] === config.padTokenId) pads++;
    const { ctx, mpos } = contextOf(row.slice(pads), config, `inputIds[${b}]`);
    return { pads, ctx, mpos };
  });
}

/** Whether query `t` may attend to key `j` (absolute indices in the padded row). */
export function canAttend(row: RowLayout, t: number, j: number): boolean {
  if (t < row.pads || j < row.pads) return false;
  return j < row.pads + row.ctx || j <= t;
}

/** The 2-D position of absolute index `t` (0, 0 on pads). */
export function positionAt(row: RowLayout, t: number): [number, number] {
  const i = t - row.pads;
  if (i < 0) return [0, 0];
  return i < row.ctx ? [i, 0] : [row.mpos, i - row.ctx + 1];
}

/**
 * Explicit mask [b, s, S] (1 = may NOT attend, the goldens' convention) for queries
 * `start .. start+s−1` over keys `0 .. S−1`.
 */
export function buildMask(rows: RowLayout[], start: number, s: number, total: number): Uint8Array {
  const out = new Uint8Array(rows.length * s * total);
  rows.forEach((row, b) => {
    for (let i = 0; i < s; i++) {
      const base = (b * s + i) * total;
      for (let j = 0; j < total; j++) out[base + j] = canAttend(row, start + i, j) ? 0 : 1;
    }
  });
  return out;
}

/** Position ids [b, 2, s] for absolute indices `start .. start+s−1`. */
export function buildPositions(rows: RowLayout[], start: number, s: number): Int32Array {
  const out = new Int32Array(rows.length * 2 * s);
  rows.forEach((row, b) => {
    for (let i = 0; i < s; i++) {
      const [p0, p1] = positionAt(row, start + i);
      out[(b * 2) * s + i] = p0;
      out[(b * 2 + 1) * s + i] = p1;
    }
  });
  return out;
}
