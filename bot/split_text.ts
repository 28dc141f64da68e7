/**
 * Splitting answers into Telegram-sized messages at sentence boundaries. Telegram refuses texts
 * over 4096 characters (counted in UTF-16 code units, which is how JS strings count).
 */

export const TELEGRAM_TEXT_LIMIT = 4096;

/** Characters that end a sentence in Chinese or English text. */
const SENTENCE_END = new Set(["。", "！", "？", "!", "?", "…", "\n", "；", ";"]);
/** Closing marks that belong to the sentence before them ("他说：“好。”"). */
const CLOSERS = new Set(["”", "’", "」", "』", "）", ")", '"', "'", "】", "]"]);
const SOFT_BREAK = new Set(["，", ",", "、", "：", ":", " ", "\t"]);

/**
 * Where to cut `text` (longer than `limit`) so that the first part has at most `limit` code units:
 * after the last sentence end in the window, else after the last soft break, else at `limit`
 * (never inside a surrogate pair). Only looks at `text[0..limit]`, so the cut of a growing text
 * stays put once the text is longer than the limit: a streamed answer splits exactly as the whole
 * answer would.
 */
export function findCut(text: string, limit = TELEGRAM_TEXT_LIMIT): number {
  if (text.length <= limit) return text.length;
  // A cut too close to the start would leave a tiny message; prefer the back half of the window.
  const floor = Math.floor(limit / 2);
  let soft = -1;
  for (let i = limit - 1; i >= floor; i--) {
    const ch = text[i];
    if (isSentenceEnd(text, i)) {
      let end = i + 1;
      while (end < limit && CLOSERS.has(text[end])) end++;
      return end;
    }
    if (soft < 0 && SOFT_BREAK.has(ch)) soft = i + 1;
  }
  if (soft > 0) return soft;
  let cut = limit;
  if (isHighSurrogate(text.charCodeAt(cut - 1))) cut--;
  return cut;
}

function isSentenceEnd(text: string, i: number): boolean {
  const ch = text[i];
  if (SENTENCE_END.has(ch)) return true;
  // A period ends an English sentence only before whitespace ("3.5 mg" does not split).
  return ch === "." && i + 1 < text.length && /\s/.test(text[i + 1]);
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

/** The messages a whole text becomes; leading whitespace of each part is dropped. */
export function splitMessage(text: string, limit = TELEGRAM_TEXT_LIMIT): string[] {
  const parts: string[] = [];
  let rest = text.trimStart();
  while (rest.length > limit) {
    const cut = findCut(rest, limit);
    parts.push(rest.slice(0, cut).trimEnd());
    rest = rest.slice(cut).trimStart();
  }
  if (rest.trim()) parts.push(rest.trimEnd());
  return parts;
}
