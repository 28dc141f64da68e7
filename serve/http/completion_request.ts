/**
 * Validation of an OpenAI `POST /v1/completions` body (the plain-prompt API that evaluation tools
 * and older clients use). Same rules as chat requests for the shared fields; options that would
 * change the answer's shape and are not implemented (`echo`, `suffix`, `logprobs`, `best_of`,
 * several prompts) are refused by name rather than ignored.
 */
import {
  type GenerationParams,
  integer,
  isObject,
  optional,
  parseGenerationParams,
} from "./chat_request.ts";
import { invalidParam } from "./errors.ts";

export interface CompletionParams extends GenerationParams {
  prompt: string;
}

/** OpenAI's default `max_tokens` for `/v1/completions` (chat has none). */
export const DEFAULT_COMPLETION_MAX_TOKENS = 16;

export function parseCompletionRequest(body: unknown, maxContext: number): CompletionParams {
  if (!isObject(body)) {
    throw invalidParam("body", "the request body must be a JSON object", "invalid_type");
  }
  const prompt = parsePrompt(body.prompt);
  if (body.echo === true) {
    throw invalidParam("echo", "echoing the prompt is not supported", "unsupported_value");
  }
  if (body.suffix !== undefined && body.suffix !== null && body.suffix !== "") {
    throw invalidParam("suffix", "insertion (suffix) is not supported", "unsupported_value");
  }
  if (body.logprobs !== undefined && body.logprobs !== null && body.logprobs !== 0) {
    throw invalidParam("logprobs", "log probabilities are not supported", "unsupported_value");
  }
  const bestOf = optional(body, "best_of", (v, p) => integer(v, p));
  if (bestOf !== undefined && bestOf !== 1) {
    throw invalidParam(
      "best_of",
      `only best_of = 1 is supported (got ${bestOf})`,
      "unsupported_value",
    );
  }
  const params = parseGenerationParams(body, maxContext);
  return {
    prompt,
    ...params,
    maxTokens: params.maxTokens ?? Math.min(DEFAULT_COMPLETION_MAX_TOKENS, maxContext),
  };
}

/** A string, or a list holding exactly one string (OpenAI's batch form, with one prompt). */
function parsePrompt(value: unknown): string {
  if (value === undefined || value === null) {
    throw invalidParam("prompt", "is required", "missing_required_parameter");
  }
  if (typeof value === "string") return value;
  if (Array.isArray(value)) {
    if (value.length === 1 && typeof value[0] === "string") return value[0];
    if (value.length > 0 && value.every((v) => typeof v === "number")) {
      throw invalidParam(
        "prompt",
        "token id prompts are not supported; send text",
        "unsupported_value",
      );
    }
    if (value.length !== 1) {
      throw invalidParam(
        "prompt",
        `only one prompt per request is supported (got ${value.length})`,
        "unsupported_value",
      );
    }
  }
  throw invalidParam("prompt", "must be a string", "invalid_type");
}
