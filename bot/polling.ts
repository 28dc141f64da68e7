/**
 * Long polling with our own loop instead of `bot.start()`: grammY's loop handles updates one by one
 * and sleeps a fixed 3 s (not cancellable) after a failed poll; ours hands each update to the
 * middleware (which only queues work), backs off exponentially on network errors, and stops at
 * once when asked, confirming the last offset as Telegram expects.
 */
import { type Bot, GrammyError } from "npm:grammy@1.46.0/web";
import type { Update } from "npm:grammy@1.46.0/types";
import { grammySignal, sleep } from "./api_retry.ts";

export interface PollingOptions {
  /** Long-poll timeout in seconds (Telegram allows up to 50). */
  timeoutSeconds: number;
  /** Updates per poll (1-100, default 100). */
  limit?: number;
  allowedUpdates: string[];
  signal: AbortSignal;
  onUpdate: (update: Update) => Promise<void>;
  log: (level: "info" | "warn" | "error", msg: string) => void;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

/** Polls until `signal` aborts. Rejects on errors that retrying cannot fix (401, 409). */
export async function runPolling(bot: Pick<Bot, "api">, opts: PollingOptions): Promise<void> {
  const initial = opts.initialBackoffMs ?? 500;
  const maxBackoff = opts.maxBackoffMs ?? 60_000;
  let backoff = initial;
  let offset = 0;
  while (!opts.signal.aborted) {
    let updates: Update[];
    try {
      updates = await bot.api.getUpdates({
        offset,
        limit: opts.limit ?? 100,
        timeout: opts.timeoutSeconds,
        // deno-lint-ignore no-explicit-any
        allowed_updates: opts.allowedUpdates as any,
      }, grammySignal(opts.signal));
      backoff = initial;
    } catch (err) {
      if (opts.signal.aborted) break;
      if (err instanceof GrammyError && (err.error_code === 401 || err.error_code === 409)) {
        throw new Error(
          err.error_code === 401
            ? "Telegram rejected the bot token (401): check TELEGRAM_BOT_TOKEN with @BotFather"
            : `Telegram refused long polling (409: ${err.description}); ` +
              "is another instance running, or a webhook set?",
        );
      }
      opts.log("warn", `getUpdates failed, retrying in ${backoff} ms: ${String(err)}`);
      try {
        await sleep(backoff, opts.signal);
      } catch {
        break;
      }
      backoff = Math.min(maxBackoff, backoff * 2);
      continue;
    }
    for (const update of updates) {
      offset = Math.max(offset, update.update_id + 1);
      try {
        await opts.onUpdate(update);
      } catch (err) {
        opts.log("error", `update ${update.update_id} failed: ${String(err)}`);
      }
    }
  }
  // Confirm what we have handled so that a restart does not see it again.
  if (offset > 0) {
    try {
      await bot.api.getUpdates({ offset, limit: 1, timeout: 0 });
    } catch (err) {
      opts.log("warn", `could not confirm update offset ${offset}: ${String(err)}`);
    }
  }
}
