/**
 * One model variant (the base model, or the base with one adapter) over every task: prompts,
 * the chosen scorer, the per-question cache, per-subject accuracy, and the held-out perplexity
 * and overlap scores. The CLI loads one variant at a time and calls this; tests call it with
 * hand-made models.
 */

import { createProgress, type Progress, writeFileAtomic } from "../base/mod.ts";
import type { ChatMessage, Engine } from "../serve/mod.ts";
import { fingerprint, runCached } from "./cache.ts";
import type { McTask } from "./formats/tasks.ts";
import type { OpenTask } from "./formats/open_questions.ts";
import type { LogitsModel, TokenEncoder } from "./model.ts";
import {
  type AnswerResult,
  exampleNll,
  generateAnswers,
  type HeldoutExample,
  type NllResult,
  overlapOf,
  perplexityOf,
} from "./open_qa.ts";
import { buildMcMessages, buildMcPrompt, type McPromptStyle } from "./prompts.ts";
import { scoreGenerate } from "./scorers/generate.ts";
import { answerCandidates, scoreLoglik } from "./scorers/loglik.ts";
import type { McItem, QuestionResult } from "./types.ts";

export type ScorerName = "loglik" | "generate";

export interface EvalSettings {
  scorer: ScorerName;
  shots: number;
  template: McPromptStyle;
  /** First N questions of each task (and N held-out examples). */
  limit?: number;
  /** Rows per forward pass (loglik) / requests in flight (generate). */
  batchSize: number;
  /** Longest scored row in tokens (loglik); longer prompts keep their end. */
  maxLength?: number;
  /** Answer length for the generation scorer. */
  maxNewTokens: number;
  /** Answer length for the held-out open questions. */
  openMaxNewTokens: number;
  /** Reuse the per-question cache. */
  resume: boolean;
  outDir: string;
  /** Progress bars on stderr (default: when stderr is a terminal). */
  progress?: boolean;
}

export interface Variant {
  /** Column name: `base` or the adapter folder's name. */
  name: string;
  /** Fingerprint of the weights (and adapter): the cache folder. */
  hash: string;
  /** Needed by the loglik scorer and for perplexity. */
  model?: LogitsModel;
  /** Needed by the generate scorer and for the held-out ROUGE-L/BLEU-4. */
  engine?: Engine;
  tokenizer: TokenEncoder;
  /**
   * How `--template chat` multiple-choice prompts become text for the loglik scorer: the model's
   * own chat template (the prompt builder's text); default ChatGLM's chat rounds.
   */
  chatPrompt?: (messages: ChatMessage[]) => string;
}

export interface Score {
  total: number;
  correct: number;
  /** Generation answers without recognisable letters (counted wrong). */
  unparsed: number;
  /** correct / total (NaN for no questions). */
  accuracy: number;
  /** Prompts cut to the model's context (their start dropped) before scoring. */
  truncated: number;
  /** Questions the engine could not answer (e.g. a prompt too long for it; counted wrong). */
  errors: number;
  /** How often each answer was predicted (`A`, `B`, …, `AB` for multi-answer; parsed ones only). */
  letters: Record<string, number>;
}

export interface SubjectScore extends Score {
  task: string;
  subject: string;
}

export interface HeldoutScore {
  examples: number;
  /** Examples cut to the model's context (their end dropped, as the trainer does). */
  truncated: number;
  tokens: number;
  loss: number;
  perplexity: number;
  /** Mean ROUGE-L F × 100 (when an engine answered). */
  rougeL?: number;
  /** Mean BLEU-4 × 100. */
  bleu4?: number;
}

export interface VariantResult {
  name: string;
  hash: string;
  subjects: SubjectScore[];
  /** Per task, every subject pooled. */
  tasks: Record<string, Score>;
  /** Every question of every task pooled (micro average). */
  overall: Score;
  heldout?: HeldoutScore;
  /** Open questions answered into files for later judging, per task. */
  open?: Record<string, OpenAnswersSummary>;
  /** Things a reader of the scores must know (a degenerate answer distribution). */
  warnings: string[];
}

export function scoreOf(results: readonly QuestionResult[]): Score {
  const total = results.length;
  let correct = 0, unparsed = 0, truncated = 0, errors = 0;
  const letters: Record<string, number> = {};
  for (const r of results) {
    if (r.correct) correct++;
    if (r.predicted === null) unparsed++;
    else letters[r.predicted] = (letters[r.predicted] ?? 0) + 1;
    if (r.truncated) truncated++;
    if (r.error) errors++;
  }
  const sorted = Object.fromEntries(Object.entries(letters).sort((a, b) => (a[0] < b[0] ? -1 : 1)));
  return {
    total,
    correct,
    unparsed,
    accuracy: total ? correct / total : NaN,
    truncated,
    errors,
    letters: sorted,
  };
}

/** One answer taking at least this share of a task's predictions is reported as degenerate. */
export const DEGENERATE_SHARE = 0.9;
/** …on tasks of at least this many answered questions (a handful proves nothing). */
export const DEGENERATE_MIN = 10;

/**
 * Warnings for tasks where one answer dominates the predictions: a model that always picks "C"
 * scores exactly C's share of the answers, which looks like knowledge but is not.
 */
export function degenerateWarnings(
  variant: string,
  tasks: Record<string, Score>,
  results: Record<string, readonly QuestionResult[]>,
): string[] {
  const out: string[] = [];
  for (const [task, s] of Object.entries(tasks)) {
    const answered = s.total - s.unparsed;
    if (answered < DEGENERATE_MIN) continue;
    const [letter, n] = Object.entries(s.letters).sort((a, b) => b[1] - a[1])[0] ?? ["", 0];
    if (n / answered < DEGENERATE_SHARE) continue;
    const share = (results[task] ?? []).filter((r) => r.answer === letter).length / s.total;
    out.push(
      `${variant}: ${task}: answered "${letter}" for ${n} of ${answered} questions ` +
        `(${(100 * n / answered).toFixed(1)}%): a degenerate choice; its accuracy ` +
        `${(100 * s.accuracy).toFixed(1)}% is about the share of "${letter}" among the answers ` +
        `(${(100 * share).toFixed(1)}%), not knowledge`,
    );
  }
  return out;
}

/** Subjects in first-appearance order of the task's items. */
export function subjectScores(
  task: string,
  results: readonly QuestionResult[],
): SubjectScore[] {
  const by = new Map<string, QuestionResult[]>();
  for (const r of results) {
    let list = by.get(r.subject);
    if (!list) by.set(r.subject, list = []);
    list.push(r);
  }
  return [...by].map(([subject, rs]) => ({ task, subject, ...scoreOf(rs) }));
}

interface Prepared {
  id: string;
  key: string;
  item: McItem;
  prompt: string;
  messages: ReturnType<typeof buildMcMessages>;
}

function prepare(
  task: McTask,
  settings: EvalSettings,
  chatPrompt?: Variant["chatPrompt"],
): Prepared[] {
  const items = settings.limit !== undefined ? task.items.slice(0, settings.limit) : task.items;
  const opts = { shots: settings.shots, template: settings.template };
  const knobs = settings.scorer === "loglik"
    ? `loglik:${settings.maxLength ?? ""}`
    : `generate:${settings.maxNewTokens}`;
  return items.map((item) => {
    const messages = buildMcMessages(item, task.dev, opts);
    const prompt = buildMcPrompt(item, task.dev, opts, chatPrompt);
    const key = fingerprint(
      knobs,
      JSON.stringify(messages),
      answerCandidates(item).join(","),
      item.answer,
    );
    return { id: item.id, key, item, prompt, messages };
  });
}

const NO_PROGRESS: Progress = { tick() {}, update() {}, done() {} };

/** A bar on a terminal, plain lines in a log; nothing with `show: false`. */
function progressFor(label: string, total: number, show?: boolean): Progress {
  if (show === false) return NO_PROGRESS;
  return createProgress({ label, total, ...(show ? { tty: true } : {}) });
}

function cacheDir(settings: EvalSettings, variant: Variant): string {
  return `${settings.outDir.replace(/\/+$/, "")}/cache/${variant.hash}`;
}

/** Safe file name part for a task name such as `cmmlu#2`. */
function fileName(s: string): string {
  return s.replace(/[^A-Za-z0-9_.-]/g, "_");
}

/** Scores one task; returns every question's result in item order. */
export async function evaluateTask(
  variant: Variant,
  task: McTask,
  settings: EvalSettings,
): Promise<{ results: QuestionResult[]; computed: number; reused: number }> {
  const prepared = prepare(task, settings, variant.chatPrompt);
  let compute: (chunk: Prepared[]) => Promise<QuestionResult[]>;
  if (settings.scorer === "loglik") {
    const model = variant.model;
    if (!model) {
      throw new Error(
        `${variant.name}: the loglik scorer needs a model with logits`,
      );
    }
    compute = (chunk) =>
      scoreLoglik(chunk, variant.tokenizer, model, {
        batchSize: settings.batchSize,
        maxLength: settings.maxLength,
      });
  } else {
    const engine = variant.engine;
    if (!engine) {
      throw new Error(
        `${variant.name}: the generate scorer needs a generation engine`,
      );
    }
    compute = (chunk) =>
      scoreGenerate(chunk, engine, {
        maxNewTokens: settings.maxNewTokens,
        concurrency: settings.batchSize,
      });
  }
  const bar = progressFor(
    `${variant.name} ${task.name}`,
    prepared.length,
    settings.progress,
  );
  try {
    return await runCached({
      items: prepared,
      compute,
      cachePath: `${cacheDir(settings, variant)}/${fileName(task.name)}.${settings.scorer}.jsonl`,
      resume: settings.resume,
      chunkSize: settings.batchSize,
      onProgress: (n) => bar.tick(n),
    });
  } finally {
    bar.done();
  }
}

/** Perplexity (needs a model) and ROUGE-L/BLEU-4 (needs an engine) on the held-out examples. */
export async function evaluateHeldout(
  variant: Variant,
  examples: readonly HeldoutExample[],
  settings: EvalSettings,
): Promise<HeldoutScore> {
  const model = variant.model;
  if (!model) {
    throw new Error(`${variant.name}: perplexity needs a model with logits`);
  }
  const dir = cacheDir(settings, variant);
  // Examples longer than the model's context are cut to it (keeping their start, as the trainer
  // does) and counted, so the loss is computed and the report says how many were cut.
  let truncated = 0;
  const max = settings.maxLength;
  if (max !== undefined) {
    examples = examples.map((ex) => {
      if (ex.inputIds.length <= max) return ex;
      truncated++;
      return {
        ...ex,
        key: `${ex.key}:cut${max}`,
        inputIds: ex.inputIds.slice(0, max),
        labels: ex.labels.slice(0, max),
      };
    });
  }
  const bar = progressFor(
    `${variant.name} held-out loss`,
    examples.length,
    settings.progress,
  );
  let nll: NllResult[];
  try {
    nll = (await runCached({
      items: examples,
      compute: (chunk) => exampleNll(model, chunk),
      cachePath: `${dir}/heldout.nll.jsonl`,
      resume: settings.resume,
      chunkSize: settings.batchSize,
      onProgress: (n) => bar.tick(n),
    })).results;
  } finally {
    bar.done();
  }
  const score: HeldoutScore = { ...perplexityOf(nll), truncated };
  const engine = variant.engine;
  if (engine) {
    const bar2 = progressFor(
      `${variant.name} held-out answers`,
      examples.length,
      settings.progress,
    );
    let answers: AnswerResult[];
    try {
      answers = (await runCached({
        items: examples,
        compute: (chunk) =>
          generateAnswers(engine, chunk, {
            maxNewTokens: settings.openMaxNewTokens,
          }),
        cachePath: `${dir}/heldout.answers.${settings.openMaxNewTokens}.jsonl`,
        resume: settings.resume,
        chunkSize: 1,
        onProgress: (n) => bar2.tick(n),
      })).results;
    } finally {
      bar2.done();
    }
    Object.assign(score, overlapOf(answers));
  }
  return score;
}

export interface OpenAnswersSummary {
  questions: number;
  /** Answers the engine could not give (the line carries `error`). */
  errors: number;
  /** The answers file, for later judging. */
  file: string;
}

interface OpenAnswer {
  id: string;
  key: string;
  answer: string;
  error?: string;
}

/**
 * Greedy answers to open questions (no reference to score against), written in question order to
 * `OUT/answers/<task>.<variant>.jsonl` (atomically, once complete) as
 * `{id, question, answer, model, ...the item's other fields}`. Answers are cached as they come
 * (`--resume` continues an interrupted run without asking again).
 */
export async function evaluateOpen(
  variant: Variant,
  task: OpenTask,
  settings: EvalSettings,
): Promise<OpenAnswersSummary> {
  const engine = variant.engine;
  if (!engine) throw new Error(`${variant.name}: open questions need a generation engine`);
  const items =
    (settings.limit !== undefined ? task.questions.slice(0, settings.limit) : task.questions).map((
      q,
    ) => ({
      ...q,
      key: fingerprint("open", String(settings.openMaxNewTokens), q.question),
    }));
  const bar = progressFor(`${variant.name} ${task.name}`, items.length, settings.progress);
  let answers: OpenAnswer[];
  try {
    answers = (await runCached<typeof items[number], OpenAnswer>({
      items,
      compute: async (chunk) => {
        const out: OpenAnswer[] = [];
        for (const q of chunk) {
          let answer = "";
          try {
            for await (
              const d of engine.generate({
                messages: [{ role: "user", content: q.question }],
                maxNewTokens: settings.openMaxNewTokens,
                temperature: 0,
                seed: 0,
              })
            ) answer += d.text;
            out.push({ id: q.id, key: q.key, answer });
          } catch (err) {
            out.push({ id: q.id, key: q.key, answer, error: (err as Error).message });
          }
        }
        return out;
      },
      cachePath: `${cacheDir(settings, variant)}/${
        fileName(task.name)
      }.open.${settings.openMaxNewTokens}.jsonl`,
      resume: settings.resume,
      chunkSize: 1,
      onProgress: (n) => bar.tick(n),
    })).results;
  } finally {
    bar.done();
  }
  const file = `${settings.outDir.replace(/\/+$/, "")}/answers/${fileName(task.name)}.${
    fileName(variant.name)
  }.jsonl`;
  await Deno.mkdir(file.slice(0, file.lastIndexOf("/")), { recursive: true });
  const lines = items.map((q, i) => {
    const a = answers[i];
    // the item's own fields first: ours (id, question, answer, model) win on a name clash
    return JSON.stringify({
      ...q.fields,
      id: q.id,
      question: q.question,
      answer: a.answer,
      model: variant.name,
      ...(a.error ? { error: a.error } : {}),
    });
  });
  await writeFileAtomic(file, lines.length ? lines.join("\n") + "\n" : "");
  return { questions: items.length, errors: answers.filter((a) => a.error).length, file };
}

/** Every task (and the held-out split, when given) for one variant. */
export async function evaluateVariant(
  variant: Variant,
  tasks: readonly McTask[],
  heldout: readonly HeldoutExample[] | null,
  settings: EvalSettings,
  openTasks: readonly OpenTask[] = [],
): Promise<
  { result: VariantResult; questions: Record<string, QuestionResult[]> }
> {
  const questions: Record<string, QuestionResult[]> = {};
  const subjects: SubjectScore[] = [];
  const taskScores: Record<string, Score> = {};
  for (const task of tasks) {
    const { results } = await evaluateTask(variant, task, settings);
    questions[task.name] = results;
    subjects.push(...subjectScores(task.name, results));
    taskScores[task.name] = scoreOf(results);
  }
  const result: VariantResult = {
    name: variant.name,
    hash: variant.hash,
    subjects,
    tasks: taskScores,
    overall: scoreOf(Object.values(questions).flat()),
    warnings: degenerateWarnings(variant.name, taskScores, questions),
  };
  if (heldout && heldout.length > 0) {
    result.heldout = await evaluateHeldout(variant, heldout, settings);
  }
  for (const t of openTasks) {
    (result.open ??= {})[t.name] = await evaluateOpen(variant, t, settings);
  }
  return { result, questions };
}
