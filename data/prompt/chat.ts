/**
 * The prompt a question (with history) becomes: ChatGLM-6B's chat template
 * (`[Round i]\n问：…\n答：…`) or the instruction template of instruction.ts. Which turns fit the
 * context is each front end's choice (they keep the newest); the 2-D position ids are the model's
 * (core/models/chatglm/inputs.ts).
 */
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
  // The one instruction template (instruction.ts), each earlier turn answered and ended by "\n".
  let s = "";
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
