/**
 * SentencePiece BPE segmentation: start from characters (user-defined symbols frozen), then keep
 * merging the adjacent pair whose concatenation is the highest-scoring piece (ties: leftmost).
 *
 * Speed: pairs are looked up by (left symbol id, right symbol id) in a precomputed table instead
 * of by string concatenation, and the symbol list and priority queue live in reused typed arrays.
 */
import type { ByteTrie } from "./byte_trie.ts";
import type { SentencePieceModel } from "./model.ts";
import { utf8CharLength, utf8CodePoint } from "./utf8.ts";

export interface BpeSegmenter {
  /**
   * Segments `bytes[start:end)`; calls `emit(segStart, segEnd, symbolId)` for each final symbol in
   * order. `symbolId` is a piece id of the normal map, or -1 for a character that is not a piece.
   */
  segment(
    bytes: Uint8Array,
    start: number,
    end: number,
    emit: (s: number, e: number, id: number) => void,
  ): void;
  /**
   * End of the independent segment that starts at `start`: no merge can ever cross it, because
   * no piece contains the two characters on either side of it next to each other (or it borders
   * a frozen user-defined symbol). Segmenting piecewise at these points gives the same result as
   * segmenting the whole string, which lets callers memoize short segments (words).
   */
  nextBoundary(bytes: Uint8Array, start: number, end: number): number;
}

export function createBpeSegmenter(model: SentencePieceModel, userDefined: ByteTrie): BpeSegmenter {
  const pieceCount = model.pieces.length;
  // Symbol ids: normal-map pieces keep their piece id; a character that only occurs inside pieces
  // gets a pseudo id >= pieceCount. Characters occurring nowhere can never merge (-1).
  const bmp = new Int32Array(65536).fill(-1);
  const astral = new Map<number, number>();
  let nextPseudo = pieceCount;
  const charId = (cp: number): number => (cp < 65536 ? bmp[cp] : astral.get(cp) ?? -1);
  const setChar = (cp: number, id: number) => {
    if (cp < 65536) bmp[cp] = id;
    else astral.set(cp, id);
  };
  for (const [p, id] of model.normalMap) {
    const cp = p.codePointAt(0)!;
    if (p.length === (cp > 0xffff ? 2 : 1)) setChar(cp, id);
  }
  for (const p of model.normalMap.keys()) {
    for (const ch of p) {
      const cp = ch.codePointAt(0)!;
      if (charId(cp) < 0) setChar(cp, nextPseudo++);
    }
  }
  const symIdOf = (s: string): number => {
    const id = model.normalMap.get(s);
    if (id !== undefined) return id;
    const cp = s.codePointAt(0)!;
    return s.length === (cp > 0xffff ? 2 : 1) ? charId(cp) : -1;
  };

  // Pair table: (left, right) -> merged piece id, for every split of every normal-map piece,
  // as open addressing over typed arrays (a Map with non-Smi keys was the hot spot).
  const pairL: number[] = [];
  const pairR: number[] = [];
  const pairId: number[] = [];
  for (const [p, id] of model.normalMap) {
    const chars = Array.from(p);
    if (chars.length < 2) continue;
    let left = "";
    for (let k = 1; k < chars.length; k++) {
      left += chars[k - 1];
      const l = symIdOf(left);
      if (l < 0) continue;
      const r = symIdOf(chars.slice(k).join(""));
      if (r < 0) continue;
      pairL.push(l);
      pairR.push(r);
      pairId.push(id);
    }
  }
  let tableSize = 16;
  while (tableSize < pairL.length * 2) tableSize *= 2;
  const tMask = tableSize - 1;
  const tLeft = new Int32Array(tableSize).fill(-1);
  const tRight = new Int32Array(tableSize);
  const tPiece = new Int32Array(tableSize);
  const slot = (l: number, r: number) =>
    (Math.imul(l, 0x9e3779b1) ^ Math.imul(r, 0x85ebca6b)) & tMask;
  for (let i = 0; i < pairL.length; i++) {
    let h = slot(pairL[i], pairR[i]);
    while (tLeft[h] !== -1 && !(tLeft[h] === pairL[i] && tRight[h] === pairR[i])) {
      h = (h + 1) & tMask;
    }
    tLeft[h] = pairL[i];
    tRight[h] = pairR[i];
    tPiece[h] = pairId[i];
  }
  const pairPiece = (l: number, r: number): number => {
    let h = slot(l, r);
    for (;;) {
      const tl = tLeft[h];
      if (tl === -1) return -1;
      if (tl === l && tRight[h] === r) return tPiece[h];
      h = (h + 1) & tMask;
    }
  };
  const scores = model.scores;

  // Characters that occur next to each other inside some piece (by symbol id).
  const adjL: number[] = [];
  const adjR: number[] = [];
  for (const p of model.normalMap.keys()) {
    let prevId = -1;
    for (const ch of p) {
      const id = charId(ch.codePointAt(0)!);
      if (prevId >= 0) {
        adjL.push(prevId);
        adjR.push(id);
      }
      prevId = id;
    }
  }
  let adjSize = 16;
  while (adjSize < adjL.length * 2) adjSize *= 2;
  const aMask = adjSize - 1;
  const aLeft = new Int32Array(adjSize).fill(-1);
  const aRight = new Int32Array(adjSize);
  const aSlot = (l: number, r: number) =>
    (Math.imul(l, 0x85ebca6b) ^ Math.imul(r + 1, 0xc2b2ae35)) & aMask;
  for (let i = 0; i < adjL.length; i++) {
    let h = aSlot(adjL[i], adjR[i]);
    while (aLeft[h] !== -1 && !(aLeft[h] === adjL[i] && aRight[h] === adjR[i])) h = (h + 1) & aMask;
    aLeft[h] = adjL[i];
    aRight[h] = adjR[i];
  }
  const adjacent = (l: number, r: number): boolean => {
    let h = aSlot(l, r);
    for (;;) {
      const tl = aLeft[h];
      if (tl === -1) return false;
      if (tl === l && aRight[h] === r) return true;
      h = (h + 1) & aMask;
    }
  };
  // Bytes that can start a user-defined symbol, and the adjacency of ASCII pairs as a flat table
  // (the common case in nextBoundary).
  const udStart = new Uint8Array(256);
  for (let b = 0; b < 256; b++) udStart[b] = userDefined.child(0, b) >= 0 ? 1 : 0;
  const asciiAdj = new Uint8Array(128 * 128);
  for (let a = 0; a < 128; a++) {
    for (let b = 0; b < 128; b++) {
      const l = charId(a);
      const r = charId(b);
      asciiAdj[a * 128 + b] = l >= 0 && r >= 0 && adjacent(l, r) ? 1 : 0;
    }
  }
  const symbolOf = (bytes: Uint8Array, p: number, len: number) =>
    len === 1 && bytes[p] >= 0x80 ? -1 : charId(utf8CodePoint(bytes, p, len));

  // Reused work arrays.
  let cap = 0;
  let symStart = new Int32Array(0);
  let symLen = new Int32Array(0);
  let symId = new Int32Array(0);
  let prev = new Int32Array(0);
  let next = new Int32Array(0);
  let frozen = new Uint8Array(0);
  let hScore = new Float64Array(0);
  let hLeft = new Int32Array(0);
  let hRight = new Int32Array(0);
  let hLen = new Int32Array(0);
  let hPiece = new Int32Array(0);
  let heap = new Int32Array(0);
  let hSize = 0;
  const grow = (n: number) => {
    if (n <= cap) return;
    cap = Math.max(n, cap * 2, 256);
    symStart = new Int32Array(cap);
    symLen = new Int32Array(cap);
    symId = new Int32Array(cap);
    prev = new Int32Array(cap);
    next = new Int32Array(cap);
    frozen = new Uint8Array(cap);
    // Each merge pushes at most two candidates; the initial pass at most n.
    const hc = 3 * cap + 8;
    hScore = new Float64Array(hc);
    hLeft = new Int32Array(hc);
    hRight = new Int32Array(hc);
    hLen = new Int32Array(hc);
    hPiece = new Int32Array(hc);
    heap = new Int32Array(hc);
  };

  // Candidates are appended to parallel arrays; the heap orders their indices by
  // (score desc, left asc), so sifting moves one int instead of five fields.
  const above = (a: number, b: number) =>
    hScore[a] > hScore[b] || (hScore[a] === hScore[b] && hLeft[a] < hLeft[b]);
  let nCand = 0;
  const push = (l: number, r: number) => {
    if (l < 0 || r < 0 || frozen[l] || frozen[r]) return;
    const a = symId[l];
    const b = symId[r];
    if (a < 0 || b < 0) return;
    const piece = pairPiece(a, b);
    if (piece < 0) return;
    const c = nCand++;
    hScore[c] = scores[piece];
    hLeft[c] = l;
    hRight[c] = r;
    hLen[c] = symLen[l] + symLen[r];
    hPiece[c] = piece;
    let i = hSize++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const pc = heap[parent];
      if (!above(c, pc)) break;
      heap[i] = pc;
      i = parent;
    }
    heap[i] = c;
  };
  const pop = () => {
    hSize--;
    if (hSize === 0) return;
    const c = heap[hSize];
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= hSize) break;
      let m = l;
      if (l + 1 < hSize && above(heap[l + 1], heap[l])) m = l + 1;
      if (!above(heap[m], c)) break;
      heap[i] = heap[m];
      i = m;
    }
    heap[i] = c;
  };

  return {
    nextBoundary(bytes, start, end) {
      if (udStart[bytes[start]] && userDefined.longest(bytes, start, end) >= 0) {
        return start + userDefined.lastLength;
      }
      let p = start;
      // ASCII run: table lookups only.
      while (p + 1 < end) {
        const a = bytes[p];
        const b = bytes[p + 1];
        if (b >= 0x80 || a >= 0x80) break;
        if (udStart[b] && userDefined.longest(bytes, p + 1, end) >= 0) return p + 1;
        if (!asciiAdj[a * 128 + b]) return p + 1;
        p++;
      }
      let len = utf8CharLength(bytes, p, end) || 1;
      let prevId = symbolOf(bytes, p, len);
      p += len;
      while (p < end) {
        if (prevId < 0) return p;
        if (udStart[bytes[p]] && userDefined.longest(bytes, p, end) >= 0) return p;
        len = utf8CharLength(bytes, p, end) || 1;
        const id = symbolOf(bytes, p, len);
        if (id < 0 || !adjacent(prevId, id)) return p;
        prevId = id;
        p += len;
      }
      return end;
    },
    segment(bytes, start, end, emit) {
      grow(end - start + 1);
      let n = 0;
      for (let p = start; p < end;) {
        const ud = udStart[bytes[p]] ? userDefined.longest(bytes, p, end) : -1;
        let len: number;
        if (ud >= 0) {
          len = userDefined.lastLength;
          frozen[n] = 1;
          symId[n] = ud;
        } else {
          len = utf8CharLength(bytes, p, end) || 1; // 0 cannot happen for normalizer output
          frozen[n] = 0;
          symId[n] = symbolOf(bytes, p, len);
        }
        symStart[n] = p;
        symLen[n] = len;
        prev[n] = n - 1;
        next[n] = n + 1;
        n++;
        p += len;
      }
      if (n === 0) return;
      next[n - 1] = -1;
      hSize = 0;
      nCand = 0;
      for (let i = 0; i + 1 < n; i++) push(i, i + 1);
      while (hSize > 0) {
        const top = heap[0];
        const l = hLeft[top];
        const r = hRight[top];
        const len = hLen[top];
        const piece = hPiece[top];
        pop();
        if (symLen[l] === 0 || symLen[r] === 0 || symLen[l] + symLen[r] !== len) continue;
        symLen[l] = len;
        symId[l] = piece;
        symLen[r] = 0;
        next[l] = next[r];
        if (next[r] >= 0) prev[next[r]] = l;
        push(prev[l], l);
        push(l, next[l]);
      }
      for (let i = 0; i >= 0; i = next[i]) {
        const id = symId[i];
        emit(symStart[i], symStart[i] + symLen[i], id < pieceCount ? id : -1);
      }
    },
  };
}
