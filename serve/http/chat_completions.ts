/**
 * `POST /v1/chat/completions`: validates the request and answers as an OpenAI `chat.completion`
 * object or a stream of `chat.completion.chunk` events (generation_run.ts does the rest).
 */
import type { Context } from "npm:hono@4.13.19";
import { parseChatRequest } from "./chat_request.ts";
import { readJsonBody } from "./json_body.ts";
import {
  type AnswerFormat,
  answerGeneration,
  contextTooLong,
  engineSettings,
  type GenerationDeps,
} from "./generation_run.ts";

const CHAT_FORMAT: AnswerFormat = {
  idPrefix: "chatcmpl",
  promptParam: "messages",
  object: "chat.completion",
  chunkObject: "chat.completion.chunk",
  openingChunk: true,
  choice: (text, finishReason) => ({
    index: 0,
    message: { role: "assistant", content: text },
    logprobs: null,
    finish_reason: finishReason,
  }),
  chunkChoice: (text, finishReason) => ({
    index: 0,
    // The opening chunk names the role; the closing one has an empty delta.
    delta: text === null ? (finishReason ? {} : { role: "assistant", content: "" }) : {
      content: text,
    },
    logprobs: null,
    finish_reason: finishReason,
  }),
};

export async function handleChatCompletion(c: Context, deps: GenerationDeps): Promise<Response> {
  const received = performance.now();
  const body = await readJsonBody(c.req.raw, {
    maxBytes: deps.maxBodyBytes,
    timeoutMs: deps.bodyTimeoutMs,
  });
  const maxContext = deps.engine.info.maxContext;
  const params = parseChatRequest(body, maxContext);
  const promptTokens = deps.engine.countPromptTokens(params.messages);
  if (promptTokens > maxContext) throw contextTooLong(promptTokens, maxContext, "messages");
  return await answerGeneration(c, deps, {
    params,
    format: CHAT_FORMAT,
    received,
    promptTokens,
    start: (signal) =>
      deps.engine.generate({
        messages: params.messages,
        ...engineSettings(params),
        signal,
      }),
  });
}
