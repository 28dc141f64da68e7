/**
 * JSON text helpers the readers need beyond `JSON.parse`: where each top-level array item starts
 * (so a record can name its line), where exactly a broken document fails (V8's messages do not
 * always carry a position), and the one safe repair: a single trailing comma before `]`.
 */

/** Maps character offsets to 1-based line numbers (LF, CRLF and CR all end a line). */
export interface LineIndex {
  lineOf(offset: number): number;
  columnOf(offset: number): number;
}

export function lineIndex(text: string): LineIndex {
  const starts: number[] = [0];
  for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) starts.push(i + 1);
  const lineOf = (offset: number): number => {
    let lo = 0, hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid] <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo + 1;
  };
  return { lineOf, columnOf: (offset) => offset - starts[lineOf(offset) - 1] + 1 };
}

function isWs(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/** Offset just past the string literal that starts at `i` (a `"`); -1 when unterminated. */
function skipString(text: string, i: number): number {
  for (let j = i + 1; j < text.length; j++) {
    const c = text.charCodeAt(j);
    if (c === 0x5c) j++;
    else if (c === 0x22) return j + 1;
  }
  return -1;
}

/**
 * Offsets of the first character of every item of the top-level array in `text`, which must be
 * valid JSON (checked by the caller with `JSON.parse`). Strings are skipped with `indexOf`, so the
 * scan costs little next to the parse itself.
 */
export function arrayItemStarts(text: string): number[] {
  const starts: number[] = [];
  let depth = 0;
  let expectItem = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (isWs(c)) continue;
    if (depth === 1 && expectItem && c !== 0x5d) {
      starts.push(i);
      expectItem = false;
    }
    if (c === 0x22) {
      // jump to the closing quote, honouring backslash escapes
      let j = i;
      for (;;) {
        j = text.indexOf('"', j + 1);
        if (j === -1) return starts;
        let bs = 0;
        for (let k = j - 1; text.charCodeAt(k) === 0x5c; k--) bs++;
        if ((bs & 1) === 0) break;
      }
      i = j;
    } else if (c === 0x5b || c === 0x7b) {
      depth++;
      if (depth === 1 && c === 0x5b) expectItem = true;
    } else if (c === 0x5d || c === 0x7d) depth--;
    else if (c === 0x2c && depth === 1) expectItem = true;
  }
  return starts;
}

/** Where and why a JSON document is invalid; null when it is valid. */
export interface JsonError {
  offset: number;
  reason: string;
}

/** A small validating scan that reports the first error's offset (used only on failure). */
export function findJsonError(text: string): JsonError | null {
  let i = 0;
  const n = text.length;
  const fail = (reason: string): never => {
    throw { offset: Math.min(i, n), reason } as JsonError;
  };
  const ws = () => {
    while (i < n && isWs(text.charCodeAt(i))) i++;
  };
  const describe = () =>
    i >= n ? "unexpected end of input" : `unexpected ${JSON.stringify(text.slice(i, i + 12))}`;
  const value = (): void => {
    ws();
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      const end = skipString(text, i);
      if (end < 0) fail("unterminated string");
      for (let k = i + 1; k < end - 1; k++) {
        if (text.charCodeAt(k) < 0x20) {
          i = k;
          fail("control character in string");
        }
      }
      i = end;
    } else if (c === 0x7b) {
      i++;
      ws();
      if (text.charCodeAt(i) === 0x7d) {
        i++;
        return;
      }
      for (;;) {
        ws();
        if (text.charCodeAt(i) !== 0x22) fail(`expected a property name, ${describe()}`);
        value();
        ws();
        if (text.charCodeAt(i) !== 0x3a) fail(`expected ':', ${describe()}`);
        i++;
        value();
        ws();
        const d = text.charCodeAt(i);
        if (d === 0x2c) {
          i++;
          continue;
        }
        if (d === 0x7d) {
          i++;
          return;
        }
        fail(`expected ',' or '}', ${describe()}`);
      }
    } else if (c === 0x5b) {
      i++;
      ws();
      if (text.charCodeAt(i) === 0x5d) {
        i++;
        return;
      }
      for (;;) {
        value();
        ws();
        const d = text.charCodeAt(i);
        if (d === 0x2c) {
          i++;
          ws();
          if (text.charCodeAt(i) === 0x5d) fail("trailing comma before ']'");
          continue;
        }
        if (d === 0x5d) {
          i++;
          return;
        }
        fail(`expected ',' or ']', ${describe()}`);
      }
    } else {
      const m = /^(?:-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)/.exec(
        text.slice(i, i + 400),
      );
      if (!m) fail(describe());
      i += m![0].length;
    }
  };
  try {
    ws();
    if (i >= n) return { offset: 0, reason: "empty document" };
    value();
    ws();
    if (i < n) fail(`extra data after the JSON value, ${describe()}`);
    return null;
  } catch (err) {
    if (err && typeof err === "object" && "offset" in err) return err as JsonError;
    throw err;
  }
}

/**
 * Removes a single trailing comma that directly precedes the closing `]` of the top-level array
 * (the defect of one translated alpaca file). Returns null when there is no such comma, or when
 * there is more than one trailing comma anywhere (then the file is broken in other ways).
 */
export function repairTrailingComma(text: string): { text: string; offset: number } | null {
  const found: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      const end = skipString(text, i);
      if (end < 0) return null;
      i = end - 1;
    } else if (c === 0x2c) {
      let j = i + 1;
      while (j < text.length && isWs(text.charCodeAt(j))) j++;
      const d = text.charCodeAt(j);
      if (d === 0x5d || d === 0x7d) found.push(i);
    }
  }
  if (found.length !== 1) return null;
  const at = found[0];
  let j = at + 1;
  while (isWs(text.charCodeAt(j))) j++;
  if (text.charCodeAt(j) !== 0x5d) return null;
  // only the array's own closing bracket: nothing but whitespace may follow it
  if (text.slice(j + 1).trim() !== "") return null;
  return { text: text.slice(0, at) + " " + text.slice(at + 1), offset: at };
}
