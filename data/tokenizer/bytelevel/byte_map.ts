/**
 * GPT-2's byte-to-unicode map: every byte gets one printable code point, so that byte-level BPE
 * works on strings. Printable Latin-1 bytes (0x21–0x7E, 0xA1–0xAC, 0xAE–0xFF) map to themselves;
 * the other 68, in increasing order, to U+0100 onwards (space → `Ġ`, newline → `Ċ`).
 */

function buildByteToChar(): string[] {
  const out: string[] = new Array(256);
  let next = 0x100;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    out[b] = String.fromCodePoint(printable ? b : next++);
  }
  return out;
}

/** byte → its code point as a one-character string. */
export const BYTE_TO_CHAR: readonly string[] = buildByteToChar();

/** code point → byte (only the 256 code points of the map). */
export const CHAR_TO_BYTE: ReadonlyMap<number, number> = new Map(
  BYTE_TO_CHAR.map((c, b) => [c.codePointAt(0)!, b]),
);

const encoder = new TextEncoder();

/** A text's UTF-8 bytes written as byte-level characters. */
export function toByteLevel(text: string): string {
  let s = "";
  for (const b of encoder.encode(text)) s += BYTE_TO_CHAR[b];
  return s;
}

/**
 * The bytes a byte-level string stands for; a code point outside the map stands for its own UTF-8
 * bytes (added tokens are stored as plain text).
 */
export function fromByteLevel(s: string, out: number[] = []): number[] {
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    const b = CHAR_TO_BYTE.get(cp);
    if (b !== undefined) out.push(b);
    else for (const x of encoder.encode(ch)) out.push(x);
  }
  return out;
}
