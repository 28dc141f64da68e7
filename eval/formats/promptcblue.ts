/**
 * PromptCBLUE JSON Lines `{input, target, answer_choices, task_type, task_dataset, sample_id}`.
 * Only its multiple-choice part is an MC item: `answer_choices` is a list and `target` is one of
 * the choices (or several joined by `，`/`,`/`、`). The rest is reported: `answer_choices` null
 * (generation tasks), a target that is not among the choices (extraction tasks such as NER), or
 * an empty target (the test file's answers are hidden). The question is the task's `input`
 * as-is; the subject is `task_dataset`.
 */

import type { EvalIssue, McItem, McReadResult } from "../types.ts";
import { jsonItems, readEvalText } from "./common.ts";

export function parsePromptCblue(text: string, path: string): McReadResult {
  const { items: raw, bad } = jsonItems(text, path, ["input", "target", "answer_choices"]);
  const issues: EvalIssue[] = bad.map((b) => ({
    file: path,
    line: b.line,
    reason: b.reason,
  }));
  const items: McItem[] = [];
  const seen = new Set<string>();
  raw.forEach((it, index) => {
    const issue = (reason: string) => issues.push({ file: path, line: it.line, reason });
    const o = it.value as Record<string, unknown> | null;
    if (!o || typeof o !== "object" || Array.isArray(o)) {
      return issue("not a JSON object");
    }
    const input = o.input, target = o.target, choices = o.answer_choices;
    if (typeof input !== "string" || input.trim() === "") {
      return issue("no input text");
    }
    if (choices === null || choices === undefined) {
      return issue("not multiple choice (answer_choices is null)");
    }
    if (!Array.isArray(choices) || choices.length < 2) {
      return issue("answer_choices is not a list of at least two choices");
    }
    if (choices.some((c) => typeof c !== "string" || c.trim() === "")) {
      return issue("answer_choices holds an empty or non-text choice");
    }
    const texts = (choices as string[]).map((c) => c.trim());
    if (new Set(texts).size !== texts.length) {
      return issue("answer_choices repeats a choice");
    }
    if (texts.length > 26) {
      return issue(`${texts.length} choices, more than A…Z`);
    }
    if (typeof target !== "string" || target.trim() === "") {
      return issue("no reference answer (target is empty)");
    }
    const t = target.trim();
    const parts = texts.includes(t) ? [t] : t.split(/[，,、;；]\s*/).map((x) => x.trim());
    const picked = parts.map((p) => texts.indexOf(p));
    if (picked.some((i) => i < 0)) {
      return issue("not multiple choice (target is not one of answer_choices)");
    }
    const letters = [...new Set(picked)].sort((a, b) => a - b).map((i) =>
      String.fromCharCode(65 + i)
    );
    const options: Record<string, string> = {};
    texts.forEach((c, i) => options[String.fromCharCode(65 + i)] = c);
    const sid = o.sample_id;
    const id = `${typeof sid === "string" || typeof sid === "number" ? sid : index}`;
    if (seen.has(id)) return issue(`duplicate sample_id ${id}`);
    seen.add(id);
    const subject = typeof o.task_dataset === "string" && o.task_dataset.trim() !== ""
      ? o.task_dataset.trim()
      : "PromptCBLUE";
    items.push({
      id: `promptcblue/${id}`,
      subject,
      question: input.trim(),
      options,
      answer: letters.join(""),
      multi: letters.length > 1,
      origin: `${path}:${it.line}`,
    });
  });
  return { items, issues };
}

export async function readPromptCblue(path: string): Promise<McReadResult> {
  return parsePromptCblue(await readEvalText(path), path);
}
