/**
 * The training batch layout of spec §8 (tests/fixtures/chatglm6b-tiny/README.md): rows right-padded with the pad id (labels with
 * −100) to the longest row, masks and 2-D positions by rule §4.1 on each padded row (the pads
 * come after `<sop>`, so they are causal and no real position sees them), and the labels shifted
 * by one (logits row t predicts labels[t + 1]).
 */

import { IGNORE_INDEX } from "../../autograd/labels.ts";
import type { ChatGLMConfig } from "./config.ts";
import { contextOf } from "./inputs.ts";

export interface TrainBatch {
  batch: number;
  seq: number;
  /** [b, s] token ids (right-padded). */
  ids: Int32Array;
  /** [b, 2, s] positions and block positions. */
  pos: Int32Array;
  /** [b, 2] = (0 pads, context length) per row: the attention kernels' compact mask. */
  maskInfo: Int32Array;
  /** [b, s] the label each logits row is scored against (labels shifted left, −100 padded). */
  targets: Int32Array;
  /** Number of supervised tokens (targets ≠ −100). */
  tokens: number;
}

/** Builds the batch from examples' `input_ids` and `labels` (same length per example). */
export function buildTrainBatch(
  inputIds: readonly (readonly number[])[],
  labels: readonly (readonly number[])[],
  config: ChatGLMConfig,
): TrainBatch {
  if (inputIds.length === 0) throw new Error("buildTrainBatch: no examples");
  if (labels.length !== inputIds.length) {
    throw new Error(`buildTrainBatch: ${inputIds.length} examples but ${labels.length} label rows`);
  }
  const b = inputIds.length;
  const s = Math.max(...inputIds.map((r) => r.length));
  const ids = new Int32Array(b * s).fill(config.padTokenId);
  const targets = new Int32Array(b * s).fill(IGNORE_INDEX);
  const pos = new Int32Array(b * 2 * s);
  const maskInfo = new Int32Array(b * 2);
  let tokens = 0;
  for (let r = 0; r < b; r++) {
    const row = inputIds[r], lab = labels[r];
    if (lab.length !== row.length) {
      throw new Error(
        `buildTrainBatch: example ${r} has ${row.length} input ids but ${lab.length} labels`,
      );
    }
    for (let t = 0; t < row.length; t++) {
      const id = row[t];
      if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) {
        throw new Error(`buildTrainBatch: example ${r}, input_ids[${t}] = ${id} is not a token id`);
      }
      ids[r * s + t] = id;
    }
    for (let t = 0; t + 1 < lab.length; t++) {
      const y = lab[t + 1];
      if (y !== IGNORE_INDEX && (!Number.isInteger(y) || y < 0 || y >= config.vocabSize)) {
        throw new Error(`buildTrainBatch: example ${r}, labels[${t + 1}] = ${y} is not a token id`);
      }
      targets[r * s + t] = y;
      if (y !== IGNORE_INDEX) tokens++;
    }
    const { ctx, mpos } = contextOf(ids.subarray(r * s, (r + 1) * s), config, `example ${r}`);
    maskInfo[r * 2] = 0;
    maskInfo[r * 2 + 1] = ctx;
    for (let t = 0; t < s; t++) {
      pos[(r * 2) * s + t] = t < ctx ? t : mpos;
      pos[(r * 2 + 1) * s + t] = t < ctx ? 0 : t - ctx + 1;
    }
  }
  return { batch: b, seq: s, ids, pos, maskInfo, targets, tokens };
}
