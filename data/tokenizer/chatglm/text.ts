/**
 * ChatGLM's string-level rules around SentencePiece: newline/tab/space-run markers (pre and
 * post), the transformers special-token split, and transformers' decode clean-up.
 */

/** Python `str.isspace()` characters (also what `str.strip()` removes). */
export const PY_WHITESPACE =
  "\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000";
const PY_WS_SET = new Set(PY_WHITESPACE);

export function isPyWhitespace(ch: string): boolean {
  return PY_WS_SET.has(ch);
}

export function pyLstrip(s: string): string {
  let i = 0;
  while (i < s.length && PY_WS_SET.has(s[i])) i++;
  return s.slice(i);
}

export function pyRstrip(s: string): string {
  let j = s.length;
  while (j > 0 && PY_WS_SET.has(s[j - 1])) j--;
  return s.slice(0, j);
}

/** Python `str.strip()` (not JS `trim()`, which differs on U+FEFF, \x1c–\x1f and \x85). */
export function pyStrip(s: string): string {
  return pyRstrip(pyLstrip(s));
}

/** Python `" ".join(s.split())`. */
export function pyCollapseWhitespace(s: string): string {
  const words: string[] = [];
  let cur = "";
  for (const ch of s) {
    if (PY_WS_SET.has(ch)) {
      if (cur) words.push(cur);
      cur = "";
    } else cur += ch;
  }
  if (cur) words.push(cur);
  return words.join(" ");
}

const BLANK_80 = "<|blank_80|>";

/** `\n` → `<n>`, `\t` → `<|tab|>`, runs of ≥ 2 spaces → `<|blank_N|>` (N ≤ 80). */
export function chatglmPre(text: string): string {
  if (text.indexOf("\n") >= 0) text = text.replaceAll("\n", "<n>");
  if (text.indexOf("\t") >= 0) text = text.replaceAll("\t", "<|tab|>");
  if (text.indexOf("  ") >= 0) {
    text = text.replace(/ {2,}/g, (run) => {
      const r = run.length;
      const m = r % 80;
      return BLANK_80.repeat(Math.floor(r / 80)) + (m >= 2 ? `<|blank_${m}|>` : m === 1 ? " " : "");
    });
  }
  return text;
}

const BLANK_RE = /<\|blank_([2-9]|[1-7][0-9]|80)\|>/g;

/** The inverse markers on a decoded string: `<n>`, `<|tab|>`, `<|blank_N|>` (2 ≤ N ≤ 80). */
export function chatglmPost(text: string): string {
  if (text.indexOf("<") < 0) return text;
  text = text.replaceAll("<n>", "\n").replaceAll("<|tab|>", "\t");
  return text.replace(BLANK_RE, (_m, n: string) => " ".repeat(Number(n)));
}

/** transformers' `clean_up_tokenization` (applied by `decode` by default). */
export function cleanUpTokenization(s: string): string {
  if (s.indexOf(" ") < 0) return s;
  return s
    .replaceAll(" .", ".")
    .replaceAll(" ?", "?")
    .replaceAll(" !", "!")
    .replaceAll(" ,", ",")
    .replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m")
    .replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}

export interface Chunk {
  text: string;
  special: boolean;
}

/**
 * transformers' split at registered special tokens: each special string becomes its own chunk,
 * whitespace next to it is stripped (Python semantics), empty chunks are dropped.
 */
export function splitSpecialTokens(text: string, re: RegExp | null): Chunk[] {
  if (!re) return text ? [{ text, special: false }] : [];
  const parts: Chunk[] = [];
  let last = 0;
  re.lastIndex = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    parts.push({ text: text.slice(last, m.index), special: false });
    parts.push({ text: m[0], special: true });
    last = m.index + m[0].length;
  }
  if (parts.length === 0) return text ? [{ text, special: false }] : [];
  parts.push({ text: text.slice(last), special: false });
  for (let i = 0; i < parts.length; i++) {
    if (!parts[i].special) continue;
    if (i > 0 && !parts[i - 1].special) parts[i - 1].text = pyRstrip(parts[i - 1].text);
    if (i + 1 < parts.length && !parts[i + 1].special) {
      parts[i + 1].text = pyLstrip(parts[i + 1].text);
    }
  }
  return parts.filter((p) => p.text !== "");
}

/** A global regex matching any of `tokens` (longest first), or null when there are none. */
export function specialTokenRegex(tokens: readonly string[]): RegExp | null {
  const uniq = [...new Set(tokens.filter((t) => t))].sort((a, b) => b.length - a.length);
  if (uniq.length === 0) return null;
  return new RegExp(uniq.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|"), "g");
}
