/**
 * A user off the allowlist gets one refusal, then silence for a while (not one per message up to
 * the question rate limit), then one more refusal after the interval. The engine is never called.
 */
import assert from "node:assert/strict";
import { createBot } from "../bot/bot.ts";
import { startFakeTelegram } from "./helpers/fake_telegram.ts";
import { createScriptedEngine } from "./helpers/scripted_engine.ts";

Deno.test("a stranger's flood gets one refusal, then silence until the interval passes", async () => {
  const fake = startFakeTelegram();
  const engine = createScriptedEngine();
  const logs: string[] = [];
  const bot = createBot(engine, {
    token: fake.token,
    apiRoot: fake.apiRoot,
    allow: [1001],
    editIntervalMs: 10,
    maxMessagesPerSecond: 1000,
    pollingTimeoutSeconds: 5,
    refusalIntervalMs: 700,
    log: (level, msg) => logs.push(`${level}: ${msg}`),
  });
  try {
    await new Promise<void>((resolve, reject) => {
      bot.start({ onStart: () => resolve() }).catch(reject);
    });
    for (let i = 0; i < 8; i++) fake.sendText({ chatId: 2002, userId: 2002, text: `你好${i}` });
    await fake.waitFor(
      () => logs.filter((l) => l.includes("refused user 2002")).length === 8,
      10_000,
      "eight refusals logged",
    );
    await fake.waitFor(() => bot.stats().busyChats === 0, 5000, "idle chat");
    assert.equal(fake.botTexts(2002).length, 1);
    assert.match(fake.botTexts(2002)[0], /private/);
    await new Promise((r) => setTimeout(r, 750));
    fake.sendText({ chatId: 2002, userId: 2002, text: "还在吗" });
    await fake.waitFor(() => fake.botTexts(2002).length === 2, 10_000, "the second refusal");
    // The allowed user is not affected by the stranger's counter.
    fake.sendText({ chatId: 1001, userId: 1001, text: "头疼" });
    await fake.waitFor(() => fake.botTexts(1001).length === 1, 10_000, "the answer");
    assert.equal(engine.requests.length, 1);
  } finally {
    await bot.stop();
    await fake.close();
  }
});
