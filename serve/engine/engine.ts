/**
 * `buildEngine({ model, tokenizer })`: the engine contract (types.ts) over the continuous-batching
 * scheduler, for any tokenizer of the common interface. A request's messages become the prompt of
 * the one prompt builder (ChatGLM's chat format, or the model's own chat template); its tokens
 * come back as append-only text deltas (post-processed as the format says, never splitting a
 * character, held back while a stop string may be starting) until a tokenizer end-of-turn id
 * (`<eop>`, `<|im_end|>`, generation_config's eos list); the last delta carries the finish reason
 * and usage.
 */

import { createPromptBuilder, type PromptFormat, type Tokenizer } from "../../data/mod.ts";
import { type Decoder, type SlotModel, webgpuDecoder } from "./decoder.ts";
import { createRng } from "../../base/mod.ts";
import { createScheduler } from "./scheduler.ts";
import { createTextStream } from "./text_stream.ts";
import { byteTokensOf } from "./utf8_tokens.ts";
import { BUILTIN_GENERATION_DEFAULTS, withGenerationDefaults } from "./generation_defaults.ts";
import {
  type ChatMessage,
  type CompletionRequest,
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
  /** A loaded model (WebGPU backend: ChatGLM-6B or any model with the slot calls) … */
  model?: SlotModel;
  /** … or any decoder (the ONNX Runtime backend). */
  decoder?: Decoder;
  tokenizer: Tokenizer;
  /** Slots of the WebGPU decoder (default 8). Ignored with `decoder`. */
  maxBatch?: number;
  /** Longest prompt + answer (default: the model's maxContext). */
  maxContext?: number;
  /** Info shown to front ends; `model` defaults to the model's source. */
  info?: Partial<EngineInfo>;
  /** Dispose the model when the engine closes (default true). */
  ownsModel?: boolean;
  /**
   * How conversations become prompts: `chat`, `instruction` (ChatGLM-6B's) or `chat-template`
   * (the tokenizer's own Jinja template). Default: the template when the tokenizer has one, else
   * ChatGLM's chat format.
   */
  promptTemplate?: PromptFormat;
  /** Qwen3 chat template: false closes the think block of the generation prompt. */
  enableThinking?: boolean;
  /**
   * Sample on the GPU and read the ids back once per group of decode steps where the decoder can:
   * true (default) for every request the GPU sampler can take, `"greedy"` for greedy requests
   * only, false never (the per-token path: logits read back each step, host sampler). See
   * scheduler.ts.
   */
  gpuSampling?: boolean | "greedy";
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
  readonly tokenizer: Tokenizer;
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

/** The engine over a loaded model or a decoder (`createEngine` in create.ts picks it). */
export function buildEngine(opts: CreateEngineOptions): LocalEngine {
  const tok = opts.tokenizer;
  if (!opts.model && !opts.decoder) throw new TypeError("createEngine: give a model or a decoder");
  const decoder = opts.decoder ??
    webgpuDecoder(opts.model!, {
      slots: opts.maxBatch ?? DEFAULT_MAX_BATCH,
      maxContext: opts.maxContext,
      ownsModel: opts.ownsModel,
    });
  if (opts.model && tok.vocabSize > opts.model.config.vocabSize) {
    throw new Error(
      `tokenizer ${tok.source} has ${tok.vocabSize} tokens but the model's embedding has ` +
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
    defaults: opts.info?.defaults ?? { ...BUILTIN_GENERATION_DEFAULTS },
    weights: opts.info?.weights,
    architecture: opts.info?.architecture,
  };
  const defaults = info.defaults!;
  const bytes = byteTokensOf(tok);
  const endIds = new Set(tok.endOfTurnIds);
  if (endIds.size === 0) {
    throw new Error(
      `tokenizer ${tok.source} has no end-of-turn token (eos_token in tokenizer_config.json, ` +
        "eos_token_id in generation_config.json): generation could never stop",
    );
  }
  const scheduler = createScheduler(decoder, {
    textVocab: tok.vocabSize,
    endId: tok.endOfTurnIds[0],
    endIds: tok.endOfTurnIds,
    bytes,
    gpuSampling: opts.gpuSampling,
  });
  const prompts = createPromptBuilder(tok, {
    format: opts.promptTemplate,
    enableThinking: opts.enableThinking,
  });
  // Answers leave out special tokens (a template model's control tokens are not text).
  const decodeAnswer = (ids: number[]) => tok.decode(ids, { skipSpecialTokens: true });
  let closed = false;

  const encodeMessages = (messages: ChatMessage[]): number[] => prompts.encode(messages);

  async function* run(
    promptIds: number[],
    req: Omit<GenerationRequest, "messages">,
    postProcess: (text: string) => string = prompts.postProcess,
  ): AsyncGenerator<TokenDelta> {
    if (closed) throw new Error("the engine is closed");
    checkSampling(req);
    if (promptIds.length > maxContext) throw new PromptTooLongError(promptIds.length, maxContext);
    const room = maxContext - promptIds.length;
    const maxNew = Math.min(req.maxNewTokens ?? room, room);
    const stream = createTextStream({
      decode: decodeAnswer,
      postProcess,
      stop: req.stop,
      byteOf: bytes.byteOf,
      seqs: bytes.seqs,
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
          return endIds.has(id) ? false : stopCheck(id);
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
          const text = endIds.has(e.id) ? "" : pending.shift() ?? "";
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

  /** Only deltas with text, then the last one. */
  async function* textDeltas(deltas: AsyncIterable<TokenDelta>): AsyncGenerator<GenerationDelta> {
    for await (const d of deltas) {
      if (d.finishReason) {
        yield { text: d.text, finishReason: d.finishReason, usage: d.usage };
      } else if (d.text) {
        yield { text: d.text };
      }
    }
  }

  /**
   * Message requests: the chat prompt, the answer post-processed as a chat reply. Settings the
   * request leaves out come from the engine's generation defaults (`generateTokens`, the raw
   * API, leaves them out: greedy, no limit but the context).
   */
  function generate(req: GenerationRequest): AsyncGenerator<GenerationDelta> {
    if (closed) throw new Error("the engine is closed");
    return textDeltas(run(encodeMessages(req.messages), withGenerationDefaults(req, defaults)));
  }

  /** Plain prompts: given to the model as is, the continuation as the model wrote it. */
  function complete(req: CompletionRequest): AsyncGenerator<GenerationDelta> {
    if (closed) throw new Error("the engine is closed");
    const settings = withGenerationDefaults(req, defaults);
    return textDeltas(run(tok.encode(req.prompt), settings, (text) => text));
  }

  return {
    info,
    tokenizer: tok,
    generate,
    complete,
    countTextTokens: (prompt) => tok.encode(prompt).length,
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
