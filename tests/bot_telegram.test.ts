/**
 * The real grammY bot (long polling) against our fake Bot API server on 127.0.0.1, answering with
 * the scripted engine.
 */
import assert from "node:assert/strict";
import { createBot, type MedBot } from "../bot/bot.ts";
import type { BotOptions } from "../bot/bot.ts";
import { type FakeTelegram, startFakeTelegram } from "./helpers/fake_telegram.ts";
import { createScriptedEngine, type ScriptedEngineOptions } from "./helpers/scripted_engine.ts";

/** Starts long polling; resolves once the bot polls (start() itself resolves only when stopped). */
function startPolling(bot: MedBot): Promise<void> {
  return new Promise((resolve, reject) => {
    bot.start({ onStart: () => resolve() }).catch(reject);
  });
}

interface Harness {
  fake: FakeTelegram;
  bot: MedBot;
  engine: ReturnType<typeof createScriptedEngine>;
  logs: string[];
  kvPath: string;
  dir: string;
  restart(extra?: Partial<BotOptions>): Promise<void>;
  close(): Promise<void>;
}

async function setup(
  opts: { engine?: ScriptedEngineOptions; bot?: Partial<BotOptions> } = {},
): Promise<Harness> {
  const fake = startFakeTelegram();
  const engine = createScriptedEngine({ chunkChars: 3, delayMs: 5, ...opts.engine });
  const dir = await Deno.makeTempDir({ prefix: "medglm-bot-" });
  const kvPath = `${dir}/bot.kv`;
  const logs: string[] = [];
  const make = async (extra: Partial<BotOptions> = {}) => {
    const bot = createBot(engine, {
      token: fake.token,
      apiRoot: fake.apiRoot,
      kvPath,
      editIntervalMs: 40,
      groupEditIntervalMs: 60,
      maxMessagesPerSecond: 1000,
      pollingTimeoutSeconds: 5,
      retry: { initialBackoffMs: 20 },
      log: (level, msg) => logs.push(`${level}: ${msg}`),
      ...opts.bot,
      ...extra,
    });
    await startPolling(bot);
    return bot;
  };
  const h: Harness = {
    fake,
    engine,
    logs,
    kvPath,
    dir,
    bot: await make(),
    async restart(extra) {
      await h.bot.stop();
      h.bot = await make(extra);
    },
    async close() {
      await h.bot.stop();
      await h.bot.finished;
      await fake.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
  return h;
}

/** Waits until the chat holds `count` bot messages and the scripted answer is complete. */
function waitForAnswer(h: Harness, chatId: number, count: number, expected?: string) {
  return h.fake.waitFor(
    () => {
      const texts = h.fake.botTexts(chatId);
      if (texts.length < count) return false;
      if (expected !== undefined && texts.slice(-1)[0] !== expected) return false;
      return texts;
    },
    20_000,
    `answer in chat ${chatId}`,
  );
}

Deno.test("a question gets a streamed answer: typing, one message, throttled edits", async () => {
  const answer = "感冒一般是病毒感染引起的，多数一周左右自愈。注意多喝水、多休息。" +
    "如果高烧不退或者呼吸困难，请及时就医。";
  const h = await setup({ engine: { answer: () => answer, chunkChars: 2, delayMs: 15 } });
  try {
    h.fake.sendText({ chatId: 42, text: "感冒了怎么办？" });
    const texts = await waitForAnswer(h, 42, 1, answer);
    assert.deepEqual(texts, [answer]);
    const entry = h.fake.chat(42).find((e) => e.fromBot)!;
    // Streamed: the message grew through several edits, each a prefix of the answer.
    assert.ok(entry.versions.length >= 3, `only ${entry.versions.length} versions`);
    for (const v of entry.versions) assert.ok(answer.startsWith(v), v);
    // Never an unchanged edit (the fake would answer 400 "message is not modified").
    const edits = h.fake.callsOf("editMessageText", 42);
    assert.ok(edits.every((c) => c.response.ok), "an edit was refused");
    // Throttled: sends and edits in one chat are at least editIntervalMs (40) apart.
    const writes = [...h.fake.callsOf("sendMessage", 42), ...edits].map((c) => c.at).sort((a, b) =>
      a - b
    );
    for (let i = 1; i < writes.length; i++) {
      assert.ok(writes[i] - writes[i - 1] >= 35, `writes ${writes[i] - writes[i - 1]} ms apart`);
    }
    // The typing action went out before the first text.
    const typing = h.fake.callsOf("sendChatAction", 42);
    // Once: the first words came well within the 4.5 s a typing action is repeated after.
    assert.equal(typing.length, 1);
    assert.equal(typing[0].params.action, "typing");
    assert.ok(typing[0].at <= writes[0]);
    // Plain text: no parse_mode, so no Markdown can break.
    for (const c of h.fake.callsOf("sendMessage", 42)) assert.equal(c.params.parse_mode, undefined);
    // The engine got the question as the last user message.
    assert.deepEqual(h.engine.requests[0].messages.at(-1), {
      role: "user",
      content: "感冒了怎么办？",
    });
  } finally {
    await h.close();
  }
});

Deno.test("history is sent with the next question, /reset clears it, and a restart keeps it", async () => {
  let n = 0;
  const h = await setup({ engine: { answer: () => `第${++n}个回答。` } });
  try {
    h.fake.sendText({ chatId: 7, text: "头痛怎么办" });
    await waitForAnswer(h, 7, 1, "第1个回答。");
    h.fake.sendText({ chatId: 7, text: "需要吃药吗" });
    await waitForAnswer(h, 7, 2, "第2个回答。");
    assert.deepEqual(h.engine.requests[1].messages, [
      { role: "user", content: "头痛怎么办" },
      { role: "assistant", content: "第1个回答。" },
      { role: "user", content: "需要吃药吗" },
    ]);

    // A new process on the same KV file sees the history.
    await h.restart();
    h.fake.sendText({ chatId: 7, text: "还有别的建议吗" });
    await waitForAnswer(h, 7, 3, "第3个回答。");
    assert.deepEqual(h.engine.requests[2].messages.map((m) => m.content), [
      "头痛怎么办",
      "第1个回答。",
      "需要吃药吗",
      "第2个回答。",
      "还有别的建议吗",
    ]);

    h.fake.sendText({ chatId: 7, text: "/reset" });
    await waitForAnswer(h, 7, 4);
    assert.match(h.fake.botTexts(7)[3], /Conversation forgotten/);
    h.fake.sendText({ chatId: 7, text: "新问题" });
    await waitForAnswer(h, 7, 5, "第4个回答。");
    assert.deepEqual(h.engine.requests[3].messages, [{ role: "user", content: "新问题" }]);
  } finally {
    await h.close();
  }
});

Deno.test("history is bounded in turns and tokens", async () => {
  let n = 0;
  const h = await setup({
    engine: { answer: () => `回答${++n}。`.padEnd(30, "好") },
    bot: { maxHistoryTurns: 3, maxHistoryTokens: 100 },
  });
  try {
    for (let i = 1; i <= 5; i++) {
      h.fake.sendText({ chatId: 9, text: `问题${i}` });
      await waitForAnswer(h, 9, i);
      await h.fake.waitFor(() => h.bot.stats().busyChats === 0, 5000, "idle chat");
    }
    const last = h.engine.requests[4].messages;
    // Each turn is 2 messages of about 40 scripted tokens; 100 tokens fit two turns.
    assert.equal(last.at(-1)!.content, "问题5");
    assert.deepEqual(last.filter((m) => m.role === "user").map((m) => m.content), [
      "问题3",
      "问题4",
      "问题5",
    ]);
    assert.ok(h.engine.countPromptTokens(last.slice(0, -1)) <= 100);
    // Storage is bounded too: the KV file keeps only what the bounds allow.
    await h.bot.stop();
    const kv = await Deno.openKv(h.kvPath);
    try {
      const stored = await Array.fromAsync(kv.list({ prefix: ["medglm-bot", "turn", 9] }));
      assert.ok(stored.length >= 1 && stored.length <= 2, `${stored.length} turns stored`);
    } finally {
      kv.close();
    }
  } finally {
    await h.close();
  }
});

Deno.test("a user off the allowlist is refused politely and the engine is not called", async () => {
  const h = await setup({ bot: { allow: [1001] } });
  try {
    h.fake.sendText({ chatId: 2002, userId: 2002, text: "你好" });
    const [reply] = await waitForAnswer(h, 2002, 1);
    assert.match(reply, /private/);
    h.fake.sendText({ chatId: 1001, userId: 1001, text: "你好" });
    await waitForAnswer(h, 1001, 1, "你问的是：你好。请多休息，必要时就医。");
    assert.equal(h.engine.requests.length, 1);
    assert.ok(h.logs.some((l) => l.includes("refused user 2002")));
  } finally {
    await h.close();
  }
});

Deno.test("a 429 from Telegram is waited out (retry_after) and the answer still arrives", async () => {
  const h = await setup({ engine: { answer: () => "多喝温水，注意休息。" } });
  try {
    h.fake.injectError("sendMessage", {
      error_code: 429,
      description: "Too Many Requests: retry after 1",
      parameters: { retry_after: 1 },
    });
    h.fake.sendText({ chatId: 5, text: "咳嗽" });
    await waitForAnswer(h, 5, 1, "多喝温水，注意休息。");
    const sends = h.fake.callsOf("sendMessage", 5);
    assert.equal(sends[0].response.ok, false);
    assert.equal(sends[1].response.ok, true);
    const waited = sends[1].at - sends[0].at;
    assert.ok(waited >= 950, `retried after ${waited} ms, before retry_after (1 s)`);
    assert.ok(h.logs.some((l) => l.includes("429")));
  } finally {
    await h.close();
  }
});

Deno.test("a 5000-character answer arrives as two messages split at a sentence end", async () => {
  const sentence = "这是一个用于测试长回答的句子，内容是关于健康饮食和规律作息的建议。"; // 33 chars
  const long = sentence.repeat(152).slice(0, 5000);
  const h = await setup({
    engine: { answer: () => long, chunkChars: 200, delayMs: 2, maxContext: 10_000 },
    bot: { answerLengths: { medium: 8000 } },
  });
  try {
    h.fake.sendText({ chatId: 77, text: "说详细一点" });
    const texts = await h.fake.waitFor(
      () => {
        const t = h.fake.botTexts(77);
        return t.length === 2 && t.join("") === long ? t : false;
      },
      20_000,
      "two messages",
    );
    assert.ok(texts[0].length <= 4096 && texts[1].length <= 4096);
    assert.ok(texts[0].endsWith("。"), "first part does not end at a sentence end");
    for (const c of h.fake.calls) assert.ok(c.response.ok, `${c.method} failed`);
  } finally {
    await h.close();
  }
});

Deno.test("20 chats at once all get answers; a chat that blocked the bot stops no one", async () => {
  const h = await setup({ bot: { maxConcurrent: 4 }, engine: { delayMs: 3 } });
  let running = 0;
  let peak = 0;
  const generate = h.engine.generate.bind(h.engine);
  h.engine.generate = async function* (req) {
    running++;
    peak = Math.max(peak, running);
    try {
      yield* generate(req);
    } finally {
      running--;
    }
  };
  try {
    h.fake.block(300);
    h.fake.sendText({ chatId: 300, text: "被屏蔽的聊天" });
    for (let i = 0; i < 20; i++) h.fake.sendText({ chatId: 100 + i, text: `问题${i}` });
    for (let i = 0; i < 20; i++) {
      await waitForAnswer(h, 100 + i, 1, `你问的是：问题${i}。请多休息，必要时就医。`);
    }
    assert.equal(h.fake.botTexts(300).length, 0);
    // Nobody can read the blocked chat's answer, so its generation was cut short.
    const blocked = h.engine.requests.find((r) => r.messages.at(-1)!.content === "被屏蔽的聊天")!;
    assert.equal(blocked.signal?.aborted, true);
    await h.fake.waitFor(() => h.bot.stats().busyChats === 0, 5000, "all chats idle");
    assert.equal(h.bot.stats().answered, 20);
    // Chats ran in parallel, within the concurrency cap.
    assert.ok(peak >= 2 && peak <= 4, `peak concurrency ${peak}`);
    assert.ok(h.logs.some((l) => l.includes("chat 300") && l.includes("blocked")));
  } finally {
    await h.close();
  }
});

Deno.test("groups: answers only when mentioned or replied to, and strips the mention", async () => {
  const h = await setup();
  try {
    const group = -100500;
    h.fake.sendText({ chatId: group, userId: 11, chatType: "supergroup", text: "大家好" });
    h.fake.sendText({
      chatId: group,
      userId: 11,
      chatType: "supergroup",
      text: "@medglm_test_bot 发烧怎么办",
    });
    const [first] = await waitForAnswer(
      h,
      group,
      1,
      "你问的是：发烧怎么办。请多休息，必要时就医。",
    );
    assert.ok(first);
    assert.equal(h.engine.requests.length, 1);
    const botMsg = h.fake.chat(group).find((e) => e.fromBot)!.message;
    h.fake.sendText({
      chatId: group,
      userId: 12,
      chatType: "supergroup",
      text: "那咳嗽呢",
      replyTo: botMsg.message_id,
    });
    await waitForAnswer(h, group, 2, "你问的是：那咳嗽呢。请多休息，必要时就医。");
    // In a group the answer quotes the question.
    const sends = h.fake.callsOf("sendMessage", group);
    assert.ok(sends.every((c) => typeof c.params.reply_parameters === "object"));
    assert.equal(h.engine.requests.length, 2);
    // Groups get the slower pace (groupEditIntervalMs 60 here; Telegram allows ~20 a minute).
    const writes = [...sends, ...h.fake.callsOf("editMessageText", group)].map((c) => c.at).sort(
      (a, b) => a - b,
    );
    for (let i = 1; i < writes.length; i++) assert.ok(writes[i] - writes[i - 1] >= 55);
  } finally {
    await h.close();
  }
});

Deno.test("/start shows the disclaimer, /settings changes length and temperature", async () => {
  const h = await setup();
  try {
    h.fake.sendText({ chatId: 3, text: "/start" });
    const [start] = await waitForAnswer(h, 3, 1);
    assert.match(start, /免责声明/);
    assert.match(start, /not medical advice/);
    h.fake.sendText({ chatId: 3, text: "/settings length long" });
    h.fake.sendText({ chatId: 3, text: "/settings temperature 0.2" });
    h.fake.sendText({ chatId: 3, text: "/settings temperature 9" });
    h.fake.sendText({ chatId: 3, text: "你好" });
    await waitForAnswer(h, 3, 5, "你问的是：你好。请多休息，必要时就医。");
    assert.match(h.fake.botTexts(3)[3], /0 to 2/);
    assert.equal(h.engine.requests[0].maxNewTokens, 2048);
    assert.equal(h.engine.requests[0].temperature, 0.2);
  } finally {
    await h.close();
  }
});

Deno.test("per-user rate limit answers politely once the limit is reached", async () => {
  const h = await setup({ bot: { rateLimit: { max: 2, windowMs: 60_000 } } });
  try {
    for (const q of ["一", "二", "三", "四"]) h.fake.sendText({ chatId: 8, text: q });
    const texts = await waitForAnswer(h, 8, 3);
    await h.fake.waitFor(() => h.bot.stats().busyChats === 0, 5000, "idle chat");
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(h.engine.requests.length, 2);
    // Told once, not once per extra message.
    assert.equal(h.fake.botTexts(8).length, 3);
    assert.equal(texts.filter((t) => /too fast/.test(t)).length, 1, texts.join(" | "));
  } finally {
    await h.close();
  }
});

Deno.test("the answer length never exceeds a small model's context", async () => {
  const h = await setup({ engine: { maxContext: 300 } });
  try {
    h.fake.sendText({ chatId: 14, text: "你好" });
    await waitForAnswer(h, 14, 1, "你问的是：你好。请多休息，必要时就医。");
    assert.equal(h.engine.requests[0].maxNewTokens, 300);
  } finally {
    await h.close();
  }
});

Deno.test("network errors on getUpdates back off and polling recovers", async () => {
  const h = await setup();
  try {
    h.fake.sendText({ chatId: 4, text: "一" });
    await waitForAnswer(h, 4, 1);
    // The poll waiting now returns the next update; the three after it fail.
    h.fake.injectError("getUpdates", { error_code: 502, description: "Bad Gateway" }, 3);
    h.fake.sendText({ chatId: 4, text: "二" });
    await h.fake.waitFor(
      () => h.fake.callsOf("getUpdates").filter((c) => !c.response.ok).length === 3,
      10_000,
      "three failed polls",
    );
    h.fake.sendText({ chatId: 4, text: "恢复了吗" });
    await waitForAnswer(h, 4, 3, "你问的是：恢复了吗。请多休息，必要时就医。");
    assert.ok(h.logs.some((l) => l.includes("getUpdates") && l.includes("502")));
  } finally {
    await h.close();
  }
});

Deno.test("edits survive 'message is not modified' and a 429 in the middle of a stream", async () => {
  const answer = "血糖偏高时，要控制主食的量，多吃粗粮和蔬菜，坚持运动，并定期复查血糖。";
  const h = await setup({ engine: { answer: () => answer, chunkChars: 2, delayMs: 20 } });
  try {
    // Another client (or a retried request) may have set the same text already.
    h.fake.injectError("editMessageText", {
      error_code: 400,
      description: "Bad Request: message is not modified: specified new message content and " +
        "reply markup are exactly the same as a current content and reply markup of the message",
    });
    h.fake.injectError("editMessageText", {
      error_code: 429,
      description: "Too Many Requests: retry after 1",
      parameters: { retry_after: 1 },
    });
    h.fake.sendText({ chatId: 12, text: "血糖高" });
    await waitForAnswer(h, 12, 1, answer);
    const failed = h.fake.callsOf("editMessageText", 12).filter((c) => !c.response.ok);
    assert.deepEqual(failed.map((c) => (c.response as { error_code: number }).error_code), [
      400,
      429,
    ]);
    assert.equal(h.bot.stats().failed, 0);
  } finally {
    await h.close();
  }
});

Deno.test("stop() mid-answer aborts the generation and closes cleanly", async () => {
  const h = await setup({
    engine: { answer: () => "慢".repeat(2000), chunkChars: 1, delayMs: 10 },
  });
  try {
    h.fake.sendText({ chatId: 13, text: "讲个长的" });
    await h.fake.waitFor(() => h.fake.botTexts(13).length === 1, 10_000, "first text");
    await h.bot.stop();
    const req = h.engine.requests[0];
    assert.equal(req.signal?.aborted, true);
    assert.equal(h.engine.stats().active, 0);
    // An aborted answer is not stored as history.
    await h.restart();
    h.fake.sendText({ chatId: 13, text: "再问" });
    await h.fake.waitFor(() => h.engine.requests.length === 2, 10_000, "second request");
    assert.deepEqual(h.engine.requests[1].messages, [{ role: "user", content: "再问" }]);
  } finally {
    await h.close();
  }
});

Deno.test("a question longer than the model's context gets a clear reply, not a crash", async () => {
  const h = await setup({ engine: { maxContext: 64 } });
  try {
    h.fake.sendText({ chatId: 15, text: "痛".repeat(100) });
    const [reply] = await waitForAnswer(h, 15, 1);
    assert.match(reply, /too long/);
    h.fake.sendText({ chatId: 15, text: "短问题" });
    await waitForAnswer(h, 15, 2, "你问的是：短问题。请多休息，必要时就医。");
    assert.ok(h.logs.every((l) => !l.startsWith("error")), h.logs.join("\n"));
  } finally {
    await h.close();
  }
});

Deno.test("sends and edits across all chats keep the bot-wide pace", async () => {
  const h = await setup({
    bot: { maxMessagesPerSecond: 20 },
    engine: { answer: () => "按时作息，均衡饮食，适量运动。", chunkChars: 4, delayMs: 10 },
  });
  try {
    for (let i = 0; i < 5; i++) h.fake.sendText({ chatId: 400 + i, text: `问${i}` });
    for (let i = 0; i < 5; i++) {
      await waitForAnswer(h, 400 + i, 1, "按时作息，均衡饮食，适量运动。");
    }
    const writes = h.fake.calls.filter((c) =>
      c.method === "sendMessage" || c.method === "editMessageText"
    )
      .map((c) => c.at).sort((a, b) => a - b);
    assert.ok(writes.length >= 5);
    // 50 ms apart when they leave (the spacing itself: tests/bot_pace.test.ts). These are arrival
    // times at the fake server: on a busy machine one late arrival can land right before the next
    // one, so single gaps prove nothing; the span of every run of 4 writes still has to show it.
    // The first arrival may itself be late by as much as a run's tolerance.
    const span = writes.at(-1)! - writes[0];
    assert.ok(span >= (writes.length - 1) * 50 - 60, `${writes.length} writes in ${span} ms`);
    for (let i = 4; i < writes.length; i++) {
      const run = writes[i] - writes[i - 4];
      assert.ok(run >= 4 * 50 - 60, `writes ${i - 4}..${i} arrived within ${run} ms`);
    }
  } finally {
    await h.close();
  }
});

Deno.test("the typing action repeats on its interval, not on every streamed piece", async () => {
  const h = await setup({
    bot: { editIntervalMs: 300, typingIntervalMs: 10_000 },
    engine: { answer: () => "多喝水，多休息。", chunkChars: 1, delayMs: 5 },
  });
  try {
    h.fake.sendText({ chatId: 16, text: "一" });
    h.fake.sendText({ chatId: 16, text: "二" });
    await waitForAnswer(h, 16, 2, "多喝水，多休息。");
    await h.fake.waitFor(() => h.bot.stats().busyChats === 0, 5000, "idle chat");
    // The second answer streams while the chat's pace holds its first message back.
    assert.equal(h.fake.callsOf("sendChatAction", 16).length, 2);
  } finally {
    await h.close();
  }
});
