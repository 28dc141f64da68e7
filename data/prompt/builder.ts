/**
 * The one prompt builder: a conversation (OpenAI-style messages) becomes the model's prompt text
 * and ids, in ChatGLM-6B's formats (`chat`: `[Round i]\n问：…\n答：`, `instruction`: the seed's
 * template) or in the model's own Jinja chat template (`chat-template`, from tokenizer_config.json:
 * Qwen's `<|im_start|>…`, Llama 3's headers). Trimming to a token budget follows one rule for all:
 * the oldest turns go first, then the start of the newest question.
 */

import type { Tokenizer } from "../tokenizer/common.ts";
import { buildChatInput, buildPrompt, type ChatInput, PROMPT_TEMPLATES } from "./chat.ts";
import { type ChatTemplate, compileChatTemplate, type TemplateMessage } from "./chat_template.ts";
import { type ChatMessageLike, ChatMessagesError, messagesToChat } from "./messages.ts";
import { processResponse } from "./response.ts";

/** `chat` / `instruction`: ChatGLM-6B's formats; `chat-template`: the model's own template. */
export type PromptFormat = "chat" | "instruction" | "chat-template";

export const PROMPT_FORMATS: readonly PromptFormat[] = [...PROMPT_TEMPLATES, "chat-template"];

export interface PromptBuilderOptions {
  /** Default: `chat-template` when the tokenizer carries one, else ChatGLM's `chat`. */
  format?: PromptFormat;
  /** Template text instead of the tokenizer's own (and a name for it in errors). */
  chatTemplate?: string;
  chatTemplateSource?: string;
  /** Qwen3: false ends the generation prompt with an empty think block (no reasoning). */
  enableThinking?: boolean;
}

export interface PromptBuilder {
  readonly format: PromptFormat;
  /** The prompt text of a conversation ending with the user's question (generation prompt). */
  text(messages: readonly ChatMessageLike[]): string;
  /** Its ids, as the model reads them. */
  encode(messages: readonly ChatMessageLike[]): number[];
  /**
   * The ids trimmed to `maxTokens` (oldest turns dropped first, then the start of the question
   * cut); untrimmed without `maxTokens`.
   */
  build(messages: readonly ChatMessageLike[], opts?: { maxTokens?: number }): ChatInput;
  /** What the user sees of a decoded answer (ChatGLM's `process_response`; templates: as is). */
  postProcess(answer: string): string;
}

/** Checks roles and contents; the last message must be the user's question. */
function checkMessages(messages: readonly ChatMessageLike[]): void {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new ChatMessagesError("messages: at least one message is required");
  }
  messages.forEach((m, i) => {
    const role = (m as { role?: unknown })?.role;
    if (role !== "system" && role !== "user" && role !== "assistant") {
      throw new ChatMessagesError(
        `messages[${i}]: unknown role ${JSON.stringify(role)} (expected system, user or assistant)`,
      );
    }
    if (typeof (m as { content?: unknown }).content !== "string") {
      throw new ChatMessagesError(`messages[${i}] (${role}): content must be a string`);
    }
  });
  const last = messages[messages.length - 1];
  if (last.role !== "user") {
    throw new ChatMessagesError(
      `messages[${messages.length - 1}] (${last.role}): the last message must be a user message`,
    );
  }
}

/** The prompt builder for `tok` (see {@link PromptBuilderOptions} for the format chosen). */
export function createPromptBuilder(
  tok: Tokenizer,
  opts: PromptBuilderOptions = {},
): PromptBuilder {
  const templateText = opts.chatTemplate ?? tok.chatTemplate;
  const format = opts.format ?? (templateText ? "chat-template" : "chat");
  if (!PROMPT_FORMATS.includes(format)) {
    throw new RangeError(
      `prompt format must be one of ${PROMPT_FORMATS.join(", ")} (got ${JSON.stringify(format)})`,
    );
  }
  if (format !== "chat-template") {
    const template = format;
    const split = (messages: readonly ChatMessageLike[]) => messagesToChat(messages);
    return {
      format,
      text(messages) {
        const { query, history } = split(messages);
        return buildPrompt(query, history, template);
      },
      encode(messages) {
        return tok.encode(this.text(messages));
      },
      build(messages, o = {}) {
        const { query, history } = split(messages);
        return buildChatInput(tok, query, history, { maxTokens: o.maxTokens, template });
      },
      postProcess: processResponse,
    };
  }
  if (!templateText) {
    throw new Error(
      `${tok.source}: the prompt format chat-template needs a chat template, and the tokenizer ` +
        "has none (tokenizer_config.json chat_template); use the chat or instruction format",
    );
  }
  const template = compileChatTemplate(
    templateText,
    opts.chatTemplateSource ?? `${tok.source.replace(/[^/]*$/, "")}tokenizer_config.json`,
  );
  return createTemplateBuilder(tok, template, opts.enableThinking);
}

function createTemplateBuilder(
  tok: Tokenizer,
  template: ChatTemplate,
  enableThinking: boolean | undefined,
): PromptBuilder {
  const render = (messages: readonly TemplateMessage[]) =>
    template.render(messages, {
      addGenerationPrompt: true,
      enableThinking,
      bosToken: tok.specialTokenText.bos,
      eosToken: tok.specialTokenText.eos,
    });
  // As transformers' apply_chat_template(tokenize=True): the template writes every special token
  // itself (Llama 3's BOS too), so the encoding adds none.
  const ids = (text: string) => tok.encode(text, { special: false });
  const plain = (messages: readonly ChatMessageLike[]): TemplateMessage[] =>
    messages.map((m) => ({ role: m.role, content: m.content }));

  const build = (
    messages: readonly ChatMessageLike[],
    o: { maxTokens?: number } = {},
  ): ChatInput => {
    checkMessages(messages);
    const all = plain(messages);
    const encodeFrom = (kept: TemplateMessage[], dropped: number): ChatInput => {
      const prompt = render(kept);
      return { prompt, ids: ids(prompt), droppedTurns: dropped };
    };
    const full = encodeFrom(all, 0);
    const max = o.maxTokens;
    if (max === undefined || full.ids.length <= max) return full;
    if (!Number.isInteger(max) || max < 1) {
      throw new RangeError(`prompt builder: maxTokens must be an integer >= 1, got ${max}`);
    }
    // Leading system messages stay; a turn starts at a user message (the newest is the query).
    let head = 0;
    while (head < all.length && all[head].role === "system") head++;
    const system = all.slice(0, head);
    const starts: number[] = [];
    for (let i = head; i < all.length; i++) if (all[i].role === "user") starts.push(i);
    const withDropped = (d: number) => encodeFrom([...system, ...all.slice(starts[d])], d);
    // The fewest dropped turns that fit (binary search, verified after, as buildChatInput does).
    let lo = 1, hi = starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (withDropped(mid).ids.length <= max) hi = mid;
      else lo = mid + 1;
    }
    for (let d = Math.max(lo, 1); d < starts.length; d++) {
      const r = withDropped(d);
      if (r.ids.length <= max) return r;
    }
    // Only the question is left and it is too long: keep its end (whole code points).
    const query = all[all.length - 1];
    const cps = Array.from(query.content);
    const cut = (k: number) =>
      encodeFrom([...system, { role: "user", content: cps.slice(k).join("") }], starts.length - 1);
    const fits = (k: number) => cut(k).ids.length <= max;
    let a = 0, b = cps.length;
    if (!fits(b)) {
      throw new RangeError(
        `prompt builder: maxTokens ${max} is too small for the chat template` +
          (system.length ? " and the system message" : ""),
      );
    }
    while (a < b) {
      const mid = (a + b) >> 1;
      if (fits(mid)) b = mid;
      else a = mid + 1;
    }
    while (a < cps.length && !fits(a)) a++;
    return cut(a);
  };

  return {
    format: "chat-template",
    text(messages) {
      checkMessages(messages);
      return render(plain(messages));
    },
    encode(messages) {
      return build(messages).ids;
    },
    build,
    postProcess: (answer) => answer,
  };
}
