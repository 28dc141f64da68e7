/**
 * What chat and plain completions share once a request is validated: the model check, waiting
 * for a decode slot, running the engine, and answering as one JSON object or as a stream of
 * server events ending in `data: [DONE]` (with `stream_options.include_usage`, every chunk has
 * `usage: null` and a last chunk with no choices carries the usage, as OpenAI sends it). A client
 * that goes away (request signal aborted, or the response stream cancelled) aborts its engine
 * request, which frees the slot.
 */
import type { Context } from "npm:hono@4.13.19";
import { streamSSE } from "npm:hono@4.13.19/streaming";
import type { Engine, FinishReason, GenerationDelta, GenerationRequest } from "../engine/types.ts";
import { PromptTooLongError } from "../engine/types.ts";
import { type Admission, QueueFullError, type Release } from "./admission.ts";
import type { GenerationParams } from "./chat_request.ts";
import { HttpError } from "./errors.ts";
import type { ServingMetrics } from "./serving_metrics.ts";

export interface GenerationDeps {
  engine: Engine;
  admission: Admission;
  metrics: ServingMetrics;
  /** The model name answers carry (and requests must name, when they name one). */
  modelName: string;
  maxBodyBytes: number;
  bodyTimeoutMs: number;
}

/** Status for a request whose client left before an answer existed (nobody reads it). */
export const CLIENT_CLOSED = 499;

/** How one API shapes its answers (`chat.completion` or `text_completion`). */
export interface AnswerFormat {
  /** `chatcmpl` or `cmpl`. */
  idPrefix: string;
  /** The field over-long input is reported on (`messages` or `prompt`). */
  promptParam: string;
  /** `choices[0]` of a whole answer. */
  choice(text: string, finishReason: FinishReason): Record<string, unknown>;
  /** The non-streamed answer's `object`. */
  object: string;
  /** The streamed chunks' `object`. */
  chunkObject: string;
  /** `choices[0]` of a stream chunk: text (the first chunk: null), finish reason or null. */
  chunkChoice(text: string | null, finishReason: FinishReason | null): Record<string, unknown>;
  /** Whether the stream opens with an empty chunk (chat sends the role first). */
  openingChunk: boolean;
}

/** The request's generation settings in the engine's terms (left-out ones stay out). */
export function engineSettings(params: GenerationParams): Omit<GenerationRequest, "messages"> {
  return {
    maxNewTokens: params.maxTokens,
    stop: params.stop,
    temperature: params.temperature,
    topP: params.topP,
    topK: params.topK,
    repetitionPenalty: params.repetitionPenalty,
    seed: params.seed,
    validUtf8: params.validUtf8,
  };
}

/** 404 `model_not_found`, as OpenAI answers a model it does not serve. */
export function modelNotFound(asked: string, served: string): HttpError {
  return new HttpError(
    404,
    `model: the model "${asked}" does not exist; this server serves "${served}"`,
    { param: "model", code: "model_not_found" },
  );
}

/** A validated request, ready to run. */
export interface GenerationJob {
  params: GenerationParams;
  format: AnswerFormat;
  /** `performance.now()` when the request arrived (for latency metrics). */
  received: number;
  /** The counted prompt length (already checked against the context). */
  promptTokens: number;
  /** Calls the engine. */
  start: (signal: AbortSignal) => AsyncIterable<GenerationDelta>;
}

/** Runs a validated request and answers it. */
export async function answerGeneration(
  c: Context,
  deps: GenerationDeps,
  job: GenerationJob,
): Promise<Response> {
  const { admission, metrics } = deps;
  const { params, format, received, promptTokens } = job;
  if (params.model !== undefined && params.model !== deps.modelName) {
    throw modelNotFound(params.model, deps.modelName);
  }
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
      throw new HttpError(429, e.message, {
        type: "rate_limit_error",
        code: "rate_limit_exceeded",
        headers: { "Retry-After": String(e.retryAfter) },
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
    run = startRun({
      metrics,
      stream: job.start(controller.signal),
      signal: controller.signal,
      received,
      countedPromptTokens: promptTokens,
      onEnd: freeSlot,
    });
  } catch (e) {
    // An engine whose generate() throws at once (not from inside its iterator).
    freeSlot();
    metrics.finished.inc({ finish_reason: "error" });
    if (isPromptTooLong(e)) throw contextTooLong(e.tokens, e.limit, format.promptParam);
    throw e;
  }
  // Pull the first delta before committing to a status: the engine refuses over-long prompts
  // (PromptTooLongError) before yielding, and that must be a 400, not a broken stream.
  let first: IteratorResult<GenerationDelta>;
  try {
    first = await run.iterator.next();
  } catch (e) {
    run.end("error");
    if (isPromptTooLong(e)) throw contextTooLong(e.tokens, e.limit, format.promptParam);
    throw e;
  }

  const id = `${format.idPrefix}-${crypto.randomUUID()}`;
  const created = Math.floor(Date.now() / 1000);
  const model = deps.modelName;
  if (!params.stream) {
    let text = "";
    for await (const delta of run.deltas(first)) text += delta.text;
    if (controller.signal.aborted) return new Response(null, { status: CLIENT_CLOSED });
    if (run.finishReason === "abort") throw interrupted();
    return c.json({
      id,
      object: format.object,
      created,
      model,
      choices: [format.choice(text, run.finishReason)],
      usage: run.usage(),
    });
  }

  c.header("X-Accel-Buffering", "no");
  return streamSSE(c, async (sse) => {
    sse.onAbort(onClientGone);
    const chunk = (text: string | null, finishReason: FinishReason | null) => ({
      id,
      object: format.chunkObject,
      created,
      model,
      choices: [format.chunkChoice(text, finishReason)],
      ...(params.includeUsage ? { usage: null } : {}),
    });
    const send = (value: unknown) => sse.writeSSE({ data: JSON.stringify(value) });
    try {
      if (format.openingChunk) await send(chunk(null, null));
      for await (const delta of run.deltas(first)) {
        if (delta.text) await send(chunk(delta.text, null));
      }
      const reason = run.finishReason;
      if (sse.aborted || controller.signal.aborted) return;
      if (reason === "abort") throw interrupted();
      await send(chunk(format.openingChunk ? null : "", reason));
      if (params.includeUsage) {
        await send({
          id,
          object: format.chunkObject,
          created,
          model,
          choices: [],
          usage: run.usage(),
        });
      }
      await sse.writeSSE({ data: "[DONE]" });
    } catch (e) {
      // Headers are gone already: report in-band the way OpenAI's streams do, then stop.
      console.error("completion stream failed:", e);
      const error = e instanceof HttpError ? e : null;
      await send({
        error: {
          message: error ? error.message : `generation failed: ${(e as Error)?.message ?? e}`,
          type: "server_error",
          param: null,
          code: error ? error.code : "internal_error",
        },
      });
    }
  });
}

interface Run {
  iterator: AsyncIterator<GenerationDelta>;
  /** The deltas from `first` on; ends the run (slot, metrics) however the loop exits. */
  deltas(first: IteratorResult<GenerationDelta>): AsyncGenerator<GenerationDelta>;
  /** Ends the run once; later calls do nothing. */
  end(reason: FinishReason | "error"): void;
  readonly finishReason: FinishReason;
  usage(): { prompt_tokens: number; completion_tokens: number; total_tokens: number };
}

/** Keeps the bookkeeping (tokens, latencies) of one generation. */
function startRun(o: {
  metrics: ServingMetrics;
  stream: AsyncIterable<GenerationDelta>;
  /** Aborted when the client leaves. */
  signal: AbortSignal;
  received: number;
  countedPromptTokens: number;
  /** Frees the slot; called once when the run ends. */
  onEnd: () => void;
}): Run {
  const { signal, received, countedPromptTokens, onEnd } = o;
  const iterator = o.stream[Symbol.asyncIterator]();
  const m = o.metrics;
  let finishReason: FinishReason = "stop";
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
    { type: "server_error", code: "generation_interrupted" },
  );
}

/** 400 `context_length_exceeded` on `param` (`messages` or `prompt`). */
export function contextTooLong(tokens: number, limit: number, param: string): HttpError {
  const what = param === "messages" ? "the messages take" : "the prompt takes";
  const fix = param === "messages" ? "shorten the conversation" : "shorten the prompt";
  return new HttpError(
    400,
    `${param}: this model's maximum context length is ${limit} tokens, but ${what} ` +
      `${tokens} tokens; ${fix}`,
    { param, code: "context_length_exceeded" },
  );
}
