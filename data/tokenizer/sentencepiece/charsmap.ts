/**
 * SentencePiece's precompiled charsmap: a Darts double-array trie (little-endian uint32 units)
 * followed by a blob of NUL-terminated replacement strings.
 */

export interface Charsmap {
  /** Longest key at `pos`: returns the blob offset of its replacement, or -1. */
  match(bytes: Uint8Array, pos: number, end: number): number;
  /** Key length of the last successful `match`. */
  lastLength: number;
  blob: Uint8Array;
  /** Replacement length (bytes up to the NUL) for a blob offset. */
  replacementLength(offset: number): number;
  /** First bytes that can start a key (a fast negative test). */
  canStart: Uint8Array;
}

export function parseCharsmap(cm: Uint8Array): Charsmap {
  const dv = new DataView(cm.buffer, cm.byteOffset, cm.byteLength);
  const trieSize = dv.getUint32(0, true);
  const n = trieSize / 4;
  const units = new Uint32Array(n);
  for (let i = 0; i < n; i++) units[i] = dv.getUint32(4 + 4 * i, true);
  const blob = cm.subarray(4 + trieSize);

  const offsetOf = (u: number) => (u >>> 10) << ((u & 0x200) >>> 6);
  const rootOffset = offsetOf(units[0]);
  const lenCache = new Map<number, number>();

  const cs: Charsmap = {
    blob,
    lastLength: 0,
    canStart: new Uint8Array(256),
    match(bytes, pos, end) {
      let node = rootOffset;
      let best = -1;
      let bestLen = 0;
      for (let i = pos; i < end; i++) {
        const c = bytes[i];
        node ^= c;
        if (node >= n) break;
        const u = units[node];
        // label(u) = u & 0x800000FF must equal c (the high bit marks a leaf unit)
        if ((u & 0x800000ff) >>> 0 !== c) break;
        node ^= offsetOf(u);
        if ((u >>> 8) & 1) {
          if (node >= n) break;
          best = units[node] & 0x7fffffff;
          bestLen = i + 1 - pos;
        }
      }
      cs.lastLength = bestLen;
      return best;
    },
    replacementLength(offset) {
      let len = lenCache.get(offset);
      if (len === undefined) {
        len = 0;
        while (offset + len < blob.length && blob[offset + len] !== 0) len++;
        lenCache.set(offset, len);
      }
      return len;
    },
  };
  // Precompute which lead bytes can start any key, so plain ASCII skips the trie walk.
  for (let b = 0; b < 256; b++) {
    const node = rootOffset ^ b;
    if (node < n && ((units[node] & 0x800000ff) >>> 0) === b) cs.canStart[b] = 1;
  }
  return cs;
}
