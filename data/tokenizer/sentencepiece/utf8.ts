/** UTF-8 helpers with SentencePiece's rules for malformed input (one U+FFFD per bad byte). */

/**
 * Length of the well-formed UTF-8 character at `p` (1–4), or 0 when the bytes there do not form
 * one (bad lead byte, missing/bad continuation, overlong form, surrogate, > U+10FFFF).
 */
export function utf8CharLength(b: Uint8Array, p: number, end: number): number {
  const c = b[p];
  if (c < 0x80) return 1;
  if (c < 0xc2) return 0; // continuation byte or overlong 2-byte lead
  if (c < 0xe0) return p + 1 < end && (b[p + 1] & 0xc0) === 0x80 ? 2 : 0;
  if (c < 0xf0) {
    if (p + 2 >= end) return 0;
    const c1 = b[p + 1];
    if ((c1 & 0xc0) !== 0x80 || (b[p + 2] & 0xc0) !== 0x80) return 0;
    if (c === 0xe0 && c1 < 0xa0) return 0; // overlong
    if (c === 0xed && c1 >= 0xa0) return 0; // surrogates
    return 3;
  }
  if (c < 0xf5) {
    if (p + 3 >= end) return 0;
    const c1 = b[p + 1];
    if ((c1 & 0xc0) !== 0x80 || (b[p + 2] & 0xc0) !== 0x80 || (b[p + 3] & 0xc0) !== 0x80) return 0;
    if (c === 0xf0 && c1 < 0x90) return 0; // overlong
    if (c === 0xf4 && c1 >= 0x90) return 0; // > U+10FFFF
    return 4;
  }
  return 0;
}

/** Code point of the well-formed character at `p` whose length is `len`. */
export function utf8CodePoint(b: Uint8Array, p: number, len: number): number {
  switch (len) {
    case 1:
      return b[p];
    case 2:
      return ((b[p] & 0x1f) << 6) | (b[p + 1] & 0x3f);
    case 3:
      return ((b[p] & 0x0f) << 12) | ((b[p + 1] & 0x3f) << 6) | (b[p + 2] & 0x3f);
    default:
      return ((b[p] & 0x07) << 18) | ((b[p + 1] & 0x3f) << 12) | ((b[p + 2] & 0x3f) << 6) |
        (b[p + 3] & 0x3f);
  }
}

/** Decodes bytes; each byte that does not start a valid character becomes U+FFFD on its own. */
export function decodeUtf8Lenient(b: Uint8Array, start = 0, end = b.length): string {
  let out = "";
  let runStart = start;
  let p = start;
  const dec = utf8Decoder;
  while (p < end) {
    const n = utf8CharLength(b, p, end);
    if (n > 0) {
      p += n;
      continue;
    }
    if (p > runStart) out += dec.decode(b.subarray(runStart, p));
    out += "\uFFFD";
    p += 1;
    runStart = p;
  }
  if (p > runStart) out += dec.decode(b.subarray(runStart, p));
  return out;
}

const utf8Decoder = new TextDecoder();
