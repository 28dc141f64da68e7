/**
 * The data every part of the evaluation shares: a normalized multiple-choice item (whatever
 * benchmark file it came from), a reported problem with a source item, and a scored question.
 */

/** One multiple-choice question, normalized from CMMLU/C-Eval, CMB, CMExam, MMCU or PromptCBLUE. */
export interface McItem {
  /** Unique within its task (e.g. `clinical_knowledge/3`, `cmb/17`). */
  id: string;
  subject: string;
  question: string;
  /** Option letter → option text, letters consecutive from `A`. */
  options: Record<string, string>;
  /** The correct letter(s), sorted: `"B"` or `"ABD"`. */
  answer: string;
  /** A multiple-answer question (多项选择题). */
  multi: boolean;
  /** `file:line` where the item starts (for reports). */
  origin: string;
}

/** A source item that was not usable (malformed, no answer, not multiple choice). */
export interface EvalIssue {
  file: string;
  /** 1-based line where the item starts, when known. */
  line?: number;
  reason: string;
}

export interface McReadResult {
  items: McItem[];
  issues: EvalIssue[];
}

/** One scored question (what the per-question cache stores). */
export interface QuestionResult {
  id: string;
  subject: string;
  answer: string;
  /** The chosen letter(s); null when the generation could not be parsed (counted as wrong). */
  predicted: string | null;
  correct: boolean;
  /** Log-likelihood scorer: total log-prob per candidate (letters or letter combinations). */
  scores?: Record<string, number>;
  /** Generation scorer: the model's raw answer text. */
  response?: string;
  /** The prompt was cut to the model's length limit (its start dropped). */
  truncated?: boolean;
  /** Why the question could not be answered (e.g. the prompt is too long for the engine). */
  error?: string;
  /** Fingerprint of the prompt, so a cached result is reused only for the same question. */
  key: string;
}

export function formatIssue(issue: EvalIssue): string {
  return `${issue.file}${issue.line !== undefined ? `:${issue.line}` : ""}: ${issue.reason}`;
}

/** Letters `A`, `B`, … for `n` options. */
export function optionLetters(n: number): string[] {
  return Array.from({ length: n }, (_, i) => String.fromCharCode(65 + i));
}
