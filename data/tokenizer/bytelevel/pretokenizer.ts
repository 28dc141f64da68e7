/**
 * The `Split` pre-tokenizer of a `tokenizer.json`: its Oniguruma pattern rewritten for JavaScript,
 * and the split itself. The one difference that matters between the engines is `\s`: Oniguruma's
 * is Unicode White_Space (it has U+0085, lacks U+FEFF), JavaScript's is not; every `\s` / `\S` of
 * the pattern becomes an explicit class so both agree.
 */

/** Unicode White_Space, as Oniguruma's `\s`, in a form that goes inside `[...]`. */
export const WHITE_SPACE =
  "\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/** The pattern of a `Split` pre-tokenizer as a JavaScript regular expression (flags `gu`). */
export function translatePattern(pattern: string): RegExp {
  let out = "";
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "\\") {
      const n = pattern[i + 1];
      i++;
      if (n === "s") out += inClass ? WHITE_SPACE : `[${WHITE_SPACE}]`;
      else if (n === "S") {
        if (inClass) {
          throw new Error(`pre-tokenizer pattern: \\S inside a character class is not supported`);
        }
        out += `[^${WHITE_SPACE}]`;
      } else out += c + n;
      continue;
    }
    if (c === "[" && !inClass) inClass = true;
    else if (c === "]" && inClass) inClass = false;
    out += c;
  }
  try {
    return new RegExp(out, "gu");
  } catch (err) {
    throw new Error(
      `pre-tokenizer pattern ${JSON.stringify(pattern)} does not compile in JavaScript: ` +
        (err as Error).message,
    );
  }
}

/**
 * `Split` with behavior `Isolated`: each match is a pre-token, and so is any text between matches
 * (with the usual patterns every character is matched, so there are no gaps). The result pushes
 * the pre-tokens of `text` onto `out`.
 *
 * Why not `matchAll`: each match allocates a match array, and the split runs once per pre-token.
 * A sticky copy of the pattern is tried at the current position with `test` (no allocation; the
 * match ends at `lastIndex`); only where it fails there is a gap, found with the global pattern.
 */
export function createIsolatedSplit(re: RegExp): (text: string, out: string[]) => void {
  const sticky = new RegExp(re.source, "uy");
  const global = new RegExp(re.source, "gu");
  return (text, out) => {
    let pos = 0;
    while (pos < text.length) {
      sticky.lastIndex = pos;
      if (sticky.test(text) && sticky.lastIndex > pos) {
        out.push(text.slice(pos, sticky.lastIndex));
        pos = sticky.lastIndex;
        continue;
      }
      // no (non-empty) match here: the text up to the next match is a pre-token of its own
      global.lastIndex = pos + 1;
      let m = global.exec(text);
      while (m && m[0].length === 0) {
        global.lastIndex = m.index + 1;
        m = global.exec(text);
      }
      const end = m ? m.index : text.length;
      out.push(text.slice(pos, end));
      pos = end;
    }
  };
}

/** {@link createIsolatedSplit} for one text. */
export function splitIsolated(text: string, re: RegExp): string[] {
  const out: string[] = [];
  createIsolatedSplit(re)(text, out);
  return out;
}
