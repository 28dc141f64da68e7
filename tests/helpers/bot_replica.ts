/**
 * One bot replica as its own process, for tests that kill a replica mid-answer: webhook mode on
 * 127.0.0.1 (a free port), the store given (PostgreSQL), the scripted engine. Prints
 * `PORT <n>` once it listens, then runs until it is killed.
 *
 *   deno run --allow-all tests/helpers/bot_replica.ts '{"token":...,"apiRoot":...,"store":...}'
 */
import { createBot } from "../../bot/bot.ts";
import { createScriptedEngine } from "./scripted_engine.ts";

export interface ReplicaConfig {
  token: string;
  apiRoot: string;
  store: string;
  replicaId: string;
  secret: string;
  claimTtlMs: number;
  /** The scripted engine's pace. */
  chunkChars: number;
  delayMs: number;
}

if (import.meta.main) {
  const cfg = JSON.parse(Deno.args[0]) as ReplicaConfig;
  const engine = createScriptedEngine({ chunkChars: cfg.chunkChars, delayMs: cfg.delayMs });
  const bot = createBot(engine, {
    token: cfg.token,
    apiRoot: cfg.apiRoot,
    store: cfg.store,
    replicaId: cfg.replicaId,
    claimTtlMs: cfg.claimTtlMs,
    editIntervalMs: 20,
    maxMessagesPerSecond: 1000,
    webhook: {
      url: "https://bot.example.org/hook",
      secret: cfg.secret,
      port: 0,
      hostname: "127.0.0.1",
    },
    log: (level, msg) => console.error(`[${cfg.replicaId}] ${level}: ${msg}`),
  });
  const { port } = await bot.startWebhook();
  console.log(`PORT ${port}`);
  await bot.finished;
}
