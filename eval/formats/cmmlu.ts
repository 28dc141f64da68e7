/**
 * CMMLU and C-Eval CSV files: one subject per file, a header naming `Question`, `A`…`D` and
 * `Answer` (any case; CMMLU's first column is an unnamed row index, C-Eval's is `id`, C-Eval adds
 * `explanation`). The subject is the file name without C-Eval's `_dev`/`_val`/`_test` suffix.
 * Rows with a wrong cell count, an empty question or option, or an answer that is not one of the
 * options are reported and skipped. C-Eval's hidden test answers (empty) are reported the same way.
 */

import { parseDelimited } from "../../data/mod.ts";
import type { EvalIssue, McItem, McReadResult } from "../types.ts";
import { checkOptions, fileStem, normalizeAnswer, readEvalText } from "./common.ts";

/** `clinical_knowledge_dev` → `clinical_knowledge`. */
export function csvSubject(path: string): string {
  return fileStem(path).replace(/_(dev|val|test)$/i, "");
}

/** Parses CSV text (`path` names the file in ids' origins and issues). */
export function parseMcCsv(
  text: string,
  path: string,
  subject: string = csvSubject(path),
): McReadResult {
  const rows = parseDelimited(text, ",");
  const items: McItem[] = [];
  const issues: EvalIssue[] = [];
  if (rows.length === 0) {
    return { items, issues: [{ file: path, reason: "empty file" }] };
  }
  const header = rows[0].fields.map((f) => f.trim().toLowerCase());
  const col = (name: string) => header.indexOf(name);
  const q = col("question");
  const ans = col("answer");
  const letterCols: number[] = [];
  for (let i = 0; i < 26; i++) {
    const c = col(String.fromCharCode(97 + i));
    if (c < 0) break;
    letterCols.push(c);
  }
  if (q < 0 || ans < 0 || letterCols.length < 2) {
    throw new Error(
      `${path}:${rows[0].line}: header ${JSON.stringify(rows[0].fields.join(","))} lacks ` +
        `Question, A, B, … and Answer columns`,
    );
  }
  const idCol = header[0] === "" || header[0] === "id" ? 0 : -1;
  for (const row of rows.slice(1)) {
    const issue = (reason: string) => issues.push({ file: path, line: row.line, reason });
    if (row.fields.length !== header.length) {
      issue(`${row.fields.length} cells, the header has ${header.length}`);
      continue;
    }
    const question = row.fields[q].trim();
    if (question === "") {
      issue("empty question");
      continue;
    }
    const raw: Record<string, string> = {};
    letterCols.forEach((c, i) => raw[String.fromCharCode(65 + i)] = row.fields[c]);
    const checked = checkOptions(raw);
    if ("reason" in checked) {
      issue(checked.reason);
      continue;
    }
    const answer = normalizeAnswer(
      row.fields[ans],
      Object.keys(checked.options),
    );
    if (answer.startsWith("!")) {
      issue(answer.slice(1));
      continue;
    }
    const index = idCol >= 0 && row.fields[idCol].trim() !== ""
      ? row.fields[idCol].trim()
      : String(row.line);
    items.push({
      id: `${subject}/${index}`,
      subject,
      question,
      options: checked.options,
      answer,
      multi: answer.length > 1,
      origin: `${path}:${row.line}`,
    });
  }
  return { items, issues };
}

/** Reads one CMMLU/C-Eval CSV file (UTF-8, or GB18030 for a GBK export). */
export async function readMcCsv(
  path: string,
  subject?: string,
): Promise<McReadResult> {
  return parseMcCsv(await readEvalText(path, true), path, subject);
}
