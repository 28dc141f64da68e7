/**
 * ChatGLM-6B's chat prompt (`[Round i]\n问：…\n答：…`), its encoding with newest-turns-first
 * truncation, and the 2-D position ids the model derives from the ids (prompt side only).
 */
import type { Tokenizer } from "../tokenizer/common.ts";
import { buildInstructionContext } from "./instruction.ts";

export type ChatHistory = [string, string][];

/**
 * How a question (with history) becomes the model's prompt: `chat` is ChatGLM-6B's own chat
 * template; `instruction` is the seed's fine-tuning template (`Instruction: …\nAnswer: `), for
 * models trained only on it (the demo model), each earlier turn written as
 * `Instruction: q\nAnswer: a\n` before the question.
 */
export type PromptTemplate = "chat" | "instruction";

export const PROMPT_TEMPLATES: readonly PromptTemplate[] = ["chat", "instruction"];

/** The prompt string of `query` after `history` in the given template. */
export function buildPrompt(
  query: string,
  history: readonly [string, string][],
  template: PromptTemplate = "chat",
): string {
  if (template === "chat") return buildChatPrompt(query, history);
  let s = "";
  // The one instruction template (instruction.ts), each earlier turn answered and ended by "\n".
  for (const [q, a] of history) s += `${buildInstructionContext({ instruction: q })}${a}\n`;
  return s + buildInstructionContext({ instruction: query });
}

/** The prompt string of ChatGLM-6B's `chat`/`stream_chat` (rounds count from 0). */
export function buildChatPrompt(query: string, history: readonly [string, string][]): string {
  if (history.length === 0) return query;
  let s = "";
  for (let i = 0; i < history.length; i++) {
    const [q, a] = history[i];
    s += `[Round ${i}]\n问：${q}\n答：${a}\n`;
  }
  return s + `[Round ${history.length}]\n问：${query}\n答：`;
}

export interface ChatInput {
  ids: number[];
  /** The prompt text actually encoded (after dropping turns or cutting the query). */
  prompt: string;
  /** How many of the oldest history turns were left out. */
  droppedTurns: number;
}

/**
 * Encodes the prompt (chat template unless `template` says otherwise). Over `maxTokens`, the oldest turns are dropped first (rounds are
 * renumbered from 0, as when a front end keeps only recent history); if the query alone is still
 * too long, its text is cut from the start (whole code points), so the newest text, `[gMASK]`
 * and `<sop>` are always kept.
 */
export function buildChatInput(
  tok: Pick<Tokenizer, "encode">,
  query: string,
  history: readonly [string, string][],
  opts: { maxTokens?: number; template?: PromptTemplate } = {},
): ChatInput {
  const max = opts.maxTokens;
  const template = opts.template ?? "chat";
  const encodeWith = (dropped: number) => {
    const prompt = buildPrompt(query, history.slice(dropped), template);
    return { prompt, ids: tok.encode(prompt), droppedTurns: dropped };
  };
  const full = encodeWith(0);
  if (max === undefined || full.ids.length <= max) return full;
  if (!Number.isInteger(max) || max < 2) {
    throw new RangeError(`buildChatInput: maxTokens must be an integer >= 2, got ${max}`);
  }
  // Find the fewest dropped turns that fit (length shrinks as turns go; verify after the search).
  let lo = 1;
  let hi = history.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (encodeWith(mid).ids.length <= max) hi = mid;
    else lo = mid + 1;
  }
  for (let d = lo; d <= history.length; d++) {
    const r = encodeWith(d);
    if (r.ids.length <= max) return r;
  }
  // Only the query is left and it is too long: keep its end.
  const cps = Array.from(query);
  const promptFrom = (k: number) => buildPrompt(cps.slice(k).join(""), [], template);
  const fits = (k: number) => tok.encode(promptFrom(k)).length <= max;
  let a = 0;
  let b = cps.length; // fits(cps.length): the empty query is [gMASK, <sop>]
  while (a < b) {
    const mid = (a + b) >> 1;
    if (fits(mid)) b = mid;
    else a = mid + 1;
  }
  while (a < cps.length && !fits(a)) a++;
  if (!fits(a)) {
    throw new RangeError(
      `buildChatInput: maxTokens ${max} is too small for the ${template} template`,
    );
  }
  const prompt = promptFrom(a);
  return { prompt, ids: tok.encode(prompt), droppedTurns: history.length };
}
