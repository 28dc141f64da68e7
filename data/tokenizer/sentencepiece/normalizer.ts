/**
 * SentencePiece normalization on UTF-8 bytes: user-defined symbols pass through untouched, the
 * precompiled charsmap rewrites the longest matching key, spaces become `▁`, extra whitespace is
 * removed and a dummy prefix is added — all as the model file's `normalizer_spec` declares.
 */
import { buildByteTrie, type ByteTrie } from "./byte_trie.ts";
import { type Charsmap, parseCharsmap } from "./charsmap.ts";
import { PieceType, type SentencePieceModel } from "./model.ts";
import { utf8CharLength } from "./utf8.ts";

const FFFD = new Uint8Array([0xef, 0xbf, 0xbd]);
const encoder = new TextEncoder();

export interface Normalizer {
  /**
   * Normalizes `input[0:len)`. Returns the number of output bytes, written to `out()` (a buffer
   * reused by the next call).
   */
  normalizeBytes(input: Uint8Array, len: number): number;
  out(): Uint8Array;
  /** Trie of the USER_DEFINED pieces (value = piece id). */
  userDefined: ByteTrie;
  /** The whitespace symbol bytes (`▁` or a space). */
  ws: Uint8Array;
}

export function createNormalizer(model: SentencePieceModel): Normalizer {
  const spec = model.normalizer;
  const ud = buildByteTrie(
    model.pieces.flatMap((p, id) =>
      model.types[id] === PieceType.USER_DEFINED
        ? [[encoder.encode(p), id] as [Uint8Array, number]]
        : []
    ),
  );
  const cm: Charsmap | null = spec.charsmap.length > 0 ? parseCharsmap(spec.charsmap) : null;
  const ws = spec.escapeWhitespaces ? encoder.encode("\u2581") : new Uint8Array([0x20]);
  const removeExtra = spec.removeExtraWhitespaces;
  const addPrefix = spec.addDummyPrefix;

  // Bytes for which neither a user-defined symbol nor a charsmap key can start: copied as is.
  const plain = new Uint8Array(256);
  for (let b = 0; b < 256; b++) {
    plain[b] = ud.child(0, b) < 0 && !(cm && cm.canStart[b]) ? 1 : 0;
  }

  let buf = new Uint8Array(1024);
  let o = 0;
  const ensure = (extra: number) => {
    if (o + extra <= buf.length) return;
    let cap = buf.length * 2;
    while (cap < o + extra) cap *= 2;
    const nb = new Uint8Array(cap);
    nb.set(buf.subarray(0, o));
    buf = nb;
  };

  // Result of one normalization step (module-level registers avoid allocating per character).
  let sSrc: Uint8Array = FFFD;
  let sOff = 0;
  let sLen = 0;
  const step = (inp: Uint8Array, p: number, end: number): number => {
    const b = inp[p];
    if (!plain[b]) {
      const id = ud.longest(inp, p, end);
      if (id >= 0) {
        sSrc = inp;
        sOff = p;
        sLen = ud.lastLength;
        return sLen;
      }
      if (cm) {
        const off = cm.match(inp, p, end);
        if (off >= 0) {
          sSrc = cm.blob;
          sOff = off;
          sLen = cm.replacementLength(off);
          return cm.lastLength;
        }
      }
    }
    const n = utf8CharLength(inp, p, end);
    if (n === 0) {
      sSrc = FFFD;
      sOff = 0;
      sLen = 3;
      return 1;
    }
    sSrc = inp;
    sOff = p;
    sLen = n;
    return n;
  };

  const isSingleSpace = () => sLen === 1 && sSrc[sOff] === 0x20;

  return {
    userDefined: ud,
    ws,
    out: () => buf,
    normalizeBytes(inp, end) {
      o = 0;
      let p = 0;
      if (removeExtra) {
        while (p < end) {
          const n = step(inp, p, end);
          if (!isSingleSpace()) break;
          p += n;
        }
      }
      if (p >= end) return 0;
      if (addPrefix) {
        ensure(ws.length);
        buf.set(ws, o);
        o += ws.length;
      }
      let prevSpace = removeExtra;
      while (p < end) {
        const b = inp[p];
        if (b < 0x80 && plain[b]) {
          // Fast path: one ASCII byte not touched by the charsmap or a user-defined symbol.
          p++;
          if (b === 0x20) {
            if (!prevSpace) {
              ensure(ws.length);
              for (let k = 0; k < ws.length; k++) buf[o++] = ws[k];
              prevSpace = removeExtra;
            }
          } else {
            ensure(1);
            buf[o++] = b;
            prevSpace = false;
          }
          continue;
        }
        const n = step(inp, p, end);
        p += n;
        let s = sOff;
        const sEnd = sOff + sLen;
        if (prevSpace) { while (s < sEnd && sSrc[s] === 0x20) s++; }
        if (s < sEnd) {
          ensure((sEnd - s) * ws.length);
          for (let k = s; k < sEnd; k++) {
            const c = sSrc[k];
            if (c === 0x20) { for (let j = 0; j < ws.length; j++) buf[o++] = ws[j]; }
            else buf[o++] = c;
          }
          prevSpace = sSrc[sEnd - 1] === 0x20 && removeExtra;
        } else if (!removeExtra) {
          prevSpace = false;
        }
      }
      if (removeExtra) {
        const w = ws.length;
        while (o >= w) {
          let same = true;
          for (let k = 0; k < w; k++) {
            if (buf[o - w + k] !== ws[k]) {
              same = false;
              break;
            }
          }
          if (!same) break;
          o -= w;
        }
      }
      return o;
    },
  };
}
