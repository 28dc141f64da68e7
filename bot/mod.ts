// @medglm/bot: the grammY Telegram bot over the engine (in-process or an OpenAI-compatible endpoint).
export { createBot } from "./bot.ts";
export type { BotOptions, BotStats, LogLevel, MedBot, WebhookOptions } from "./bot.ts";
export { connectOpenAIEngine, createOpenAIEngine } from "./openai_engine.ts";
export type { OpenAIEngineOptions } from "./openai_engine.ts";
export { splitMessage } from "./split_text.ts";
export { main as botMain, parseBotArgs } from "./cli.ts";
