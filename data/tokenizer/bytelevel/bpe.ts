/**
 * Byte-level BPE (`model.type: "BPE"` of a `tokenizer.json`): per pre-token, start from one symbol
 * per UTF-8 byte and repeatedly merge the adjacent pair with the lowest rank — all its
 * non-overlapping occurrences, left to right — until no adjacent pair has a rank.
 *
 * Work is on ids, not strings: each merge (left id, right id) → (rank, merged id) is resolved once
 * at load into an integer hash table.
 */

import { BYTE_TO_CHAR } from "./byte_map.ts";

export interface BpeModel {
  /** id of each byte's one-character piece */
  readonly byteIds: Int32Array;
  /** (left id, right id) → merge index (its rank) */
  readonly ranks: MergeTable;
  /** merge index → id of the merged piece */
  readonly merged: Int32Array;
}

/**
 * Open-addressing hash table (left id, right id) → rank on one typed array: the lookup of the
 * inner loop is integer arithmetic only (a `Map` keyed by a packed pair hashes a heap number), and
 * a slot's key and value share a cache line (151k merges make a table of megabytes, so separate
 * arrays cost a cache miss each).
 */
export interface MergeTable {
  readonly mask: number;
  /** Slot i at 4i: left id, right id, rank (-1 = empty slot), unused. */
  readonly slots: Int32Array;
}

function slotOf(mask: number, l: number, r: number): number {
  // The low bits of a product see only the low bits of its inputs: fold the high bits down.
  let h = Math.imul(l, 0x9e3779b1) ^ Math.imul(r + 0x7f4a7c15, 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d);
  return (h ^ (h >>> 13)) & mask;
}

function createMergeTable(capacity: number): MergeTable {
  let size = 1024;
  while (size < capacity * 2) size *= 2;
  const slots = new Int32Array(4 * size);
  for (let i = 0; i < size; i++) slots[4 * i + 2] = -1;
  return { mask: size - 1, slots };
}

/** The rank of merging (l, r), or -1. */
export function rankOf(t: MergeTable, l: number, r: number): number {
  const s = t.slots, mask = t.mask;
  for (let i = slotOf(mask, l, r);; i = (i + 1) & mask) {
    const k = s[4 * i + 2];
    if (k < 0) return -1;
    if (s[4 * i] === l && s[4 * i + 1] === r) return k;
  }
}

function insert(t: MergeTable, l: number, r: number, rank: number): void {
  const s = t.slots;
  for (let i = slotOf(t.mask, l, r);; i = (i + 1) & t.mask) {
    if (s[4 * i + 2] < 0) {
      s[4 * i] = l, s[4 * i + 1] = r, s[4 * i + 2] = rank;
      return;
    }
    if (s[4 * i] === l && s[4 * i + 1] === r) return; // a repeated merge keeps its first rank
  }
}

/** Merges as `tokenizer.json` writes them: `[left, right]` pairs, or older `"left right"`. */
function mergePair(m: unknown, i: number, source: string): [string, string] {
  if (typeof m === "string") {
    const at = m.indexOf(" ", 1);
    if (at < 0) throw new Error(`${source}: model.merges[${i}] ${JSON.stringify(m)} has no space`);
    return [m.slice(0, at), m.slice(at + 1)];
  }
  if (Array.isArray(m) && m.length === 2 && typeof m[0] === "string" && typeof m[1] === "string") {
    return [m[0], m[1]];
  }
  throw new Error(`${source}: model.merges[${i}] is not a pair of strings`);
}

export function createBpeModel(
  vocab: ReadonlyMap<string, number>,
  merges: unknown,
  source: string,
): BpeModel {
  if (!Array.isArray(merges)) throw new Error(`${source}: model.merges must be an array`);
  const byteIds = new Int32Array(256);
  for (let b = 0; b < 256; b++) {
    const id = vocab.get(BYTE_TO_CHAR[b]);
    if (id === undefined) {
      throw new Error(
        `${source}: model.vocab lacks the byte piece ${JSON.stringify(BYTE_TO_CHAR[b])} ` +
          `(byte 0x${b.toString(16)}): not a byte-level vocabulary`,
      );
    }
    byteIds[b] = id;
  }
  const ranks = createMergeTable(merges.length);
  const merged = new Int32Array(merges.length);
  merges.forEach((m, i) => {
    const [left, right] = mergePair(m, i, source);
    const l = vocab.get(left), r = vocab.get(right), id = vocab.get(left + right);
    if (l === undefined || r === undefined || id === undefined) {
      throw new Error(
        `${source}: model.merges[${i}] ${JSON.stringify([left, right])} names a piece that is ` +
          `not in model.vocab`,
      );
    }
    insert(ranks, l, r, i);
    merged[i] = id;
  });
  return { byteIds, ranks, merged };
}

/**
 * Words up to this many bytes use the scan over a rank array; longer ones the heap. The scan is
 * O(n²) integer compares but only O(n) hash lookups, and beats the heap's bookkeeping well past
 * the length of a typical pre-token (bench/tokenizer.ts: a run of CJK text is tens of bytes).
 */
const SHORT_WORD = 256;

/** The ids of one pre-token given as its UTF-8 bytes. */
export function bpeIds(model: BpeModel, bytes: Uint8Array): number[] {
  const n = bytes.length;
  const ids = new Int32Array(n);
  for (let i = 0; i < n; i++) ids[i] = model.byteIds[bytes[i]];
  return mergeIds(model, ids, n);
}

/**
 * The ids of one pre-token given as text: its UTF-8 bytes are written straight as byte ids (as
 * `TextEncoder` would encode them, a lone surrogate as U+FFFD), saving the encoder call and the
 * byte array per word.
 */
export function bpeWordIds(model: BpeModel, word: string): number[] {
  const b = model.byteIds;
  const ids = new Int32Array(3 * word.length);
  let n = 0;
  for (let i = 0; i < word.length; i++) {
    let c = word.charCodeAt(i);
    if (c < 0x80) {
      ids[n++] = b[c];
      continue;
    }
    if (c < 0x800) {
      ids[n++] = b[0xc0 | (c >> 6)], ids[n++] = b[0x80 | (c & 63)];
      continue;
    }
    if (c >= 0xd800 && c < 0xe000) {
      const d = i + 1 < word.length ? word.charCodeAt(i + 1) : 0;
      if (c < 0xdc00 && d >= 0xdc00 && d < 0xe000) {
        // a surrogate pair: one code point of four bytes (4 bytes ≤ the 6 reserved for 2 units)
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
        ids[n++] = b[0xf0 | (c >> 18)], ids[n++] = b[0x80 | ((c >> 12) & 63)];
        ids[n++] = b[0x80 | ((c >> 6) & 63)], ids[n++] = b[0x80 | (c & 63)];
        continue;
      }
      c = 0xfffd;
    }
    ids[n++] = b[0xe0 | (c >> 12)], ids[n++] = b[0x80 | ((c >> 6) & 63)];
    ids[n++] = b[0x80 | (c & 63)];
  }
  return mergeIds(model, ids, n);
}

function mergeIds(model: BpeModel, ids: Int32Array, n: number): number[] {
  const len = n <= SHORT_WORD ? mergeShort(model, ids, n) : mergeLong(model, ids, n);
  const out = new Array<number>(len);
  for (let i = 0; i < len; i++) out[i] = ids[i];
  return out;
}

/** No merge for this pair: larger than every rank, so the minimum scan needs no special case. */
const NO_RANK = 0x7fffffff;

/**
 * Lowest rank first, leftmost first among equal ranks (all occurrences of one merge, left to
 * right, as the rule says). `pair[i]` holds the rank of (ids[i], ids[i + 1]); a merge at i
 * removes symbol i + 1 and looks up only the two pairs that changed, (i - 1, i) and (i, i + 1).
 */
function mergeShort(model: BpeModel, ids: Int32Array, n: number): number {
  const t = model.ranks;
  const pair = new Int32Array(n);
  for (let i = 0; i + 1 < n; i++) {
    const r = rankOf(t, ids[i], ids[i + 1]);
    pair[i] = r < 0 ? NO_RANK : r;
  }
  while (n > 1) {
    let at = 0;
    for (let i = 1; i + 1 < n; i++) if (pair[i] < pair[at]) at = i;
    const best = pair[at];
    if (best === NO_RANK) break;
    ids[at] = model.merged[best];
    // drop symbol at + 1 (and the pair starting there); a plain loop, as `copyWithin` is a
    // builtin call that costs more than moving a few dozen elements
    n--;
    for (let i = at + 1; i < n; i++) ids[i] = ids[i + 1], pair[i] = pair[i + 1];
    if (at + 1 < n) {
      const r = rankOf(t, ids[at], ids[at + 1]);
      pair[at] = r < 0 ? NO_RANK : r;
    }
    if (at > 0) {
      const r = rankOf(t, ids[at - 1], ids[at]);
      pair[at - 1] = r < 0 ? NO_RANK : r;
    }
  }
  return n;
}

/**
 * The same rule for long words (a run of CJK text is one pre-token of hundreds of bytes): a linked
 * list and a min-heap of candidate pairs ordered by (rank, position). Popping equal ranks by
 * position merges the occurrences left to right; a popped pair whose symbols changed since it was
 * queued is stale and skipped. O(n log n).
 */
function mergeLong(model: BpeModel, ids: Int32Array, n: number): number {
  const t = model.ranks;
  const next = new Int32Array(n), prev = new Int32Array(n);
  for (let i = 0; i < n; i++) next[i] = i + 1 < n ? i + 1 : -1, prev[i] = i - 1;
  const alive = new Uint8Array(n).fill(1);
  // heap entries: rank, position, left id, right id
  let heap = new Int32Array(4 * n * 2), size = 0;
  const less = (a: number, b: number) =>
    heap[4 * a] < heap[4 * b] || (heap[4 * a] === heap[4 * b] && heap[4 * a + 1] < heap[4 * b + 1]);
  const swap = (a: number, b: number) => {
    for (let k = 0; k < 4; k++) {
      const x = heap[4 * a + k];
      heap[4 * a + k] = heap[4 * b + k];
      heap[4 * b + k] = x;
    }
  };
  const push = (pos: number) => {
    const nx = next[pos];
    if (nx < 0) return;
    const r = rankOf(t, ids[pos], ids[nx]);
    if (r < 0) return;
    if (4 * (size + 1) > heap.length) {
      const grown = new Int32Array(heap.length * 2);
      grown.set(heap);
      heap = grown;
    }
    const at = 4 * size;
    heap[at] = r, heap[at + 1] = pos, heap[at + 2] = ids[pos], heap[at + 3] = ids[nx];
    for (let i = size++; i > 0;) {
      const parent = (i - 1) >> 1;
      if (!less(i, parent)) break;
      swap(i, parent);
      i = parent;
    }
  };
  for (let i = 0; i + 1 < n; i++) push(i);
  while (size > 0) {
    const rank = heap[0], pos = heap[1], left = heap[2], right = heap[3];
    swap(0, --size);
    for (let i = 0;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < size && less(l, m)) m = l;
      if (r < size && less(r, m)) m = r;
      if (m === i) break;
      swap(i, m);
      i = m;
    }
    const nx = next[pos];
    if (!alive[pos] || nx < 0 || ids[pos] !== left || ids[nx] !== right) continue;
    ids[pos] = model.merged[rank];
    alive[nx] = 0;
    next[pos] = next[nx];
    if (next[nx] >= 0) prev[next[nx]] = pos;
    if (prev[pos] >= 0) push(prev[pos]);
    push(pos);
  }
  let w = 0;
  for (let i = 0; i >= 0; i = next[i]) ids[w++] = ids[i];
  return w;
}

/**
 * Per-pre-token ids with a bounded cache (pre-tokens repeat a lot in natural text). Two
 * generations: when the young one is full it becomes the old one (the previous old one is
 * dropped), and a hit in the old one moves back to the young one, so the pre-tokens in use
 * survive a turnover instead of all being recomputed after a clear.
 */
export function createWordEncoder(model: BpeModel, limit = 100_000) {
  let young = new Map<string, number[]>();
  let old = new Map<string, number[]>();
  return (word: string): number[] => {
    let ids = young.get(word);
    if (ids) return ids;
    ids = old.get(word) ?? bpeWordIds(model, word);
    if (young.size >= limit) old = young, young = new Map();
    young.set(word, ids);
    return ids;
  };
}
