/**
 * The demo's answers come from the one generation engine (greedy, the instruction template the
 * demo was trained on), and are scored by how much of the training answer they reproduce.
 */

import type { ChatGLMModel } from "../core/mod.ts";
import type { Tokenizer } from "../data/mod.ts";
import { lcsLength } from "../eval/mod.ts";
import { buildEngine } from "../serve/mod.ts";

/** Greedy answers to questions, prompted as `Instruction: …\nAnswer: ` (the model stays loaded). */
export async function answerInstructions(
  model: ChatGLMModel,
  tok: Tokenizer,
  questions: string[],
  maxNewTokens = 96,
): Promise<string[]> {
  const engine = buildEngine({
    model,
    tokenizer: tok,
    maxBatch: Math.max(1, Math.min(questions.length, 8)),
    ownsModel: false,
    promptTemplate: "instruction",
  });
  try {
    return await Promise.all(questions.map(async (content) => {
      let text = "";
      for await (
        const d of engine.generate({
          messages: [{ role: "user", content }],
          temperature: 0,
          maxNewTokens,
        })
      ) text += d.text;
      return text;
    }));
  } finally {
    await engine.close();
  }
}

/** Share of the expected answer's characters reproduced in order (longest common subsequence). */
export function overlap(answer: string, expected: string): number {
  const e = [...expected];
  return e.length === 0 ? 1 : lcsLength([...answer], e) / e.length;
}
