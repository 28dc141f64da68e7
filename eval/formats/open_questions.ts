/**
 * Open questions without reference answers (e.g. Huatuo's CMCOQA `benchmark/question.json`, or
 * any JSON array / JSON Lines of `{question, ...}`): the `open:PATH` task kind. There is nothing
 * to score against, so the evaluation generates each variant's answers into a file for later
 * judging (by people or a judge model). Every other field of an item (`ICD-10`, `id`, …) is kept
 * with the answer. Items without a question text, and repeated ids, are reported.
 */

import type { EvalIssue } from "../types.ts";
import { fileStem, jsonItems, readEvalText } from "./common.ts";

export interface OpenQuestion {
  /** The item's `id` / `sample_id` when it has one, else its 0-based index in the file. */
  id: string;
  question: string;
  /** The item's other fields, kept for the judge. */
  fields: Record<string, unknown>;
  /** `file:line` where the item starts. */
  origin: string;
}

export interface OpenTask {
  name: string;
  path: string;
  questions: OpenQuestion[];
  issues: EvalIssue[];
}

const QUESTION_KEYS = ["question", "问题", "query", "instruction"];

export function parseOpenQuestions(text: string, path: string): {
  questions: OpenQuestion[];
  issues: EvalIssue[];
} {
  const { items, bad } = jsonItems(text, path, QUESTION_KEYS);
  const issues: EvalIssue[] = bad.map((b) => ({ file: path, line: b.line, reason: b.reason }));
  const questions: OpenQuestion[] = [];
  const seen = new Set<string>();
  items.forEach((it, index) => {
    const issue = (reason: string) => issues.push({ file: path, line: it.line, reason });
    const add = (id: string, question: string, fields: Record<string, unknown>) => {
      if (seen.has(id)) return issue(`duplicate id ${id}`);
      seen.add(id);
      questions.push({ id, question, fields, origin: `${path}:${it.line}` });
    };
    const o = it.value;
    if (typeof o === "string" && o.trim() !== "") {
      // a list of plain question strings
      return add(String(index), o.trim(), {});
    }
    if (!o || typeof o !== "object" || Array.isArray(o)) return issue("not a JSON object");
    const rec = o as Record<string, unknown>;
    const key = QUESTION_KEYS.find((k) => typeof rec[k] === "string" && rec[k] !== "");
    if (!key || (rec[key] as string).trim() === "") {
      return issue(`no question text (expected one of: ${QUESTION_KEYS.join(", ")})`);
    }
    const rawId = rec.id ?? rec.sample_id;
    const id = typeof rawId === "string" || typeof rawId === "number"
      ? String(rawId)
      : String(index);
    const { [key]: _q, ...fields } = rec;
    add(id, (rec[key] as string).trim(), fields);
  });
  return { questions, issues };
}

/** Reads an `open:PATH` task (a file; the task is named after it). */
export async function loadOpenTask(path: string, name?: string): Promise<OpenTask> {
  const { questions, issues } = parseOpenQuestions(await readEvalText(path), path);
  return { name: name ?? `open-${fileStem(path)}`, path, questions, issues };
}
