/**
 * The chosen letters in a generated answer. Forms recognised, in this order (the first that
 * matches decides): `答案：A` / `答案是A和C` / `正确答案为 B、D` / `Answer: B`; `选项B` / `选择C` /
 * `选A`; an answer that starts with the letters (`B`, `(B)`, `A、C、D`, `ABD`, `B. 5分钟`);
 * `B是正确的` / `B项正确`. The last two count only when no other option letter stands elsewhere
 * in the text (`A选项和B选项都有可能` is no answer). Finally, for a single-answer question only,
 * one distinct letter standing alone somewhere in the text (not an English article, `A good …`).
 * Full-width letters (Ａ…Ｅ) count as letters; a letter inside an English word never does; only
 * the question's option letters are accepted. Anything else is null: the caller counts it as
 * unparsed (wrong), never as a guess.
 */

import { asciiLetters } from "../formats/common.ts";

function fullWidthToAscii(s: string): string {
  return s.replace(/[Ａ-Ｚ]/g, (c) => asciiLetters(c));
}

/** Sorted distinct letters, or null when a letter is not an option. */
function lettersIn(s: string, allowed: readonly string[]): string | null {
  const found = [...new Set(s.match(/[A-Z]/g) ?? [])].sort();
  if (found.length === 0 || found.some((l) => !allowed.includes(l))) {
    return null;
  }
  return found.join("");
}

/** Extracts the answer letters from `text` for a question with option `letters`. */
export function extractAnswer(
  text: string,
  letters: readonly string[],
  multi: boolean,
): string | null {
  const s = fullWidthToAscii(text);
  const L = `[${letters.join("")}]`;
  // option letters not glued to other Latin letters (so "BMI" or "Based" never count)
  const one = `(?<![A-Za-z])${L}(?![A-Za-z])`;
  const run = `(?<![A-Za-z])${L}+(?![A-Za-z])`;
  const seq = `${run}(?:\\s*(?:[,，、/和与及]|以及|and)?\\s*${run})*`;
  // [pattern, exclusive]: an exclusive form (letters at the start, "B是正确的") counts only when
  // no other option letter stands elsewhere in the text ("A选项和B选项都有可能" is no answer).
  const patterns: [RegExp, boolean][] = [
    [
      new RegExp(
        `(?:答案|answer)\\s*(?:应该|应|可能)?\\s*(?:是|为|is|选)?\\s*[:：]?\\s*(?:选项|选)?\\s*` +
          `[（(【\\[]?\\s*(${seq})`,
        "i",
      ),
      false,
    ],
    [new RegExp(`(?:选项|选择|选)\\s*[:：]?\\s*[（(【\\[]?\\s*(${seq})`), false],
    // at the start, followed by a bracket, punctuation, the end or a non-Latin character
    // (so an English sentence starting with "A …" is not an answer)
    [new RegExp(`^\\s*[（(【\\[]?\\s*(${seq})(?=\\s*(?:$|[^\\sA-Za-z]))`), true],
    [new RegExp(`(${seq})\\s*(?:项|选项)?\\s*(?:是|为)?\\s*(?:正确|对)`), true],
  ];
  for (const [re, exclusive] of patterns) {
    const m = re.exec(s);
    if (!m) continue;
    const letters_ = lettersIn(m[1], letters);
    if (exclusive && letters_ !== null) {
      const rest = s.slice(0, m.index) + " " + s.slice(m.index + m[0].length);
      const others = [...rest.matchAll(new RegExp(run, "g"))].flatMap((x) => [...x[0]]);
      if (others.some((l) => !letters_.includes(l))) continue;
    }
    return letters_;
  }
  if (!multi) {
    // not an English article ("A good answer …")
    const standalone = [...s.matchAll(new RegExp(`${one}(?!\\s+[A-Za-z])`, "g"))].map((m) => m[0]);
    const distinct = [...new Set(standalone)];
    if (distinct.length === 1) return distinct[0];
  }
  return null;
}
