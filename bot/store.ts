/**
 * What the bot keeps (per-chat history and settings, rate-limit counters, handled update ids) as one
 * interface, `BotStore`, and its embedded implementation in a Deno KV file, so that all of it
 * survives a restart. Each turn is its own key (a KV value is limited to 64 KiB), and history is
 * bounded in turns and tokens. The PostgreSQL implementation (for replicas) is in store_postgres.ts.
 */
import { createKeyedQueue, type RateLimit } from "./limits.ts";

export type AnswerLength = "short" | "medium" | "long";

export interface ChatSettings {
  length: AnswerLength;
  /** 0 is greedy. */
  temperature: number;
}

export interface Turn {
  user: string;
  assistant: string;
  /** Unix milliseconds. */
  at: number;
}

/** Default `maxNewTokens` of each answer length (BotOptions.answerLengths overrides). */
export const ANSWER_LENGTHS: Record<AnswerLength, number> = {
  short: 128,
  medium: 512,
  long: 2048,
};

/** Texts kept per turn: well under KV's 64 KiB value limit even at 2 bytes per code unit. */
export const MAX_STORED_CHARS = 12_000;
const ROOT = "medglm-bot";

export interface ChatStore {
  history(chatId: number): Promise<Turn[]>;
  /** Appends a turn, then drops the oldest while over `maxTurns` or over `fits` (a token check). */
  addTurn(
    chatId: number,
    turn: Turn,
    bounds: { maxTurns: number; fits: (turns: Turn[]) => boolean },
  ): Promise<void>;
  clearHistory(chatId: number): Promise<void>;
  settings(chatId: number): Promise<ChatSettings>;
  saveSettings(chatId: number, settings: ChatSettings): Promise<void>;
  /** Resolves when the store has let go of its files or connections. */
  close(): void | Promise<void>;
}

export type RateVerdict = { ok: true } | { ok: false; retryInMs: number; first: boolean };

/**
 * How a claim on an update went: `claimed` (it is ours to handle; `replyMessageId` is the answer
 * message a replica that died mid-answer had sent, to be edited rather than sent again), `done`
 * (handled already: a re-delivery) or `busy` (another live replica is handling it).
 */
export type Claim =
  | { state: "claimed"; replyMessageId?: number }
  | { state: "done" }
  | { state: "busy" };

/** Everything the bot keeps; one implementation per backend (Deno KV file, PostgreSQL). */
export interface BotStore extends ChatStore {
  /** "kv" keeps state for one process; "postgres" is shared by every replica. */
  readonly kind: "kv" | "postgres";
  /**
   * A sliding-window counter under `key` (shared by every process on the store): records a hit
   * and says whether it is allowed; when not, how long until one frees up and whether this is the
   * first refusal since the last allowed hit (so that the user is told once).
   */
  takeRate(key: string, limit: RateLimit): Promise<RateVerdict>;
  /**
   * Claims `updateId` for `owner` until `ttlMs` from now. A live claim (anyone's, the caller's
   * too) makes it `busy`; one that lapsed (its holder died) can be taken over; a finished update
   * stays `done`.
   */
  claimUpdate(updateId: number, chatId: number, owner: string, ttlMs: number): Promise<Claim>;
  /** Extends the owner's live claims (a heartbeat while they wait or are answered). */
  renewClaims(updateIds: number[], owner: string, ttlMs: number): Promise<void>;
  /** Remembers the first message of the answer, for a replica that takes the update over. */
  noteReply(updateId: number, owner: string, messageId: number): Promise<void>;
  /** Marks the update handled: re-deliveries are ignored from now on. */
  finishUpdate(updateId: number, owner: string): Promise<void>;
  /** Gives the claim up unfinished (the bot is stopping): a re-delivery will be handled. */
  releaseUpdate(updateId: number, owner: string): Promise<void>;
  /**
   * Runs `fn` in the chat's turn: one at a time per chat across every process sharing the store,
   * and after the chat's earlier updates that are claimed and unfinished.
   */
  inChatTurn<T>(chatId: number, updateId: number, fn: () => Promise<T>): Promise<T>;
}

/** A `claimed` answer, with the message of an earlier try when there is one. */
export function claimedWith(replyMessageId: number | undefined): Claim {
  return replyMessageId === undefined ? { state: "claimed" } : { state: "claimed", replyMessageId };
}

/** Done update ids are remembered this long (Telegram re-delivers for at most about a day). */
export const DONE_UPDATE_TTL_MS = 48 * 3600_000;

/** The sliding-window rule shared by both stores: `hits` are the window's times, oldest first. */
export function rateStep(
  hits: number[],
  warned: boolean,
  limit: RateLimit,
  now: number,
): { verdict: RateVerdict; hits: number[]; warned: boolean } {
  const recent = hits.filter((h) => now - h < limit.windowMs);
  if (recent.length >= limit.max) {
    return {
      verdict: { ok: false, retryInMs: limit.windowMs - (now - recent[0]), first: !warned },
      hits: recent,
      warned: true,
    };
  }
  recent.push(now);
  return { verdict: { ok: true }, hits: recent, warned: false };
}

interface UpdateRecord {
  state: "claimed" | "done";
  owner: string;
  /** Unix ms when a claim lapses. */
  expires: number;
  chatId: number;
  replyMessageId?: number;
}

/**
 * The Deno KV store, for one bot process. Claims and counters go through KV's atomic checks (so
 * they also hold for processes sharing the file), but a chat's turn is a queue in this process.
 */
export async function openChatStore(
  path: string | undefined,
  defaults: ChatSettings,
): Promise<BotStore> {
  if (typeof Deno.openKv !== "function") {
    throw new Error(
      "Deno KV is unstable: run with --unstable-kv (the repository's deno.json enables it)",
    );
  }
  let kv: Deno.Kv;
  try {
    kv = await Deno.openKv(path);
  } catch (e) {
    throw new Error(`cannot open the bot's KV database at ${path ?? "(default)"}: ${e}`);
  }
  const turnKey = (chatId: number, seq: number) => [ROOT, "turn", chatId, seq];

  async function turnEntries(chatId: number) {
    const entries: Deno.KvEntry<Turn>[] = [];
    for await (const e of kv.list<Turn>({ prefix: [ROOT, "turn", chatId] })) entries.push(e);
    return entries;
  }

  async function deleteKeys(keys: Deno.KvKey[]) {
    // An atomic operation takes at most 1000 mutations.
    for (let i = 0; i < keys.length; i += 500) {
      const op = kv.atomic();
      for (const k of keys.slice(i, i + 500)) op.delete(k);
      await op.commit();
    }
  }

  const updateKey = (id: number) => [ROOT, "update", id];
  // One process: the chat's turn is a queue here (errors go back to the caller through `fn`).
  const turns = createKeyedQueue(() => {});

  /**
   * Reads, changes and writes one value under an atomic version check, retrying on conflict.
   * `change` returns the new value (null deletes; the value it was given means no change), the
   * result, and the new value's lifetime in ms.
   */
  async function update<T, R>(key: Deno.KvKey, change: (v: T | null) => [T | null, R, number?]) {
    for (;;) {
      const got = await kv.get<T>(key);
      const [next, result, expireIn] = change(got.value);
      // Unchanged (the same object back): no write, which would also drop the key's expiry.
      if (next === got.value) return result;
      const op = kv.atomic().check(got);
      if (next === null) op.delete(key);
      else op.set(key, next, expireIn === undefined ? undefined : { expireIn });
      if ((await op.commit()).ok) return result;
    }
  }

  return {
    kind: "kv",
    takeRate(key, limit) {
      return update<{ hits: number[]; warned: boolean }, RateVerdict>(
        [ROOT, "rate", key],
        (v) => {
          const step = rateStep(v?.hits ?? [], v?.warned ?? false, limit, Date.now());
          return [{ hits: step.hits, warned: step.warned }, step.verdict, limit.windowMs];
        },
      );
    },
    claimUpdate(updateId, chatId, owner, ttlMs) {
      return update<UpdateRecord, Claim>(updateKey(updateId), (v) => {
        const now = Date.now();
        if (v?.state === "done") return [v, { state: "done" }];
        // Live, even if ours: a re-delivery while we still answer must not be answered again.
        if (v && v.expires > now) return [v, { state: "busy" }];
        const next: UpdateRecord = { ...v, state: "claimed", owner, expires: now + ttlMs, chatId };
        return [next, claimedWith(v?.replyMessageId), DONE_UPDATE_TTL_MS];
      });
    },
    async renewClaims(updateIds, owner, ttlMs) {
      for (const id of updateIds) {
        await update<UpdateRecord, void>(updateKey(id), (v) => {
          if (v?.state !== "claimed" || v.owner !== owner) return [v, undefined];
          return [{ ...v, expires: Date.now() + ttlMs }, undefined, DONE_UPDATE_TTL_MS];
        });
      }
    },
    async noteReply(updateId, owner, messageId) {
      await update<UpdateRecord, void>(updateKey(updateId), (v) => {
        if (v?.state !== "claimed" || v.owner !== owner) return [v, undefined];
        return [{ ...v, replyMessageId: messageId }, undefined, DONE_UPDATE_TTL_MS];
      });
    },
    async finishUpdate(updateId, owner) {
      await update<UpdateRecord, void>(updateKey(updateId), (v) => {
        if (v && v.owner !== owner) return [v, undefined];
        const done: UpdateRecord = {
          state: "done",
          owner,
          expires: 0,
          chatId: v?.chatId ?? 0,
        };
        return [done, undefined, DONE_UPDATE_TTL_MS];
      });
    },
    async releaseUpdate(updateId, owner) {
      await update<UpdateRecord, void>(updateKey(updateId), (v) => {
        if (v?.state !== "claimed" || v.owner !== owner) return [v, undefined];
        return [{ ...v, expires: 0 }, undefined, DONE_UPDATE_TTL_MS];
      });
    },
    inChatTurn<T>(chatId: number, _updateId: number, fn: () => Promise<T>): Promise<T> {
      const result = Promise.withResolvers<T>();
      turns.run(chatId, () => fn().then(result.resolve, result.reject));
      return result.promise;
    },
    async history(chatId) {
      return (await turnEntries(chatId)).map((e) => e.value);
    },
    async addTurn(chatId, turn, bounds) {
      const entries = await turnEntries(chatId);
      const last = entries.at(-1)?.key.at(-1);
      const seq = typeof last === "number" ? last + 1 : 1;
      const stored: Turn = {
        user: turn.user.slice(0, MAX_STORED_CHARS),
        assistant: turn.assistant.slice(0, MAX_STORED_CHARS),
        at: turn.at,
      };
      await kv.set(turnKey(chatId, seq), stored);
      const turns = [...entries.map((e) => e.value), stored];
      let drop = Math.max(0, turns.length - bounds.maxTurns);
      while (drop < turns.length && !bounds.fits(turns.slice(drop))) drop++;
      const keys = [...entries.map((e) => e.key), turnKey(chatId, seq)];
      if (drop > 0) await deleteKeys(keys.slice(0, drop));
    },
    async clearHistory(chatId) {
      await deleteKeys((await turnEntries(chatId)).map((e) => e.key));
    },
    async settings(chatId) {
      const got = await kv.get<Partial<ChatSettings>>([ROOT, "settings", chatId]);
      return { ...defaults, ...(got.value ?? {}) };
    },
    async saveSettings(chatId, settings) {
      await kv.set([ROOT, "settings", chatId], settings);
    },
    close() {
      kv.close();
    },
  };
}
