/**
 * A static byte trie over UTF-8 keys, with transitions in one open-addressing hash table of typed
 * arrays: lookups walk bytes without allocating, which is what the encoder's hot loops need.
 */

export interface ByteTrie {
  /** Child of `node` for `byte`, or -1. The root is node 0. */
  child(node: number, byte: number): number;
  /** The value stored at `node`, or -1. */
  value(node: number): number;
  /** Value of the longest key starting at `pos` (ending at or before `end`), or -1. */
  longest(bytes: Uint8Array, pos: number, end: number): number;
  /** Length of the last match found by `longest` (valid when it returned >= 0). */
  lastLength: number;
  /** Number of nodes (1 for an empty trie). */
  readonly size: number;
}

// Transition keys are node * 256 + byte in an Int32Array, so a trie may have up to 2^23 nodes
// (a 130k-piece vocabulary needs well under a million).
const MAX_NODES = 1 << 23;

/** Builds a trie from (key bytes, value >= 0) entries; a later duplicate key overwrites. */
export function buildByteTrie(entries: Iterable<[Uint8Array, number]>): ByteTrie {
  let cap = 1024;
  let mask = cap - 1;
  let keys = new Int32Array(cap).fill(-1);
  let kids = new Int32Array(cap);
  let edges = 0;
  let values = new Int32Array(256).fill(-1);
  let nodes = 1;

  const slotOf = (k: number) => {
    let h = hash(k) & mask;
    while (keys[h] !== -1 && keys[h] !== k) h = (h + 1) & mask;
    return h;
  };
  const grow = () => {
    const oldKeys = keys;
    const oldKids = kids;
    cap *= 2;
    mask = cap - 1;
    keys = new Int32Array(cap).fill(-1);
    kids = new Int32Array(cap);
    for (let i = 0; i < oldKeys.length; i++) {
      if (oldKeys[i] === -1) continue;
      const h = slotOf(oldKeys[i]);
      keys[h] = oldKeys[i];
      kids[h] = oldKids[i];
    }
  };

  for (const [key, val] of entries) {
    let node = 0;
    for (let i = 0; i < key.length; i++) {
      const k = node * 256 + key[i];
      let h = slotOf(k);
      if (keys[h] === -1) {
        if (nodes >= MAX_NODES) throw new RangeError("byte trie: too many nodes");
        if ((edges + 1) * 2 > cap) {
          grow();
          h = slotOf(k);
        }
        keys[h] = k;
        kids[h] = nodes;
        edges++;
        if (nodes >= values.length) {
          const nv = new Int32Array(values.length * 2).fill(-1);
          nv.set(values);
          values = nv;
        }
        nodes++;
      }
      node = kids[h];
    }
    values[node] = val;
  }

  // The root's 256 transitions are the hottest: keep them in a direct table.
  const root = new Int32Array(256).fill(-1);
  for (let b = 0; b < 256; b++) {
    const h = slotOf(b);
    if (keys[h] === b) root[b] = kids[h];
  }
  const vals = values;
  const fKeys = keys;
  const fKids = kids;
  const fMask = mask;

  const child = (node: number, byte: number): number => {
    if (node === 0) return root[byte];
    const k = node * 256 + byte;
    let h = hash(k) & fMask;
    for (;;) {
      const kk = fKeys[h];
      if (kk === k) return fKids[h];
      if (kk === -1) return -1;
      h = (h + 1) & fMask;
    }
  };

  const trie: ByteTrie = {
    size: nodes,
    lastLength: 0,
    child,
    value: (node) => vals[node],
    longest(bytes, pos, end) {
      let node = 0;
      let best = -1;
      let bestLen = 0;
      for (let i = pos; i < end; i++) {
        node = child(node, bytes[i]);
        if (node < 0) break;
        const v = vals[node];
        if (v >= 0) {
          best = v;
          bestLen = i + 1 - pos;
        }
      }
      trie.lastLength = bestLen;
      return best;
    },
  };
  return trie;
}

function hash(k: number): number {
  const h = Math.imul(k, 0x9e3779b1);
  return h ^ (h >>> 15);
}
