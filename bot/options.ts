/** The bot's options (what `createBot` takes). */
import type { UserFromGetMe } from "npm:grammy@1.46.0/types";
import type { LogLevel } from "./context.ts";
import type { RateLimit } from "./limits.ts";
import type { AnswerLength, ChatSettings } from "./store.ts";

export interface WebhookOptions {
  /** Public HTTPS URL Telegram posts to (registered with setWebhook). */
  url: string;
  /** Secret Telegram sends back in X-Telegram-Bot-Api-Secret-Token. */
  secret: string;
  /** Local port to listen on (0 picks a free one). Default 8443. */
  port?: number;
  hostname?: string;
  /** Path to accept updates on; default: the path of `url`. */
  path?: string;
}

export interface BotOptions {
  /** The bot token from @BotFather (the CLI reads it from TELEGRAM_BOT_TOKEN only). */
  token: string;
  /** Bot API server, default https://api.telegram.org (tests pass their fake's address). */
  apiRoot?: string;
  /** Deno KV database file for history and settings; default an in-memory database. */
  kvPath?: string;
  /**
   * A PostgreSQL URL (`postgres://user@host/db`): history, settings, rate limits and handled
   * updates live there, shared by every replica; overrides `kvPath`.
   */
  store?: string;
  /** This replica's name on update claims; default a random id. */
  replicaId?: string;
  /** A claim on an update lapses this long after its holder stops renewing it; default 30 s. */
  claimTtlMs?: number;
  /** How long a re-delivered update waits for the live replica that handles it; default 25 s. */
  busyWaitMs?: number;
  /** A user off the allowlist is told so at most once per this many ms; default 10 minutes. */
  refusalIntervalMs?: number;
  /** User ids allowed to use the bot; empty or absent allows everyone. */
  allow?: number[];
  /** Questions per user; default 10 per minute. */
  rateLimit?: RateLimit;
  /** Generations running at once across all chats; default 4. */
  maxConcurrent?: number;
  /** Questions waiting for a generation slot before new ones are turned away; default 64. */
  maxQueued?: number;
  /** Minimum time between sends/edits in one chat; default 1000 ms (Telegram's limit). */
  editIntervalMs?: number;
  /** The same in groups, where Telegram allows about 20 messages a minute; default 3000 ms. */
  groupEditIntervalMs?: number;
  /** Sends and edits across all chats; default 25 a second (Telegram allows about 30). */
  maxMessagesPerSecond?: number;
  typingIntervalMs?: number;
  /** History kept and sent with each question: at most this many turns... */
  maxHistoryTurns?: number;
  /** ...and at most this many prompt tokens (as the engine counts them). */
  maxHistoryTokens?: number;
  /** `maxNewTokens` of each answer length; default short 128, medium 512, long 2048. */
  answerLengths?: Partial<Record<AnswerLength, number>>;
  /** Settings of a chat that has not chosen any. */
  defaultSettings?: Partial<ChatSettings>;
  /** Optional system message put before every conversation. */
  systemPrompt?: string;
  /** Long-poll timeout in seconds; default 30. */
  pollingTimeoutSeconds?: number;
  webhook?: WebhookOptions;
  /** Register /start, /help, /reset, /settings with setMyCommands on start. */
  setCommands?: boolean;
  /** Known bot identity; skips getMe. */
  botInfo?: UserFromGetMe;
  /** Retry policy for Telegram calls. */
  retry?: { maxAttempts?: number; maxRetryAfterSeconds?: number; initialBackoffMs?: number };
  /** Default: prints to stderr. The token is redacted from every message either way. */
  log?: (level: LogLevel, msg: string) => void;
}
