/**
 * Bytes → text for source files. Valid UTF-8 (a BOM is stripped) is always tried first; GB18030
 * (a superset of GBK) only where the caller allows it, because a `.json` file that is not UTF-8
 * is broken by definition (RFC 8259) while the Chinese medical dialogue dumps are GB18030 by origin.
 */

export type TextEncoding = "utf-8" | "utf-8-bom" | "gb18030";

export type DecodeResult =
  | { ok: true; text: string; encoding: TextEncoding }
  | { ok: false; reason: string; utf8ErrorAt: number };

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const gb18030 = new TextDecoder("gb18030", { ignoreBOM: true });

/**
 * Offset of the first byte that starts an invalid or truncated UTF-8 sequence, or -1 when the
 * bytes are valid UTF-8 (overlong forms, surrogates and code points past U+10FFFF are invalid).
 */
export function utf8ErrorOffset(bytes: Uint8Array): number {
  const n = bytes.length;
  let i = 0;
  while (i < n) {
    const b = bytes[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let lo = 0x80, hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) lo = 0xa0;
      if (b === 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) lo = 0x90;
      if (b === 0xf4) hi = 0x8f;
    } else return i;
    const c1 = bytes[i + 1];
    if (c1 === undefined || c1 < lo || c1 > hi) return i;
    for (let k = 2; k <= need; k++) {
      const c = bytes[i + k];
      if (c === undefined || c < 0x80 || c > 0xbf) return i;
    }
    i += need + 1;
  }
  return -1;
}

/** How a file may be decoded: `auto` = UTF-8, falling back to GB18030 only when `allowGb18030`. */
export type EncodingPolicy = "auto" | "utf-8" | "gb18030";

/** Decodes a source file's bytes under `policy`; a failure names the byte offset. */
export function decodeSource(
  bytes: Uint8Array,
  policy: EncodingPolicy,
  allowGb18030: boolean,
): DecodeResult {
  if (policy === "gb18030") {
    return { ok: true, text: stripBom(gb18030.decode(bytes)), encoding: "gb18030" };
  }
  try {
    const text = strictUtf8.decode(bytes);
    if (text.charCodeAt(0) === 0xfeff) {
      return { ok: true, text: text.slice(1), encoding: "utf-8-bom" };
    }
    return { ok: true, text, encoding: "utf-8" };
  } catch {
    const at = utf8ErrorOffset(bytes);
    if (policy === "auto" && allowGb18030) {
      return { ok: true, text: stripBom(gb18030.decode(bytes)), encoding: "gb18030" };
    }
    return { ok: false, utf8ErrorAt: at, reason: `invalid UTF-8 at byte ${at}${hint(bytes, at)}` };
  }
}

function stripBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

// A hint for the warning only: a sequence cut at the very end means a truncated file; bytes that
// decode as GB18030 without a replacement character are most likely a GBK export.
function hint(bytes: Uint8Array, at: number): string {
  if (at >= bytes.length - 3 && utf8ErrorOffset(bytes.subarray(0, at)) === -1) {
    return " (a multi-byte character is cut off at the end: truncated file?)";
  }
  if (!gb18030.decode(bytes).includes("\uFFFD")) {
    return " (the bytes decode as GB18030/GBK; set the source's encoding to gb18030 to read it)";
  }
  return "";
}
