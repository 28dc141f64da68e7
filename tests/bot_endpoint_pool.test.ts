/**
 * The bot over a pool of model servers (serve's real HTTP app over scripted engines): refusals and
 * failures before the first token move the question, a server that dies mid-answer has the answer
 * rewritten from another one in the same message, a failing /health benches a server until it
 * recovers, and questions spread over the least busy servers. Every question gets one answer.
 */
import assert from "node:assert/strict";
import { createBot, type MedBot } from "../bot/bot.ts";
import { createEndpointPool, splitEndpoints } from "../bot/endpoint_pool.ts";
import { parseBotArgs } from "../bot/cli.ts";
import { createOpenAIEngine } from "../bot/openai_engine.ts";
import { createEngine } from "../serve/mod.ts";
import { type FakeTelegram, startFakeTelegram } from "./helpers/fake_telegram.ts";
import { startModelServer, type TestModelServer } from "./helpers/model_server.ts";
import { createScriptedEngine } from "./helpers/scripted_engine.ts";

const answerOf = (q: string) => `关于「${q}」：多休息，多喝水，症状加重请及时就医。`;

interface Harness {
  fake: FakeTelegram;
  servers: TestModelServer[];
  pool: ReturnType<typeof createEndpointPool>;
  bot: MedBot;
  logs: string[];
  close(): Promise<void>;
}

async function setup(count: number): Promise<Harness> {
  const fake = startFakeTelegram();
  const servers = Array.from({ length: count }, () =>
    startModelServer(
      createScriptedEngine({
        answer: (m) => answerOf(m.at(-1)!.content),
        chunkChars: 2,
        delayMs: 15,
      }),
    ));
  const logs: string[] = [];
  const pool = createEndpointPool({
    endpoints: servers.map((s) => s.url),
    model: "scripted-test-engine",
    // Tests run the health checks themselves.
    healthIntervalMs: 3_600_000,
    log: (level, msg) => logs.push(`${level}: ${msg}`),
  });
  const bot = createBot(pool, {
    token: fake.token,
    apiRoot: fake.apiRoot,
    editIntervalMs: 30,
    maxMessagesPerSecond: 1000,
    pollingTimeoutSeconds: 5,
    log: (level, msg) => logs.push(`${level}: ${msg}`),
  });
  await new Promise<void>((resolve, reject) => {
    bot.start({ onStart: () => resolve() }).catch(reject);
  });
  return {
    fake,
    servers,
    pool,
    bot,
    logs,
    async close() {
      await bot.stop();
      await pool.close();
      await Promise.all(servers.map((s) => s.close()));
      await fake.close();
    },
  };
}

/** Each chat ends with exactly one bot message, the whole answer to its question. */
async function expectOneAnswerEach(h: Harness, questions: Map<number, string>) {
  for (const [chatId, q] of questions) {
    await h.fake.waitFor(
      () => h.fake.botTexts(chatId)[0] === answerOf(q),
      15_000,
      `the answer in chat ${chatId}`,
    );
  }
  await h.fake.waitFor(() => h.bot.stats().busyChats === 0, 10_000, "idle bot");
  for (const [chatId, q] of questions) {
    assert.deepEqual(h.fake.botTexts(chatId), [answerOf(q)], `chat ${chatId}`);
  }
}

function ask(h: Harness, n: number, from = 1): Map<number, string> {
  const asked = new Map<number, string>();
  for (let i = from; i < from + n; i++) {
    const q = `问题${i}`;
    h.fake.sendText({ chatId: 500 + i, text: q });
    asked.set(500 + i, q);
  }
  return asked;
}

Deno.test("--endpoint takes several URLs, comma-separated or repeated", () => {
  assert.deepEqual(splitEndpoints(["http://a:1, http://b:2", "http://c:3", " "]), [
    "http://a:1",
    "http://b:2",
    "http://c:3",
  ]);
  const cfg = parseBotArgs(["--endpoint", "http://a:1,http://b:2", "--endpoint", "http://c:3"], {
    TELEGRAM_BOT_TOKEN: "1:x",
  });
  assert.equal(cfg.engine.kind, "endpoint");
  assert.deepEqual(cfg.engine.kind === "endpoint" && cfg.engine.endpoints, [
    "http://a:1",
    "http://b:2",
    "http://c:3",
  ]);
});

Deno.test("a server answering 503 hands its questions to another; each is answered once", async () => {
  const h = await setup(2);
  try {
    h.servers[0].faults.refuse = true;
    const asked = ask(h, 6);
    await expectOneAnswerEach(h, asked);
    assert.ok(h.servers[0].requests > 0, "the refusing server was never tried");
    assert.equal(h.servers[0].completed, 0);
    assert.equal(h.servers[1].completed, 6);
    assert.ok(h.logs.some((l) => /HTTP 503.*moving the question/.test(l)));
  } finally {
    await h.close();
  }
});

Deno.test("a server that dies mid-answer: the answer is rewritten from another, in one message", async () => {
  const h = await setup(2);
  try {
    // About two thirds of an answer, so that the broken text reaches the chat first.
    h.servers[0].faults.cutAfterChunks = 10;
    const asked = ask(h, 4);
    await expectOneAnswerEach(h, asked);
    // The first questions went to the first server too and broke off there after some text.
    assert.ok(h.servers[0].requests >= 1);
    assert.equal(h.servers[0].completed, 0);
    assert.equal(h.servers[1].completed, 4);
    // The broken answer was shown, then written over from the start (the text got shorter).
    const rewritten = [...asked.keys()].map((id) => h.fake.chat(id).find((e) => e.fromBot)!)
      .filter((e) => e.versions.some((v, i) => i > 0 && v.length < e.versions[i - 1].length));
    assert.ok(rewritten.length >= 1, "no answer shows the broken text being written over");
    assert.ok(h.logs.some((l) => /broke off mid-answer.*answering again/.test(l)));
    // Benched until its /health says ready again.
    assert.equal(h.pool.members()[0].healthy, false);
    await h.pool.checkHealth();
    assert.equal(h.pool.members()[0].healthy, true);
  } finally {
    await h.close();
  }
});

Deno.test("a server failing /health is skipped until it recovers", async () => {
  const h = await setup(2);
  try {
    h.servers[0].faults.healthDown = true;
    await h.pool.checkHealth();
    await expectOneAnswerEach(h, ask(h, 3));
    assert.equal(h.servers[0].requests, 0);
    h.servers[0].faults.healthDown = false;
    await h.pool.checkHealth();
    await expectOneAnswerEach(h, ask(h, 4, 10));
    assert.ok(h.servers[0].requests > 0, "the recovered server got no questions");
  } finally {
    await h.close();
  }
});

Deno.test("questions go to the least busy server", async () => {
  const h = await setup(2);
  try {
    await expectOneAnswerEach(h, ask(h, 4));
    assert.deepEqual(h.servers.map((s) => s.completed), [2, 2]);
  } finally {
    await h.close();
  }
});

Deno.test("no server ready: the question fails once, clearly", async () => {
  const h = await setup(2);
  try {
    for (const s of h.servers) s.faults.healthDown = true;
    await h.pool.checkHealth();
    h.fake.sendText({ chatId: 900, text: "头疼" });
    const [reply] = await h.fake.waitFor(
      () => h.fake.botTexts(900).length > 0 && h.fake.botTexts(900),
      10_000,
      "a reply",
    );
    assert.match(reply, /出错了|went wrong/);
    assert.ok(h.logs.some((l) => /no model server is ready/.test(l)));
    assert.equal(h.servers[0].requests + h.servers[1].requests, 0);
  } finally {
    await h.close();
  }
});

Deno.test("a real model server (the demo model behind serve's app) beside one that refuses", async () => {
  const demo = await createEngine({ maxBatch: 2, log: () => {}, progressBar: false });
  const real = startModelServer(demo);
  const refusing = startModelServer(createScriptedEngine(), { refuse: true });
  const fake = startFakeTelegram();
  const pool = createEndpointPool({
    endpoints: [refusing.url, real.url],
    model: demo.info.model,
    maxContext: demo.info.maxContext,
    healthIntervalMs: 3_600_000,
  });
  const bot = createBot(pool, {
    token: fake.token,
    apiRoot: fake.apiRoot,
    editIntervalMs: 30,
    maxMessagesPerSecond: 1000,
    pollingTimeoutSeconds: 5,
    answerLengths: { short: 24 },
    defaultSettings: { length: "short", temperature: 0 },
    log: () => {},
  });
  try {
    await pool.checkHealth();
    assert.ok(pool.members().every((m) => m.healthy));
    await new Promise<void>((resolve, reject) => {
      bot.start({ onStart: () => resolve() }).catch(reject);
    });
    fake.sendText({ chatId: 1, text: "感冒了应该怎么办？" });
    await fake.waitFor(() => bot.stats().answered === 1, 60_000, "the demo model's answer");
    // What the same server says to the same request, asked directly.
    const direct = createOpenAIEngine({ endpoint: real.url, model: demo.info.model });
    let want = "";
    for await (
      const d of direct.generate({
        messages: [{ role: "user", content: "感冒了应该怎么办？" }],
        maxNewTokens: 24,
        temperature: 0,
      })
    ) want += d.text;
    assert.ok(want.trim().length > 0);
    assert.deepEqual(fake.botTexts(1), [want.trim()]);
    assert.equal(refusing.requests, 1);
    assert.equal(real.completed, 2);
  } finally {
    await bot.stop();
    await pool.close();
    await real.close();
    await refusing.close();
    await fake.close();
    await demo.close();
  }
});
