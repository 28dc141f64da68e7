/**
 * `deno task bot`: runs the Telegram bot against an in-process engine (`--model`) or any
 * OpenAI-compatible endpoint (`--endpoint`). The bot token comes only from TELEGRAM_BOT_TOKEN:
 * flags end up in shell history and process lists.
 */
import { parseQuantizeFlag, type QuantizeOption } from "../core/mod.ts";
import { parseArgs } from "node:util";
import {
  type Engine,
  parsePromptFlags,
  PROMPT_FLAG_OPTIONS,
  type PromptFlags,
  promptFlagsUsage,
} from "../serve/mod.ts";
import { type BotOptions, createBot, type MedBot } from "./bot.ts";
import { connectOpenAIEngine } from "./openai_engine.ts";
import { connectEndpointPool, splitEndpoints } from "./endpoint_pool.ts";
import { isPostgresUrl, redact } from "./store_postgres.ts";
import type { AnswerLength } from "./store.ts";
import { intFlag } from "../base/mod.ts";

export const USAGE = `Usage: deno task bot (--endpoint URL | --model DIR [--adapter DIR]) [options]

Engine:
  --endpoint URL          OpenAI-compatible server (e.g. http://127.0.0.1:8000, our \`serve\`);
                          several (comma-separated or repeated) make a pool: each question goes
                          to the least busy server whose /health is ready
  --endpoint-model NAME   model name to request (default: the first one /v1/models lists)
  --max-context N         context length of the remote model (default 2048)
  --model DIR             run the model in this process (HF model directory)
  --adapter DIR           PEFT LoRA adapter for --model
  --backend NAME          webgpu | onnx | auto, for --model (default auto)
  --quantize SPEC         int8/int4 weights for --model: 8 | 4[,group=G][,embeddings]
${promptFlagsUsage(26)}
                          (prompt flags: for --model; a server given by --endpoint renders its
                          own prompts, so pass them to deno task serve)

Telegram:
  --kv PATH               Deno KV file for history and settings (default out/bot/bot.kv)
  --store URL             PostgreSQL instead (postgres://user@host/db; also DATABASE_URL): shared
                          by bot replicas behind a load balancer, schema created at start
  --replica-id NAME       this replica's name on update claims (default a random id)
  --claim-ttl MS          a claimed update is taken over this long after its replica stopped
                          renewing the claim (died); default 30000
  --allow IDS             comma-separated user ids allowed to use the bot (also TELEGRAM_ALLOWED_USERS)
  --api-root URL          Bot API server (default https://api.telegram.org; also TELEGRAM_API_ROOT)
  --webhook-url URL       take updates by webhook at this public HTTPS URL instead of long polling
  --webhook-port N        local port for the webhook server (default 8443)
  --webhook-host HOST     local address to listen on (default 0.0.0.0)
  --webhook-secret S      secret Telegram sends back (better: TELEGRAM_WEBHOOK_SECRET)
  --edit-interval MS      minimum time between edits in one chat (default 1000)
  --group-edit-interval MS
                          the same in group chats (default 3000)
  --rate-limit N          questions per user per minute (default 10)
  --max-concurrent N      answers generated at once (default 4)
  --max-queued N          questions waiting before new ones are turned away (default 64)
  --history-turns N       turns of history kept per chat (default 8)
  --history-tokens N      prompt tokens of history kept per chat (default 1024)
  --length L              default answer length: short | medium | long (default medium)
  --temperature T         default temperature 0-2 (default: the model's generation defaults, 0.95)
  --system TEXT           system prompt put before every conversation
  -h, --help              this help

Environment: TELEGRAM_BOT_TOKEN (required), TELEGRAM_ALLOWED_USERS, TELEGRAM_WEBHOOK_SECRET,
TELEGRAM_API_ROOT, DATABASE_URL, MEDGLM_API_KEY or OPENAI_API_KEY (sent to --endpoint).`;

export interface BotCliConfig {
  engine:
    | {
      kind: "endpoint";
      /** One or more servers (more make a pool). */
      endpoints: string[];
      model?: string;
      maxContext: number;
      apiKey?: string;
    }
    | {
      kind: "local";
      model: string;
      adapter?: string;
      backend: string;
      quantize?: QuantizeOption;
    } & PromptFlags;
  options: BotOptions;
}

/** Flags and environment to a config; throws an error naming the bad flag or variable. */
export function parseBotArgs(
  args: string[],
  env: Record<string, string | undefined>,
): BotCliConfig {
  if (args.some((a) => a === "--token" || a.startsWith("--token="))) {
    throw new Error(
      "--token: the bot token is read only from the environment variable TELEGRAM_BOT_TOKEN " +
        "(flags show up in shell history and process lists)",
    );
  }
  const { values: v } = parseArgs({
    args,
    strict: true,
    allowPositionals: false,
    options: {
      endpoint: { type: "string", multiple: true },
      "endpoint-model": { type: "string" },
      "max-context": { type: "string" },
      model: { type: "string" },
      adapter: { type: "string" },
      backend: { type: "string" },
      quantize: { type: "string" },
      ...PROMPT_FLAG_OPTIONS,
      kv: { type: "string" },
      store: { type: "string" },
      "replica-id": { type: "string" },
      "claim-ttl": { type: "string" },
      allow: { type: "string" },
      "api-root": { type: "string" },
      "webhook-url": { type: "string" },
      "webhook-port": { type: "string" },
      "webhook-host": { type: "string" },
      "webhook-secret": { type: "string" },
      "edit-interval": { type: "string" },
      "group-edit-interval": { type: "string" },
      "rate-limit": { type: "string" },
      "max-concurrent": { type: "string" },
      "max-queued": { type: "string" },
      "history-turns": { type: "string" },
      "history-tokens": { type: "string" },
      length: { type: "string" },
      temperature: { type: "string" },
      system: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (v.help) throw new HelpRequested();

  const token = env.TELEGRAM_BOT_TOKEN?.trim();
  if (!token) {
    throw new Error(
      "TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather in Telegram and export its token",
    );
  }
  const endpoints = splitEndpoints(v.endpoint ?? []);
  if (endpoints.length && v.model) throw new Error("give either --endpoint or --model, not both");
  if (!endpoints.length && !v.model) {
    throw new Error("give --endpoint URL or --model DIR (see --help)");
  }
  const store = v.store ?? (env.DATABASE_URL?.trim() || undefined);
  if (store !== undefined && !isPostgresUrl(store)) {
    throw new Error(
      `${v.store ? "--store" : "DATABASE_URL"}: expected a postgres:// URL, got "${
        redact(store)
      }" ` +
        "(for a Deno KV file use --kv PATH)",
    );
  }
  if (store && v.kv) throw new Error("give either --store (PostgreSQL) or --kv (a file), not both");
  if (v.adapter && !v.model) throw new Error("--adapter needs --model");
  const prompt = parsePromptFlags(v);
  if (!v.model && (prompt.promptTemplate !== undefined || prompt.enableThinking !== undefined)) {
    throw new Error(
      "--prompt-format/--enable-thinking/--no-thinking apply to --model; a server given by " +
        "--endpoint renders its own prompts (pass them to deno task serve)",
    );
  }

  const allowText = v.allow ?? env.TELEGRAM_ALLOWED_USERS;
  const allow = allowText?.split(",").map((s) => s.trim()).filter(Boolean).map((s) => {
    if (!/^-?\d+$/.test(s)) {
      throw new Error(`${v.allow ? "--allow" : "TELEGRAM_ALLOWED_USERS"}: "${s}" is not a user id`);
    }
    return Number(s);
  });
  const length = v.length;
  if (length !== undefined && !["short", "medium", "long"].includes(length)) {
    throw new Error(`--length: expected short, medium or long, got "${length}"`);
  }
  let temperature: number | undefined;
  if (v.temperature !== undefined) {
    temperature = Number(v.temperature);
    if (!(temperature >= 0 && temperature <= 2)) {
      throw new Error(`--temperature: expected a number from 0 to 2, got "${v.temperature}"`);
    }
  }
  const secret = v["webhook-secret"] ?? env.TELEGRAM_WEBHOOK_SECRET;
  let webhook: BotOptions["webhook"];
  if (v["webhook-url"]) {
    const url = v["webhook-url"];
    try {
      if (new URL(url).protocol !== "https:") throw new Error();
    } catch {
      throw new Error(`--webhook-url: Telegram needs a public https:// URL, got "${url}"`);
    }
    if (!secret) {
      throw new Error(
        "--webhook-url needs a secret: set TELEGRAM_WEBHOOK_SECRET (or --webhook-secret)",
      );
    }
    webhook = {
      url,
      secret,
      port: intFlag("webhook-port", v["webhook-port"], 0) ?? 8443,
      hostname: v["webhook-host"],
    };
  } else if (v["webhook-port"] || v["webhook-secret"] || v["webhook-host"]) {
    throw new Error("--webhook-port/--webhook-secret/--webhook-host need --webhook-url");
  }
  const apiRoot = (v["api-root"] ?? env.TELEGRAM_API_ROOT)?.replace(/\/+$/, "");
  const rate = intFlag("rate-limit", v["rate-limit"], 1);

  const options: BotOptions = {
    token,
    apiRoot,
    kvPath: store ? undefined : v.kv ?? "out/bot/bot.kv",
    store,
    replicaId: v["replica-id"],
    claimTtlMs: intFlag("claim-ttl", v["claim-ttl"], 100),
    allow,
    editIntervalMs: intFlag("edit-interval", v["edit-interval"], 0),
    groupEditIntervalMs: intFlag("group-edit-interval", v["group-edit-interval"], 0),
    rateLimit: rate === undefined ? undefined : { max: rate, windowMs: 60_000 },
    maxConcurrent: intFlag("max-concurrent", v["max-concurrent"], 1),
    maxQueued: intFlag("max-queued", v["max-queued"], 0),
    maxHistoryTurns: intFlag("history-turns", v["history-turns"], 0),
    maxHistoryTokens: intFlag("history-tokens", v["history-tokens"], 0),
    defaultSettings: { length: length as AnswerLength | undefined, temperature },
    systemPrompt: v.system,
    webhook,
    setCommands: true,
  };
  const engine: BotCliConfig["engine"] = endpoints.length
    ? {
      kind: "endpoint",
      endpoints,
      model: v["endpoint-model"],
      maxContext: intFlag("max-context", v["max-context"], 16) ?? 2048,
      apiKey: env.MEDGLM_API_KEY ?? env.OPENAI_API_KEY,
    }
    : {
      kind: "local",
      model: v.model!,
      adapter: v.adapter,
      backend: v.backend ?? "auto",
      quantize: parseQuantizeFlag(v.quantize),
      ...prompt,
    };
  return { engine, options };
}

export class HelpRequested extends Error {
  constructor() {
    super("help requested");
  }
}

/** The in-process engine from `serve` (loaded only when the bot runs the model itself). */
async function createLocalEngine(
  cfg: Extract<BotCliConfig["engine"], { kind: "local" }>,
): Promise<Engine> {
  const { createEngine } = await import("../serve/mod.ts");
  return await createEngine({
    model: cfg.model,
    adapter: cfg.adapter,
    backend: cfg.backend,
    quantize: cfg.quantize,
    promptTemplate: cfg.promptTemplate,
    enableThinking: cfg.enableThinking,
  });
}

export async function createCliEngine(cfg: BotCliConfig["engine"]): Promise<Engine> {
  if (cfg.kind === "endpoint") {
    const common = { model: cfg.model, apiKey: cfg.apiKey, maxContext: cfg.maxContext };
    // One server: the plain client (works with any OpenAI-compatible server, /health or not).
    if (cfg.endpoints.length === 1) {
      return await connectOpenAIEngine({ ...common, endpoint: cfg.endpoints[0] });
    }
    return await connectEndpointPool({
      ...common,
      endpoints: cfg.endpoints,
      log: (level, msg) => console.error(`[bot] ${level}: ${msg}`),
    });
  }
  return await createLocalEngine(cfg);
}

/** Runs until `signal` aborts (or SIGINT/SIGTERM from `main`); returns the exit code. */
export async function runBot(config: BotCliConfig, signal: AbortSignal): Promise<number> {
  const engine = await createCliEngine(config.engine);
  let bot: MedBot | undefined;
  try {
    if (config.options.kvPath && config.options.kvPath !== ":memory:") {
      const dir = config.options.kvPath.replace(/[^/\\]*$/, "");
      if (dir) await Deno.mkdir(dir, { recursive: true });
    }
    bot = createBot(engine, config.options);
    if (!config.options.allow?.length) {
      console.error("[bot] warn: no --allow list: everyone who finds the bot can use it");
    }
    let running: Promise<void>;
    if (config.options.webhook) {
      await bot.startWebhook();
      running = bot.finished;
    } else {
      // Resolves when polling ends; rejects when it cannot go on (token rejected, conflict).
      running = bot.start();
    }
    running.catch(() => {});
    const stopped = new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      signal.addEventListener("abort", () => resolve(), { once: true });
    });
    await Promise.race([stopped, running]);
    return 0;
  } finally {
    await bot?.stop();
    await engine.close();
  }
}

export async function main(args: string[]): Promise<number> {
  let config: BotCliConfig;
  try {
    config = parseBotArgs(args, Deno.env.toObject());
  } catch (err) {
    if (err instanceof HelpRequested) {
      console.log(USAGE);
      return 0;
    }
    console.error(`error: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  Deno.addSignalListener("SIGINT", onSignal);
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGTERM", onSignal);
  try {
    return await runBot(config, stop.signal);
  } catch (err) {
    const msg = (err as Error).message.replaceAll(config.options.token, "<token>");
    console.error(`error: ${msg}`);
    return 1;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGTERM", onSignal);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
