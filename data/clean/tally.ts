/**
 * Counts per action and the warnings behind them. Every dropped or repaired item is counted; the
 * warning texts are kept up to `maxPerAction` per action so a build over millions of records does
 * not produce a manifest of the same size (the count always stays exact).
 */

import type { BuildWarning } from "../sources/types.ts";

export interface Tally {
  counts: Record<string, number>;
  warnings: BuildWarning[];
  /** Warnings not kept because their action hit the limit, per action. */
  omitted: Record<string, number>;
  maxPerAction: number;
  /** Warnings kept so far, per action. */
  kept: Record<string, number>;
}

export function createTally(maxPerAction = 1000): Tally {
  return { counts: {}, warnings: [], omitted: {}, maxPerAction, kept: {} };
}

export function count(t: Tally, action: string, n = 1): void {
  t.counts[action] = (t.counts[action] ?? 0) + n;
}

/** Records a warning without counting (the count comes with the data it belongs to). */
export function addWarning(t: Tally, w: BuildWarning): void {
  const kept = t.kept[w.action] ?? 0;
  if (kept < t.maxPerAction) {
    t.warnings.push(w);
    t.kept[w.action] = kept + 1;
  } else t.omitted[w.action] = (t.omitted[w.action] ?? 0) + 1;
}

/** Counts one action and records its warning. */
export function warn(t: Tally, w: BuildWarning): void {
  count(t, w.action);
  addWarning(t, w);
}

export function mergeCounts(t: Tally, counts: Record<string, number>): void {
  for (const [k, v] of Object.entries(counts)) count(t, k, v);
}
