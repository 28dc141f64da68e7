/**
 * The MedGLM Telegram bot: options, lifecycle (long polling or webhook, stop) and the wiring of the
 * middleware files (admission, commands, settings, questions in bot/middleware/) over the store.
 * Each update goes through `update_flow.ts` (claimed once, answered in its chat's turn, then
 * marked done), so that several replicas on one PostgreSQL store answer every update once.
 */
import { Bot, GrammyError, type PollingOptions } from "npm:grammy@1.46.0/web";
import type { Update } from "npm:grammy@1.46.0/types";
import { BUILTIN_GENERATION_DEFAULTS, type Engine } from "../serve/mod.ts";
import { paceTransformer } from "./api_pace.ts";
import { grammySignal, retryTransformer } from "./api_retry.ts";
import { describe, type LogLevel, type MedContext, type UpdateWork } from "./context.ts";
import { admission } from "./middleware/admission.ts";
import { commands } from "./middleware/commands.ts";
import { questions } from "./middleware/questions.ts";
import { settings } from "./middleware/settings.ts";
import type { BotOptions } from "./options.ts";
import { runPolling } from "./polling.ts";
import { createServices } from "./services.ts";
import { checkSettings } from "./settings_command.ts";
import type { BotStore, ChatSettings } from "./store.ts";
import { openBotStore } from "./open_store.ts";
import { createUpdateFlow, type UpdateOutcome } from "./update_flow.ts";
import { checkSecretToken, createWebhookApp } from "./webhook.ts";

export type { LogLevel };
export type { BotOptions, WebhookOptions } from "./options.ts";

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
 * - `stop()` also aborts running answers, waits for them and closes the store.
 */
export type MedBot = Bot<MedContext> & {
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
 * Creates the bot and starts opening its store (the KV file, or PostgreSQL with `store`). Nothing
 * talks to Telegram until `start()` or `startWebhook()`. The engine stays the caller's to close.
 * (Returns the bot itself, not a promise; `await createBot(...)` works too.)
 */
export function createBot(engine: Engine, options: BotOptions): MedBot {
  if (!options.token) throw new Error("createBot: options.token is empty");
  const token = options.token;
  const userLog = options.log ??
    ((level: LogLevel, msg: string) => console.error(`[bot] ${level}: ${msg}`));
  const log = (level: LogLevel, msg: string) => userLog(level, msg.replaceAll(token, "<token>"));

  const defaults: ChatSettings = {
    length: options.defaultSettings?.length ?? "medium",
    // The engine's generation defaults, as every front end uses (its server's, for a remote one).
    temperature: options.defaultSettings?.temperature ?? engine.info.defaults?.temperature ??
      BUILTIN_GENERATION_DEFAULTS.temperature,
  };
  checkSettings(defaults);
  if (options.webhook) checkSecretToken(options.webhook.secret);

  const storeReady: Promise<BotStore> = openBotStore(
    options.store ?? options.kvPath ?? ":memory:",
    defaults,
  );
  // Reported by start()/startWebhook() and by each answer; not an unhandled rejection here.
  storeReady.catch(() => {});
  const stopping = new AbortController();
  const owner = options.replicaId ?? crypto.randomUUID();

  const bot = new Bot<MedContext>(token, {
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

  const svc = createServices(engine, options, {
    store: () => storeReady,
    log,
    stopping: stopping.signal,
    defaults,
    owner,
  });

  // The work of the update being handled, for the middleware (see update_flow.ts).
  const works = new Map<number, UpdateWork>();
  bot.use(async (ctx, next) => {
    const work = works.get(ctx.update.update_id);
    ctx.work = work ?? { updateId: ctx.update.update_id, tasks: [] };
    await next();
    // Called as grammY's own `bot.handleUpdate(update)`, outside the flow: no claim and no
    // chat turn, but the work still runs (in this call).
    if (!work) { for (const task of ctx.work.tasks) await task(); }
  });
  bot.use(admission(svc), commands(svc), settings(svc), questions(svc));

  const flow = createUpdateFlow({
    store: () => storeReady,
    owner,
    claimTtlMs: options.claimTtlMs ?? 30_000,
    busyWaitMs: options.busyWaitMs ?? 25_000,
    stopping: stopping.signal,
    async handle(update, work) {
      works.set(update.update_id, work);
      try {
        await bot.handleUpdate(update);
      } finally {
        works.delete(update.update_id);
      }
    },
    onTaskError(chatId, err) {
      svc.counters.failed++;
      log("error", `chat ${chatId}: ${describe(err)}`);
    },
    log,
  });
  /** Polling hands updates over without waiting; the flow keeps each chat in order. */
  const handleUpdate = (update: Update) => {
    flow.dispatch(update);
    return Promise.resolve();
  };
  /** A webhook answers Telegram only when the update is done (or to be re-delivered). */
  const handleWebhookUpdate = (update: Update): Promise<UpdateOutcome> => flow.dispatch(update);

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
      onUpdate: handleWebhookUpdate,
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
    await flow.drain();
    flow.close();
    try {
      await (await storeReady).close();
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
      active: svc.slots.active,
      waiting: svc.slots.waiting,
      busyChats: flow.busyChats(),
      ...svc.counters,
    }),
  });
}
