/**
 * Generation scoring: the engine answers each prompt greedily (temperature 0, seed 0), and the
 * answer letters are extracted from the text (`extract.ts`). A text without a recognisable
 * answer is `predicted: null` — counted as wrong and reported as unparsed, never guessed. A prompt
 * the engine refuses as too long is the same, with `error` saying why.
 */

import type { ChatMessage, Engine } from "../../serve/mod.ts";
import type { McItem, QuestionResult } from "../types.ts";
import { extractAnswer } from "./extract.ts";

export interface GenerateOptions {
  /** Tokens per answer (default 32: enough for `答案：ABD` and a short reason). */
  maxNewTokens?: number;
  /** Requests in flight at once (default 4); results keep the questions' order. */
  concurrency?: number;
}

export interface GenerateQuestion {
  item: McItem;
  messages: ChatMessage[];
  key: string;
}

async function answerText(
  engine: Engine,
  messages: ChatMessage[],
  maxNewTokens: number,
): Promise<{ text: string } | { error: string }> {
  let text = "";
  try {
    for await (
      const d of engine.generate({
        messages,
        maxNewTokens,
        temperature: 0,
        seed: 0,
      })
    ) text += d.text;
  } catch (err) {
    // The engine's PromptTooLongError (matched by name: front ends may see a copy of the class).
    if ((err as Error).name === "PromptTooLongError") {
      return { error: (err as Error).message };
    }
    throw err;
  }
  return { text };
}

export async function scoreGenerate(
  questions: readonly GenerateQuestion[],
  engine: Engine,
  opts: GenerateOptions = {},
): Promise<QuestionResult[]> {
  const maxNewTokens = opts.maxNewTokens ?? 32;
  const concurrency = Math.max(1, opts.concurrency ?? 4);
  const out = new Array<QuestionResult>(questions.length);
  let next = 0;
  const worker = async () => {
    while (next < questions.length) {
      const i = next++;
      const q = questions[i];
      const r = await answerText(engine, q.messages, maxNewTokens);
      const letters = Object.keys(q.item.options);
      const predicted = "text" in r ? extractAnswer(r.text, letters, q.item.multi) : null;
      const result: QuestionResult = {
        id: q.item.id,
        subject: q.item.subject,
        answer: q.item.answer,
        predicted,
        correct: predicted === q.item.answer,
        response: "text" in r ? r.text : "",
        key: q.key,
      };
      if ("error" in r) result.error = r.error;
      out[i] = result;
    }
  };
  await Promise.all(
    Array.from({ length: Math.min(concurrency, questions.length) }, worker),
  );
  return out;
}
