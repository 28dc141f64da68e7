/**
 * The token stage: each cleaned record becomes a training example through the prompt module
 * (instruction template, `[gMASK]` `<sop>`, target, `<eop>`, labels -100 on the prompt), with
 * truncation to the configured lengths. A record whose untruncated example exceeds `maxTokens` is
 * dropped with a warning instead. Earlier turns (`history`) are not part of the instruction
 * template, so they are left out of the example (and counted).
 */

import { buildTrainExample } from "../prompt/mod.ts";
import type { ChatGLMTokenizer } from "../tokenizer/mod.ts";
import type { CleanRecord } from "../clean/clean.ts";
import { count, type Tally, warn } from "../clean/tally.ts";
import type { ResolvedConfig } from "./config.ts";

export interface Example {
  inputIds: number[];
  labels: number[];
  seqLen: number;
}

type TokenSettings = NonNullable<ResolvedConfig["tokens"]>;

const UNLIMITED = 1 << 30;

/** One record's example, or null when it is longer than `maxTokens` (warned and counted). */
export function tokenizeRecord(
  tok: ChatGLMTokenizer,
  r: CleanRecord,
  t: TokenSettings,
  tally: Tally,
): Example | null {
  const rec = { instruction: r.instruction, input: r.input, output: r.output };
  // Encode once without limits: most records fit, and the full length is what maxTokens checks.
  let ex = buildTrainExample(tok, rec, { maxSourceLength: UNLIMITED, maxTargetLength: UNLIMITED });
  const full = ex.inputIds.length;
  if (t.maxTokens !== null && full > t.maxTokens) {
    const m = /^(.*):(\d+)(?:#\d+)?$/.exec(r.origin);
    warn(tally, {
      file: m ? m[1] : r.origin,
      ...(m ? { line: Number(m[2]) } : {}),
      action: "too-long",
      reason: `${full} tokens > maxTokens ${t.maxTokens}`,
    });
    return null;
  }
  if (
    ex.promptIds.length > t.maxSourceLength || ex.targetIds.length > t.maxTargetLength ||
    full > t.maxSeqLength
  ) {
    ex = buildTrainExample(tok, rec, {
      maxSourceLength: t.maxSourceLength,
      maxTargetLength: t.maxTargetLength,
      maxSeqLength: t.maxSeqLength,
    });
    count(tally, "truncated");
  }
  if (r.history) count(tally, "history-not-in-prompt");
  return { inputIds: ex.inputIds, labels: ex.labels, seqLen: ex.seqLen };
}

/**
 * Length bucketing: inside consecutive windows of `window` examples (already shuffled), order by
 * length, so a trainer reading in order gets batches of similar length with little padding while
 * the mix across windows stays random. Returns the new order as indices; the sort is stable.
 */
export function bucketOrder(lengths: readonly number[], window: number): number[] {
  const order: number[] = [];
  for (let s = 0; s < lengths.length; s += window) {
    const idx: number[] = [];
    for (let i = s; i < Math.min(lengths.length, s + window); i++) idx.push(i);
    idx.sort((a, b) => lengths[a] - lengths[b] || a - b);
    order.push(...idx);
  }
  return order;
}

/** Histogram of example lengths in power-of-two bins (`[0,16)`, `[16,32)`, … `[2048,∞)`). */
export function lengthHistogram(lengths: Iterable<number>): { range: string; count: number }[] {
  const edges = [16, 32, 64, 128, 256, 512, 1024, 2048];
  const counts = new Array(edges.length + 1).fill(0);
  for (const n of lengths) {
    let b = 0;
    while (b < edges.length && n >= edges[b]) b++;
    counts[b]++;
  }
  return counts.map((c, b) => ({
    range: b === 0
      ? `<${edges[0]}`
      : b === edges.length
      ? `>=${edges[b - 1]}`
      : `${edges[b - 1]}-${edges[b] - 1}`,
    count: c,
  }));
}
