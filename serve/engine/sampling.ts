/**
 * Next-token choice from one row of logits, in the order HF `generate` applies ChatGLM's chat
 * settings: non-text ids masked, repetition penalty, then temperature, top-k, top-p, and a draw
 * from a seeded generator. Temperature 0 (or absent) is greedy: argmax, first index on ties.
 * Optionally (`validUtf8`), byte tokens that cannot continue valid UTF-8 are masked first.
 */

import type { Rng } from "../../base/mod.ts";
import {
  type ByteTokens,
  canStartUtf8,
  continuesUtf8,
  pendingBytes,
  pendingChar,
  type TokenByteTable,
} from "./utf8_tokens.ts";

export interface SamplerSettings {
  temperature?: number;
  topP?: number;
  topK?: number;
  repetitionPenalty?: number;
  /**
   * Only tokens that keep the answer valid UTF-8: while a character is being spelled in byte
   * tokens, only bytes that continue it; otherwise no byte token that cannot start a character
   * (a stray continuation byte, C0, C1, F5–FF). Without it such bytes show as U+FFFD.
   */
  validUtf8?: boolean;
}

/**
 * Masks (sets to -Infinity) the ids of `row` that cannot continue valid UTF-8 after `ids`. Leaves
 * the row alone when no allowed token would remain (a vocabulary without the needed bytes).
 */
export function maskInvalidUtf8(
  row: Float32Array,
  limit: number,
  bytes: ByteTokens,
  ids: readonly number[],
): void {
  if (bytes.seqs) return maskInvalidUtf8Seqs(row, limit, bytes.seqs, ids);
  const pending = pendingChar(ids, bytes.byteOf);
  if (pending) {
    // Only the bytes that continue the character: everything else ends it broken.
    const [lo, hi] = pending.next;
    let any = false;
    for (let b = lo; b <= hi; b++) {
      const id = bytes.idOf[b];
      if (id >= 0 && id < limit && row[id] > -Infinity) any = true;
    }
    if (!any) return;
    const keep = new Float32Array(hi - lo + 1);
    for (let b = lo; b <= hi; b++) keep[b - lo] = bytes.idOf[b] >= 0 ? row[bytes.idOf[b]] : 0;
    row.fill(-Infinity, 0, limit);
    for (let b = lo; b <= hi; b++) if (bytes.idOf[b] >= 0) row[bytes.idOf[b]] = keep[b - lo];
    return;
  }
  for (let b = 0; b < 256; b++) {
    const id = bytes.idOf[b];
    if (id >= 0 && id < limit && !canStartUtf8(b)) row[id] = -Infinity;
  }
}

/**
 * {@link maskInvalidUtf8} for byte-level vocabularies, where a token is several bytes: each id is
 * checked as a whole against the open character (its first bytes must continue it, the rest must
 * be valid UTF-8) or, with none open, for bytes that can never be valid (a leading continuation
 * byte, C0, C1, F5–FF, a broken sequence inside).
 */
function maskInvalidUtf8Seqs(
  row: Float32Array,
  limit: number,
  table: TokenByteTable,
  ids: readonly number[],
): void {
  const pending = pendingBytes(ids, table);
  const n = Math.min(limit, table.kind.length);
  if (pending) {
    let any = false;
    for (let id = 0; id < n && !any; id++) {
      if (row[id] > -Infinity && continuesUtf8(table, id, pending)) any = true;
    }
    if (!any) return;
    for (let id = 0; id < limit; id++) if (!continuesUtf8(table, id, pending)) row[id] = -Infinity;
    return;
  }
  for (let id = 0; id < n; id++) if (!continuesUtf8(table, id, null)) row[id] = -Infinity;
}

/** Index of the largest value; the first one on ties. Only `[0, limit)` is considered. */
export function argmax(row: ArrayLike<number>, limit = row.length): number {
  let best = 0;
  let bestVal = -Infinity;
  for (let i = 0; i < limit; i++) {
    const v = row[i];
    if (v > bestVal) {
      bestVal = v;
      best = i;
    }
  }
  return best;
}

/**
 * HF's repetition penalty, as ChatGLM's chat passes it through: every id seen so far (prompt and
 * answer) has its logit divided by the penalty when positive and multiplied when negative.
 */
export function applyRepetitionPenalty(
  row: Float32Array,
  seen: Iterable<number>,
  penalty: number,
): void {
  if (penalty === 1) return;
  for (const id of new Set(seen)) {
    if (id < 0 || id >= row.length) continue;
    const v = row[id];
    row[id] = v < 0 ? v * penalty : v / penalty;
  }
}

/**
 * Chooses the next id. `row` is one row of raw logits (it is modified); ids at or above
 * `textVocab` are not tokens and can never be chosen; `seen` (prompt then answer ids) feeds the
 * repetition penalty and, with `settings.validUtf8` and the vocabulary's `bytes`, the UTF-8 mask.
 */
export function chooseToken(
  row: Float32Array,
  textVocab: number,
  settings: SamplerSettings,
  seen: readonly number[],
  rng: Rng,
  bytes?: ByteTokens,
): number {
  const n = Math.min(textVocab, row.length);
  if (settings.validUtf8 && bytes) maskInvalidUtf8(row, n, bytes, seen);
  const penalty = settings.repetitionPenalty ?? 1;
  if (!(penalty > 0)) throw new RangeError(`repetition penalty must be > 0, got ${penalty}`);
  applyRepetitionPenalty(row, seen, penalty);
  const temperature = settings.temperature ?? 0;
  if (!(temperature > 0)) return argmax(row, n);

  // Only ids within e^-40 of the best can carry any probability mass in f64; sorting just those
  // keeps a step cheap on a 130k vocabulary. Ties keep the lower id first so draws are stable.
  const best = row[argmax(row, n)];
  const floor = best - 40 * temperature;
  const order: number[] = [];
  for (let i = 0; i < n; i++) if (row[i] >= floor) order.push(i);
  order.sort((a, b) => row[b] - row[a] || a - b);
  let keep = order.length;
  const topK = settings.topK ?? 0;
  if (topK > 0) keep = Math.min(keep, topK);
  const max = row[order[0]] / temperature;
  const probs = new Float64Array(keep);
  let sum = 0;
  for (let i = 0; i < keep; i++) {
    const p = Math.exp(row[order[i]] / temperature - max);
    probs[i] = p;
    sum += p;
  }
  const topP = settings.topP ?? 1;
  if (topP < 1) {
    // HF keeps the smallest prefix whose mass reaches top_p (and always at least one token).
    let cum = 0;
    let cut = keep;
    for (let i = 0; i < keep; i++) {
      cum += probs[i] / sum;
      if (cum >= topP) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    sum = 0;
    for (let i = 0; i < keep; i++) sum += probs[i];
  }
  let u = rng.next() * sum;
  for (let i = 0; i < keep; i++) {
    u -= probs[i];
    if (u < 0) return order[i];
  }
  return order[keep - 1];
}
