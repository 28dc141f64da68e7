/**
 * Updates outside the bot's own polling and webhook: grammY's `bot.handleUpdate(update)` (as a
 * library user may call it) still answers, in the call, without claims.
 */
import assert from "node:assert/strict";
import type { Update } from "npm:grammy@1.46.0/types";
import { createBot } from "../bot/bot.ts";
import { startFakeTelegram } from "./helpers/fake_telegram.ts";
import { createScriptedEngine } from "./helpers/scripted_engine.ts";

Deno.test("grammY's own bot.handleUpdate answers within the call", async () => {
  const fake = startFakeTelegram();
  const engine = createScriptedEngine({ answer: () => "注意保暖。" });
  const bot = createBot(engine, {
    token: fake.token,
    apiRoot: fake.apiRoot,
    editIntervalMs: 10,
    log: () => {},
  });
  try {
    await bot.init();
    const message = fake.sendText({ chatId: 3, text: "受凉了" });
    // The fake's message has the wire format; grammY's type is wider.
    await bot.handleUpdate({ update_id: 1, message } as unknown as Update);
    assert.deepEqual(fake.botTexts(3), ["注意保暖。"]);
    assert.equal(engine.requests.length, 1);
  } finally {
    await bot.stop();
    await fake.close();
  }
});
