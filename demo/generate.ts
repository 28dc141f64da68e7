/**
 * The demo's answers come from the one generation engine (greedy, in the prompt format the demo
 * model was trained on), and are scored by how much of the training answer they reproduce.
 */

import type { CausalLM } from "../core/mod.ts";
import type { PromptFormat, Tokenizer } from "../data/mod.ts";
import { lcsLength } from "../eval/mod.ts";
import { buildEngine } from "../serve/mod.ts";

/** How the questions are prompted: the format the model was trained on. */
export interface AnswerOptions {
  maxNewTokens?: number;
  /** Default `instruction` (the ChatGLM demo's `Instruction: …\nAnswer: `). */
  promptTemplate?: PromptFormat;
  /** For a chat template with enable_thinking (Qwen3's). */
  enableThinking?: boolean;
  /** Mask tokens that would leave a broken UTF-8 character (a small model's byte tokens). */
  validUtf8?: boolean;
}

/** Greedy answers to questions (the model stays loaded). */
export async function answerQuestions(
  model: CausalLM,
  tok: Tokenizer,
  questions: string[],
  opts: AnswerOptions = {},
): Promise<string[]> {
  const engine = buildEngine({
    model,
    tokenizer: tok,
    maxBatch: Math.max(1, Math.min(questions.length, 8)),
    ownsModel: false,
    promptTemplate: opts.promptTemplate ?? "instruction",
    enableThinking: opts.enableThinking,
  });
  try {
    return await Promise.all(questions.map(async (content) => {
      let text = "";
      for await (
        const d of engine.generate({
          messages: [{ role: "user", content }],
          temperature: 0,
          maxNewTokens: opts.maxNewTokens ?? 96,
          ...(opts.validUtf8 === undefined ? {} : { validUtf8: opts.validUtf8 }),
        })
      ) text += d.text;
      return text;
    }));
  } finally {
    await engine.close();
  }
}

/** Greedy answers prompted as `Instruction: …\nAnswer: ` (the ChatGLM demo's training format). */
export function answerInstructions(
  model: CausalLM,
  tok: Tokenizer,
  questions: string[],
  maxNewTokens = 96,
): Promise<string[]> {
  return answerQuestions(model, tok, questions, { maxNewTokens });
}

/** Share of the expected answer's characters reproduced in order (longest common subsequence). */
export function overlap(answer: string, expected: string): number {
  const e = [...expected];
  return e.length === 0 ? 1 : lcsLength([...answer], e) / e.length;
}
