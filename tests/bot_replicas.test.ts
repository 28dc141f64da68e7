/**
 * Bot replicas in webhook mode on one PostgreSQL (a private cluster started here), as behind a
 * load balancer: a chat's updates alternate between replicas and each answer sees the complete,
 * ordered history; the same update sent to both is answered once; a replica killed mid-answer
 * leaves the update to the re-delivery, which is answered once, in the same message; the rate
 * limit and the allowlist's refusal hold across replicas.
 */
import assert from "node:assert/strict";
import postgres from "npm:postgres@3.4.10";
import { createBot, type MedBot } from "../bot/bot.ts";
import type { BotOptions } from "../bot/bot.ts";
import { SECRET_HEADER } from "../bot/webhook.ts";
import { type FakeTelegram, startFakeTelegram } from "./helpers/fake_telegram.ts";
import type { ReplicaConfig } from "./helpers/bot_replica.ts";
import { postgresForTests, requirePostgres } from "./helpers/postgres.ts";
import { createScriptedEngine } from "./helpers/scripted_engine.ts";

const { started, ignore } = await postgresForTests("bot_replicas");
const SECRET = "replica_secret-1";
let databases = 0;

/** A fresh database on the test cluster, so that tests do not see each other's rows. */
async function freshDatabase(): Promise<string> {
  const pg = requirePostgres(started);
  const name = `bot_test_${++databases}`;
  const admin = postgres(pg.url, { onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  return pg.url.replace(/\/postgres$/, `/${name}`);
}

const probes = new Map<string, ReturnType<typeof postgres>>();
/** Whether a replica has claimed the update (read straight from the database). */
async function claimed(store: string, updateId: number): Promise<boolean> {
  let sql = probes.get(store);
  if (!sql) probes.set(store, sql = postgres(store, { max: 1, onnotice: () => {} }));
  const rows = await sql`SELECT 1 FROM bot_updates WHERE update_id = ${updateId}`;
  return rows.length > 0;
}

interface Replica {
  bot: MedBot;
  engine: ReturnType<typeof createScriptedEngine>;
  port: number;
}

async function startReplica(
  fake: FakeTelegram,
  store: string,
  replicaId: string,
  extra: Partial<BotOptions> = {},
  delayMs = 5,
): Promise<Replica> {
  const engine = createScriptedEngine({ chunkChars: 3, delayMs });
  const bot = createBot(engine, {
    token: fake.token,
    apiRoot: fake.apiRoot,
    store,
    replicaId,
    editIntervalMs: 20,
    maxMessagesPerSecond: 1000,
    webhook: {
      url: "https://bot.example.org/hook",
      secret: SECRET,
      port: 0,
      hostname: "127.0.0.1",
    },
    log: () => {},
    ...extra,
  });
  const { port } = await bot.startWebhook();
  return { bot, engine, port };
}

/** Delivers an update as Telegram does; resolves with the HTTP status. */
async function deliver(port: number, update: unknown): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}/hook`, {
    method: "POST",
    headers: { "content-type": "application/json", [SECRET_HEADER]: SECRET },
    body: JSON.stringify(update),
  });
  await res.body?.cancel();
  return res.status;
}

const echo = (q: string) => `你问的是：${q}。请多休息，必要时就医。`;

Deno.test({
  name:
    "a chat's updates alternate between two replicas: each answer sees the whole history, in order",
  ignore,
  async fn() {
    const fake = startFakeTelegram();
    const store = await freshDatabase();
    const a = await startReplica(fake, store, "A");
    const b = await startReplica(fake, store, "B");
    try {
      const questions = Array.from({ length: 6 }, (_, i) => `第${i + 1}个问题`);
      const deliveries: Promise<number>[] = [];
      for (const [i, q] of questions.entries()) {
        const update = { update_id: 5000 + i, message: fake.sendText({ chatId: 42, text: q }) };
        // Telegram sends them in order; the answers overlap, on alternating replicas.
        deliveries.push(deliver(i % 2 ? b.port : a.port, update));
        // The next one goes out once this one is taken (not answered): they overlap.
        while (!await claimed(store, update.update_id)) {
          await new Promise((r) => setTimeout(r, 5));
        }
      }
      assert.deepEqual(await Promise.all(deliveries), questions.map(() => 200));
      const requests = [...a.engine.requests, ...b.engine.requests];
      assert.equal(requests.length, questions.length);
      assert.ok(a.engine.requests.length >= 2 && b.engine.requests.length >= 2);
      for (const req of requests) {
        const users = req.messages.filter((m) => m.role === "user").map((m) => m.content);
        const k = questions.indexOf(users.at(-1)!);
        assert.deepEqual(users, questions.slice(0, k + 1), `history of question ${k + 1}`);
        const assistants = req.messages.filter((m) => m.role === "assistant").map((m) => m.content);
        assert.deepEqual(assistants, questions.slice(0, k).map(echo));
      }
      assert.deepEqual(fake.botTexts(42), questions.map(echo));
    } finally {
      await probes.get(store)?.end();
      await a.bot.stop();
      await b.bot.stop();
      await fake.close();
    }
  },
});

Deno.test({
  name: "the same update delivered to both replicas at once is answered once",
  ignore,
  async fn() {
    const fake = startFakeTelegram();
    const store = await freshDatabase();
    const a = await startReplica(fake, store, "A");
    const b = await startReplica(fake, store, "B");
    try {
      for (let i = 0; i < 5; i++) {
        const message = fake.sendText({ chatId: 60 + i, text: `重复${i}` });
        const update = { update_id: 9000 + i, message };
        const statuses = await Promise.all([deliver(a.port, update), deliver(b.port, update)]);
        assert.deepEqual(statuses, [200, 200]);
        assert.deepEqual(fake.botTexts(60 + i), [echo(`重复${i}`)]);
      }
      // Twice to the same replica at once (Telegram re-delivering while it answers).
      const message = fake.sendText({ chatId: 66, text: "又一次" });
      const update = { update_id: 9100, message };
      assert.deepEqual(await Promise.all([deliver(a.port, update), deliver(a.port, update)]), [
        200,
        200,
      ]);
      assert.deepEqual(fake.botTexts(66), [echo("又一次")]);
      assert.equal(a.engine.requests.length + b.engine.requests.length, 6);
    } finally {
      await a.bot.stop();
      await b.bot.stop();
      await fake.close();
    }
  },
});

Deno.test({
  name: "a re-delivery finding the update in progress elsewhere waits, then asks to come again",
  ignore,
  async fn() {
    const fake = startFakeTelegram();
    const store = await freshDatabase();
    const a = await startReplica(fake, store, "A", {}, 60);
    const b = await startReplica(fake, store, "B", { busyWaitMs: 150 });
    try {
      const update = { update_id: 8000, message: fake.sendText({ chatId: 80, text: "牙疼" }) };
      const first = deliver(a.port, update);
      while (!await claimed(store, update.update_id)) {
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.equal(await deliver(b.port, update), 503);
      assert.equal(await first, 200);
      assert.equal(await deliver(b.port, update), 200);
      assert.deepEqual(fake.botTexts(80), [echo("牙疼")]);
      assert.equal(a.engine.requests.length + b.engine.requests.length, 1);
    } finally {
      await probes.get(store)?.end();
      await a.bot.stop();
      await b.bot.stop();
      await fake.close();
    }
  },
});

Deno.test({
  name:
    "a replica killed mid-answer: the re-delivered update is answered once, in the same message",
  ignore,
  async fn() {
    const fake = startFakeTelegram();
    const store = await freshDatabase();
    const cfg: ReplicaConfig = {
      token: fake.token,
      apiRoot: fake.apiRoot,
      store,
      replicaId: "doomed",
      secret: SECRET,
      claimTtlMs: 1000,
      chunkChars: 2,
      delayMs: 60,
    };
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        new URL("./helpers/bot_replica.ts", import.meta.url).pathname,
        JSON.stringify(cfg),
      ],
      cwd: new URL("..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "null",
      stdin: "null",
    }).spawn();
    let killed = false;
    const b = await startReplica(fake, store, "B", { claimTtlMs: 1000 });
    try {
      const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let out = "";
      while (!/PORT (\d+)\n/.test(out)) {
        const { value, done } = await lines.read();
        if (done) throw new Error(`the replica process ended before listening: ${out}`);
        out += value;
      }
      lines.releaseLock();
      child.stdout.cancel().catch(() => {});
      const doomedPort = Number(out.match(/PORT (\d+)/)![1]);

      const message = fake.sendText({ chatId: 70, text: "胃痛怎么办" });
      const update = { update_id: 7000, message };
      const first = deliver(doomedPort, update).catch((e) => e as Error);
      // Mid-answer: part of the answer is in the chat, and has been edited since.
      await fake.waitFor(
        () => (fake.chat(70).find((e) => e.fromBot)?.versions.length ?? 0) >= 2,
        15_000,
        "the answer under way",
      );
      child.kill("SIGKILL");
      killed = true;
      await child.status;
      const lost = await first;
      assert.ok(lost instanceof Error, `the dying replica answered ${lost}`);
      const partial = fake.botTexts(70)[0];
      assert.notEqual(partial, echo("胃痛怎么办"));

      // Telegram re-delivers (through the load balancer, to the live replica).
      assert.equal(await deliver(b.port, update), 200);
      assert.deepEqual(fake.botTexts(70), [echo("胃痛怎么办")]);
      assert.equal(b.engine.requests.length, 1);
      // Once done, further re-deliveries are recognized.
      assert.equal(await deliver(b.port, update), 200);
      assert.equal(b.engine.requests.length, 1);
      // The history holds the question once.
      const next = fake.sendText({ chatId: 70, text: "还要注意什么" });
      assert.equal(await deliver(b.port, { update_id: 7001, message: next }), 200);
      const users = b.engine.requests[1].messages.filter((m) => m.role === "user");
      assert.deepEqual(users.map((m) => m.content), ["胃痛怎么办", "还要注意什么"]);
    } finally {
      if (!killed) {
        child.kill("SIGKILL");
        await child.status;
      }
      await b.bot.stop();
      await fake.close();
    }
  },
});

Deno.test({
  name: "the rate limit and the allowlist's one refusal hold across replicas",
  ignore,
  async fn() {
    const fake = startFakeTelegram();
    const store = await freshDatabase();
    const extra: Partial<BotOptions> = {
      allow: [1001],
      rateLimit: { max: 2, windowMs: 60_000 },
      refusalIntervalMs: 800,
    };
    const a = await startReplica(fake, store, "A", extra);
    const b = await startReplica(fake, store, "B", extra);
    const replicas = [a, b];
    try {
      let id = 100;
      const send = (chatId: number, text: string, to: Replica) =>
        deliver(to.port, { update_id: id++, message: fake.sendText({ chatId, text }) });
      // An allowed user: two questions a minute, wherever they land.
      for (const [i, r] of [a, b, a, b].entries()) {
        assert.equal(await send(1001, `问题${i}`, r), 200);
      }
      const texts = fake.botTexts(1001);
      assert.equal(texts.length, 3, texts.join(" | "));
      assert.match(texts[2], /提问太频繁/);
      assert.equal(a.engine.requests.length + b.engine.requests.length, 2);
      // A stranger: one refusal for a flood spread over both replicas...
      for (let i = 0; i < 6; i++) assert.equal(await send(2002, "你好", replicas[i % 2]), 200);
      assert.equal(fake.botTexts(2002).length, 1);
      assert.match(fake.botTexts(2002)[0], /private/);
      // ...and one more once the interval has passed.
      await new Promise((r) => setTimeout(r, 850));
      assert.equal(await send(2002, "你好", b), 200);
      assert.equal(fake.botTexts(2002).length, 2);
      assert.equal(a.engine.requests.length + b.engine.requests.length, 2);
    } finally {
      await a.bot.stop();
      await b.bot.stop();
      await fake.close();
    }
  },
});

Deno.test({
  name: "bot_replicas: the private PostgreSQL stops and is removed",
  ignore,
  async fn() {
    await requirePostgres(started).stop();
  },
});
