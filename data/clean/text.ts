/**
 * Text repairs that are safe to make: surrounding whitespace, CRLF inside a field, and the literal
 * two-character `\n` that some sources store instead of a newline (Alpaca-CoT's formatted files,
 * a few alpaca records). The literal form is only repaired in a text that has no real newline, so
 * code that prints "\n" inside a multi-line snippet keeps its escape.
 */

export interface TextRepair {
  text: string;
  trimmed: boolean;
  literalNewlines: boolean;
}

const LITERAL_NL = /(?<!\\)\\n/g;

export function repairText(raw: string, repairLiteralNewlines: boolean): TextRepair {
  let text = raw.includes("\r") ? raw.replace(/\r\n?/g, "\n") : raw;
  let literalNewlines = false;
  if (repairLiteralNewlines && !text.includes("\n") && text.includes("\\n")) {
    const fixed = text.replace(LITERAL_NL, "\n");
    literalNewlines = fixed !== text;
    text = fixed;
  }
  const trimmedText = text.trim();
  return { text: trimmedText, trimmed: trimmedText !== text, literalNewlines };
}

/** Replaces placeholders (e.g. identity.json's `NAME` / `AUTHOR`) as whole words. */
export function substitute(text: string, table: Record<string, string>): string {
  let out = text;
  for (const [from, to] of Object.entries(table)) {
    if (!out.includes(from)) continue;
    const re = new RegExp(
      `(?<![A-Za-z0-9_])${from.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(?![A-Za-z0-9_])`,
      "g",
    );
    out = out.replace(re, to);
  }
  return out;
}
