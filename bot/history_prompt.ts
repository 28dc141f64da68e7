/** Turning a chat's stored history and a new question into the engine's messages. */
import type { ChatMessage, Engine } from "../serve/mod.ts";
import type { Turn } from "./store.ts";

export interface HistoryBounds {
  maxTurns: number;
  /** Prompt tokens the history may take (as the engine counts them). */
  maxTokens: number;
}

export function turnsToMessages(turns: Turn[]): ChatMessage[] {
  const out: ChatMessage[] = [];
  for (const t of turns) {
    out.push({ role: "user", content: t.user }, { role: "assistant", content: t.assistant });
  }
  return out;
}

/**
 * The prompt: the optional system message, the newest turns that fit the bounds and the model's
 * context (leaving room for the answer), then the question.
 */
export function buildMessages(
  engine: Pick<Engine, "info" | "countPromptTokens">,
  history: Turn[],
  question: string,
  opts: HistoryBounds & { maxNewTokens: number; systemPrompt?: string },
): ChatMessage[] {
  const head: ChatMessage[] = opts.systemPrompt
    ? [{ role: "system", content: opts.systemPrompt }]
    : [];
  const tail: ChatMessage[] = [{ role: "user", content: question }];
  // Room for the answer, but never so much that a small context keeps no history at all.
  const reserve = Math.min(opts.maxNewTokens, Math.floor(engine.info.maxContext / 2));
  const contextBudget = engine.info.maxContext - reserve;
  let turns = opts.maxTurns > 0 ? history.slice(-opts.maxTurns) : [];
  while (turns.length > 0) {
    const past = turnsToMessages(turns);
    if (
      engine.countPromptTokens(past) <= opts.maxTokens &&
      engine.countPromptTokens([...head, ...past, ...tail]) <= contextBudget
    ) break;
    turns = turns.slice(1);
  }
  return [...head, ...turnsToMessages(turns), ...tail];
}

/** Whether stored turns are within the bounds (used to trim what KV keeps). */
export function historyFits(
  engine: Pick<Engine, "countPromptTokens">,
  turns: Turn[],
  bounds: HistoryBounds,
): boolean {
  return turns.length <= bounds.maxTurns &&
    engine.countPromptTokens(turnsToMessages(turns)) <= bounds.maxTokens;
}
