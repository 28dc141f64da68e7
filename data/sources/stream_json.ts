/**
 * Streaming scans of large JSON sources, so that a source file of any size is read in bounded
 * memory (a 581 MB Alpaca-CoT file on a 4 GB machine): the file is read in chunks and only the
 * item being scanned is held. Two containers are handled: a top-level JSON array (each item is
 * cut out by a byte-level scan of strings and brackets, then parsed alone) and JSON Lines.
 *
 * The scan works on bytes: every structural character of JSON is ASCII, and no byte of a UTF-8
 * multi-byte sequence is ASCII, so cutting at those bytes never splits a character. Each item's
 * bytes are then decoded strictly (invalid UTF-8 stops the scan with the byte offset). Line and
 * column numbers match what the whole-file reader reports (lines end at LF; columns count UTF-16
 * units, as JavaScript string offsets do).
 */

const CHUNK = 1 << 22; // 4 MiB per read

/** Where the scan stopped on bad input. */
export interface ScanFailure {
  offset: number;
  line: number;
  column: number;
  reason: string;
}

export interface ArrayScan {
  ok: true;
  items: number;
  bom: boolean;
  /** The one trailing comma before the closing `]` (only reported, the items are all there). */
  trailingComma?: { offset: number; line: number; column: number };
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Decodes one item's bytes strictly; a failure names the absolute byte offset. */
export function decodeItem(bytes: Uint8Array, at: number): string | { badByte: number } {
  try {
    return utf8.decode(bytes);
  } catch {
    // find the first bad byte for the message (rare path)
    for (let n = 1; n <= bytes.length; n++) {
      try {
        utf8.decode(bytes.subarray(0, n), { stream: true });
      } catch {
        return { badByte: at + n - 1 };
      }
    }
    return { badByte: at + bytes.length };
  }
}

async function* chunks(
  path: string,
  onBytes?: (n: number) => void,
): AsyncGenerator<Uint8Array> {
  const file = await Deno.open(path, { read: true });
  try {
    for (;;) {
      const buf = new Uint8Array(CHUNK);
      let n = 0;
      while (n < CHUNK) {
        const got = await file.read(buf.subarray(n));
        if (got === null) break;
        n += got;
      }
      if (n === 0) return;
      onBytes?.(n);
      yield buf.subarray(0, n);
      if (n < CHUNK) return;
    }
  } finally {
    file.close();
  }
}

const WS = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

/**
 * Scans a file whose content is one JSON array and calls `onItem` with each item's bytes, its
 * 0-based index and the line it starts on. Returns a failure (with position) for anything that is
 * not a well-formed array at the top level; the items themselves are checked by the caller's
 * `JSON.parse` (`onItem` may return a failure reason to stop the scan there).
 */
export async function scanJsonArray(
  path: string,
  onItem: (bytes: Uint8Array, index: number, line: number, offset: number) => string | void,
  onBytes?: (n: number) => void,
): Promise<ArrayScan | ScanFailure> {
  // phases: 0 before '[', 1 before an item (or ']'), 2 inside an item, 3 after an item, 4 after ']'
  let phase = 0;
  let pos = 0; // absolute offset of buf[0]
  let line = 1, col = 0; // col: UTF-16 units before the current byte on its line
  let depth = 0, inString = false, escape = false, scalar = false;
  let itemStart = -1, itemLine = 0, items = 0;
  let afterComma = false, commaAt = -1, commaLine = 0, commaCol = 0;
  let trailing: ArrayScan["trailingComma"];
  let bom = false;
  let carry = new Uint8Array(0);
  let first = true;
  const failAt = (offset: number, reason: string): ScanFailure => ({
    offset,
    line,
    column: col + 1,
    reason,
  });
  for await (const chunk of chunks(path, onBytes)) {
    let buf = chunk;
    if (carry.length > 0) {
      buf = new Uint8Array(carry.length + chunk.length);
      buf.set(carry);
      buf.set(chunk, carry.length);
    }
    let i = carry.length;
    if (first) {
      first = false;
      if (buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) {
        bom = true;
        i = 3;
      }
    }
    for (; i < buf.length; i++) {
      const c = buf[i];
      if (phase === 2) {
        let end = -1; // where the item ends, as an index into buf
        if (inString) {
          if (escape) escape = false;
          else if (c === 0x5c) escape = true;
          else if (c === 0x22) {
            inString = false;
            if (depth === 0) end = i + 1; // a string item
          }
        } else if (c === 0x22) inString = true;
        else if (c === 0x7b || c === 0x5b) depth++;
        else if (c === 0x7d || c === 0x5d) {
          if (depth === 0) {
            end = i; // `]` ends a scalar item and the array
          } else if (--depth === 0) end = i + 1;
        } else if (scalar && (c === 0x2c || WS(c))) end = i;
        if (end >= 0) {
          const bytes = buf.subarray(itemStart - pos, end); // end: index in buf
          const bad = onItem(bytes, items, itemLine, itemStart);
          if (bad) return { offset: itemStart, line: itemLine, column: 0, reason: bad };
          items++;
          phase = 3;
          if (end === i) {
            i--; // re-read the byte that ended a scalar in phase 3
            continue;
          }
        }
      } else if (!WS(c)) {
        if (phase === 0) {
          if (c !== 0x5b) return failAt(pos + i, "not a JSON array");
          phase = 1;
        } else if (phase === 1) {
          if (c === 0x5d) {
            if (afterComma) {
              if (trailing) return failAt(pos + i, "more than one trailing comma");
              trailing = { offset: commaAt, line: commaLine, column: commaCol };
            }
            phase = 4;
          } else {
            phase = 2;
            itemStart = pos + i;
            itemLine = line;
            depth = 0;
            inString = c === 0x22;
            escape = false;
            scalar = c !== 0x22 && c !== 0x7b && c !== 0x5b;
            if (c === 0x7b || c === 0x5b) depth = 1;
          }
        } else if (phase === 3) {
          if (c === 0x2c) {
            phase = 1;
            afterComma = true;
            commaAt = pos + i;
            commaLine = line;
            commaCol = col + 1;
          } else if (c === 0x5d) phase = 4;
          else return failAt(pos + i, `expected ',' or ']' after item ${items - 1}`);
          if (c !== 0x2c) afterComma = false;
        } else return failAt(pos + i, "extra data after the JSON array");
      }
      if (c === 0x0a) {
        line++;
        col = 0;
      } else if ((c & 0xc0) !== 0x80) col += c >= 0xf0 ? 2 : 1;
    }
    // keep only the unfinished item
    if (phase === 2) {
      carry = buf.slice(itemStart - pos);
      pos = itemStart;
    } else {
      carry = new Uint8Array(0);
      pos += buf.length;
    }
  }
  if (phase !== 4) {
    return failAt(pos + carry.length, phase === 0 ? "empty document" : "unexpected end of input");
  }
  return { ok: true, items, bom, ...(trailing ? { trailingComma: trailing } : {}) };
}

/**
 * Calls `onLine` with each line's bytes (without the LF) and its 1-based number. Returns whether
 * the file started with a BOM (not part of the first line's bytes).
 */
export async function scanLines(
  path: string,
  onLine: (bytes: Uint8Array, line: number, offset: number) => string | void,
  onBytes?: (n: number) => void,
): Promise<{ ok: true; bom: boolean } | ScanFailure> {
  let carry = new Uint8Array(0);
  let pos = 0, line = 1, first = true, bom = false;
  for await (const chunk of chunks(path, onBytes)) {
    let buf = chunk;
    if (carry.length > 0) {
      buf = new Uint8Array(carry.length + chunk.length);
      buf.set(carry);
      buf.set(chunk, carry.length);
    }
    let start = 0;
    if (first) {
      first = false;
      if (buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) {
        bom = true;
        start = 3;
      }
    }
    for (let nl = buf.indexOf(0x0a, start); nl !== -1; nl = buf.indexOf(0x0a, start)) {
      const bad = onLine(buf.subarray(start, nl), line, pos + start);
      if (bad) return { offset: pos + start, line, column: 1, reason: bad };
      line++;
      start = nl + 1;
    }
    carry = buf.slice(start);
    pos += start;
  }
  if (carry.length > 0) {
    const bad = onLine(carry, line, pos);
    if (bad) return { offset: pos, line, column: 1, reason: bad };
  }
  return { ok: true, bom };
}
