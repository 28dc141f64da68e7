/**
 * The bot-wide pace (bot/api_pace.ts), measured where calls leave the bot: the transformer's
 * `prev` is a recorder, so the times are departures, free of a server's arrival jitter.
 */
import assert from "node:assert/strict";
import type { Transformer } from "npm:grammy@1.46.0/web";
import { paceTransformer } from "../bot/api_pace.ts";

type Prev = Parameters<Transformer>[0];

async function departures(perSecond: number, methods: string[]): Promise<Map<string, number[]>> {
  const pace = paceTransformer(perSecond);
  const left = new Map<string, number[]>();
  const prev = ((method: string) => {
    left.set(method, [...(left.get(method) ?? []), performance.now()]);
    return Promise.resolve({ ok: true, result: true });
  }) as unknown as Prev;
  // All at once, as simultaneous answers in many chats would call.
  await Promise.all(methods.map((m) => pace(prev, m as "sendMessage", {} as never)));
  return left;
}

Deno.test("posting calls leave at least 1/perSecond apart, in the order they were made", async () => {
  const left = await departures(40, Array(8).fill("sendMessage"));
  const times = left.get("sendMessage")!;
  assert.equal(times.length, 8);
  // Call i leaves no earlier than its slot, i × 25 ms after the first (1 ms for timer rounding).
  // A late timer delays its call, and the next one may then follow closer than 25 ms: the pace
  // is a schedule (the rate over any run of calls), not a minimum gap.
  for (let i = 1; i < times.length; i++) {
    assert.ok(times[i] - times[0] >= i * 25 - 1, `call ${i}: ${times[i] - times[0]} ms after 0`);
  }
});

Deno.test("sends and edits share the pace; other calls are not held", async () => {
  const left = await departures(40, [
    "sendMessage",
    "editMessageText",
    "sendMessage",
    "getUpdates",
    "sendChatAction",
  ]);
  const posting = [...left.get("sendMessage")!, ...left.get("editMessageText")!].sort((a, b) =>
    a - b
  );
  for (let i = 1; i < posting.length; i++) assert.ok(posting[i] - posting[0] >= i * 25 - 1);
  // Not posting to a chat: sent at once, before the paced ones after the first.
  assert.ok(left.get("getUpdates")![0] < posting[1]);
  assert.ok(left.get("sendChatAction")![0] < posting[1]);
});

Deno.test("a pace that is not a positive number is refused", () => {
  assert.throws(() => paceTransformer(0), /messages per second must be positive, got 0/);
  assert.throws(() => paceTransformer(Number.NaN), /must be positive/);
});
