/**
 * CMB (and CMExam-style) JSON: items `{id, exam_subject, question, question_type, option: {A…E},
 * answer}` in a JSON array or JSON Lines. The answers may sit in a separate answers-only list
 * joined on `id` (CMB's `CMB-test-choice-answer.json`); an answer there wins over one in the
 * question file, and a question without any answer is reported. 多项选择题, or an answer with
 * several letters, marks a multiple-answer question.
 */

import type { EvalIssue, McItem, McReadResult } from "../types.ts";
import {
  checkOptions,
  jsonItems,
  normalizeAnswer,
  parsePackedOptions,
  readEvalText,
} from "./common.ts";

/** Field names tried in order (CMB, CMExam, MMCU, generic). */
const QUESTION_KEYS = ["question", "Question", "题目", "问题"];
const OPTION_KEYS = ["option", "options", "Options", "选项"];
const ANSWER_KEYS = ["answer", "Answer", "答案"];
const SUBJECT_KEYS = [
  "exam_subject",
  "subject",
  "类别",
  "exam_class",
  "exam_type",
];
const TYPE_KEYS = ["question_type", "type"];

function pick(o: Record<string, unknown>, keys: readonly string[]): unknown {
  for (const k of keys) if (o[k] !== undefined && o[k] !== null) return o[k];
  return undefined;
}

function optionsOf(raw: unknown): Record<string, unknown> | string {
  if (typeof raw === "string") {
    return parsePackedOptions(raw) ?? "options string has no `A:` option";
  }
  if (Array.isArray(raw)) {
    const o: Record<string, unknown> = {};
    raw.forEach((v, i) => o[String.fromCharCode(65 + i)] = v);
    return o;
  }
  if (raw && typeof raw === "object") return raw as Record<string, unknown>;
  return "no options";
}

/** One JSON object → item or the reason it is unusable. */
export function jsonMcItem(
  o: unknown,
  origin: { file: string; line: number; index: number },
  defaults: { subject: string; answer?: unknown; idPrefix: string },
): McItem | string {
  if (!o || typeof o !== "object" || Array.isArray(o)) {
    return "not a JSON object";
  }
  const obj = o as Record<string, unknown>;
  const question = pick(obj, QUESTION_KEYS);
  if (typeof question !== "string" || question.trim() === "") {
    return "no question text";
  }
  const opts = optionsOf(pick(obj, OPTION_KEYS));
  if (typeof opts === "string") return opts;
  const checked = checkOptions(opts);
  if ("reason" in checked) return checked.reason;
  const answer = normalizeAnswer(
    defaults.answer !== undefined ? defaults.answer : pick(obj, ANSWER_KEYS),
    Object.keys(checked.options),
  );
  if (answer.startsWith("!")) return answer.slice(1);
  const type = pick(obj, TYPE_KEYS);
  const multi = answer.length > 1 ||
    (typeof type === "string" && type.includes("多"));
  const subjectRaw = pick(obj, SUBJECT_KEYS);
  const subject = typeof subjectRaw === "string" && subjectRaw.trim() !== ""
    ? subjectRaw.trim()
    : defaults.subject;
  const idRaw = obj.id ?? obj.sample_id;
  const id = typeof idRaw === "string" || typeof idRaw === "number"
    ? String(idRaw)
    : String(origin.index);
  return {
    id: `${defaults.idPrefix}/${id}`,
    subject,
    question: question.trim(),
    options: checked.options,
    answer,
    multi,
    origin: `${origin.file}:${origin.line}`,
  };
}

/** Parses a question file's text, joining `answers` (id → answer) when given. */
export function parseMcJson(
  text: string,
  path: string,
  opts: {
    subject?: string;
    idPrefix?: string;
    answers?: Map<string, unknown>;
  } = {},
): McReadResult {
  const { items: raw, bad } = jsonItems(text, path, ["question", "option", "answer"]);
  const issues: EvalIssue[] = bad.map((b) => ({
    file: path,
    line: b.line,
    reason: b.reason,
  }));
  const items: McItem[] = [];
  const seen = new Set<string>();
  raw.forEach((it, index) => {
    const obj = it.value as Record<string, unknown> | null;
    const id = obj && typeof obj === "object" ? obj.id : undefined;
    let answer: unknown = undefined;
    if (opts.answers && (typeof id === "string" || typeof id === "number")) {
      answer = opts.answers.get(String(id));
    }
    const r = jsonMcItem(it.value, { file: path, line: it.line, index }, {
      subject: opts.subject ?? "all",
      answer,
      idPrefix: opts.idPrefix ?? "q",
    });
    if (typeof r === "string") {
      issues.push({ file: path, line: it.line, reason: r });
      return;
    }
    if (seen.has(r.id)) {
      issues.push({
        file: path,
        line: it.line,
        reason: `duplicate id ${r.id}`,
      });
      return;
    }
    seen.add(r.id);
    items.push(r);
  });
  return { items, issues };
}

/** Reads an answers-only list (`[{id, answer}]`) into id → answer. */
export async function readAnswerList(
  path: string,
): Promise<{ answers: Map<string, unknown>; issues: EvalIssue[] }> {
  const { items, bad } = jsonItems(await readEvalText(path), path);
  const issues: EvalIssue[] = bad.map((b) => ({
    file: path,
    line: b.line,
    reason: b.reason,
  }));
  const answers = new Map<string, unknown>();
  for (const it of items) {
    const o = it.value as Record<string, unknown> | null;
    const id = o && typeof o === "object" ? o.id : undefined;
    if (typeof id !== "string" && typeof id !== "number") {
      issues.push({
        file: path,
        line: it.line,
        reason: "answer entry without an id",
      });
      continue;
    }
    if (answers.has(String(id))) {
      issues.push({
        file: path,
        line: it.line,
        reason: `duplicate answer for id ${id}`,
      });
      continue;
    }
    answers.set(String(id), pick(o!, ANSWER_KEYS));
  }
  return { answers, issues };
}

/**
 * Reads CMB questions, joined with an answers-only file when given. Answers for ids that have
 * no question are reported.
 */
export async function readCmb(
  questionsPath: string,
  answersPath?: string,
): Promise<McReadResult> {
  let answers: Map<string, unknown> | undefined;
  const issues: EvalIssue[] = [];
  if (answersPath) {
    const a = await readAnswerList(answersPath);
    answers = a.answers;
    issues.push(...a.issues);
  }
  const text = await readEvalText(questionsPath);
  const r = parseMcJson(text, questionsPath, { idPrefix: "cmb", answers });
  if (answers) {
    const questionIds = new Set<string>();
    for (const it of jsonItems(text, questionsPath).items) {
      const id = (it.value as Record<string, unknown> | null)?.id;
      if (typeof id === "string" || typeof id === "number") {
        questionIds.add(String(id));
      }
    }
    for (const id of answers.keys()) {
      if (!questionIds.has(id)) {
        issues.push({
          file: answersPath!,
          reason: `answer for id ${id} has no question`,
        });
      }
    }
  }
  return { items: r.items, issues: [...issues, ...r.issues] };
}

/** CMExam-style or other generic multiple-choice JSON (array or JSON Lines). */
export async function readMcJson(
  path: string,
  idPrefix = "q",
): Promise<McReadResult> {
  return parseMcJson(await readEvalText(path), path, { idPrefix });
}
