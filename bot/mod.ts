// @medglm/bot: the grammY Telegram bot over the engine (in-process, an OpenAI-compatible endpoint
// or a pool of them), its history and state in a Deno KV file or in PostgreSQL shared by replicas.
export { createBot } from "./bot.ts";
export type { BotOptions, BotStats, LogLevel, MedBot, WebhookOptions } from "./bot.ts";
export { connectOpenAIEngine, createOpenAIEngine } from "./openai_engine.ts";
export type { OpenAIEngineOptions } from "./openai_engine.ts";
export { connectEndpointPool, createEndpointPool } from "./endpoint_pool.ts";
export type { EndpointPoolOptions, PoolMemberStatus } from "./endpoint_pool.ts";
export { openChatStore } from "./store.ts";
export type { BotStore, ChatSettings, Claim, Turn } from "./store.ts";
export { openPostgresStore } from "./store_postgres.ts";
export { openBotStore } from "./open_store.ts";
export { splitMessage } from "./split_text.ts";
export { main as botMain, parseBotArgs } from "./cli.ts";
