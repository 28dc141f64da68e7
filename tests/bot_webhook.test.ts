/** Webhook mode: setWebhook with a secret, Hono checks Telegram's secret-token header. */
import assert from "node:assert/strict";
import { createBot } from "../bot/bot.ts";
import { SECRET_HEADER } from "../bot/webhook.ts";
import { startFakeTelegram } from "./helpers/fake_telegram.ts";
import { createScriptedEngine } from "./helpers/scripted_engine.ts";

Deno.test("webhook mode registers the webhook and answers only updates with the right secret", async () => {
  const fake = startFakeTelegram();
  const engine = createScriptedEngine({ answer: () => "请按时服药。" });
  const secret = "s3cret_Token-42";
  const bot = createBot(engine, {
    token: fake.token,
    apiRoot: fake.apiRoot,
    editIntervalMs: 20,
    webhook: { url: "https://bot.example.org/tg/hook", secret, port: 0, hostname: "127.0.0.1" },
    log: () => {},
  });
  try {
    const { port } = await bot.startWebhook();
    assert.equal(fake.webhook.url, "https://bot.example.org/tg/hook");
    assert.equal(fake.webhook.secretToken, secret);
    assert.deepEqual(fake.webhook.allowedUpdates, ["message"]);

    const message = fake.sendText({ chatId: 31, text: "高血压要注意什么" });
    const post = (headers: Record<string, string>, body: unknown) =>
      fetch(`http://127.0.0.1:${port}/tg/hook`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify(body),
      });

    for (const headers of [{}, { [SECRET_HEADER]: "wrong" }] as Record<string, string>[]) {
      const res = await post(headers, { update_id: 1, message });
      assert.equal(res.status, 401);
      await res.body?.cancel();
    }
    const bad = await post({ [SECRET_HEADER]: secret }, { hello: 1 });
    assert.equal(bad.status, 400);
    await bad.body?.cancel();

    const ok = await post({ [SECRET_HEADER]: secret }, { update_id: 1, message });
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    // Telegram re-delivers an update it thinks was lost: answered once.
    const again = await post({ [SECRET_HEADER]: secret }, { update_id: 1, message });
    assert.equal(again.status, 200);
    await again.body?.cancel();

    await fake.waitFor(() => fake.botTexts(31)[0] === "请按时服药。", 10_000, "answer");
    assert.equal(engine.requests.length, 1);
    assert.equal(fake.callsOf("getUpdates").length, 0);
  } finally {
    await bot.stop();
    await bot.finished;
    await fake.close();
  }
});

Deno.test("a webhook secret that Telegram would refuse is a clear error", () => {
  const engine = createScriptedEngine();
  assert.throws(
    () =>
      createBot(engine, {
        token: "1:x",
        webhook: { url: "https://example.org/hook", secret: "has spaces" },
      }),
    /secret must be 1-256 characters/,
  );
});
