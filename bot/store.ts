/**
 * Per-chat conversation history and settings in Deno KV, so that both survive a restart. Each turn
 * is its own key (a KV value is limited to 64 KiB), and history is bounded in turns and tokens.
 */

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
const MAX_STORED_CHARS = 12_000;
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
  close(): void;
}

export async function openChatStore(
  path: string | undefined,
  defaults: ChatSettings,
): Promise<ChatStore> {
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

  return {
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
