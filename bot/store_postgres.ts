/**
 * The bot's store in PostgreSQL, shared by every bot replica: history, settings, rate-limit
 * counters and handled update ids in tables, a chat's turn as a session advisory lock (the server
 * drops it when the holder's connection dies, so a killed replica never leaves a chat stuck). The
 * schema is created and migrated at start, one numbered step at a time, under a lock so that
 * replicas starting together do not race.
 */
import postgres from "npm:postgres@3.4.10";
import type { RateLimit } from "./limits.ts";
import {
  type BotStore,
  type ChatSettings,
  type Claim,
  claimedWith,
  DONE_UPDATE_TTL_MS,
  MAX_STORED_CHARS,
  rateStep,
  type RateVerdict,
  type Turn,
} from "./store.ts";
import { sleep } from "./api_retry.ts";

/** Each step runs once, in order; `bot_schema.version` says how many have run. Append only. */
export const MIGRATIONS: string[] = [
  `CREATE TABLE bot_turns (
     chat_id BIGINT NOT NULL,
     seq BIGSERIAL NOT NULL,
     user_text TEXT NOT NULL,
     assistant_text TEXT NOT NULL,
     at BIGINT NOT NULL,
     PRIMARY KEY (chat_id, seq));
   CREATE TABLE bot_settings (chat_id BIGINT PRIMARY KEY, settings JSONB NOT NULL);
   CREATE TABLE bot_rate (
     key TEXT PRIMARY KEY,
     hits DOUBLE PRECISION[] NOT NULL,
     warned BOOLEAN NOT NULL,
     expires DOUBLE PRECISION NOT NULL);
   CREATE TABLE bot_updates (
     update_id BIGINT PRIMARY KEY,
     chat_id BIGINT NOT NULL,
     state TEXT NOT NULL CHECK (state IN ('claimed', 'done')),
     owner TEXT NOT NULL,
     expires DOUBLE PRECISION NOT NULL,
     reply_message_id BIGINT,
     touched DOUBLE PRECISION NOT NULL);
   CREATE INDEX bot_updates_chat ON bot_updates (chat_id, update_id) WHERE state = 'claimed';`,
];

/** Advisory-lock key space of this bot (first int of the two-int form): "MGLM". */
const LOCK_SPACE = 0x4d474c4d;
/** The key of the lock that serializes migrations. */
const MIGRATION_LOCK = 0x4d474c4e;

/** `postgres://` or `postgresql://` URLs name a PostgreSQL store. */
export function isPostgresUrl(spec: string): boolean {
  return /^postgres(ql)?:\/\//i.test(spec);
}

/** Fits a chat id into the int4 of the two-int advisory lock (ids are up to 52 bits). */
function lockKey(chatId: number): number {
  const lo = chatId % 0x1_0000_0000;
  const hi = Math.floor(chatId / 0x1_0000_0000);
  return (lo ^ Math.imul(hi, 0x9e3779b1)) | 0;
}

export interface PostgresStoreOptions {
  /** Connections for queries; default 10. */
  maxConnections?: number;
  /**
   * Connections for chat turns: each chat in its turn (or waiting for it) holds one; more chats
   * wait for a connection. Default 30. Replicas × (10 + 30) must fit the server's max_connections.
   */
  maxTurnConnections?: number;
  /** How often a waiting turn looks again for earlier unfinished updates of the chat. */
  turnPollMs?: number;
}

export async function openPostgresStore(
  url: string,
  defaults: ChatSettings,
  opts: PostgresStoreOptions = {},
): Promise<BotStore> {
  const where = redact(url);
  const sql = postgres(url, {
    max: opts.maxConnections ?? 10,
    onnotice: () => {},
    // A dead server or network must not hang the bot forever.
    connect_timeout: 10,
  });
  // A pool of its own, so that turns holding their locks never starve the queries made inside them.
  const locks = postgres(url, {
    max: opts.maxTurnConnections ?? 30,
    onnotice: () => {},
    connect_timeout: 10,
  });
  try {
    await migrate(sql);
  } catch (err) {
    await sql.end({ timeout: 1 }).catch(() => {});
    await locks.end({ timeout: 1 }).catch(() => {});
    throw new Error(
      `--store ${where}: cannot open the PostgreSQL store: ${(err as Error).message}`,
    );
  }
  const turnPollMs = opts.turnPollMs ?? 50;
  let lastPrune = 0;

  async function pruneDone(now: number) {
    if (now - lastPrune < 3600_000) return;
    lastPrune = now;
    await sql`DELETE FROM bot_updates WHERE state = 'done' AND touched < ${
      now - DONE_UPDATE_TTL_MS
    }`;
    await sql`DELETE FROM bot_rate WHERE expires < ${now}`;
  }

  return {
    kind: "postgres",
    async history(chatId) {
      const rows = await sql`SELECT user_text, assistant_text, at FROM bot_turns
        WHERE chat_id = ${chatId} ORDER BY seq`;
      return rows.map((r) => ({
        user: r.user_text,
        assistant: r.assistant_text,
        at: Number(r.at),
      }));
    },
    async addTurn(chatId, turn, bounds) {
      // Called in the chat's turn, so nobody else changes this chat's rows meanwhile.
      const stored: Turn = {
        user: turn.user.slice(0, MAX_STORED_CHARS),
        assistant: turn.assistant.slice(0, MAX_STORED_CHARS),
        at: turn.at,
      };
      await sql`INSERT INTO bot_turns (chat_id, user_text, assistant_text, at)
        VALUES (${chatId}, ${stored.user}, ${stored.assistant}, ${stored.at})`;
      const rows = await sql`SELECT seq, user_text, assistant_text, at FROM bot_turns
        WHERE chat_id = ${chatId} ORDER BY seq`;
      const turns: Turn[] = rows.map((r) => ({
        user: r.user_text,
        assistant: r.assistant_text,
        at: Number(r.at),
      }));
      let drop = Math.max(0, turns.length - bounds.maxTurns);
      while (drop < turns.length && !bounds.fits(turns.slice(drop))) drop++;
      if (drop > 0) {
        await sql`DELETE FROM bot_turns WHERE chat_id = ${chatId} AND seq <= ${rows[drop - 1].seq}`;
      }
    },
    async clearHistory(chatId) {
      await sql`DELETE FROM bot_turns WHERE chat_id = ${chatId}`;
    },
    async settings(chatId) {
      const [row] = await sql`SELECT settings FROM bot_settings WHERE chat_id = ${chatId}`;
      return { ...defaults, ...(row?.settings ?? {}) };
    },
    async saveSettings(chatId, settings) {
      await sql`INSERT INTO bot_settings (chat_id, settings) VALUES (${chatId}, ${
        sql.json(
          // deno-lint-ignore no-explicit-any
          settings as any,
        )
      })
        ON CONFLICT (chat_id) DO UPDATE SET settings = EXCLUDED.settings`;
    },
    takeRate(key: string, limit: RateLimit): Promise<RateVerdict> {
      return sql.begin(async (tx) => {
        const now = Date.now();
        await tx`INSERT INTO bot_rate (key, hits, warned, expires)
          VALUES (${key}, '{}', false, ${now + limit.windowMs}) ON CONFLICT (key) DO NOTHING`;
        const [row] = await tx`SELECT hits, warned FROM bot_rate WHERE key = ${key} FOR UPDATE`;
        const step = rateStep((row.hits as number[]).map(Number), row.warned, limit, now);
        await tx`UPDATE bot_rate SET hits = ${step.hits}, warned = ${step.warned},
          expires = ${now + limit.windowMs} WHERE key = ${key}`;
        return step.verdict;
      }) as Promise<RateVerdict>;
    },
    async claimUpdate(updateId, chatId, owner, ttlMs): Promise<Claim> {
      const now = Date.now();
      pruneDone(now).catch(() => {});
      // One statement: insert, or take over a claim that lapsed.
      const [taken] = await sql`INSERT INTO bot_updates
          (update_id, chat_id, state, owner, expires, touched)
        VALUES (${updateId}, ${chatId}, 'claimed', ${owner}, ${now + ttlMs}, ${now})
        ON CONFLICT (update_id) DO UPDATE
          SET owner = EXCLUDED.owner, expires = EXCLUDED.expires, touched = EXCLUDED.touched
          WHERE bot_updates.state = 'claimed' AND bot_updates.expires < ${now}
        RETURNING reply_message_id`;
      if (taken) {
        const reply = taken.reply_message_id;
        return claimedWith(reply === null ? undefined : Number(reply));
      }
      const [row] = await sql`SELECT state FROM bot_updates WHERE update_id = ${updateId}`;
      return row?.state === "done" ? { state: "done" } : { state: "busy" };
    },
    async renewClaims(updateIds, owner, ttlMs) {
      if (updateIds.length === 0) return;
      const now = Date.now();
      await sql`UPDATE bot_updates SET expires = ${now + ttlMs}, touched = ${now}
        WHERE update_id = ANY(${updateIds}::bigint[]) AND owner = ${owner} AND state = 'claimed'`;
    },
    async noteReply(updateId, owner, messageId) {
      await sql`UPDATE bot_updates SET reply_message_id = ${messageId}
        WHERE update_id = ${updateId} AND owner = ${owner} AND state = 'claimed'`;
    },
    async finishUpdate(updateId, owner) {
      await sql`UPDATE bot_updates SET state = 'done', touched = ${Date.now()}
        WHERE update_id = ${updateId} AND owner = ${owner}`;
    },
    async releaseUpdate(updateId, owner) {
      await sql`UPDATE bot_updates SET expires = 0
        WHERE update_id = ${updateId} AND owner = ${owner} AND state = 'claimed'`;
    },
    async inChatTurn(chatId, updateId, fn) {
      // The lock lives on one connection, held for the whole turn; if this process dies the
      // server sees the connection close and frees the lock.
      const conn = await locks.reserve();
      const key = lockKey(chatId);
      try {
        for (;;) {
          await conn`SELECT pg_advisory_lock(${LOCK_SPACE}, ${key})`;
          // Earlier updates of this chat that another live replica holds go first.
          const [earlier] = await conn`SELECT 1 AS x FROM bot_updates
            WHERE chat_id = ${chatId} AND update_id < ${updateId} AND state = 'claimed'
              AND expires > ${Date.now()} LIMIT 1`;
          if (!earlier) break;
          await conn`SELECT pg_advisory_unlock(${LOCK_SPACE}, ${key})`;
          await sleep(turnPollMs);
        }
        try {
          return await fn();
        } finally {
          await conn`SELECT pg_advisory_unlock(${LOCK_SPACE}, ${key})`.catch(() => {});
        }
      } finally {
        conn.release();
      }
    },
    async close() {
      // Running queries get a few seconds to finish, then the connections close.
      await Promise.all([sql.end({ timeout: 5 }), locks.end({ timeout: 5 })]).catch(() => {});
    },
  };
}

async function migrate(sql: postgres.Sql): Promise<void> {
  await sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`;
    await tx`CREATE TABLE IF NOT EXISTS bot_schema (version INTEGER NOT NULL)`;
    const [row] = await tx`SELECT version FROM bot_schema`;
    const version = row ? Number(row.version) : 0;
    if (!row) await tx`INSERT INTO bot_schema (version) VALUES (0)`;
    if (version > MIGRATIONS.length) {
      throw new Error(
        `the database has schema version ${version}, newer than this bot's ` +
          `${MIGRATIONS.length}: update the bot`,
      );
    }
    for (let v = version; v < MIGRATIONS.length; v++) {
      await tx.unsafe(MIGRATIONS[v]);
      await tx`UPDATE bot_schema SET version = ${v + 1}`;
    }
  });
}

/** The URL without its password, for messages. */
export function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(an unparsable URL)";
  }
}
