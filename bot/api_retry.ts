/**
 * Retrying Telegram API calls: a 429 waits Telegram's `retry_after` and tries again; network
 * errors and 5xx answers back off exponentially. Installed as a grammY API transformer, so every
 * call (ours and grammY's own) goes through it.
 */
import { type Bot, HttpError, type Transformer } from "npm:grammy@1.46.0/web";

/** grammY types its signals with the abort-controller shim; at run time it takes standard ones. */
export type GrammySignal = Parameters<Bot["init"]>[0];
export const grammySignal = (signal: AbortSignal): GrammySignal =>
  signal as unknown as GrammySignal;

export interface RetryOptions {
  /** Give up after this many attempts of one call. */
  maxAttempts?: number;
  /** A `retry_after` longer than this (seconds) is not waited out; the error goes to the caller. */
  maxRetryAfterSeconds?: number;
  /** First back-off after a network error or 5xx (milliseconds); doubles each time. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Aborts every wait (the bot is stopping). */
  signal?: AbortSignal;
  /** Told about each wait, for logs and tests. */
  onRetry?: (info: { method: string; reason: string; waitMs: number; attempt: number }) => void;
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Both signals in one (either aborts it). */
export function anySignal(...signals: (AbortSignal | undefined)[]): AbortSignal | undefined {
  const real = signals.filter((s): s is AbortSignal => s !== undefined);
  if (real.length <= 1) return real[0];
  return AbortSignal.any(real);
}

export function retryTransformer(opts: RetryOptions = {}): Transformer {
  const maxAttempts = opts.maxAttempts ?? 8;
  const maxRetryAfter = opts.maxRetryAfterSeconds ?? 120;
  const initial = opts.initialBackoffMs ?? 200;
  const maxBackoff = opts.maxBackoffMs ?? 30_000;
  return async (prev, method, payload, signal) => {
    const stop = anySignal(signal as unknown as AbortSignal | undefined, opts.signal);
    let backoff = initial;
    for (let attempt = 1;; attempt++) {
      let waitMs: number;
      let reason: string;
      try {
        const res = await prev(method, payload, signal);
        if (res.ok || attempt >= maxAttempts) return res;
        const retryAfter = res.parameters?.retry_after;
        if (res.error_code === 429 && typeof retryAfter === "number") {
          if (retryAfter > maxRetryAfter) return res;
          waitMs = retryAfter * 1000;
          reason = `429 retry_after ${retryAfter}s`;
        } else if (res.error_code >= 500 || res.error_code === 429) {
          waitMs = backoff;
          backoff = Math.min(maxBackoff, backoff * 2);
          reason = `${res.error_code} ${res.description}`;
        } else {
          return res;
        }
      } catch (err) {
        // An aborted call (stopping, or a cancelled long poll) is not retried.
        if (!(err instanceof HttpError) || stop?.aborted || attempt >= maxAttempts) throw err;
        waitMs = backoff;
        backoff = Math.min(maxBackoff, backoff * 2);
        reason = err.message;
      }
      opts.onRetry?.({ method, reason, waitMs, attempt });
      await sleep(waitMs, stop);
    }
  };
}
