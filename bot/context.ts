/**
 * What the bot's middleware files share: the grammY context of one update (with the work it
 * leaves for the chat's turn) and the services every composer is built from.
 */
import type { Context } from "npm:grammy@1.46.0/web";
import type { Engine } from "../serve/mod.ts";
import type { createSemaphore, RateLimit } from "./limits.ts";
import type { AnswerLength, BotStore, ChatSettings } from "./store.ts";
import type { ChatPace } from "./stream_reply.ts";

export type LogLevel = "info" | "warn" | "error";

/**
 * The work an update leaves for its chat's turn. Middleware decides at once (admission, rate
 * limits); what talks to the chat or to the model runs later, in order with the chat's other
 * updates, across replicas.
 */
export interface UpdateWork {
  readonly updateId: number;
  /** The answer message a replica that died mid-answer had sent (edit it, do not send anew). */
  readonly replyMessageId?: number;
  readonly tasks: (() => Promise<void>)[];
  /** Set when the bot stopped before the work was done: the update stays re-deliverable. */
  interrupted?: boolean;
}

export type MedContext = Context & { work: UpdateWork };

export interface BotServices {
  engine: Engine;
  store: () => Promise<BotStore>;
  log: (level: LogLevel, msg: string) => void;
  /** Aborted when the bot stops. */
  stopping: AbortSignal;
  allow: ReadonlySet<number>;
  rateLimit: RateLimit;
  /** How often a user off the allowlist is told so (once per this many ms). */
  refusalIntervalMs: number;
  slots: ReturnType<typeof createSemaphore>;
  maxConcurrent: number;
  maxQueued: number;
  lengths: Record<AnswerLength, number>;
  defaults: ChatSettings;
  maxHistoryTurns: number;
  maxHistoryTokens: number;
  systemPrompt?: string;
  typingIntervalMs?: number;
  counters: { answered: number; failed: number };
  /** This process's name on update claims. */
  owner: string;
  /** Minimum time between sends/edits in this context's chat. */
  intervalFor(ctx: Context): number;
  paceOf(chatId: number): ChatPace;
  /** Sends a plain-text message now, paced per chat (call it from the chat's turn). */
  say(ctx: Context, text: string): Promise<void>;
}

/** Queues work for the chat's turn. */
export function inTurn(ctx: MedContext, task: () => Promise<void>): void {
  ctx.work.tasks.push(task);
}

/** Sends a short notice in the chat's turn (after what the chat is already waiting for). */
export function notice(svc: BotServices, ctx: MedContext, text: string): void {
  inTurn(ctx, async () => {
    if (!svc.stopping.aborted) await svc.say(ctx, text);
  });
}

export function isGroupChat(ctx: Context): boolean {
  return ctx.chat?.type === "group" || ctx.chat?.type === "supergroup";
}

export function replyTo(ctx: Context) {
  // In groups the answer quotes the question, so people see whom it answers.
  if (!isGroupChat(ctx) || !ctx.message) return undefined;
  return {
    reply_parameters: { message_id: ctx.message.message_id, allow_sending_without_reply: true },
  };
}

export function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}
