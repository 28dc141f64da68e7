/**
 * Sentence BLEU-4 (Papineni et al. 2002) with uniform weights, clipped n-gram precisions,
 * brevity penalty exp(1 − r/c) when c < r, and geometric smoothing for orders without a match
 * (the NIST scheme, "method 3" in Chen & Cherry 2014): the k-th order with zero matches counts
 * as 1 / (2^k · total n-grams of that order) instead of 0. An order the candidate is too short to
 * have (0 n-grams) is smoothed the same way with a total of 1. No unigram match, or an empty
 * candidate, gives 0. Scores are in [0, 1]; the report shows the mean over questions × 100.
 */
import { metricTokens } from "./tokens.ts";

function ngramCounts(
  tokens: readonly string[],
  n: number,
): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i + n <= tokens.length; i++) {
    const key = tokens.slice(i, i + n).join("\u0001");
    m.set(key, (m.get(key) ?? 0) + 1);
  }
  return m;
}

/** Clipped matches and total candidate n-grams of order `n`. */
export function ngramMatches(
  candidate: readonly string[],
  reference: readonly string[],
  n: number,
): { matches: number; total: number } {
  const cand = ngramCounts(candidate, n);
  const ref = ngramCounts(reference, n);
  let matches = 0;
  for (const [k, c] of cand) matches += Math.min(c, ref.get(k) ?? 0);
  return { matches, total: Math.max(0, candidate.length - n + 1) };
}

/** BLEU of token lists, orders 1..`maxOrder` (default 4). */
export function bleuTokens(
  candidate: readonly string[],
  reference: readonly string[],
  maxOrder = 4,
): number {
  if (candidate.length === 0) return 0;
  let logSum = 0;
  let zeros = 0;
  for (let n = 1; n <= maxOrder; n++) {
    const { matches, total } = ngramMatches(candidate, reference, n);
    if (n === 1 && matches === 0) return 0;
    let p: number;
    if (matches > 0) p = matches / total;
    else {
      zeros++;
      p = 1 / (2 ** zeros * Math.max(1, total));
    }
    logSum += Math.log(p) / maxOrder;
  }
  const c = candidate.length, r = reference.length;
  const bp = c < r ? Math.exp(1 - r / c) : 1;
  return bp * Math.exp(logSum);
}

/** BLEU-4 of texts (tokens per `metricTokens`). */
export function bleu4(candidate: string, reference: string): number {
  return bleuTokens(metricTokens(candidate), metricTokens(reference), 4);
}
