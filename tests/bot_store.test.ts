/**
 * The bot's store contract, run on both implementations: the Deno KV file and PostgreSQL (a
 * private cluster started here; skipped with the reason when PostgreSQL is not installed, but
 * not in CI).
 * Claims on updates (done, busy, taken over once lapsed, the answer's message kept), shared rate
 * counters, bounded history, settings; for PostgreSQL also the versioned schema.
 */
import assert from "node:assert/strict";
import postgres from "npm:postgres@3.4.10";
import { type BotStore, type ChatSettings, openChatStore } from "../bot/store.ts";
import { MIGRATIONS, openPostgresStore } from "../bot/store_postgres.ts";
import { postgresForTests, requirePostgres } from "./helpers/postgres.ts";

const defaults: ChatSettings = { length: "medium", temperature: 0.7 };
const { started, ignore } = await postgresForTests("bot_store");

async function contract(store: BotStore) {
  // Claims: one holder at a time; done is final; a lapsed claim is taken over with its message.
  assert.deepEqual(await store.claimUpdate(1, 10, "a", 60_000), { state: "claimed" });
  assert.deepEqual(await store.claimUpdate(1, 10, "b", 60_000), { state: "busy" });
  // A re-delivery to the holder itself while it answers is busy too.
  assert.deepEqual(await store.claimUpdate(1, 10, "a", 60_000), { state: "busy" });
  await store.noteReply(1, "a", 77);
  await store.finishUpdate(1, "a");
  assert.deepEqual(await store.claimUpdate(1, 10, "b", 60_000), { state: "done" });
  // (Lapses generous enough for a loaded machine.)
  assert.deepEqual(await store.claimUpdate(2, 10, "a", 800), { state: "claimed" });
  await store.noteReply(2, "a", 88);
  await store.renewClaims([2], "a", 800);
  assert.deepEqual(await store.claimUpdate(2, 10, "b", 60_000), { state: "busy" });
  await new Promise((r) => setTimeout(r, 900));
  assert.deepEqual(await store.claimUpdate(2, 10, "b", 60_000), {
    state: "claimed",
    replyMessageId: 88,
  });
  // The old holder can no longer finish it; the new one can.
  await store.finishUpdate(2, "a");
  assert.deepEqual(await store.claimUpdate(2, 10, "c", 60_000), { state: "busy" });
  await store.finishUpdate(2, "b");
  assert.deepEqual(await store.claimUpdate(2, 10, "c", 60_000), { state: "done" });
  // A released claim is free at once.
  await store.claimUpdate(3, 10, "a", 60_000);
  await store.releaseUpdate(3, "a");
  assert.equal((await store.claimUpdate(3, 10, "b", 60_000)).state, "claimed");

  // Rate counters: the first refusal says so, later ones do not; other keys are apart.
  const limit = { max: 2, windowMs: 1500 };
  assert.deepEqual(await store.takeRate("q:1", limit), { ok: true });
  assert.deepEqual(await store.takeRate("q:1", limit), { ok: true });
  const third = await store.takeRate("q:1", limit);
  assert.ok(!third.ok && third.first && third.retryInMs > 0 && third.retryInMs <= 1500);
  const fourth = await store.takeRate("q:1", limit);
  assert.ok(!fourth.ok && !fourth.first);
  assert.deepEqual(await store.takeRate("q:2", limit), { ok: true });
  await new Promise((r) => setTimeout(r, 1550));
  assert.deepEqual(await store.takeRate("q:1", limit), { ok: true });
  // Concurrent hits are all counted.
  const burst = await Promise.all(
    Array.from({ length: 10 }, () => store.takeRate("q:3", { max: 4, windowMs: 60_000 })),
  );
  assert.equal(burst.filter((v) => v.ok).length, 4);

  // History: bounded in turns and by `fits`, oldest dropped first; settings.
  const bounds = { maxTurns: 3, fits: (t: unknown[]) => t.length <= 2 };
  for (let i = 1; i <= 4; i++) {
    await store.addTurn(5, { user: `q${i}`, assistant: `a${i}`, at: i }, bounds);
  }
  assert.deepEqual((await store.history(5)).map((t) => t.user), ["q3", "q4"]);
  assert.deepEqual(await store.history(6), []);
  await store.clearHistory(5);
  assert.deepEqual(await store.history(5), []);
  assert.deepEqual(await store.settings(5), defaults);
  await store.saveSettings(5, { length: "long", temperature: 0.2 });
  assert.deepEqual(await store.settings(5), { length: "long", temperature: 0.2 });

  // A chat's turns run one at a time, in order.
  const order: string[] = [];
  const slow = store.inChatTurn(9, 100, async () => {
    order.push("first in");
    await new Promise((r) => setTimeout(r, 50));
    order.push("first out");
  });
  while (order.length === 0) await new Promise((r) => setTimeout(r, 5));
  await Promise.all([slow, store.inChatTurn(9, 101, () => Promise.resolve(order.push("second")))]);
  assert.deepEqual(order, ["first in", "first out", "second"]);
}

Deno.test("the Deno KV store keeps the store contract", async () => {
  const store = await openChatStore(":memory:", defaults);
  try {
    await contract(store);
  } finally {
    await store.close();
  }
});

Deno.test({
  name: "the PostgreSQL store keeps the store contract, with a versioned schema",
  ignore,
  async fn() {
    const url = requirePostgres(started).url;
    const store = await openPostgresStore(url, defaults);
    const admin = postgres(url, { onnotice: () => {} });
    try {
      await contract(store);
      // Opening again (another replica) runs no migration twice.
      const again = await openPostgresStore(url, defaults);
      await again.close();
      const [row] = await admin`SELECT version FROM bot_schema`;
      assert.equal(row.version, MIGRATIONS.length);
      // A database from a newer bot is refused, naming the store and the versions.
      await admin`UPDATE bot_schema SET version = ${MIGRATIONS.length + 1}`;
      await assert.rejects(
        openPostgresStore(url, defaults),
        /--store postgres:\/\/postgres@127\.0\.0\.1:\d+\/postgres: .*schema version 2, newer than this bot's 1/,
      );
      await admin`UPDATE bot_schema SET version = ${MIGRATIONS.length}`;
    } finally {
      await store.close();
      await admin.end();
    }
  },
});

Deno.test({
  name: "an unreachable PostgreSQL is a clear error naming the store, without the password",
  ignore,
  async fn() {
    const pg = requirePostgres(started);
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    await assert.rejects(
      openPostgresStore(`postgres://bot:hunter2@127.0.0.1:${port}/bot`, defaults),
      (e: Error) => {
        assert.match(
          e.message,
          /--store postgres:\/\/bot:\*\*\*@127\.0\.0\.1:\d+\/bot: cannot open/,
        );
        assert.ok(!e.message.includes("hunter2"));
        return true;
      },
    );
    await pg.stop();
  },
});
