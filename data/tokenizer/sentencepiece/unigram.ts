/**
 * SentencePiece UNIGRAM segmentation: Viterbi over byte positions of the normalized string, with
 * float32 path scores exactly as the reference library keeps them (near-ties depend on it).
 */
import { buildByteTrie } from "./byte_trie.ts";
import { PieceType, type SentencePieceModel } from "./model.ts";
import { utf8CharLength } from "./utf8.ts";

const FLT_MIN = 1.1754943508222875e-38;

export interface UnigramSegmenter {
  /** Same contract as the BPE segmenter; unknown characters come out with id = unkId. */
  segment(
    bytes: Uint8Array,
    start: number,
    end: number,
    emit: (s: number, e: number, id: number) => void,
  ): void;
}

export function createUnigramSegmenter(model: SentencePieceModel): UnigramSegmenter {
  const encoder = new TextEncoder();
  const entries: [Uint8Array, number][] = [];
  let minScore = Infinity;
  let maxScore = -Infinity;
  for (const [p, id] of model.normalMap) {
    const t = model.types[id];
    if (t === PieceType.UNUSED) continue;
    entries.push([encoder.encode(p), id]);
    if (t === PieceType.NORMAL) {
      minScore = Math.min(minScore, model.scores[id]);
      maxScore = Math.max(maxScore, model.scores[id]);
    }
  }
  if (minScore === Infinity) minScore = 0;
  maxScore = Math.max(FLT_MIN, maxScore);
  const unkScore = Math.fround(minScore - 10);
  const trie = buildByteTrie(entries);
  // Per-piece candidate score; user-defined pieces get a length-dependent bonus computed at use.
  const isUserDefined = new Uint8Array(model.pieces.length);
  for (let id = 0; id < model.pieces.length; id++) {
    isUserDefined[id] = model.types[id] === PieceType.USER_DEFINED ? 1 : 0;
  }
  const scores = model.scores;
  const unkId = model.unkId;

  let cap = 0;
  let bestScore = new Float32Array(0);
  let bestStart = new Int32Array(0);
  let bestId = new Int32Array(0);
  let path = new Int32Array(0);

  return {
    segment(bytes, start, end, emit) {
      const size = end - start;
      if (size === 0) return;
      if (size + 1 > cap) {
        cap = Math.max(size + 1, cap * 2);
        bestScore = new Float32Array(cap);
        bestStart = new Int32Array(cap);
        bestId = new Int32Array(cap);
        path = new Int32Array(cap);
      }
      bestScore.fill(0, 0, size + 1);
      bestStart.fill(-1, 0, size + 1);
      bestId.fill(-1, 0, size + 1);
      let pos = 0;
      while (pos < size) {
        let charLen = utf8CharLength(bytes, start + pos, end);
        if (charLen === 0) charLen = 1;
        let hasSingle = false;
        const base = bestScore[pos];
        let node = 0;
        for (let e = pos; e < size; e++) {
          node = trie.child(node, bytes[start + e]);
          if (node < 0) break;
          const id = trie.value(node);
          if (id < 0) continue;
          const len = e + 1 - pos;
          const score = isUserDefined[id] ? Math.fround(len * maxScore) - 0.1 : scores[id];
          const cand = score + base;
          const at = e + 1;
          if (bestStart[at] === -1 || cand > bestScore[at]) {
            bestScore[at] = cand;
            bestStart[at] = pos;
            bestId[at] = id;
          }
          if (len === charLen) hasSingle = true;
        }
        if (!hasSingle) {
          const at = pos + charLen;
          const cand = Math.fround(unkScore + base);
          if (bestStart[at] === -1 || cand > bestScore[at]) {
            bestScore[at] = cand;
            bestStart[at] = pos;
            bestId[at] = unkId;
          }
        }
        pos += charLen;
      }
      let n = 0;
      for (let at = size; at > 0; at = bestStart[at]) path[n++] = at;
      for (let i = n - 1; i >= 0; i--) {
        const at = path[i];
        emit(start + bestStart[at], start + at, bestId[at]);
      }
    },
  };
}
