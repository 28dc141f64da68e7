/**
 * The training example of a template model (Qwen2/2.5, Qwen3, Llama 3): the record rendered with
 * the model's own chat template — optional system message, earlier turns, the question, the
 * answer — and only the final assistant turn supervised. The prompt is the rendering of the
 * conversation before the answer with the generation prompt (`<|im_start|>assistant\n`); the
 * target is the rest of the full rendering up to and including the first end-of-turn token (for
 * Qwen3 that rest starts with the empty think block its template gives the final assistant turn,
 * `<think>\n\n</think>\n\n`, which the model must learn to write). Labels are −100 on the prompt,
 * the token ids on the target (the loss shifts them: fixture README §8).
 */

import type { Tokenizer } from "../tokenizer/common.ts";
import type { ChatTemplate, TemplateMessage } from "./chat_template.ts";
import { IGNORE_INDEX, type TrainExample, type TrainExampleOptions } from "./instruction.ts";

export interface TemplateTrainRecord {
  instruction: string;
  input?: string;
  output: string;
  /** Earlier `[user, assistant]` turns (in the prompt, not supervised). */
  history?: readonly [string, string][];
  /** A system message first, when given. */
  system?: string;
}

/** The conversation of a record: `instruction` and `input` (on its own line) are the question. */
export function recordMessages(r: TemplateTrainRecord): TemplateMessage[] {
  const messages: TemplateMessage[] = [];
  if (r.system) messages.push({ role: "system", content: r.system });
  for (const [q, a] of r.history ?? []) {
    messages.push({ role: "user", content: q }, { role: "assistant", content: a });
  }
  const question = r.input ? `${r.instruction}\n${r.input}` : r.instruction;
  messages.push({ role: "user", content: question }, { role: "assistant", content: r.output });
  return messages;
}

/**
 * One example (same fields and limits as the instruction template's `buildTrainExample`). Over the
 * limits the answer is cut first (its end-of-turn id kept), then the oldest turns, then the
 * question's end (whole code points; the template's structure is never cut).
 */
export function buildTemplateTrainExample(
  tok: Tokenizer,
  template: ChatTemplate,
  r: TemplateTrainRecord,
  opts: TrainExampleOptions = {},
): TrainExample {
  const maxSource = opts.maxSourceLength ?? 512;
  const maxTarget = opts.maxTargetLength ?? 512;
  const maxSeq = opts.maxSeqLength ?? maxSource + maxTarget + 1;
  for (const [name, v, min] of [["maxSourceLength", maxSource, 1], ["maxSeqLength", maxSeq, 2]]) {
    if (!Number.isInteger(v) || (v as number) < (min as number)) {
      throw new RangeError(`buildTemplateTrainExample: ${name} must be an integer >= ${min}`);
    }
  }
  const ends = new Set(tok.endOfTurnIds);
  if (ends.size === 0) {
    throw new Error(`${tok.source}: the tokenizer has no end-of-turn token to end the answer with`);
  }
  const textOpts = {
    bosToken: tok.specialTokenText.bos,
    eosToken: tok.specialTokenText.eos,
  };
  // The template writes its special tokens itself: the encoding adds none (apply_chat_template).
  const encode = (s: string) => tok.encode(s, { special: false });
  const messages = recordMessages(r);
  const full = template.render(messages, { ...textOpts, addGenerationPrompt: false });

  const promptOf = (msgs: TemplateMessage[]) =>
    template.render(msgs.slice(0, -1), { ...textOpts, addGenerationPrompt: true });
  const prompt = promptOf(messages);
  if (!full.startsWith(prompt)) {
    throw new Error(
      `${template.source}: the chat template's rendering of a conversation does not begin with ` +
        "its generation prompt, so the answer cannot be told apart from the prompt",
    );
  }
  const targetAll = encode(full.slice(prompt.length));
  const endAt = targetAll.findIndex((id) => ends.has(id));
  if (endAt < 0) {
    throw new Error(
      `${template.source}: the rendered answer has no end-of-turn token ` +
        `(${[...ends].join(", ")}): the model would never learn to stop`,
    );
  }
  let targetIds = targetAll.slice(0, endAt + 1);
  const endId = targetIds[endAt];
  let promptIds = encode(prompt);

  // The prompt within maxSource: drop the oldest turns, then cut the question's end.
  const fitPrompt = (limit: number) => {
    if (promptIds.length <= limit) return;
    let msgs = messages;
    while (promptIds.length > limit) {
      const firstUser = msgs.findIndex((m) => m.role === "user");
      const lastUser = msgs.length - 2;
      if (firstUser < 0 || firstUser >= lastUser) break;
      msgs = [...msgs.slice(0, firstUser), ...msgs.slice(firstUser + 2)];
      promptIds = encode(promptOf(msgs));
    }
    if (promptIds.length <= limit) return;
    const q = msgs[msgs.length - 2];
    const cps = Array.from(q.content);
    const withQuestion = (k: number) => {
      const m = [...msgs.slice(0, -2), { role: "user", content: cps.slice(0, k).join("") }, {
        role: "assistant",
        content: "",
      }];
      return encode(promptOf(m));
    };
    let lo = 0, hi = cps.length;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (withQuestion(mid).length <= limit) lo = mid;
      else hi = mid - 1;
    }
    promptIds = withQuestion(lo);
    if (promptIds.length > limit) {
      throw new RangeError(
        `buildTemplateTrainExample: ${limit} tokens cannot hold the chat template's prompt ` +
          `(${promptIds.length} tokens with an empty question)`,
      );
    }
  };
  fitPrompt(maxSource);
  // The answer within maxTarget (end-of-turn id not counted, as `<eop>` in the seed's format).
  const cutTarget = (limit: number) => {
    if (targetIds.length - 1 > limit) targetIds = [...targetIds.slice(0, limit), endId];
  };
  cutTarget(maxTarget);
  if (promptIds.length + targetIds.length > maxSeq) {
    const room = maxSeq - promptIds.length - 1;
    if (room >= 0) cutTarget(room);
    else {
      fitPrompt(maxSeq - 1);
      targetIds = [endId];
    }
  }
  const inputIds = [...promptIds, ...targetIds];
  const seqLen = promptIds.length;
  const labels = inputIds.map((id, i) => (i < seqLen ? IGNORE_INDEX : id));
  return { promptIds, targetIds, inputIds, labels, seqLen };
}
