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
 * Open-addressing hash table (left id, right id) → rank on typed arrays: the lookup of the inner
 * loop is integer arithmetic only (a `Map` keyed by a packed pair hashes a heap number).
 */
export interface MergeTable {
  readonly mask: number;
  readonly left: Int32Array;
  readonly right: Int32Array;
  /** -1 = empty slot */
  readonly rank: Int32Array;
}

function slotOf(t: { mask: number }, l: number, r: number): number {
  // The low bits of a product see only the low bits of its inputs: fold the high bits down.
  let h = Math.imul(l, 0x9e3779b1) ^ Math.imul(r + 0x7f4a7c15, 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d);
  return (h ^ (h >>> 13)) & t.mask;
}

function createMergeTable(capacity: number): MergeTable {
  let size = 1024;
  while (size < capacity * 2) size *= 2;
  return {
    mask: size - 1,
    left: new Int32Array(size),
    right: new Int32Array(size),
    rank: new Int32Array(size).fill(-1),
  };
}

/** The rank of merging (l, r), or -1. */
export function rankOf(t: MergeTable, l: number, r: number): number {
  for (let i = slotOf(t, l, r);; i = (i + 1) & t.mask) {
    const k = t.rank[i];
    if (k < 0) return -1;
    if (t.left[i] === l && t.right[i] === r) return k;
  }
}

function insert(t: MergeTable, l: number, r: number, rank: number): void {
  for (let i = slotOf(t, l, r);; i = (i + 1) & t.mask) {
    if (t.rank[i] < 0) {
      t.left[i] = l, t.right[i] = r, t.rank[i] = rank;
      return;
    }
    if (t.left[i] === l && t.right[i] === r) return; // a repeated merge keeps its first rank
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

/** Words up to this many bytes use the direct scan; longer ones the heap. */
const SHORT_WORD = 48;

/** The ids of one pre-token given as its UTF-8 bytes. */
export function bpeIds(model: BpeModel, bytes: Uint8Array): number[] {
  const n = bytes.length;
  const ids = new Int32Array(n);
  for (let i = 0; i < n; i++) ids[i] = model.byteIds[bytes[i]];
  const len = n <= SHORT_WORD ? mergeShort(model, ids, n) : mergeLong(model, ids, n);
  return Array.from(ids.subarray(0, len));
}

/** Direct rule: find the lowest rank, merge its occurrences left to right, repeat. O(n²). */
function mergeShort(model: BpeModel, ids: Int32Array, n: number): number {
  const t = model.ranks;
  while (n > 1) {
    let best = -1;
    for (let i = 0; i + 1 < n; i++) {
      const r = rankOf(t, ids[i], ids[i + 1]);
      if (r >= 0 && (best < 0 || r < best)) best = r;
    }
    if (best < 0) break;
    const id = model.merged[best];
    let w = 0;
    for (let i = 0; i < n; i++) {
      if (i + 1 < n && rankOf(t, ids[i], ids[i + 1]) === best) {
        ids[w++] = id;
        i++;
      } else ids[w++] = ids[i];
    }
    n = w;
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
    heap.set([r, pos, ids[pos], ids[nx]], 4 * size);
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

const encoder = new TextEncoder();

/** Per-pre-token ids with a bounded cache (pre-tokens repeat a lot in natural text). */
export function createWordEncoder(model: BpeModel, limit = 100_000) {
  const cache = new Map<string, number[]>();
  return (word: string): number[] => {
    const hit = cache.get(word);
    if (hit) return hit;
    const ids = bpeIds(model, encoder.encode(word));
    if (cache.size >= limit) cache.clear();
    cache.set(word, ids);
    return ids;
  };
}
