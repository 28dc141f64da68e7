/**
 * Validation of an OpenAI `POST /v1/chat/completions` body into the engine's terms. Every refusal
 * is a 400 whose `param` (and message) names the offending field; unknown fields are ignored, and
 * `null` counts as absent, as OpenAI clients send it that way.
 */
import type { ChatMessage } from "../engine/types.ts";
import { invalidParam } from "./errors.ts";

/** The fields chat and plain completions share: model, streaming and sampling. */
export interface GenerationParams {
  /** The model the client asked for (checked against the served one by the handler). */
  model?: string;
  stream: boolean;
  /** `stream_options.include_usage`: send a usage chunk before `[DONE]`. */
  includeUsage: boolean;
  temperature?: number;
  topP?: number;
  topK?: number;
  repetitionPenalty?: number;
  seed?: number;
  maxTokens?: number;
  stop?: string[];
  /** Extension `valid_utf8`: mask tokens that cannot continue valid UTF-8. */
  validUtf8?: boolean;
}

export interface ChatCompletionParams extends GenerationParams {
  messages: ChatMessage[];
}

const ROLES = new Set(["system", "user", "assistant"]);
const MAX_STOP = 4;

/** Validates a parsed JSON body; `maxContext` bounds `max_tokens`. Throws `HttpError` (400). */
export function parseChatRequest(body: unknown, maxContext: number): ChatCompletionParams {
  if (!isObject(body)) {
    throw invalidParam("body", "the request body must be a JSON object", "invalid_type");
  }
  const messages = parseMessages(body.messages);
  return { messages, ...parseGenerationParams(body, maxContext) };
}

/**
 * The shared fields of a chat or plain completion body (an object). `max_completion_tokens`
 * (chat only in OpenAI's API, harmless here) wins over `max_tokens`.
 */
export function parseGenerationParams(
  body: Record<string, unknown>,
  maxContext: number,
): GenerationParams {
  const model = optional(body, "model", (v, p) => string(v, p));
  const stream = optional(body, "stream", (v, p) => boolean(v, p)) ?? false;
  const streamOptions = body.stream_options;
  let includeUsage = false;
  if (streamOptions !== undefined && streamOptions !== null) {
    if (!isObject(streamOptions)) {
      throw invalidParam("stream_options", "must be an object", "invalid_type");
    }
    // OpenAI: "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    if (!stream) {
      throw invalidParam("stream_options", "is only allowed when stream is true");
    }
    includeUsage = optional(streamOptions, "include_usage", (v) =>
      boolean(v, "stream_options.include_usage")) ??
      false;
  }
  const n = optional(body, "n", (v, p) => integer(v, p));
  if (n !== undefined && n !== 1) {
    throw invalidParam("n", `only n = 1 is supported (got ${n})`, "unsupported_value");
  }
  const temperature = optional(body, "temperature", (v, p) => number(v, p));
  if (temperature !== undefined && !(temperature >= 0 && temperature <= 2)) {
    throw invalidParam("temperature", `must be between 0 and 2 (got ${temperature})`);
  }
  const topP = optional(body, "top_p", (v, p) => number(v, p));
  if (topP !== undefined && !(topP > 0 && topP <= 1)) {
    throw invalidParam("top_p", `must be greater than 0 and at most 1 (got ${topP})`);
  }
  const topK = optional(body, "top_k", (v, p) => integer(v, p));
  if (topK !== undefined && topK < 0) {
    throw invalidParam("top_k", `must be a non-negative integer (got ${topK})`);
  }
  const repetitionPenalty = optional(body, "repetition_penalty", (v, p) => number(v, p));
  if (repetitionPenalty !== undefined && !(repetitionPenalty > 0)) {
    throw invalidParam(
      "repetition_penalty",
      `must be greater than 0 (got ${repetitionPenalty})`,
    );
  }
  const seed = optional(body, "seed", (v, p) => integer(v, p));
  const maxTokens = parseMaxTokens(body, "max_completion_tokens", maxContext) ??
    parseMaxTokens(body, "max_tokens", maxContext);
  // Validate max_tokens even when max_completion_tokens (which wins) is present.
  parseMaxTokens(body, "max_tokens", maxContext);
  const stop = parseStop(body.stop);
  const validUtf8 = optional(body, "valid_utf8", (v, p) => boolean(v, p));
  return {
    validUtf8,
    model,
    stream,
    includeUsage,
    temperature,
    topP,
    topK,
    repetitionPenalty,
    seed,
    maxTokens,
    stop,
  };
}

function parseMessages(value: unknown): ChatMessage[] {
  if (value === undefined || value === null) {
    throw invalidParam("messages", "is required", "missing_required_parameter");
  }
  if (!Array.isArray(value)) throw invalidParam("messages", "must be an array", "invalid_type");
  if (value.length === 0) throw invalidParam("messages", "must not be empty");
  const messages = value.map((m, i): ChatMessage => {
    const at = `messages[${i}]`;
    if (!isObject(m)) throw invalidParam(at, "must be an object", "invalid_type");
    if (m.role === undefined || m.role === null) {
      throw invalidParam(`${at}.role`, "is required", "missing_required_parameter");
    }
    if (typeof m.role !== "string") {
      throw invalidParam(`${at}.role`, "must be a string", "invalid_type");
    }
    if (!ROLES.has(m.role)) {
      throw invalidParam(
        `${at}.role`,
        `unknown role "${m.role}"; expected "system", "user" or "assistant"`,
      );
    }
    return { role: m.role as ChatMessage["role"], content: parseContent(m.content, at) };
  });
  const last = messages.length - 1;
  if (messages[last].role !== "user") {
    throw invalidParam(
      `messages[${last}].role`,
      `the last message must be from the user (got "${messages[last].role}")`,
    );
  }
  if (messages[last].content.trim() === "") {
    throw invalidParam(`messages[${last}].content`, "the question must not be empty");
  }
  return messages;
}

/** A string, or OpenAI's array of `{ type: "text", text }` parts joined by newlines. */
function parseContent(value: unknown, at: string): string {
  const param = `${at}.content`;
  if (typeof value === "string") return value;
  if (value === undefined || value === null) {
    throw invalidParam(param, "is required", "missing_required_parameter");
  }
  if (!Array.isArray(value)) {
    throw invalidParam(param, "must be a string or an array of text parts", "invalid_type");
  }
  return value.map((part, j) => {
    const partAt = `${param}[${j}]`;
    if (!isObject(part)) throw invalidParam(partAt, "must be an object", "invalid_type");
    if (part.type !== "text") {
      throw invalidParam(
        `${partAt}.type`,
        `only "text" parts are supported (got ${JSON.stringify(part.type ?? null)})`,
      );
    }
    if (typeof part.text !== "string") {
      throw invalidParam(`${partAt}.text`, "must be a string", "invalid_type");
    }
    return part.text;
  }).join("\n");
}

function parseMaxTokens(
  body: Record<string, unknown>,
  name: string,
  maxContext: number,
): number | undefined {
  const value = optional(body, name, (v, p) => integer(v, p));
  if (value === undefined) return undefined;
  if (value < 1) throw invalidParam(name, `must be a positive integer (got ${value})`);
  if (value > maxContext) {
    throw invalidParam(name, `must be at most the model's context of ${maxContext} (got ${value})`);
  }
  return value;
}

function parseStop(value: unknown): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  const list = typeof value === "string" ? [value] : value;
  if (!Array.isArray(list)) {
    throw invalidParam("stop", "must be a string or an array of strings", "invalid_type");
  }
  if (list.length > MAX_STOP) {
    throw invalidParam("stop", `at most ${MAX_STOP} stop strings (got ${list.length})`);
  }
  list.forEach((s, i) => {
    const at = typeof value === "string" ? "stop" : `stop[${i}]`;
    if (typeof s !== "string") throw invalidParam(at, "must be a string", "invalid_type");
    if (s === "") throw invalidParam(at, "must not be empty");
  });
  return list.length > 0 ? list as string[] : undefined;
}

export function optional<T>(
  obj: Record<string, unknown>,
  key: string,
  parse: (value: unknown, param: string) => T,
): T | undefined {
  const value = obj[key];
  return value === undefined || value === null ? undefined : parse(value, key);
}

export function string(value: unknown, param: string): string {
  if (typeof value !== "string") throw invalidParam(param, "must be a string", "invalid_type");
  return value;
}

export function boolean(value: unknown, param: string): boolean {
  if (typeof value !== "boolean") throw invalidParam(param, "must be a boolean", "invalid_type");
  return value;
}

export function number(value: unknown, param: string): number {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    throw invalidParam(param, "must be a number", "invalid_type");
  }
  return value;
}

export function integer(value: unknown, param: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value)) {
    throw invalidParam(param, "must be an integer", "invalid_type");
  }
  return value;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
