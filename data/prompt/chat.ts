/**
 * ChatGLM-6B's chat prompt (`[Round i]\n问：…\n答：…`), its encoding with newest-turns-first
 * truncation, and the 2-D position ids the model derives from the ids (prompt side only).
 */
import type { ChatGLMTokenizer } from "../tokenizer/chatglm/tokenizer.ts";

export type ChatHistory = [string, string][];

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
 * Encodes the chat prompt. Over `maxTokens`, the oldest turns are dropped first (rounds are
 * renumbered from 0, as when a front end keeps only recent history); if the query alone is still
 * too long, its text is cut from the start (whole code points), so the newest text, `[gMASK]`
 * and `<sop>` are always kept.
 */
export function buildChatInput(
  tok: ChatGLMTokenizer,
  query: string,
  history: readonly [string, string][],
  opts: { maxTokens?: number } = {},
): ChatInput {
  const max = opts.maxTokens;
  const encodeWith = (dropped: number) => {
    const prompt = buildChatPrompt(query, history.slice(dropped));
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
  const fits = (k: number) => tok.encode(cps.slice(k).join("")).length <= max;
  let a = 0;
  let b = cps.length; // fits(cps.length): the empty query is [gMASK, <sop>]
  while (a < b) {
    const mid = (a + b) >> 1;
    if (fits(mid)) b = mid;
    else a = mid + 1;
  }
  while (!fits(a)) a++;
  const prompt = cps.slice(a).join("");
  return { prompt, ids: tok.encode(prompt), droppedTurns: history.length };
}

/**
 * ChatGLM-6B's 2-D position ids for a prompt: row 0 counts up to the `<sop>` and then stays at
 * the mask position; row 1 is 0 before `<sop>` and counts 1, 2, … from it.
 */
export function chatPositionIds(
  ids: readonly number[],
  tok: Pick<ChatGLMTokenizer, "sopId" | "gmaskId" | "maskId">,
): [number[], number[]] {
  const ctx = ids.indexOf(tok.sopId);
  if (ctx < 0) throw new Error("chatPositionIds: the ids contain no <sop>");
  let m = ids.indexOf(tok.gmaskId);
  if (m < 0) m = ids.indexOf(tok.maskId);
  if (m < 0) throw new Error("chatPositionIds: the ids contain neither [gMASK] nor [MASK]");
  const row0: number[] = [];
  const row1: number[] = [];
  for (let i = 0; i < ids.length; i++) {
    row0.push(i < ctx ? i : m);
    row1.push(i < ctx ? 0 : i - ctx + 1);
  }
  return [row0, row1];
}
