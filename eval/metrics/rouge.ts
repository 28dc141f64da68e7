/**
 * ROUGE-L: longest common subsequence of candidate and reference tokens;
 * P = LCS / |candidate|, R = LCS / |reference|, F = 2PR / (P + R) (β = 1). Scores are in [0, 1].
 */
import { metricTokens } from "./tokens.ts";

/** Length of the longest common subsequence (O(n·m) time, O(m) memory). */
export function lcsLength(a: readonly string[], b: readonly string[]): number {
  if (a.length === 0 || b.length === 0) return 0;
  let prev = new Uint32Array(b.length + 1);
  let cur = new Uint32Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      cur[j] = a[i - 1] === b[j - 1] ? prev[j - 1] + 1 : Math.max(prev[j], cur[j - 1]);
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length];
}

export interface RougeL {
  precision: number;
  recall: number;
  f: number;
}

/** ROUGE-L of token lists. */
export function rougeLTokens(
  candidate: readonly string[],
  reference: readonly string[],
): RougeL {
  const lcs = lcsLength(candidate, reference);
  if (lcs === 0) return { precision: 0, recall: 0, f: 0 };
  const precision = lcs / candidate.length, recall = lcs / reference.length;
  return {
    precision,
    recall,
    f: (2 * precision * recall) / (precision + recall),
  };
}

/** ROUGE-L of texts (tokens per `metricTokens`). */
export function rougeL(candidate: string, reference: string): RougeL {
  return rougeLTokens(metricTokens(candidate), metricTokens(reference));
}
