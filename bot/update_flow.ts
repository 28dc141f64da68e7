/**
 * How one update goes through the bot, exactly once across replicas:
 * 1. claim its `update_id` in the store (a re-delivery of a handled update stops here; one that
 *    another live replica is handling waits for it; a claim whose holder died lapses and is taken
 *    over), then run the middleware, which decides at once and leaves work for the chat's turn;
 *    per chat, this step runs in arrival order in this process;
 * 2. run that work in the chat's turn (the store serializes a chat across replicas);
 * 3. mark the update done only then, so that a replica killed mid-answer leaves it re-deliverable.
 * Claims are renewed while they wait or are answered.
 */
import type { Update } from "npm:grammy@1.46.0/types";
import { sleep } from "./api_retry.ts";
import { describe, type LogLevel, type UpdateWork } from "./context.ts";
import { createKeyedQueue } from "./limits.ts";
import type { BotStore } from "./store.ts";

/** What became of an update: answered now, a duplicate, or to be re-delivered later. */
export type UpdateOutcome = "handled" | "duplicate" | "redeliver";

export interface UpdateFlowOptions {
  store: () => Promise<BotStore>;
  owner: string;
  /** A claim lapses this long after its last renewal (its holder is taken for dead). */
  claimTtlMs: number;
  /** How long a re-delivery waits for a live replica that is handling the same update. */
  busyWaitMs: number;
  stopping: AbortSignal;
  /** Runs the middleware for the update; it fills `work.tasks`. */
  handle: (update: Update, work: UpdateWork) => Promise<void>;
  /** A task of the chat's turn failed (after the bot's own error handling). */
  onTaskError: (chatId: number, err: unknown) => void;
  log: (level: LogLevel, msg: string) => void;
}

export function chatIdOf(update: Update): number {
  const u = update as unknown as Record<string, { chat?: { id?: unknown } } | undefined>;
  for (const kind of ["message", "edited_message", "channel_post", "edited_channel_post"]) {
    const id = u[kind]?.chat?.id;
    if (typeof id === "number") return id;
  }
  return 0;
}

export function createUpdateFlow(o: UpdateFlowOptions) {
  const claimed = new Set<number>();
  const pending = new Set<Promise<UpdateOutcome>>();
  /** Updates per chat between claim and done, for stats. */
  const depth = new Map<number, number>();
  const arrivals = createKeyedQueue((chatId, err) =>
    o.log("error", `chat ${chatId}: ${describe(err)}`)
  );
  // One heartbeat for all of this process's claims.
  const heartbeat = setInterval(async () => {
    if (claimed.size === 0) return;
    try {
      await (await o.store()).renewClaims([...claimed], o.owner, o.claimTtlMs);
    } catch (err) {
      o.log("warn", `could not renew update claims: ${describe(err)}`);
    }
  }, Math.max(50, o.claimTtlMs / 3));
  Deno.unrefTimer(heartbeat);

  async function claim(store: BotStore, update: Update, chatId: number) {
    const deadline = performance.now() + o.busyWaitMs;
    for (;;) {
      const c = await store.claimUpdate(update.update_id, chatId, o.owner, o.claimTtlMs);
      if (c.state !== "busy" || performance.now() > deadline) return c;
      // Another replica has it: wait for it to finish, or for its claim to lapse.
      await sleep(Math.min(200, o.claimTtlMs / 4), o.stopping);
    }
  }

  async function turn(store: BotStore, chatId: number, work: UpdateWork): Promise<void> {
    if (work.tasks.length === 0) return;
    await store.inChatTurn(chatId, work.updateId, async () => {
      for (const task of work.tasks) {
        if (o.stopping.aborted) {
          work.interrupted = true;
          return;
        }
        try {
          await task();
        } catch (err) {
          if (o.stopping.aborted) work.interrupted = true;
          else o.onTaskError(chatId, err);
        }
      }
    });
  }

  /** Takes an update through the three steps; resolves when it is done (or given up). */
  function dispatch(update: Update): Promise<UpdateOutcome> {
    const chatId = chatIdOf(update);
    const result = Promise.withResolvers<UpdateOutcome>();
    pending.add(result.promise);
    result.promise.finally(() => pending.delete(result.promise));
    arrivals.run(chatId, async () => {
      let store: BotStore | undefined;
      let work: UpdateWork;
      try {
        if (o.stopping.aborted) return result.resolve("redeliver");
        store = await o.store();
        const c = await claim(store, update, chatId);
        if (c.state === "done") return result.resolve("duplicate");
        if (c.state === "busy") return result.resolve("redeliver");
        claimed.add(update.update_id);
        work = { updateId: update.update_id, replyMessageId: c.replyMessageId, tasks: [] };
        await o.handle(update, work);
      } catch (err) {
        claimed.delete(update.update_id);
        if (!o.stopping.aborted) {
          o.log("error", `update ${update.update_id}: ${describe(err)}`);
        }
        // Telegram (or the load balancer) will bring it again.
        await store?.releaseUpdate(update.update_id, o.owner).catch(() => {});
        return result.resolve("redeliver");
      }
      // The turn runs on its own: the chat's next update may be claimed meanwhile.
      depth.set(chatId, (depth.get(chatId) ?? 0) + 1);
      const held = store;
      turn(held, chatId, work).then(
        async () => {
          if (work.interrupted) {
            await held.releaseUpdate(update.update_id, o.owner).catch(() => {});
            return "redeliver" as const;
          }
          await held.finishUpdate(update.update_id, o.owner);
          return "handled" as const;
        },
      ).catch(async (err) => {
        if (!o.stopping.aborted) {
          o.log("error", `update ${update.update_id}: ${describe(err)}`);
        }
        await held.releaseUpdate(update.update_id, o.owner).catch(() => {});
        return "redeliver" as const;
      }).then((outcome) => {
        claimed.delete(update.update_id);
        const d = (depth.get(chatId) ?? 1) - 1;
        if (d === 0) depth.delete(chatId);
        else depth.set(chatId, d);
        result.resolve(outcome);
      });
    });
    return result.promise;
  }

  return {
    dispatch,
    /** Chats with updates between claim and done. */
    busyChats: () => depth.size,
    /** Resolves when every dispatched update is done or given up. */
    async drain(): Promise<void> {
      while (pending.size) await Promise.allSettled([...pending]);
      await arrivals.drain();
    },
    close() {
      clearInterval(heartbeat);
    },
  };
}
