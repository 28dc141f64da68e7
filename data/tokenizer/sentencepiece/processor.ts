/**
 * SentencePiece encoding end to end: normalize → segment (BPE or UNIGRAM, as the file says) →
 * byte fallback → ids. One processor per model; it reuses its buffers, so it is not re-entrant
 * (JS is single-threaded, and no callback runs user code mid-encode).
 */
import { createBpeSegmenter } from "./bpe.ts";
import { decodeIds, decodePieces, idToPiece } from "./decode.ts";
import { hex2, pieceToId, type SentencePieceModel } from "./model.ts";
import { createNormalizer } from "./normalizer.ts";
import { createUnigramSegmenter } from "./unigram.ts";

export interface SentencePieceProcessor {
  readonly model: SentencePieceModel;
  /** The normalized string (§5.3), `▁` for spaces. */
  normalize(text: string): string;
  /** Piece ids of `text`. */
  encodeIds(text: string): number[];
  /** Appends the piece ids of `text` to `out` (no intermediate arrays). */
  encodeIdsInto(text: string, out: number[]): void;
  /** Piece strings of `text` (an unknown character without byte fallback shows its surface). */
  encodePieces(text: string): string[];
  decodePieces(pieces: readonly string[]): string;
  decodeIds(ids: readonly number[]): string;
  pieceToId(piece: string): number;
  idToPiece(id: number): string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function createSentencePieceProcessor(model: SentencePieceModel): SentencePieceProcessor {
  const normalizer = createNormalizer(model);
  const unkId = model.unkId;
  const byteIds = model.byteIds;
  const byteFallback = model.byteFallback;
  let segment: (
    b: Uint8Array,
    s: number,
    e: number,
    emit: (s: number, e: number, id: number) => void,
  ) => void;
  // BPE resolves each final symbol with PieceToId (reserved pieces first); UNIGRAM keeps the
  // lattice ids as they are.
  let resolve: (id: number, b: Uint8Array, s: number, e: number) => number;
  const bpe = model.modelType === "bpe" ? createBpeSegmenter(model, normalizer.userDefined) : null;
  if (bpe) {
    segment = bpe.segment;
    const finalId = new Int32Array(model.pieces.length);
    for (let id = 0; id < finalId.length; id++) {
      finalId[id] = model.reservedMap.get(model.pieces[id]) ?? id;
    }
    const reservedSingles = [...model.reservedMap.keys()].some((k) => [...k].length === 1);
    resolve = (id, b, s, e) => {
      if (id >= 0) return finalId[id];
      if (!reservedSingles) return unkId;
      return pieceToId(model, decoder.decode(b.subarray(s, e)));
    };
  } else {
    segment = createUnigramSegmenter(model).segment;
    resolve = (id) => id;
  }

  let inBuf = new Uint8Array(4096);
  const toBytes = (text: string): number => {
    // encodeInto needs up to 3 bytes per UTF-16 unit.
    if (inBuf.length < text.length * 3) inBuf = new Uint8Array(text.length * 3 + 64);
    return encoder.encodeInto(text, inBuf).written;
  };

  let outIds: number[] = [];
  let outPieces: string[] | null = null;
  let lastUnk = false;
  const emit = (s: number, e: number, id: number) => {
    const buf = normalizer.out();
    const fid = resolve(id, buf, s, e);
    if (fid === unkId) {
      if (byteFallback) {
        for (let k = s; k < e; k++) {
          outIds.push(byteIds[buf[k]]);
          if (outPieces) outPieces.push(`<0x${hex2(buf[k])}>`);
        }
        lastUnk = false;
        return;
      }
      if (lastUnk) {
        // Consecutive unknown segments merge into one <unk>.
        if (outPieces) outPieces[outPieces.length - 1] += decoder.decode(buf.subarray(s, e));
        return;
      }
      lastUnk = true;
      outIds.push(unkId);
      if (outPieces) outPieces.push(decoder.decode(buf.subarray(s, e)));
      return;
    }
    lastUnk = false;
    outIds.push(fid);
    if (outPieces) outPieces.push(model.pieces[fid]);
  };

  // BPE word cache: the segmenter tells where merges can never cross (e.g. before a `▁`, or
  // between a Latin letter and a CJK character); such short segments recur a lot and are memoized.
  // Only with byte fallback: without it, unknown runs merge across segments in `emit`.
  const cacheable = bpe !== null && byteFallback;
  const MAX_CACHED_BYTES = 24;
  const MAX_CACHE_ENTRIES = 1 << 16;
  const cache = new Map<string, number[]>();
  const segmentCached = (buf: Uint8Array, len: number) => {
    for (let s = 0; s < len;) {
      const e = bpe!.nextBoundary(buf, s, len);
      if (e - s > MAX_CACHED_BYTES) {
        segment(buf, s, e, emit);
      } else {
        let key = "";
        for (let k = s; k < e; k++) key += String.fromCharCode(buf[k]);
        const hit = cache.get(key);
        if (hit) {
          for (let k = 0; k < hit.length; k++) outIds.push(hit[k]);
        } else {
          const from = outIds.length;
          segment(buf, s, e, emit);
          if (cache.size >= MAX_CACHE_ENTRIES) cache.clear();
          cache.set(key, outIds.slice(from));
        }
      }
      s = e;
    }
  };

  const run = (text: string, ids: number[], pieces: string[] | null) => {
    const n = toBytes(text);
    const len = normalizer.normalizeBytes(inBuf, n);
    if (len === 0) return;
    outIds = ids;
    outPieces = pieces;
    lastUnk = false;
    try {
      if (cacheable && !pieces) segmentCached(normalizer.out(), len);
      else segment(normalizer.out(), 0, len, emit);
    } finally {
      outIds = [];
      outPieces = null;
    }
  };

  return {
    model,
    normalize(text) {
      const n = toBytes(text);
      const len = normalizer.normalizeBytes(inBuf, n);
      return decoder.decode(normalizer.out().subarray(0, len));
    },
    encodeIds(text) {
      const ids: number[] = [];
      run(text, ids, null);
      return ids;
    },
    encodeIdsInto(text, out) {
      run(text, out, null);
    },
    encodePieces(text) {
      const pieces: string[] = [];
      run(text, [], pieces);
      return pieces;
    },
    decodePieces: (pieces) => decodePieces(model, pieces),
    decodeIds: (ids) => decodeIds(model, ids),
    pieceToId: (piece) => pieceToId(model, piece),
    idToPiece: (id) => idToPiece(model, id),
  };
}
