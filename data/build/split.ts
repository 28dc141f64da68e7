/**
 * Train/validation split and per-source weighting, both seeded. By record: a seeded shuffle and
 * the first `round(n · ratio)` go to validation. By file (as the original project effectively
 * did): whole files go to validation in a seeded order until the ratio is reached, so records of
 * one file never straddle the split. Weights apply to the training side only, so a repeated
 * record can never also sit in validation.
 */

import { createRng, seedFor, shuffle } from "../../base/mod.ts";

export function validCount(n: number, ratio: number): number {
  if (ratio <= 0 || n < 2) return 0;
  return Math.min(n - 1, Math.max(1, Math.round(n * ratio)));
}

/** Indices into `origins` for each side; `fileOf` maps an origin to its file. */
export function splitIndices(
  origins: readonly string[],
  by: "record" | "file",
  ratio: number,
  seed: number | string,
): { train: number[]; valid: number[] } {
  return splitIndicesBy(origins.length, (i) => fileOf(origins[i]), by, ratio, seed);
}

/** As `splitIndices` for `n` records, `fileAt(i)` naming record i's file (no origin strings). */
export function splitIndicesBy(
  n: number,
  fileAt: (i: number) => string,
  by: "record" | "file",
  ratio: number,
  seed: number | string,
): { train: number[]; valid: number[] } {
  const target = validCount(n, ratio);
  if (by === "record") {
    const order = shuffle([...Array(n).keys()], createRng(seedFor(seed, "split")));
    const valid = order.slice(0, target).sort((a, b) => a - b);
    const inValid = new Uint8Array(n);
    for (const i of valid) inValid[i] = 1;
    const train: number[] = [];
    for (let i = 0; i < n; i++) if (!inValid[i]) train.push(i);
    return { train, valid };
  }
  const byFile = new Map<string, number[]>();
  for (let i = 0; i < n; i++) {
    const f = fileAt(i);
    const list = byFile.get(f);
    if (list) list.push(i);
    else byFile.set(f, [i]);
  }
  const files = [...byFile.keys()].sort();
  shuffle(files, createRng(seedFor(seed, "split-files")));
  const valid: number[] = [];
  const validFiles = new Set<string>();
  for (const f of files) {
    if (valid.length >= target || validFiles.size === files.length - 1) break;
    validFiles.add(f);
    valid.push(...byFile.get(f)!);
  }
  valid.sort((a, b) => a - b);
  const train: number[] = [];
  for (let i = 0; i < n; i++) if (!validFiles.has(fileAt(i))) train.push(i);
  return { train, valid };
}

/** The file part of an origin `file:LINE[#INDEX]`. */
export function fileOf(origin: string): string {
  const m = /^(.*):\d+(?:#\d+)?$/.exec(origin);
  return m ? m[1] : origin;
}

/**
 * Applies a sampling weight to a list of indices: `floor(w)` copies of each, plus a seeded choice
 * of `round(frac(w) · n)` more. Weight 1 returns the list unchanged.
 */
export function applyWeight(
  indices: readonly number[],
  weight: number,
  seed: number | string,
  purpose: string,
): number[] {
  if (weight === 1) return [...indices];
  const whole = Math.floor(weight);
  const extra = Math.round((weight - whole) * indices.length);
  const out: number[] = [];
  for (let c = 0; c < whole; c++) out.push(...indices);
  if (extra > 0) {
    const rng = createRng(seedFor(seed, purpose));
    const pool = [...indices];
    // partial Fisher–Yates: the first `extra` of a seeded shuffle
    for (let i = 0; i < extra; i++) {
      const j = i + rng.below(pool.length - i);
      const t = pool[i];
      pool[i] = pool[j];
      pool[j] = t;
    }
    out.push(...pool.slice(0, extra));
  }
  return out;
}
