/**
 * `POST /v1/completions`: a plain prompt, given to the model as is (no chat template), answered as
 * an OpenAI `text_completion` object or a stream of `text_completion` chunks. Needs an engine
 * that takes plain prompts (`engine.complete`); the local engines do, a remote one may not.
 */
import type { Context } from "npm:hono@4.13.19";
import { parseCompletionRequest } from "./completion_request.ts";
import { HttpError } from "./errors.ts";
import { readJsonBody } from "./json_body.ts";
import {
  type AnswerFormat,
  answerGeneration,
  contextTooLong,
  engineSettings,
  type GenerationDeps,
} from "./generation_run.ts";

const TEXT_FORMAT: AnswerFormat = {
  idPrefix: "cmpl",
  promptParam: "prompt",
  object: "text_completion",
  chunkObject: "text_completion",
  openingChunk: false,
  choice: (text, finishReason) => ({
    text,
    index: 0,
    logprobs: null,
    finish_reason: finishReason,
  }),
  chunkChoice: (text, finishReason) => ({
    text: text ?? "",
    index: 0,
    logprobs: null,
    finish_reason: finishReason,
  }),
};

export async function handleCompletion(c: Context, deps: GenerationDeps): Promise<Response> {
  const received = performance.now();
  const { engine } = deps;
  const body = await readJsonBody(c.req.raw, {
    maxBytes: deps.maxBodyBytes,
    timeoutMs: deps.bodyTimeoutMs,
  });
  const maxContext = engine.info.maxContext;
  const params = parseCompletionRequest(body, maxContext);
  if (!engine.complete || !engine.countTextTokens) {
    throw new HttpError(
      400,
      "prompt: this server's engine answers only chat requests; use /v1/chat/completions",
      { param: "prompt", code: "unsupported_value" },
    );
  }
  const promptTokens = engine.countTextTokens(params.prompt);
  if (promptTokens > maxContext) throw contextTooLong(promptTokens, maxContext, "prompt");
  const complete = engine.complete.bind(engine);
  return await answerGeneration(c, deps, {
    params,
    format: TEXT_FORMAT,
    received,
    promptTokens,
    start: (signal) =>
      complete({
        prompt: params.prompt,
        ...engineSettings(params),
        signal,
      }),
  });
}
