/**
 * Streams a generated answer into a Telegram chat: the typing action until the first words, then
 * one message edited as text arrives, at most one API call per `editIntervalMs` in the chat, never
 * an edit with unchanged text, and a new message whenever the text passes Telegram's limit (split
 * at a sentence boundary). Text goes out as plain text (no parse_mode), so nothing needs escaping
 * and no Markdown can break.
 */
import { GrammyError } from "npm:grammy@1.46.0/web";
import type { FinishReason, GenerationDelta } from "../serve/mod.ts";
import { findCut, TELEGRAM_TEXT_LIMIT } from "./split_text.ts";

/** The slice of grammY's `Api` the streamer uses. */
export interface ReplyApi {
  sendMessage(
    chatId: number,
    text: string,
    other?: { reply_parameters?: { message_id: number; allow_sending_without_reply?: boolean } },
  ): Promise<{ message_id: number }>;
  editMessageText(chatId: number, messageId: number, text: string): Promise<unknown>;
  sendChatAction(chatId: number, action: "typing"): Promise<unknown>;
}

/** When the chat last had a message sent or edited (shared by all answers in one chat). */
export interface ChatPace {
  lastCallAt: number;
}

export interface StreamReplyOptions {
  api: ReplyApi;
  chatId: number;
  /** The question's message id: the first part of the answer replies to it. */
  replyTo?: number;
  pace: ChatPace;
  editIntervalMs: number;
  typingIntervalMs?: number;
  limit?: number;
  /** Aborted by the streamer when the chat cannot be written to, so generation stops early. */
  generation: { readonly signal: AbortSignal; abort(reason?: unknown): void };
  /** The bot is stopping: no more API calls. */
  stopSignal?: AbortSignal;
  /** Shown when the model produced no text at all. */
  emptyText?: string;
  /**
   * A message of an earlier, broken try at this answer (another server or replica started it):
   * the answer is written into it instead of a new message.
   */
  existingMessageId?: number;
  /** Told each message id the answer sends (to remember where the answer is); awaited. */
  onMessage?: (messageId: number) => void | Promise<void>;
  log?: (msg: string) => void;
}

/** The generation failed; `messageIds` are what the answer had already sent. */
export class StreamReplyError extends Error {
  constructor(override readonly cause: unknown, readonly messageIds: number[]) {
    super(cause instanceof Error ? cause.message : String(cause));
    this.name = "StreamReplyError";
  }
}

export interface StreamReplyResult {
  text: string;
  finishReason: FinishReason;
  messageIds: number[];
}

/** Resolves waiters on `notify()`, or after a timeout. */
function createWakeup() {
  const waiters = new Set<() => void>();
  return {
    notify() {
      for (const w of [...waiters]) w();
    },
    wait(ms = Infinity): Promise<void> {
      return new Promise((resolve) => {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const done = () => {
          if (timer !== undefined) clearTimeout(timer);
          waiters.delete(done);
          resolve();
        };
        waiters.add(done);
        if (Number.isFinite(ms)) timer = setTimeout(done, Math.max(0, ms));
      });
    },
  };
}

export function isNotModified(err: unknown): boolean {
  return err instanceof GrammyError && err.error_code === 400 &&
    err.description.includes("message is not modified");
}

function isMessageGone(err: unknown): boolean {
  return err instanceof GrammyError && err.error_code === 400 &&
    /message to edit not found|message can't be edited/.test(err.description);
}

export async function streamReply(
  deltas: AsyncIterable<GenerationDelta>,
  opts: StreamReplyOptions,
): Promise<StreamReplyResult> {
  const limit = opts.limit ?? TELEGRAM_TEXT_LIMIT;
  const typingEvery = opts.typingIntervalMs ?? 4500;
  const wake = createWakeup();
  const stopped = () => opts.stopSignal?.aborted === true;

  let full = "";
  let finished = false;
  let finishReason: FinishReason = "stop";
  let streamError: unknown;

  const consumer = (async () => {
    try {
      for await (const d of deltas) {
        full += d.text;
        if (d.finishReason) finishReason = d.finishReason;
        wake.notify();
        if (opts.generation.signal.aborted) {
          finishReason = "abort";
          break;
        }
      }
    } catch (err) {
      streamError = err;
    } finally {
      finished = true;
      wake.notify();
    }
  })();

  let fatal: unknown;
  const onStop = () => wake.notify();
  opts.stopSignal?.addEventListener("abort", onStop, { once: true });
  // The typing action lasts about 5 s in Telegram clients: repeat it until the first message.
  let firstSent = false;
  const typing = (async () => {
    while (!firstSent && !finished && !stopped()) {
      try {
        await opts.api.sendChatAction(opts.chatId, "typing");
      } catch (err) {
        if (err instanceof GrammyError && err.error_code === 403) {
          // Blocked or kicked: nobody will read the answer, so stop generating it.
          fatal = err;
          opts.generation.abort(err);
          wake.notify();
          return;
        }
        opts.log?.(`chat ${opts.chatId}: typing action failed: ${String(err)}`);
      }
      // Wake-ups come with every delta; only the first message, the end or the interval count.
      // (The condition is checked right before each wait, so no wake-up is lost.)
      const until = performance.now() + typingEvery;
      while (!firstSent && !finished && !stopped() && performance.now() < until) {
        await wake.wait(until - performance.now());
      }
    }
  })();

  const messageIds: number[] = [];
  let current: { id: number; shown: string } | undefined;
  if (opts.existingMessageId !== undefined) {
    messageIds.push(opts.existingMessageId);
    current = { id: opts.existingMessageId, shown: "" };
  }
  let segStart = 0;

  const waitForPace = async () => {
    const gap = opts.pace.lastCallAt + opts.editIntervalMs - performance.now();
    if (gap > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, gap);
        opts.stopSignal?.addEventListener("abort", done, { once: true });
        function done() {
          clearTimeout(timer);
          opts.stopSignal?.removeEventListener("abort", done);
          resolve();
        }
      });
    }
  };

  /** Puts `text` into the current message (or a new one); false when the bot is stopping. */
  const show = async (text: string): Promise<boolean> => {
    if (current && current.shown === text) return true;
    await waitForPace();
    if (stopped()) return false;
    try {
      if (current) {
        try {
          await opts.api.editMessageText(opts.chatId, current.id, text);
          current.shown = text;
          // Writing into an earlier try's message counts as the first message (typing stops).
          firstSent = true;
          return true;
        } catch (err) {
          if (isNotModified(err)) {
            current.shown = text;
            return true;
          }
          // The user deleted the message: go on in a new one.
          if (!isMessageGone(err)) throw err;
          opts.log?.(`chat ${opts.chatId}: message ${current.id} is gone, sending a new one`);
        }
      }
      const replyTo = messageIds.length === 0 ? opts.replyTo : undefined;
      const sent = await opts.api.sendMessage(
        opts.chatId,
        text,
        replyTo === undefined
          ? undefined
          : { reply_parameters: { message_id: replyTo, allow_sending_without_reply: true } },
      );
      firstSent = true;
      wake.notify();
      messageIds.push(sent.message_id);
      await opts.onMessage?.(sent.message_id);
      current = { id: sent.message_id, shown: text };
      return true;
    } finally {
      opts.pace.lastCallAt = performance.now();
    }
  };

  /** Brings the chat up to date with `full`; false when the bot is stopping. */
  const flush = async (): Promise<boolean> => {
    let seg = full.slice(segStart);
    while (seg.length > limit) {
      const cut = findCut(seg, limit);
      if (!await show(seg.slice(0, cut).trim())) return false;
      current = undefined;
      segStart += cut;
      while (segStart < full.length && /\s/.test(full[segStart])) segStart++;
      seg = full.slice(segStart);
    }
    const text = seg.trim();
    if (text && text !== current?.shown) return await show(text);
    return true;
  };

  const upToDate = () => {
    const seg = full.slice(segStart);
    return seg.length <= limit && (seg.trim() === "" || seg.trim() === current?.shown);
  };

  try {
    while (!stopped() && !fatal) {
      const done = finished;
      if (upToDate()) {
        if (done) break;
        await wake.wait();
        continue;
      }
      // Let more text gather until the chat may be written to again.
      const gap = opts.pace.lastCallAt + opts.editIntervalMs - performance.now();
      if (!done && gap > 0) {
        await wake.wait(gap);
        if (!finished && performance.now() < opts.pace.lastCallAt + opts.editIntervalMs) continue;
      }
      if (!await flush()) break;
    }
    if (fatal) throw fatal;
    const nothingShown = messageIds.length === 0 || current?.shown === "";
    if (!stopped() && nothingShown && full.trim() === "" && !streamError) {
      await show(opts.emptyText ?? "…");
    }
  } catch (err) {
    opts.generation.abort(err);
    throw err;
  } finally {
    opts.stopSignal?.removeEventListener("abort", onStop);
    firstSent = true;
    if (stopped()) opts.generation.abort(opts.stopSignal?.reason);
    wake.notify();
    await consumer;
    await typing;
  }
  if (streamError) throw new StreamReplyError(streamError, messageIds);
  return {
    text: full,
    // A generation that ended on its own before the bot stopped is complete (the consumer marks
    // one that the stop cut short as "abort").
    finishReason,
    messageIds,
  };
}
