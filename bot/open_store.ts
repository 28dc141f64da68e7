/** Picks the store for a spec: a PostgreSQL URL, else a Deno KV file path (or ":memory:"). */
import { type BotStore, type ChatSettings, openChatStore } from "./store.ts";
import { isPostgresUrl, openPostgresStore } from "./store_postgres.ts";

export function openBotStore(spec: string, defaults: ChatSettings): Promise<BotStore> {
  return isPostgresUrl(spec) ? openPostgresStore(spec, defaults) : openChatStore(spec, defaults);
}
