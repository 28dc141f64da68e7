/**
 * Byte-fallback tokens and UTF-8: SentencePiece spells a character it has no piece for as one
 * token per UTF-8 byte (`<0xE5>`, `<0x8C>`, `<0xBB>`). Until the last byte of such a character
 * arrives, its bytes decode to U+FFFD, and a model can also emit bytes that never form a valid
 * character. Two uses here: the text stream holds back (and at the end drops) bytes that may still
 * complete a character, and the sampler can mask tokens that cannot continue valid UTF-8.
 */

/** Which ids are byte tokens, both ways. */
export interface ByteTokens {
  /** Byte value of each token id, -1 for ids that are not byte tokens. */
  byteOf: Int16Array;
  /** Token id of each byte value, -1 where the vocabulary has none. */
  idOf: Int32Array;
}

/** The byte tokens of a SentencePiece vocabulary: `byteIds[b]` is the piece id of byte `b`. */
export function byteTokens(
  vocabSize: number,
  byteIds: ArrayLike<number>,
  idOffset = 0,
): ByteTokens {
  const byteOf = new Int16Array(vocabSize).fill(-1);
  const idOf = new Int32Array(256).fill(-1);
  for (let b = 0; b < 256 && b < byteIds.length; b++) {
    const id = byteIds[b] < 0 ? -1 : byteIds[b] + idOffset;
    if (id >= 0 && id < vocabSize) {
      byteOf[id] = b;
      idOf[b] = id;
    }
  }
  return { byteOf, idOf };
}

/** Bytes that may start a well-formed UTF-8 character (ASCII or a lead byte C2–F4). */
export function canStartUtf8(b: number): boolean {
  return b < 0x80 || (b >= 0xc2 && b <= 0xf4);
}

/** Length of the character a lead byte starts (0 for bytes that start none). */
function charLength(lead: number): number {
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

/** Range of the byte after `lead` (Unicode's table 3-7: no overlongs, surrogates, > U+10FFFF). */
function secondByteRange(lead: number): [number, number] {
  if (lead === 0xe0) return [0xa0, 0xbf];
  if (lead === 0xed) return [0x80, 0x9f];
  if (lead === 0xf0) return [0x90, 0xbf];
  if (lead === 0xf4) return [0x80, 0x8f];
  return [0x80, 0xbf];
}

/** An unfinished character at the end of a token sequence. */
export interface PendingChar {
  /** Trailing tokens (bytes) that belong to it. */
  count: number;
  /** The range the next byte must fall in to continue it. */
  next: [number, number];
}

/**
 * The character still being spelled at the end of `ids`, if its bytes so far are a valid start:
 * those tokens can still become a character and must not be shown as U+FFFD yet.
 */
export function pendingChar(ids: readonly number[], byteOf: Int16Array): PendingChar | null {
  const bytes: number[] = [];
  for (let i = ids.length - 1; i >= 0 && bytes.length < 3; i--) {
    const b = ids[i] < byteOf.length ? byteOf[ids[i]] : -1;
    if (b < 0) break;
    bytes.unshift(b);
  }
  for (let k = 1; k <= bytes.length; k++) {
    const lead = bytes[bytes.length - k];
    if (lead >= 0x80 && lead <= 0xbf) continue; // a continuation byte: look further back
    const n = charLength(lead);
    if (n <= k) return null; // complete, or not a lead at all
    for (let j = 1; j < k; j++) {
      const [lo, hi] = j === 1 ? secondByteRange(lead) : [0x80, 0xbf];
      const c = bytes[bytes.length - k + j];
      if (c < lo || c > hi) return null;
    }
    return { count: k, next: k === 1 ? secondByteRange(lead) : [0x80, 0xbf] };
  }
  return null;
}
