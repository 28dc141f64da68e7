/**
 * The MedGLM Telegram bot: grammY wiring of commands, admission control (allowlist, group
 * addressing, rate limits, concurrency cap), per-chat history in KV and streamed answers.
 */
import { Bot, type Context, GrammyError, type PollingOptions } from "npm:grammy@1.46.0/web";
import type { Update, UserFromGetMe } from "npm:grammy@1.46.0/types";
import type { Engine } from "../serve/engine/types.ts";
import { PromptTooLongError } from "../serve/engine/types.ts";
import { BUILTIN_GENERATION_DEFAULTS } from "../serve/engine/generation_defaults.ts";
import { isAddressed, isCommandForMe, stripMentions } from "./addressing.ts";
import { paceTransformer } from "./api_pace.ts";
import { anySignal, grammySignal, retryTransformer, sleep } from "./api_retry.ts";
import { createKeyedQueue, createRateLimiter, createSemaphore, type RateLimit } from "./limits.ts";
import { buildMessages, historyFits } from "./history_prompt.ts";
import { runPolling } from "./polling.ts";
import { applySettingsCommand, checkSettings } from "./settings_command.ts";
import {
  ANSWER_LENGTHS,
  type AnswerLength,
  type ChatSettings,
  type ChatStore,
  openChatStore,
} from "./store.ts";
import { type ChatPace, streamReply } from "./stream_reply.ts";
import * as texts from "./texts.ts";
import { checkSecretToken, createWebhookApp } from "./webhook.ts";

export type LogLevel = "info" | "warn" | "error";

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

export interface BotStats {
  /** Generations running now. */
  active: number;
  /** Questions waiting for a generation slot. */
  waiting: number;
  /** Chats with queued or running work. */
  busyChats: number;
  answered: number;
  failed: number;
}

/**
 * The grammY bot itself, with its middleware installed, and:
 * - `start(options?)` polls with our loop (network back-off, cancellable waits); like grammY's, it
 *   resolves only when polling ends (use `onStart` to know when it runs);
 * - `stop()` also aborts running answers, waits for them and closes the KV database.
 */
export type MedBot = Bot & {
  /** Webhook mode: registers the webhook and serves it; resolves with the listening port. */
  startWebhook(): Promise<{ port: number }>;
  /** The webhook endpoint as a fetch handler (to serve it inside another app). */
  handleWebhook(req: Request): Promise<Response>;
  /** Settles when polling or the webhook server stops; rejects on a fatal polling error. */
  readonly finished: Promise<void>;
  stats(): BotStats;
};

const ALLOWED_UPDATES = ["message"];

/**
 * Creates the bot and starts opening its KV database. Nothing talks to Telegram until `start()` or
 * `startWebhook()`. The engine stays the caller's to close. (Returns the bot itself, not a
 * promise; `await createBot(...)` works too.)
 */
export function createBot(engine: Engine, options: BotOptions): MedBot {
  if (!options.token) throw new Error("createBot: options.token is empty");
  const token = options.token;
  const userLog = options.log ??
    ((level: LogLevel, msg: string) => console.error(`[bot] ${level}: ${msg}`));
  const log = (level: LogLevel, msg: string) => userLog(level, msg.replaceAll(token, "<token>"));

  const editIntervalMs = options.editIntervalMs ?? 1000;
  const groupEditIntervalMs = Math.max(editIntervalMs, options.groupEditIntervalMs ?? 3000);
  const intervalFor = (ctx: Context) =>
    ctx.chat?.type === "group" || ctx.chat?.type === "supergroup"
      ? groupEditIntervalMs
      : editIntervalMs;
  const maxHistoryTurns = options.maxHistoryTurns ?? 8;
  const maxHistoryTokens = options.maxHistoryTokens ?? 1024;
  const maxQueued = options.maxQueued ?? 64;
  const allow = new Set(options.allow ?? []);
  const lengths = { ...ANSWER_LENGTHS, ...options.answerLengths };
  const defaults: ChatSettings = {
    length: options.defaultSettings?.length ?? "medium",
    // The engine's generation defaults, as every front end uses (its server's, for a remote one).
    temperature: options.defaultSettings?.temperature ?? engine.info.defaults?.temperature ??
      BUILTIN_GENERATION_DEFAULTS.temperature,
  };
  checkSettings(defaults);
  if (options.webhook) checkSecretToken(options.webhook.secret);

  const storeReady: Promise<ChatStore> = openChatStore(options.kvPath ?? ":memory:", defaults);
  // Reported by start()/startWebhook() and by each answer; not an unhandled rejection here.
  storeReady.catch(() => {});
  const stopping = new AbortController();
  const rateLimiter = createRateLimiter(options.rateLimit ?? { max: 10, windowMs: 60_000 });
  const slots = createSemaphore(options.maxConcurrent ?? 4);
  const paces = new Map<number, ChatPace>();
  const counters = { answered: 0, failed: 0 };
  const chatQueue = createKeyedQueue((chatId, err) => {
    // Work cut short by stop() is not a failure worth a log line.
    if (stopping.signal.aborted) return;
    counters.failed++;
    log("error", `chat ${chatId}: ${describe(err)}`);
  });

  const bot = new Bot(token, {
    botInfo: options.botInfo,
    client: { apiRoot: options.apiRoot },
  });
  // The last transformer installed runs first: each retry also waits for its turn in the pace.
  bot.api.config.use(paceTransformer(options.maxMessagesPerSecond ?? 25, stopping.signal));
  bot.api.config.use(retryTransformer({
    ...options.retry,
    signal: stopping.signal,
    onRetry: (r) => log("warn", `${r.method}: ${r.reason}; retrying in ${r.waitMs} ms`),
  }));

  const paceOf = (chatId: number) => {
    let pace = paces.get(chatId);
    if (!pace) {
      if (paces.size > 10_000) paces.clear();
      paces.set(chatId, pace = { lastCallAt: -Infinity });
    }
    return pace;
  };

  /** Sends a plain-text message, at most one call per `editIntervalMs` in the chat. */
  const say = async (ctx: Context, text: string) => {
    const chatId = ctx.chat!.id;
    const pace = paceOf(chatId);
    const gap = pace.lastCallAt + intervalFor(ctx) - performance.now();
    if (gap > 0) await sleep(gap, stopping.signal);
    try {
      await ctx.api.sendMessage(chatId, text, replyTo(ctx));
    } finally {
      pace.lastCallAt = performance.now();
    }
  };
  /** Sends a short notice in the chat's turn (after what the chat is already waiting for). */
  const notice = (ctx: Context, text: string) =>
    chatQueue.run(ctx.chat!.id, async () => {
      if (!stopping.signal.aborted) await say(ctx, text);
    });

  // --- admission: groups only when addressed, then the allowlist ---
  bot.on("message", async (ctx, next) => {
    const msg = ctx.message;
    if (!ctx.from || ctx.from.is_bot) return;
    const isGroup = ctx.chat.type === "group" || ctx.chat.type === "supergroup";
    if (isGroup && !isCommandForMe(msg, ctx.me) && !isAddressed(msg, ctx.me)) return;
    if (allow.size > 0 && !allow.has(ctx.from.id)) {
      log("info", `refused user ${ctx.from.id} (not on the allowlist)`);
      // Strangers share the rate limit, so a flood of messages gets one refusal, not a flood.
      if (rateLimiter.take(ctx.from.id).ok) notice(ctx, texts.REFUSAL_TEXT);
      return;
    }
    await next();
  });

  bot.command("start", (ctx) => notice(ctx, texts.startText(engine.info.model)));
  bot.command("help", (ctx) => notice(ctx, texts.HELP_TEXT));
  bot.command("reset", (ctx) =>
    chatQueue.run(ctx.chat.id, async () => {
      await (await storeReady).clearHistory(ctx.chat.id);
      await say(ctx, texts.RESET_TEXT);
    }));
  bot.command("settings", (ctx) =>
    chatQueue.run(ctx.chat.id, async () => {
      const store = await storeReady;
      const current = await store.settings(ctx.chat.id);
      const [reply, updated] = applySettingsCommand(current, ctx.match, lengths);
      if (updated) await store.saveSettings(ctx.chat.id, updated);
      await say(ctx, reply);
    }));

  bot.on("message:text", (ctx) => {
    const text = ctx.message.text;
    // Commands of other bots, or ones we do not know.
    if (text.startsWith("/")) {
      if (ctx.chat.type === "private") notice(ctx, texts.HELP_TEXT);
      return;
    }
    const question = stripMentions(ctx.message, ctx.me).trim();
    if (!question) {
      notice(ctx, texts.HELP_TEXT);
      return;
    }
    const verdict = rateLimiter.take(ctx.from.id);
    if (!verdict.ok) {
      if (verdict.first) notice(ctx, texts.rateLimitedText(Math.ceil(verdict.retryInMs / 1000)));
      return;
    }
    if (slots.waiting >= maxQueued) {
      notice(ctx, texts.BUSY_TEXT);
      return;
    }
    chatQueue.run(ctx.chat.id, () => answer(ctx, question));
  });

  bot.on("message", (ctx) => {
    if (ctx.chat.type === "private") notice(ctx, texts.NOT_TEXT);
  });

  async function answer(ctx: Context, question: string): Promise<void> {
    if (stopping.signal.aborted) return;
    const chatId = ctx.chat!.id;
    const store = await storeReady;
    const settings = await store.settings(chatId);
    // A small model's context may be shorter than the chosen length (servers refuse that).
    const maxNewTokens = Math.min(lengths[settings.length], engine.info.maxContext);
    const bounds = { maxTurns: maxHistoryTurns, maxTokens: maxHistoryTokens };
    const messages = buildMessages(engine, await store.history(chatId), question, {
      ...bounds,
      maxNewTokens,
      systemPrompt: options.systemPrompt,
    });
    const own = new AbortController();
    const generation = {
      signal: anySignal(own.signal, stopping.signal)!,
      abort: (reason?: unknown) => own.abort(reason),
    };
    let release: (() => void) | undefined;
    try {
      if (slots.active >= (options.maxConcurrent ?? 4)) {
        // Waiting for a slot: let the user see that the bot is on it.
        await ctx.api.sendChatAction(chatId, "typing").catch(() => {});
      }
      release = await slots.acquire(stopping.signal);
      const deltas = engine.generate({
        messages,
        maxNewTokens,
        temperature: settings.temperature,
        signal: generation.signal,
      });
      const result = await streamReply(deltas, {
        api: ctx.api,
        chatId,
        replyTo: replyTo(ctx)?.reply_parameters.message_id,
        pace: paceOf(chatId),
        editIntervalMs: intervalFor(ctx),
        typingIntervalMs: options.typingIntervalMs,
        generation,
        stopSignal: stopping.signal,
        emptyText: texts.EMPTY_ANSWER_TEXT,
        log: (m) => log("warn", m),
      });
      release();
      release = undefined;
      if (result.finishReason === "abort" || !result.text.trim()) return;
      await store.addTurn(chatId, { user: question, assistant: result.text, at: Date.now() }, {
        maxTurns: maxHistoryTurns,
        fits: (turns) => historyFits(engine, turns, bounds),
      });
      counters.answered++;
    } catch (err) {
      if (stopping.signal.aborted) return;
      if (err instanceof GrammyError && err.error_code === 403) {
        log("warn", `chat ${chatId}: cannot write (${err.description}); answer dropped`);
        counters.failed++;
        return;
      }
      const tooLong = isPromptTooLong(err);
      if (!tooLong) log("error", `chat ${chatId}: ${describe(err)}`);
      const reply = tooLong ? texts.TOO_LONG_TEXT : texts.FAILED_TEXT;
      counters.failed++;
      await say(ctx, reply).catch((e) =>
        log("warn", `chat ${chatId}: could not report the failure: ${describe(e)}`)
      );
    } finally {
      release?.();
    }
  }

  const handleUpdate = (update: Update) => bot.handleUpdate(update);

  let finishedResolve!: () => void;
  let finishedReject!: (e: unknown) => void;
  const finished = new Promise<void>((res, rej) => {
    finishedResolve = res;
    finishedReject = rej;
  });
  // A caller that never awaits `finished` must not see an unhandled rejection.
  finished.catch(() => {});
  let polling: Promise<void> | undefined;
  let pollingDone = false;
  let server: Deno.HttpServer | undefined;
  let webhookApp: ReturnType<typeof createWebhookApp> | undefined;
  let started = false;

  async function init() {
    if (started) throw new Error("the bot is already started");
    if (stopping.signal.aborted) throw new Error("the bot was stopped; create a new one");
    started = true;
    await storeReady;
    try {
      await bot.init(grammySignal(stopping.signal));
    } catch (err) {
      started = false;
      if (err instanceof GrammyError && err.error_code === 401) {
        throw new Error(
          "Telegram rejected the bot token (401 Unauthorized): check TELEGRAM_BOT_TOKEN with @BotFather",
        );
      }
      throw err;
    }
    if (options.setCommands) {
      await bot.api.setMyCommands([
        { command: "start", description: "介绍与免责声明 About and disclaimer" },
        { command: "help", description: "帮助 Help" },
        { command: "reset", description: "清空对话 Forget the conversation" },
        { command: "settings", description: "回答长度与温度 Answer length, temperature" },
      ]).catch((e) => log("warn", `setMyCommands failed: ${describe(e)}`));
    }
  }

  function webhookHandler(): ReturnType<typeof createWebhookApp> {
    if (!options.webhook) throw new Error("createBot: no webhook options given");
    webhookApp ??= createWebhookApp({
      path: options.webhook.path ?? (new URL(options.webhook.url).pathname || "/"),
      secret: options.webhook.secret,
      onUpdate: handleUpdate,
      log,
    });
    return webhookApp;
  }

  async function start(pollOptions?: PollingOptions): Promise<void> {
    if (polling && !pollingDone) return;
    await init();
    await bot.api.deleteWebhook(
      { drop_pending_updates: pollOptions?.drop_pending_updates },
      grammySignal(stopping.signal),
    );
    if (stopping.signal.aborted) return;
    log("info", `@${bot.botInfo.username} is polling for updates`);
    await pollOptions?.onStart?.(bot.botInfo);
    polling = runPolling(bot, {
      timeoutSeconds: pollOptions?.timeout ?? options.pollingTimeoutSeconds ?? 30,
      limit: pollOptions?.limit,
      allowedUpdates: [...(pollOptions?.allowed_updates ?? ALLOWED_UPDATES)],
      signal: stopping.signal,
      onUpdate: handleUpdate,
      log,
    }).finally(() => pollingDone = true);
    polling.then(finishedResolve, finishedReject);
    await polling;
  }

  async function startWebhook(): Promise<{ port: number }> {
    const app = webhookHandler();
    await init();
    const wh = options.webhook!;
    await bot.api.setWebhook(wh.url, {
      secret_token: wh.secret,
      // deno-lint-ignore no-explicit-any
      allowed_updates: ALLOWED_UPDATES as any,
    }, grammySignal(stopping.signal));
    const listening = Promise.withResolvers<number>();
    server = Deno.serve({
      hostname: wh.hostname ?? "0.0.0.0",
      port: wh.port ?? 8443,
      signal: stopping.signal,
      onListen: (addr) => listening.resolve(addr.port),
    }, app.fetch);
    server.finished.then(finishedResolve, finishedReject);
    const port = await listening.promise;
    log("info", `@${bot.botInfo.username} takes webhook updates on port ${port}`);
    return { port };
  }

  let stopped: Promise<void> | undefined;
  /** Idempotent: every caller waits for the same, complete shutdown. */
  function stop(): Promise<void> {
    return stopped ??= shutdown();
  }

  async function shutdown(): Promise<void> {
    stopping.abort(new Error("the bot is stopping"));
    try {
      await polling;
    } catch { /* reported through `finished` */ }
    await server?.finished;
    await chatQueue.drain();
    try {
      (await storeReady).close();
    } catch { /* it never opened */ }
    if (!polling && !server) finishedResolve();
  }

  return Object.assign(bot, {
    start,
    stop,
    isRunning: () => polling !== undefined && !pollingDone,
    startWebhook,
    async handleWebhook(req: Request) {
      if (!bot.isInited()) await bot.init(grammySignal(stopping.signal));
      return await webhookHandler().fetch(req);
    },
    finished,
    stats: (): BotStats => ({
      active: slots.active,
      waiting: slots.waiting,
      busyChats: chatQueue.depth.size,
      ...counters,
    }),
  });
}

function replyTo(ctx: Context) {
  // In groups the answer quotes the question, so people see whom it answers.
  const isGroup = ctx.chat?.type === "group" || ctx.chat?.type === "supergroup";
  if (!isGroup || !ctx.message) return undefined;
  return {
    reply_parameters: { message_id: ctx.message.message_id, allow_sending_without_reply: true },
  };
}

/** By name too: an engine loaded from another URL has its own copy of the class. */
function isPromptTooLong(err: unknown): boolean {
  return err instanceof PromptTooLongError ||
    (err instanceof Error && err.name === "PromptTooLongError");
}

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}
