/**
 * Tokens for the overlap metrics: every CJK character (and any other non-space symbol, such as
 * punctuation) is one token, runs of ASCII letters/digits are one word token, lower-cased.
 * So Chinese is compared character by character and English word by word, as the fine-tuning
 * papers report (character-level ROUGE/BLEU for Chinese); mixed text needs no language switch.
 */
export function metricTokens(text: string): string[] {
  const out: string[] = [];
  const re = /[A-Za-z0-9]+|\S/gu;
  for (const m of text.normalize("NFKC").matchAll(re)) {
    out.push(m[0].toLowerCase());
  }
  return out;
}
