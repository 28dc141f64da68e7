/**
 * Answers one question in its chat's turn: history from the store, a generation slot, the answer
 * streamed into the chat, the turn saved. When a model server breaks off after the answer began
 * (`retryable` errors from the endpoint pool), the answer is generated again on another server
 * and written over the broken one, so that the user still gets one answer.
 */
import { GrammyError } from "npm:grammy@1.46.0/web";
import { PromptTooLongError } from "../serve/mod.ts";
import { anySignal } from "./api_retry.ts";
import { type BotServices, describe, type MedContext, replyTo } from "./context.ts";
import { buildMessages, historyFits } from "./history_prompt.ts";
import { streamReply, StreamReplyError, type StreamReplyResult } from "./stream_reply.ts";
import * as texts from "./texts.ts";

/** Tries of one answer when servers break off mid-answer. */
const MAX_TRIES = 3;

export async function answer(svc: BotServices, ctx: MedContext, question: string): Promise<void> {
  if (svc.stopping.aborted) {
    ctx.work.interrupted = true;
    return;
  }
  const { engine } = svc;
  const chatId = ctx.chat!.id;
  const store = await svc.store();
  const settings = await store.settings(chatId);
  // A small model's context may be shorter than the chosen length (servers refuse that).
  const maxNewTokens = Math.min(svc.lengths[settings.length], engine.info.maxContext);
  const bounds = { maxTurns: svc.maxHistoryTurns, maxTokens: svc.maxHistoryTokens };
  const messages = buildMessages(engine, await store.history(chatId), question, {
    ...bounds,
    maxNewTokens,
    systemPrompt: svc.systemPrompt,
  });
  let release: (() => void) | undefined;
  let existing = ctx.work.replyMessageId;
  let noted = existing !== undefined;
  try {
    if (svc.slots.active >= svc.maxConcurrent) {
      // Waiting for a slot: let the user see that the bot is on it.
      await ctx.api.sendChatAction(chatId, "typing").catch(() => {});
    }
    release = await svc.slots.acquire(svc.stopping);
    let result: StreamReplyResult | undefined;
    for (let attempt = 1; !result; attempt++) {
      const own = new AbortController();
      const generation = {
        signal: anySignal(own.signal, svc.stopping)!,
        abort: (reason?: unknown) => own.abort(reason),
      };
      const deltas = engine.generate({
        messages,
        maxNewTokens,
        temperature: settings.temperature,
        signal: generation.signal,
      });
      try {
        result = await streamReply(deltas, {
          api: ctx.api,
          chatId,
          replyTo: replyTo(ctx)?.reply_parameters.message_id,
          pace: svc.paceOf(chatId),
          editIntervalMs: svc.intervalFor(ctx),
          typingIntervalMs: svc.typingIntervalMs,
          generation,
          stopSignal: svc.stopping,
          emptyText: texts.EMPTY_ANSWER_TEXT,
          existingMessageId: existing,
          onMessage: async (id) => {
            if (noted) return;
            noted = true;
            // Where the answer is, for a replica that takes this update over (before the next
            // edit, so that a replica killed after it leaves the message to its successor).
            await store.noteReply(ctx.work.updateId, svc.owner, id).catch((e) =>
              svc.log("warn", `chat ${chatId}: could not note the answer: ${describe(e)}`)
            );
          },
          log: (m) => svc.log("warn", m),
        });
      } catch (err) {
        const retry = err instanceof StreamReplyError && isRetryable(err.cause) &&
          attempt < MAX_TRIES && !svc.stopping.aborted;
        if (!retry) throw err;
        svc.log(
          "warn",
          `chat ${chatId}: ${describe(err.cause)}; answering again on another server`,
        );
        existing = err.messageIds[0] ?? existing;
      }
    }
    release();
    release = undefined;
    if (result.finishReason === "abort") {
      // Cut short by stop(): not history, and the update is to be answered again.
      if (svc.stopping.aborted) ctx.work.interrupted = true;
      return;
    }
    if (!result.text.trim()) return;
    await store.addTurn(chatId, { user: question, assistant: result.text, at: Date.now() }, {
      maxTurns: svc.maxHistoryTurns,
      fits: (turns) => historyFits(engine, turns, bounds),
    });
    svc.counters.answered++;
  } catch (caught) {
    if (svc.stopping.aborted) {
      ctx.work.interrupted = true;
      return;
    }
    const err = caught instanceof StreamReplyError ? caught.cause : caught;
    if (err instanceof GrammyError && err.error_code === 403) {
      svc.log("warn", `chat ${chatId}: cannot write (${err.description}); answer dropped`);
      svc.counters.failed++;
      return;
    }
    const tooLong = isPromptTooLong(err);
    if (!tooLong) svc.log("error", `chat ${chatId}: ${describe(err)}`);
    const reply = tooLong ? texts.TOO_LONG_TEXT : texts.FAILED_TEXT;
    svc.counters.failed++;
    await svc.say(ctx, reply).catch((e) =>
      svc.log("warn", `chat ${chatId}: could not report the failure: ${describe(e)}`)
    );
  } finally {
    release?.();
  }
}

/** By name too: an engine loaded from another URL has its own copy of the class. */
function isPromptTooLong(err: unknown): boolean {
  return err instanceof PromptTooLongError ||
    (err instanceof Error && err.name === "PromptTooLongError");
}

/** Errors that say "another server may do better" (the endpoint pool marks them). */
function isRetryable(err: unknown): boolean {
  return typeof err === "object" && err !== null &&
    (err as { retryable?: unknown }).retryable === true;
}
