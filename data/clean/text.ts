/**
 * Text repairs that are safe to make: surrounding whitespace, CRLF inside a field, and the literal
 * two-character `\n` that some sources store instead of a newline (Alpaca-CoT's formatted files,
 * a few alpaca records). Alpaca-CoT mixes both forms in one field (53% of its records keep a
 * literal `\n` next to real newlines), so the repair applies whether or not the text also has a
 * real newline. What it leaves alone, because there the backslash is meant:
 *
 * - code: fenced blocks (three backticks to three backticks) and inline `code spans`;
 * - string literals in code: a `\n` inside straight quotes that open right after `(`, `[`, `{`,
 *   `=`, `,`, `+` or `:` (`print("a\nb")`, `sep = '\n'`, `split("\n")`), on one line;
 * - paths and TeX: a `\n` in a whitespace-free token that has another backslash or a drive letter
 *   (`C:\new`, `dir\nested\file`, `\newline\par`);
 * - an escaped backslash: `\\n` is a backslash followed by `n`.
 */

export interface TextRepair {
  text: string;
  trimmed: boolean;
  literalNewlines: boolean;
}

// Regions where a literal `\n` is meant: fenced code, inline code, quoted literals after code
// punctuation. Each alternative matches the whole region so that `replace` can keep it as is.
const PROTECTED = new RegExp(
  [
    "```[\\s\\S]*?(?:```|$)", // fenced code (to the end when unclosed)
    "`[^`\\n]*`", // inline code span
    `(?<=[([{=,+:]\\s?)"(?:[^"\\\\\\n]|\\\\.)*"`, // "…" right after code punctuation
    `(?<=[([{=,+:]\\s?)'(?:[^'\\\\\\n]|\\\\.)*'`, // '…' likewise
  ].join("|"),
  "g",
);
// A whitespace-free token holding `\n` that looks like a path or TeX: another backslash in it, or
// a drive letter. Such tokens are protected as well.
const PATH_TOKEN = /[^\s`"']*\\[^\s`"']*/g;
const LITERAL_NL = /(?<!\\)\\n/g;

function isPathToken(token: string): boolean {
  const backslashes = token.length - token.replaceAll("\\", "").length;
  return backslashes > 1 || /^[A-Za-z]:\\/.test(token) || /\\\\/.test(token);
}

/** Replaces literal `\n` outside protected regions; returns the same string when none is. */
function repairLiteral(text: string): string {
  const fixPlain = (s: string) =>
    s.replace(PATH_TOKEN, (token) => isPathToken(token) ? token : token.replace(LITERAL_NL, "\n"));
  let out = "";
  let last = 0;
  for (const m of text.matchAll(PROTECTED)) {
    out += fixPlain(text.slice(last, m.index)) + m[0];
    last = m.index + m[0].length;
  }
  return out + fixPlain(text.slice(last));
}

export function repairText(raw: string, repairLiteralNewlines: boolean): TextRepair {
  let text = raw.includes("\r") ? raw.replace(/\r\n?/g, "\n") : raw;
  let literalNewlines = false;
  if (repairLiteralNewlines && text.includes("\\n")) {
    const fixed = repairLiteral(text);
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
