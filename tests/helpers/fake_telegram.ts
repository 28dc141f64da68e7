/**
 * A fake Telegram Bot API server on 127.0.0.1 for bot tests. It follows the real API's wire format
 * (`/bot<token>/<method>`, JSON or form bodies, `{ ok, result }` / `{ ok: false, error_code,
 * description, parameters }` answers, long-poll `getUpdates` with `offset`/`limit`/`timeout`/
 * `allowed_updates`) and its error answers (400 "message is not modified", 403 blocked, 409
 * conflicts, 429 with `retry_after`), records every call, and lets a test inject errors.
 */

export interface FakeUser {
  id: number;
  is_bot: boolean;
  first_name: string;
  username?: string;
}

export interface FakeChat {
  id: number;
  type: "private" | "group" | "supergroup";
  first_name?: string;
  title?: string;
}

export interface FakeEntity {
  type: string;
  offset: number;
  length: number;
  user?: FakeUser;
}

export interface FakeMessage {
  message_id: number;
  date: number;
  chat: FakeChat;
  from: FakeUser;
  text: string;
  entities?: FakeEntity[];
  reply_to_message?: FakeMessage;
  edit_date?: number;
}

export interface FakeUpdate {
  update_id: number;
  message?: FakeMessage;
  edited_message?: FakeMessage;
  [kind: string]: unknown;
}

export interface ApiCall {
  method: string;
  params: Record<string, unknown>;
  /** `performance.now()` when the request arrived. */
  at: number;
  /** What the fake answered. */
  response: ApiAnswer;
}

export interface ApiError {
  error_code: number;
  description: string;
  parameters?: { retry_after?: number; migrate_to_chat_id?: number };
}

type ApiAnswer = { ok: true; result: unknown } | ({ ok: false } & ApiError);

/** A bot-side message as the chat shows it now, with every text it has had. */
export interface ChatEntry {
  message: FakeMessage;
  fromBot: boolean;
  /** Texts in order: the sent text, then each successful edit. */
  versions: string[];
}

export interface IncomingText {
  chatId: number;
  text: string;
  userId?: number;
  chatType?: FakeChat["type"];
  firstName?: string;
  /** Message id (in the same chat) this message replies to. */
  replyTo?: number;
}

export interface FakeTelegramOptions {
  token?: string;
  botUsername?: string;
  botId?: number;
}

export interface FakeTelegram {
  /** Pass as grammY's `client.apiRoot`. */
  readonly apiRoot: string;
  readonly token: string;
  readonly botUser: FakeUser;
  readonly calls: ApiCall[];
  /** The webhook set with `setWebhook` ("" when none). */
  readonly webhook: { url: string; secretToken?: string; allowedUpdates?: string[] };
  /** Queues a user's text message as an update (commands and @mentions get their entities). */
  sendText(input: IncomingText): FakeMessage;
  pushUpdate(body: Omit<FakeUpdate, "update_id">): FakeUpdate;
  /** Answers the next `times` calls of `method` (that match `when`) with this error. */
  injectError(
    method: string,
    error: ApiError,
    times?: number,
    when?: (params: Record<string, unknown>) => boolean,
  ): void;
  /** Every send to this chat gets 403 "bot was blocked by the user". */
  block(chatId: number): void;
  /** Messages in a chat, oldest first. */
  chat(chatId: number): ChatEntry[];
  /** Current texts of the bot's messages in a chat. */
  botTexts(chatId: number): string[];
  callsOf(method: string, chatId?: number): ApiCall[];
  /** Polls `check` every 10 ms until it returns a truthy value. */
  waitFor<T>(
    check: () => T | undefined | null | false,
    timeoutMs?: number,
    what?: string,
  ): Promise<T>;
  close(): Promise<void>;
}

const TELEGRAM_TEXT_LIMIT = 4096;

export function startFakeTelegram(opts: FakeTelegramOptions = {}): FakeTelegram {
  const token = opts.token ?? "123456:TEST-token_abcdefghijklmnopqrstuvwxyz";
  const botUser: FakeUser = {
    id: opts.botId ?? 123456,
    is_bot: true,
    first_name: "MedGLM",
    username: opts.botUsername ?? "medglm_test_bot",
  };
  const calls: ApiCall[] = [];
  const updates: FakeUpdate[] = [];
  let nextUpdateId = 1000;
  let confirmedOffset = 0;
  let allowedUpdates: string[] = [];
  const chats = new Map<number, ChatEntry[]>();
  const nextMessageId = new Map<number, number>();
  const blocked = new Set<number>();
  const injected: {
    method: string;
    error: ApiError;
    left: number;
    when?: (p: Record<string, unknown>) => boolean;
  }[] = [];
  const webhook: FakeTelegram["webhook"] = { url: "" };
  // The waiting long poll, if any: a new one terminates it with 409 as Telegram does.
  let waiter: { wake: (conflict: boolean) => void } | undefined;
  let closing = false;

  const now = () => Math.floor(Date.now() / 1000);
  const newMessageId = (chatId: number) => {
    const id = nextMessageId.get(chatId) ?? 1;
    nextMessageId.set(chatId, id + 1);
    return id;
  };
  const chatLog = (chatId: number) => {
    let log = chats.get(chatId);
    if (!log) chats.set(chatId, log = []);
    return log;
  };
  const fail = (error_code: number, description: string, parameters?: ApiError["parameters"]) =>
    ({ ok: false, error_code, description, ...(parameters ? { parameters } : {}) }) as ApiAnswer;
  const ok = (result: unknown): ApiAnswer => ({ ok: true, result });

  function queue(body: Omit<FakeUpdate, "update_id">): FakeUpdate {
    const update = { update_id: nextUpdateId++, ...body } as FakeUpdate;
    updates.push(update);
    waiter?.wake(false);
    return update;
  }

  function entitiesOf(text: string): FakeEntity[] {
    const entities: FakeEntity[] = [];
    for (const m of text.matchAll(/(^\/[A-Za-z0-9_]+(?:@[A-Za-z0-9_]+)?)|(@[A-Za-z0-9_]{5,32})/g)) {
      // Telegram measures offsets in UTF-16 code units, as JS string indices are.
      const offset = m.index!;
      entities.push({
        type: m[1] ? "bot_command" : "mention",
        offset,
        length: m[0].length,
      });
    }
    return entities;
  }

  function sendText(input: IncomingText): FakeMessage {
    const chatType = input.chatType ?? "private";
    const userId = input.userId ?? input.chatId;
    const from: FakeUser = { id: userId, is_bot: false, first_name: input.firstName ?? "User" };
    const chat: FakeChat = chatType === "private"
      ? { id: input.chatId, type: "private", first_name: from.first_name }
      : { id: input.chatId, type: chatType, title: "Test group" };
    const message: FakeMessage = {
      message_id: newMessageId(input.chatId),
      date: now(),
      chat,
      from,
      text: input.text,
    };
    const entities = entitiesOf(input.text);
    if (entities.length) message.entities = entities;
    if (input.replyTo !== undefined) {
      const target = chatLog(input.chatId).find((e) => e.message.message_id === input.replyTo);
      if (!target) throw new Error(`fake telegram: no message ${input.replyTo} in ${input.chatId}`);
      message.reply_to_message = { ...target.message, reply_to_message: undefined };
    }
    chatLog(input.chatId).push({ message, fromBot: false, versions: [input.text] });
    queue({ message });
    return message;
  }

  function param(params: Record<string, unknown>, name: string): unknown {
    return params[name];
  }
  function intParam(params: Record<string, unknown>, name: string): number | undefined {
    const v = param(params, name);
    if (v === undefined || v === null || v === "") return undefined;
    const n = typeof v === "number" ? v : Number(v);
    return Number.isFinite(n) ? Math.trunc(n) : undefined;
  }
  function textParam(params: Record<string, unknown>): string | undefined {
    const v = param(params, "text");
    return typeof v === "string" ? v : v === undefined ? undefined : String(v);
  }

  function checkText(text: string | undefined): ApiAnswer | undefined {
    if (text === undefined || text.trim() === "") {
      return fail(400, "Bad Request: message text is empty");
    }
    if (text.trim().length > TELEGRAM_TEXT_LIMIT) {
      return fail(400, "Bad Request: message is too long");
    }
  }

  async function getUpdates(params: Record<string, unknown>) {
    if (webhook.url) {
      return fail(
        409,
        "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
      );
    }
    const offset = intParam(params, "offset");
    const limit = Math.min(100, Math.max(1, intParam(params, "limit") ?? 100));
    const timeout = Math.max(0, intParam(params, "timeout") ?? 0);
    const allowed = param(params, "allowed_updates");
    if (allowed !== undefined) {
      const list = typeof allowed === "string" ? JSON.parse(allowed) : allowed;
      if (Array.isArray(list)) allowedUpdates = list.map(String);
    }
    if (offset !== undefined) {
      if (offset < 0) {
        const keep = updates.slice(offset);
        updates.splice(0, updates.length, ...keep);
      } else {
        confirmedOffset = Math.max(confirmedOffset, offset);
        while (updates.length && updates[0].update_id < confirmedOffset) updates.shift();
      }
    }
    const pick = () => {
      const wanted = updates.filter((u) => {
        if (allowedUpdates.length === 0) return true;
        return Object.keys(u).some((k) => k !== "update_id" && allowedUpdates.includes(k));
      });
      // Updates of unwanted kinds are dropped, as Telegram does.
      for (let i = updates.length - 1; i >= 0; i--) {
        if (!wanted.includes(updates[i])) updates.splice(i, 1);
      }
      return wanted.slice(0, limit);
    };
    let found = pick();
    if (found.length || timeout === 0 || closing) return ok(found);
    waiter?.wake(true);
    const conflict = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => done(false), timeout * 1000);
      const me = { wake: (c: boolean) => done(c) };
      waiter = me;
      function done(c: boolean) {
        clearTimeout(timer);
        if (waiter === me) waiter = undefined;
        resolve(c);
      }
    });
    if (conflict) {
      return fail(
        409,
        "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
      );
    }
    found = pick();
    return ok(found);
  }

  function takeInjected(method: string, params: Record<string, unknown>): ApiAnswer | undefined {
    const i = injected.findIndex((e) =>
      e.method === method && e.left > 0 && (!e.when || e.when(params))
    );
    if (i < 0) return undefined;
    const e = injected[i];
    e.left--;
    if (e.left === 0) injected.splice(i, 1);
    return fail(e.error.error_code, e.error.description, e.error.parameters);
  }

  async function answer(method: string, params: Record<string, unknown>) {
    const injectedError = takeInjected(method, params);
    if (injectedError) return injectedError;
    const chatId = intParam(params, "chat_id");
    if (chatId !== undefined && blocked.has(chatId) && method !== "getUpdates") {
      return fail(403, "Forbidden: bot was blocked by the user");
    }
    switch (method) {
      case "getMe":
        return ok({ ...botUser, can_join_groups: true, can_read_all_group_messages: false });
      case "deleteWebhook":
        webhook.url = "";
        delete webhook.secretToken;
        if (param(params, "drop_pending_updates") === true) updates.length = 0;
        return ok(true);
      case "setWebhook": {
        const url = param(params, "url");
        if (typeof url !== "string") return fail(400, "Bad Request: bad webhook: URL is empty");
        webhook.url = url;
        const secret = param(params, "secret_token");
        if (typeof secret === "string") webhook.secretToken = secret;
        const allowed = param(params, "allowed_updates");
        if (Array.isArray(allowed)) webhook.allowedUpdates = allowed.map(String);
        return ok(true);
      }
      case "getWebhookInfo":
        return ok({ url: webhook.url, has_custom_certificate: false, pending_update_count: 0 });
      case "setMyCommands":
        return ok(true);
      case "getUpdates":
        return await getUpdates(params);
      case "sendChatAction":
        if (chatId === undefined) return fail(400, "Bad Request: chat_id is empty");
        return ok(true);
      case "sendMessage": {
        if (chatId === undefined) return fail(400, "Bad Request: chat_id is empty");
        const text = textParam(params);
        const bad = checkText(text);
        if (bad) return bad;
        const chat: FakeChat = chats.get(chatId)?.[0]?.message.chat ??
          { id: chatId, type: "private", first_name: "User" };
        const message: FakeMessage = {
          message_id: newMessageId(chatId),
          date: now(),
          chat,
          from: botUser,
          text: text!.trim(),
        };
        chatLog(chatId).push({ message, fromBot: true, versions: [message.text] });
        return ok(message);
      }
      case "editMessageText": {
        if (chatId === undefined) return fail(400, "Bad Request: chat_id is empty");
        const id = intParam(params, "message_id");
        const entry = chats.get(chatId)?.find((e) => e.message.message_id === id);
        if (!entry) return fail(400, "Bad Request: message to edit not found");
        if (!entry.fromBot) return fail(400, "Bad Request: message can't be edited");
        const text = textParam(params);
        const bad = checkText(text);
        if (bad) return bad;
        if (text!.trim() === entry.message.text) {
          return fail(
            400,
            "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
          );
        }
        entry.message = { ...entry.message, text: text!.trim(), edit_date: now() };
        entry.versions.push(entry.message.text);
        return ok(entry.message);
      }
      default:
        return fail(404, "Not Found");
    }
  }

  async function readParams(req: Request, url: URL): Promise<Record<string, unknown>> {
    const params: Record<string, unknown> = Object.fromEntries(url.searchParams);
    if (req.method !== "POST") return params;
    const type = req.headers.get("content-type") ?? "";
    if (type.includes("application/json")) {
      const body = await req.text();
      if (body) Object.assign(params, JSON.parse(body));
    } else if (type.includes("form")) {
      const form = await req.formData();
      for (const [k, v] of form) {
        if (typeof v !== "string") continue;
        // Form values of objects/arrays arrive JSON-encoded, as with the real API.
        params[k] = /^[[{]/.test(v) ? JSON.parse(v) : v;
      }
    }
    return params;
  }

  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      const url = new URL(req.url);
      const m = url.pathname.match(/^\/bot([^/]+)\/([A-Za-z]+)$/);
      let response: ApiAnswer;
      let method = "";
      let params: Record<string, unknown> = {};
      const at = performance.now();
      if (!m) {
        response = fail(404, "Not Found");
      } else if (m[1] !== token) {
        method = m[2];
        response = fail(401, "Unauthorized");
      } else {
        method = m[2];
        try {
          params = await readParams(req, url);
          // A poll whose client went away keeps waiting, as on Telegram: the next poll ends it (409).
          response = await answer(method, params);
        } catch (e) {
          response = fail(400, `Bad Request: ${(e as Error).message}`);
        }
      }
      calls.push({ method, params, at, response });
      return Response.json(response, { status: response.ok ? 200 : response.error_code });
    },
  );

  const addr = server.addr as Deno.NetAddr;
  const apiRoot = `http://127.0.0.1:${addr.port}`;

  return {
    apiRoot,
    token,
    botUser,
    calls,
    webhook,
    sendText,
    pushUpdate: queue,
    injectError(method, error, times = 1, when) {
      injected.push({ method, error, left: times, when });
    },
    block(chatId) {
      blocked.add(chatId);
    },
    chat: (chatId) => chats.get(chatId) ?? [],
    botTexts: (chatId) =>
      (chats.get(chatId) ?? []).filter((e) => e.fromBot).map((e) => e.message.text),
    callsOf: (method, chatId) =>
      calls.filter((c) =>
        c.method === method && (chatId === undefined || Number(c.params.chat_id) === chatId)
      ),
    async waitFor(check, timeoutMs = 10_000, what = "condition") {
      const deadline = performance.now() + timeoutMs;
      while (true) {
        const v = check();
        if (v) return v;
        if (performance.now() > deadline) {
          throw new Error(`fake telegram: timed out waiting for ${what}`);
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    async close() {
      closing = true;
      waiter?.wake(false);
      await server.shutdown();
    },
  };
}
