/** The services the middleware files share, made from the bot's options. */
import type { Context } from "npm:grammy@1.46.0/web";
import type { Engine } from "../serve/mod.ts";
import { sleep } from "./api_retry.ts";
import { type BotServices, isGroupChat, replyTo } from "./context.ts";
import { createSemaphore } from "./limits.ts";
import type { BotOptions } from "./options.ts";
import { ANSWER_LENGTHS } from "./store.ts";
import type { ChatPace } from "./stream_reply.ts";

export function createServices(
  engine: Engine,
  options: BotOptions,
  base: Pick<BotServices, "store" | "log" | "stopping" | "defaults" | "owner">,
): BotServices {
  const editIntervalMs = options.editIntervalMs ?? 1000;
  const groupEditIntervalMs = Math.max(editIntervalMs, options.groupEditIntervalMs ?? 3000);
  const intervalFor = (ctx: Context) => isGroupChat(ctx) ? groupEditIntervalMs : editIntervalMs;
  const paces = new Map<number, ChatPace>();
  const paceOf = (chatId: number) => {
    let pace = paces.get(chatId);
    if (!pace) {
      if (paces.size > 10_000) paces.clear();
      paces.set(chatId, pace = { lastCallAt: -Infinity });
    }
    return pace;
  };

  return {
    ...base,
    engine,
    allow: new Set(options.allow ?? []),
    rateLimit: options.rateLimit ?? { max: 10, windowMs: 60_000 },
    refusalIntervalMs: options.refusalIntervalMs ?? 600_000,
    slots: createSemaphore(options.maxConcurrent ?? 4),
    maxConcurrent: options.maxConcurrent ?? 4,
    maxQueued: options.maxQueued ?? 64,
    lengths: { ...ANSWER_LENGTHS, ...options.answerLengths },
    maxHistoryTurns: options.maxHistoryTurns ?? 8,
    maxHistoryTokens: options.maxHistoryTokens ?? 1024,
    systemPrompt: options.systemPrompt,
    typingIntervalMs: options.typingIntervalMs,
    counters: { answered: 0, failed: 0 },
    intervalFor,
    paceOf,
    /** Sends a plain-text message, at most one call per `editIntervalMs` in the chat. */
    async say(ctx, text) {
      const chatId = ctx.chat!.id;
      const pace = paceOf(chatId);
      const gap = pace.lastCallAt + intervalFor(ctx) - performance.now();
      if (gap > 0) await sleep(gap, base.stopping);
      try {
        await ctx.api.sendMessage(chatId, text, replyTo(ctx));
      } finally {
        pace.lastCallAt = performance.now();
      }
    },
  };
}
