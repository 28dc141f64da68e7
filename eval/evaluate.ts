/**
 * One model variant (the base model, or the base with one adapter) over every task: prompts,
 * the chosen scorer, the per-question cache, per-subject accuracy, and the held-out perplexity
 * and overlap scores. The CLI loads one variant at a time and calls this; tests call it with
 * hand-made models.
 */

import { createProgress, type Progress } from "../core/io/progress.ts";
import type { Engine } from "../serve/engine/types.ts";
import { fingerprint, runCached } from "./cache.ts";
import type { McTask } from "./formats/tasks.ts";
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
}

export interface Score {
  total: number;
  correct: number;
  /** Generation answers without recognisable letters (counted wrong). */
  unparsed: number;
  /** correct / total (NaN for no questions). */
  accuracy: number;
}

export interface SubjectScore extends Score {
  task: string;
  subject: string;
}

export interface HeldoutScore {
  examples: number;
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
}

export function scoreOf(results: readonly QuestionResult[]): Score {
  const total = results.length;
  const correct = results.filter((r) => r.correct).length;
  const unparsed = results.filter((r) => r.predicted === null).length;
  return { total, correct, unparsed, accuracy: total ? correct / total : NaN };
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

function prepare(task: McTask, settings: EvalSettings): Prepared[] {
  const items = settings.limit !== undefined ? task.items.slice(0, settings.limit) : task.items;
  const opts = { shots: settings.shots, template: settings.template };
  const knobs = settings.scorer === "loglik"
    ? `loglik:${settings.maxLength ?? ""}`
    : `generate:${settings.maxNewTokens}`;
  return items.map((item) => {
    const messages = buildMcMessages(item, task.dev, opts);
    const prompt = buildMcPrompt(item, task.dev, opts);
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
  const prepared = prepare(task, settings);
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
  const score: HeldoutScore = perplexityOf(nll);
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

/** Every task (and the held-out split, when given) for one variant. */
export async function evaluateVariant(
  variant: Variant,
  tasks: readonly McTask[],
  heldout: readonly HeldoutExample[] | null,
  settings: EvalSettings,
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
  };
  if (heldout && heldout.length > 0) {
    result.heldout = await evaluateHeldout(variant, heldout, settings);
  }
  return { result, questions };
}
