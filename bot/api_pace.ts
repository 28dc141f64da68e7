/**
 * A bot-wide pace for calls that post to chats: Telegram allows a bot about 30 messages a second
 * across all chats, and answers a burst beyond that with 429s. Spacing the calls evenly keeps
 * many simultaneous answers under the limit instead of bouncing off it.
 */
import type { Transformer } from "npm:grammy@1.46.0/web";
import { sleep } from "./api_retry.ts";

const POSTING = new Set([
  "sendMessage",
  "editMessageText",
  "sendPhoto",
  "sendDocument",
  "copyMessage",
  "forwardMessage",
]);

export function paceTransformer(perSecond: number, signal?: AbortSignal): Transformer {
  if (!(perSecond > 0)) throw new Error(`messages per second must be positive, got ${perSecond}`);
  const spacing = 1000 / perSecond;
  let nextFree = 0;
  return async (prev, method, payload, callSignal) => {
    if (POSTING.has(method)) {
      // Reserve the next free slot now, so concurrent callers queue in arrival order.
      const now = performance.now();
      const at = Math.max(now, nextFree);
      nextFree = at + spacing;
      if (at > now) await sleep(at - now, signal);
    }
    return await prev(method, payload, callSignal);
  };
}
