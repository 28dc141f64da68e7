/**
 * Duplicate keys. Exact: the trimmed fields as they are. Normalized: Unicode NFKC (full-width
 * forms, NBSP and U+3000 fold to ASCII), lower case, no whitespace, and no punctuation at the end
 * of a field, so records that differ only in spacing, width, case or a final `。`/`？` count as
 * one. Punctuation inside the text is kept: `1+1` and `1-1` must stay different questions.
 */

import type { SourceRecord } from "../sources/types.ts";

const SEP = "\u0001";

export function exactKey(r: SourceRecord): string {
  const h = r.history ? r.history.map((p) => p[0] + SEP + p[1]).join(SEP) : "";
  return r.instruction + SEP + r.input + SEP + r.output + SEP + h;
}

const SPACE = /\s+/gu;
const FINAL_PUNCT = /\p{P}+$/u;

export function normalizeForKey(text: string): string {
  return text.normalize("NFKC").toLowerCase().replace(SPACE, "").replace(FINAL_PUNCT, "");
}

export function normalizedKey(r: SourceRecord): string {
  const h = r.history
    ? r.history.map((p) => normalizeForKey(p[0]) + SEP + normalizeForKey(p[1])).join(SEP)
    : "";
  return normalizeForKey(r.instruction) + SEP + normalizeForKey(r.input) + SEP +
    normalizeForKey(r.output) + SEP + h;
}
