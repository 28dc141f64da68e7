/**
 * `createEngine({ model, tokenizer })`: the engine contract (types.ts) over the continuous-batching
 * scheduler. A request's messages become ChatGLM's chat prompt; its tokens come back as
 * append-only text deltas (post-processed with `processResponse`, never splitting a character,
 * held back while a stop string may be starting); the last delta carries the finish reason and
 * usage.
 */

import type { ChatGLMModel } from "../../core/models/chatglm/model.ts";
import type { ChatGLMTokenizer } from "../../data/tokenizer/chatglm/tokenizer.ts";
import { buildPrompt, type PromptTemplate } from "../../data/prompt/chat.ts";
import { messagesToChat } from "../../data/prompt/messages.ts";
import { processResponse } from "../../data/prompt/response.ts";
import { type Decoder, webgpuDecoder } from "./decoder.ts";
import { loadEngine, type LoadEngineOptions } from "./load.ts";
import { createRng } from "../../core/random.ts";
import { createScheduler } from "./scheduler.ts";
import { createTextStream } from "./text_stream.ts";
import {
  type ChatMessage,
  type Engine,
  type EngineInfo,
  type FinishReason,
  type GenerationDelta,
  type GenerationRequest,
  PromptTooLongError,
} from "./types.ts";

/** Sequences decoding together when the caller does not say. */
export const DEFAULT_MAX_BATCH = 8;

export interface CreateEngineOptions {
  /** A loaded model (WebGPU backend) … */
  model?: ChatGLMModel;
  /** … or any decoder (the ONNX Runtime backend). */
  decoder?: Decoder;
  tokenizer: ChatGLMTokenizer;
  /** Slots of the WebGPU decoder (default 8). Ignored with `decoder`. */
  maxBatch?: number;
  /** Longest prompt + answer (default: the model's maxContext). */
  maxContext?: number;
  /** Info shown to front ends; `model` defaults to the model's source. */
  info?: Partial<EngineInfo>;
  /** Dispose the model when the engine closes (default true). */
  ownsModel?: boolean;
  /** How conversations become prompts (default ChatGLM's chat template). */
  promptTemplate?: PromptTemplate;
}

/** A request by token ids instead of messages (tests, benchmarks, raw completion). */
export interface TokenRequest extends Omit<GenerationRequest, "messages"> {
  promptIds: number[];
}

/** A delta with the token ids it came from (the end id included, in the last delta). */
export interface TokenDelta extends GenerationDelta {
  tokens: number[];
}

export interface LocalEngine extends Engine {
  /** Generation from prompt ids; yields one delta per token (text may be empty). */
  generateTokens(request: TokenRequest): AsyncIterable<TokenDelta>;
  /** The prompt ids a conversation encodes to. */
  encodeMessages(messages: ChatMessage[]): number[];
  readonly tokenizer: ChatGLMTokenizer;
}

function checkSampling(req: Omit<GenerationRequest, "messages">): void {
  const bad = (name: string, v: unknown, rule: string) => {
    throw new RangeError(`${name} ${rule} (got ${v})`);
  };
  const t = req.temperature;
  if (t !== undefined && !(Number.isFinite(t) && t >= 0)) bad("temperature", t, "must be >= 0");
  const p = req.topP;
  if (p !== undefined && !(p > 0 && p <= 1)) bad("topP", p, "must be in (0, 1]");
  const k = req.topK;
  if (k !== undefined && !(Number.isInteger(k) && k >= 0)) {
    bad("topK", k, "must be an integer >= 0");
  }
  const r = req.repetitionPenalty;
  if (r !== undefined && !(Number.isFinite(r) && r > 0)) {
    bad("repetitionPenalty", r, "must be > 0");
  }
  const n = req.maxNewTokens;
  if (n !== undefined && !(Number.isInteger(n) && n >= 0)) {
    bad("maxNewTokens", n, "must be an integer >= 0");
  }
  const s = req.seed;
  if (s !== undefined && !Number.isSafeInteger(s)) bad("seed", s, "must be an integer");
  const stop = req.stop;
  if (stop !== undefined && !(Array.isArray(stop) && stop.every((x) => typeof x === "string"))) {
    bad("stop", JSON.stringify(stop), "must be an array of strings");
  }
}

/** A seed for requests that give none, so unseeded sampling still differs between requests. */
function freshSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

/**
 * The engine over a loaded model and tokenizer (`{ model, tokenizer }`, or `{ decoder, tokenizer }`
 * for another backend). Given a model *directory* instead (`{ model: "dir", adapter?, backend? }`,
 * or no model: the demo model), it loads everything first: see `loadEngine`.
 */
export function createEngine(opts: CreateEngineOptions): LocalEngine;
export function createEngine(opts: LoadEngineOptions): Promise<LocalEngine>;
export function createEngine(
  opts: CreateEngineOptions | LoadEngineOptions,
): LocalEngine | Promise<LocalEngine> {
  const o = opts as CreateEngineOptions;
  if ((typeof o.model === "object" && o.model !== null) || o.decoder) return buildEngine(o);
  return loadEngine(opts as LoadEngineOptions);
}

/** {@link createEngine} for a loaded model or a decoder. */
export function buildEngine(opts: CreateEngineOptions): LocalEngine {
  const tok = opts.tokenizer;
  if (!opts.model && !opts.decoder) throw new TypeError("createEngine: give a model or a decoder");
  const decoder = opts.decoder ??
    webgpuDecoder(opts.model!, {
      slots: opts.maxBatch ?? DEFAULT_MAX_BATCH,
      maxContext: opts.maxContext,
      ownsModel: opts.ownsModel,
    });
  if (opts.model && tok.textVocabSize > opts.model.config.vocabSize) {
    throw new Error(
      `tokenizer ${tok.source} has ${tok.textVocabSize} tokens but the model's embedding has ` +
        `${opts.model.config.vocabSize} rows: they belong to different models (use the ` +
        "tokenizer files of the model directory)",
    );
  }
  const maxContext = Math.min(opts.maxContext ?? decoder.maxContext, decoder.maxContext);
  const info: EngineInfo = {
    model: opts.info?.model ?? opts.model?.source ?? "chatglm",
    backend: opts.info?.backend ?? "webgpu",
    backendReason: opts.info?.backendReason,
    maxContext,
    demo: opts.info?.demo ?? false,
    weights: opts.info?.weights,
  };
  const scheduler = createScheduler(decoder, { textVocab: tok.textVocabSize, endId: tok.eopId });
  let closed = false;

  const encodeMessages = (messages: ChatMessage[]): number[] => {
    const { query, history } = messagesToChat(messages);
    return tok.encode(buildPrompt(query, history, opts.promptTemplate ?? "chat"));
  };

  async function* run(
    promptIds: number[],
    req: Omit<GenerationRequest, "messages">,
  ): AsyncGenerator<TokenDelta> {
    if (closed) throw new Error("the engine is closed");
    checkSampling(req);
    if (promptIds.length > maxContext) throw new PromptTooLongError(promptIds.length, maxContext);
    const room = maxContext - promptIds.length;
    const maxNew = Math.min(req.maxNewTokens ?? room, room);
    const stream = createTextStream({
      decode: (ids) => tok.decode(ids),
      postProcess: processResponse,
      stop: req.stop,
    });
    // Tokens arrive from the scheduler loop; the consumer pulls them at its own pace.
    type Event = { id: number } | { end: FinishReason; error?: unknown };
    const events: Event[] = [];
    let notify: (() => void) | null = null;
    const push = (e: Event) => {
      events.push(e);
      const n = notify;
      notify = null;
      n?.();
    };
    const local = new AbortController();
    const signal = req.signal ? AbortSignal.any([req.signal, local.signal]) : local.signal;
    let completion = 0;
    let finished = false;
    // The scheduler reports tokens synchronously in order; the text stream sees them there (a
    // stop string must end the sequence before the next step) and the deltas wait in `pending`.
    const pending: string[] = [];
    let stopHit = false;
    const stopCheck = (id: number): boolean => {
      const { delta, stopped } = stream.push(id);
      pending.push(delta);
      if (stopped) stopHit = true;
      return stopped;
    };
    try {
      scheduler.submit({
        promptIds,
        settings: req,
        rng: createRng(req.seed ?? freshSeed()),
        maxNewTokens: maxNew,
        signal,
        onToken(id) {
          push({ id });
          return id === tok.eopId ? false : stopCheck(id);
        },
        onEnd(reason, error) {
          push({ end: reason, error });
        },
      });
      while (true) {
        if (events.length === 0) await new Promise<void>((r) => notify = r);
        const e = events.shift()!;
        if ("id" in e) {
          completion++;
          const text = e.id === tok.eopId ? "" : pending.shift() ?? "";
          yield { text, tokens: [e.id] };
          continue;
        }
        if (e.error !== undefined) throw e.error;
        finished = true;
        const rest = stopHit || e.end === "abort" ? "" : stream.finish();
        yield {
          text: rest,
          tokens: [],
          finishReason: e.end,
          usage: { promptTokens: promptIds.length, completionTokens: completion },
        };
        return;
      }
    } finally {
      // A consumer that stops early (break, return, error) frees its slot at the next step.
      if (!finished) local.abort();
    }
  }

  /** Message requests: only deltas with text, then the last one. */
  async function* generate(req: GenerationRequest): AsyncGenerator<GenerationDelta> {
    if (closed) throw new Error("the engine is closed");
    const promptIds = encodeMessages(req.messages);
    for await (const d of run(promptIds, req)) {
      if (d.finishReason) {
        yield { text: d.text, finishReason: d.finishReason, usage: d.usage };
      } else if (d.text) {
        yield { text: d.text };
      }
    }
  }

  return {
    info,
    tokenizer: tok,
    generate,
    generateTokens(req: TokenRequest) {
      return run(req.promptIds, req);
    },
    encodeMessages,
    // A conversation ending with an answer is history being sized by a front end (the bot trims
    // stored turns this way): counted as the prompt it makes before an empty question.
    countPromptTokens: (messages) =>
      encodeMessages(
        messages.at(-1)?.role === "assistant"
          ? [...messages, { role: "user", content: "" }]
          : messages,
      ).length,
    stats: () => scheduler.stats(),
    async close() {
      if (closed) return;
      closed = true;
      await scheduler.close();
      await decoder.close();
    },
  };
}
