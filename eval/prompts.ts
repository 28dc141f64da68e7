/**
 * Multiple-choice prompts in the CMMLU/C-Eval style:
 *
 * ```
 * 以下是关于{subject}的单项选择题，请直接给出正确答案的选项。
 *
 * {dev question}
 * A. …
 * B. …
 * 答案：B
 *
 * {question}
 * A. …
 * B. …
 * 答案：
 * ```
 *
 * Multiple-answer questions say 多项选择题 and ask for all correct options. k-shot examples are
 * the first k dev items of the same subject in file order (as the official CMMLU/C-Eval scripts
 * take them), never the question itself; a subject with fewer dev items gets fewer shots.
 *
 * Templates: `plain` is the text above, given to the model as is (ChatGLM's chat prompt with no
 * history is the query itself, so zero-shot `plain` and `chat` are the same text). `chat` turns
 * each shot into an earlier chat round (`[Round i]\n问：…答案：\n答：B`), the form the chat-tuned
 * model saw in training. Either way the scored continuation is the answer letter(s).
 */

import { buildChatPrompt } from "../data/mod.ts";
import type { ChatMessage } from "../serve/mod.ts";
import type { McItem } from "./types.ts";

export type McPromptStyle = "plain" | "chat";

export interface McPromptOptions {
  /** Number of dev examples (k-shot); 0 = zero-shot. */
  shots: number;
  template: McPromptStyle;
}

export function instructionLine(subject: string, multi: boolean): string {
  return multi
    ? `以下是关于${subject}的多项选择题，请直接给出所有正确答案的选项。`
    : `以下是关于${subject}的单项选择题，请直接给出正确答案的选项。`;
}

/** The question with its options, ending in `答案：`. */
export function questionBlock(item: McItem): string {
  const lines = [item.question];
  for (const [letter, text] of Object.entries(item.options)) {
    lines.push(`${letter}. ${text}`);
  }
  lines.push("答案：");
  return lines.join("\n");
}

/** The k-shot examples for `item`: the first `k` dev items of its subject, in file order. */
export function selectShots(
  item: McItem,
  dev: readonly McItem[],
  k: number,
): McItem[] {
  if (k <= 0) return [];
  return dev.filter((d) => d.subject === item.subject && d.id !== item.id)
    .slice(0, k);
}

/** The prompt as chat messages (for the generation engine). */
export function buildMcMessages(
  item: McItem,
  dev: readonly McItem[],
  opts: McPromptOptions,
): ChatMessage[] {
  const shots = selectShots(item, dev, opts.shots);
  const header = instructionLine(item.subject, item.multi) + "\n\n";
  if (opts.template === "chat") {
    const messages: ChatMessage[] = [];
    shots.forEach((s, i) => {
      messages.push({
        role: "user",
        content: (i === 0 ? header : "") + questionBlock(s),
      });
      messages.push({ role: "assistant", content: s.answer });
    });
    messages.push({
      role: "user",
      content: (shots.length === 0 ? header : "") + questionBlock(item),
    });
    return messages;
  }
  const parts = shots.map((s) => questionBlock(s) + s.answer);
  parts.push(questionBlock(item));
  return [{ role: "user", content: header + parts.join("\n\n") }];
}

/** The prompt text the model sees (the chat template folds earlier rounds into it). */
export function buildMcPrompt(
  item: McItem,
  dev: readonly McItem[],
  opts: McPromptOptions,
  /** The model's chat template for `chat` prompts (default ChatGLM's `[Round i]` rounds). */
  chatPrompt?: (messages: ChatMessage[]) => string,
): string {
  const messages = buildMcMessages(item, dev, opts);
  if (chatPrompt && opts.template === "chat") return chatPrompt(messages);
  const history: [string, string][] = [];
  for (let i = 0; i + 1 < messages.length; i += 2) {
    history.push([messages[i].content, messages[i + 1].content]);
  }
  return buildChatPrompt(messages[messages.length - 1].content, history);
}
