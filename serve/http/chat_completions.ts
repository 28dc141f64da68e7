/**
 * `POST /v1/chat/completions`: validates the request, waits for a decode slot, runs the engine
 * and answers as an OpenAI `chat.completion` object or a stream of `chat.completion.chunk` server
 * events ending in `data: [DONE]`. A client that goes away (request signal aborted, or the
 * response stream cancelled) aborts its engine request, which frees the slot.
 */
import type { Context } from "npm:hono@4.13.19";
import { streamSSE } from "npm:hono@4.13.19/streaming";
import type { Engine, FinishReason, GenerationDelta, GenerationRequest } from "../engine/types.ts";
import { PromptTooLongError } from "../engine/types.ts";
import { type Admission, QueueFullError, type Release } from "./admission.ts";
import { type ChatCompletionParams, parseChatRequest } from "./chat_request.ts";
import { HttpError } from "./errors.ts";
import { readJsonBody } from "./json_body.ts";
import type { ServingMetrics } from "./serving_metrics.ts";

export interface ChatCompletionDeps {
  engine: Engine;
  admission: Admission;
  metrics: ServingMetrics;
  /** The model name answers carry. */
  modelName: string;
  maxBodyBytes: number;
}

/** Status for a request whose client left before an answer existed (nobody reads it). */
const CLIENT_CLOSED = 499;

export async function handleChatCompletion(
  c: Context,
  deps: ChatCompletionDeps,
): Promise<Response> {
  const { engine, admission, metrics } = deps;
  const received = performance.now();
  const body = await readJsonBody(c.req.raw, deps.maxBodyBytes);
  const maxContext = engine.info.maxContext;
  const params = parseChatRequest(body, maxContext);
  const promptTokens = engine.countPromptTokens(params.messages);
  if (promptTokens > maxContext) throw contextTooLong(promptTokens, maxContext);

  // One controller per request: the client leaving (either way) aborts queue wait and decoding.
  const controller = new AbortController();
  const clientSignal = c.req.raw.signal;
  const onClientGone = () =>
    controller.abort(new DOMException("client disconnected", "AbortError"));
  if (clientSignal.aborted) return new Response(null, { status: CLIENT_CLOSED });
  clientSignal.addEventListener("abort", onClientGone, { once: true });

  let release: Release;
  try {
    release = await admission.acquire(controller.signal);
  } catch (e) {
    clientSignal.removeEventListener("abort", onClientGone);
    if (e instanceof QueueFullError) {
      metrics.rejected.inc({ reason: "queue_full" });
      throw new HttpError(429, e.message, "rate_limit_error", null, "rate_limit_exceeded", {
        "Retry-After": String(e.retryAfter),
      });
    }
    if (controller.signal.aborted) return new Response(null, { status: CLIENT_CLOSED });
    throw e;
  }
  metrics.queueWait.observe((performance.now() - received) / 1000);
  metrics.batchSize.observe(admission.active);

  const freeSlot = () => {
    release();
    clientSignal.removeEventListener("abort", onClientGone);
  };
  let run: Run;
  try {
    run = startRun(deps, params, controller.signal, received, promptTokens, freeSlot);
  } catch (e) {
    // An engine whose generate() throws at once (not from inside its iterator).
    freeSlot();
    metrics.finished.inc({ finish_reason: "error" });
    if (isPromptTooLong(e)) throw contextTooLong(e.tokens, e.limit);
    throw e;
  }
  // Pull the first delta before committing to a status: the engine refuses over-long prompts
  // (PromptTooLongError) before yielding, and that must be a 400, not a broken stream.
  let first: IteratorResult<GenerationDelta>;
  try {
    first = await run.iterator.next();
  } catch (e) {
    run.end("error");
    if (isPromptTooLong(e)) throw contextTooLong(e.tokens, e.limit);
    throw e;
  }

  const id = `chatcmpl-${crypto.randomUUID()}`;
  const created = Math.floor(Date.now() / 1000);
  if (!params.stream) {
    return await completeAll(c, run, first, id, created, deps.modelName, controller.signal);
  }

  c.header("X-Accel-Buffering", "no");
  return streamSSE(c, async (sse) => {
    sse.onAbort(onClientGone);
    const chunk = (delta: Record<string, string>, finishReason: string | null) => ({
      id,
      object: "chat.completion.chunk",
      created,
      model: deps.modelName,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
      ...(params.includeUsage ? { usage: null } : {}),
    });
    const send = (value: unknown) => sse.writeSSE({ data: JSON.stringify(value) });
    try {
      await send(chunk({ role: "assistant", content: "" }, null));
      for await (const delta of run.deltas(first)) {
        if (delta.text) await send(chunk({ content: delta.text }, null));
      }
      const reason = run.finishReason;
      if (sse.aborted || controller.signal.aborted) return;
      if (reason === "abort") throw interrupted();
      await send(chunk({}, reason));
      if (params.includeUsage) {
        await send({
          id,
          object: "chat.completion.chunk",
          created,
          model: deps.modelName,
          choices: [],
          usage: run.usage(),
        });
      }
      await sse.writeSSE({ data: "[DONE]" });
    } catch (e) {
      // Headers are gone already: report in-band the way OpenAI's streams do, then stop.
      console.error("chat completion stream failed:", e);
      await send({
        error: {
          message: `generation failed: ${(e as Error)?.message ?? e}`,
          type: "server_error",
          param: null,
          code: null,
        },
      });
    }
  });
}

async function completeAll(
  c: Context,
  run: Run,
  first: IteratorResult<GenerationDelta>,
  id: string,
  created: number,
  model: string,
  clientSignal: AbortSignal,
): Promise<Response> {
  let text = "";
  for await (const delta of run.deltas(first)) text += delta.text;
  if (clientSignal.aborted) return new Response(null, { status: CLIENT_CLOSED });
  if (run.finishReason === "abort") throw interrupted();
  return c.json({
    id,
    object: "chat.completion",
    created,
    model,
    choices: [{
      index: 0,
      message: { role: "assistant", content: text },
      logprobs: null,
      finish_reason: run.finishReason,
    }],
    usage: run.usage(),
  });
}

interface Run {
  iterator: AsyncIterator<GenerationDelta>;
  /** The deltas from `first` on; ends the run (slot, metrics) however the loop exits. */
  deltas(first: IteratorResult<GenerationDelta>): AsyncGenerator<GenerationDelta>;
  /** Ends the run once; later calls do nothing. */
  end(reason: FinishReason | "error"): void;
  readonly finishReason: "stop" | "length" | "abort";
  usage(): { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

/** Starts the engine request and keeps the bookkeeping (tokens, latencies) of one generation. */
function startRun(
  deps: ChatCompletionDeps,
  params: ChatCompletionParams,
  signal: AbortSignal,
  received: number,
  countedPromptTokens: number,
  onEnd: () => void,
): Run {
  const request: GenerationRequest = {
    messages: params.messages,
    maxNewTokens: params.maxTokens,
    stop: params.stop,
    temperature: params.temperature,
    topP: params.topP,
    topK: params.topK,
    repetitionPenalty: params.repetitionPenalty,
    seed: params.seed,
    signal,
  };
  const iterator = deps.engine.generate(request)[Symbol.asyncIterator]();
  const m = deps.metrics;
  let finishReason: "stop" | "length" | "abort" = "stop";
  let usage: GenerationDelta["usage"];
  let pieces = 0;
  let firstTextAt = 0;
  let lastTextAt = 0;
  let ended = false;

  const completionTokens = () => usage?.completionTokens ?? pieces;
  const run: Run = {
    iterator,
    get finishReason() {
      return finishReason;
    },
    usage() {
      const prompt = usage?.promptTokens ?? countedPromptTokens;
      const completion = completionTokens();
      return {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
      };
    },
    end(reason) {
      if (ended) return;
      ended = true;
      onEnd();
      const now = performance.now();
      m.finished.inc({ finish_reason: reason });
      m.promptTokens.inc(undefined, usage?.promptTokens ?? countedPromptTokens);
      m.tokensGenerated.inc(undefined, completionTokens());
      m.requestDuration.observe((now - received) / 1000);
      if (firstTextAt > 0) {
        m.timeToFirstToken.observe((firstTextAt - received) / 1000);
        const n = completionTokens();
        if (n > 1) m.timePerOutputToken.observe((lastTextAt - firstTextAt) / 1000 / (n - 1));
      }
    },
    async *deltas(first) {
      let outcome: FinishReason | "error" = "abort";
      let step = first;
      try {
        while (!step.done) {
          const delta = step.value;
          if (delta.text) {
            lastTextAt = performance.now();
            if (firstTextAt === 0) firstTextAt = lastTextAt;
            pieces++;
          }
          if (delta.usage) usage = delta.usage;
          if (delta.finishReason) finishReason = delta.finishReason;
          yield delta;
          if (delta.finishReason) break;
          step = await iterator.next();
        }
        if (signal.aborted) finishReason = "abort";
        outcome = finishReason;
      } catch (e) {
        outcome = "error";
        throw e;
      } finally {
        // The engine may still be suspended at its last yield (after the finish delta, or when
        // the client left early): closing it runs its cleanup and frees the sequence.
        if (!step.done) await iterator.return?.().catch(() => {});
        run.end(outcome);
      }
    },
  };
  return run;
}

function isPromptTooLong(e: unknown): e is PromptTooLongError {
  // By name too: an engine loaded from another URL has its own copy of the class.
  return e instanceof PromptTooLongError ||
    (e instanceof Error && e.name === "PromptTooLongError" && "tokens" in e && "limit" in e);
}

/** The engine ended a sequence with "abort" although its client is still there. */
function interrupted(): HttpError {
  return new HttpError(
    503,
    "generation was interrupted by the server (shutting down?); retry",
    "server_error",
    null,
    "generation_interrupted",
  );
}

function contextTooLong(tokens: number, limit: number): HttpError {
  return new HttpError(
    400,
    `messages: this model's maximum context length is ${limit} tokens, but the messages ` +
      `take ${tokens} tokens; shorten the conversation`,
    "invalid_request_error",
    "messages",
    "context_length_exceeded",
  );
}
