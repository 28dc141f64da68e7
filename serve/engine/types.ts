/**
 * The engine contract every front end (terminal, HTTP, Telegram) talks to. One generation loop
 * implements it per backend (WebGPU, ONNX Runtime); front ends never see kernels or tensors.
 */

import type { GenerationDefaults } from "./generation_defaults.ts";

/** One chat turn in OpenAI's shape; `system` is folded into the prompt by the prompt builder. */
export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

export interface SamplingOptions {
  /** 0 means greedy. */
  temperature?: number;
  topP?: number;
  topK?: number;
  /** ChatGLM-style repetition penalty (1 = off). */
  repetitionPenalty?: number;
  /** Seed for reproducible sampling. */
  seed?: number;
  /**
   * Mask tokens that cannot continue valid UTF-8 (byte-fallback or byte-level tokens that would
   * leave a broken character). Default: the engine's generation defaults (on for the demo model).
   */
  validUtf8?: boolean;
}

export interface GenerationRequest extends SamplingOptions {
  /** The conversation; the last message is the user's new question. */
  messages: ChatMessage[];
  maxNewTokens?: number;
  /** Extra stop strings; the tokenizer's end-of-turn ids (`<eop>`, `<|im_end|>`) always stop. */
  stop?: string[];
  /** Aborting frees the sequence at the next step and ends the iterator with finishReason "abort". */
  signal?: AbortSignal;
}

/**
 * A plain-text completion (`/v1/completions`): the prompt goes to the model as is, with no chat
 * template, and the answer is not post-processed as a chat reply.
 */
export interface CompletionRequest extends Omit<GenerationRequest, "messages"> {
  prompt: string;
}

export type FinishReason = "stop" | "length" | "abort";

/**
 * A piece of streamed output. `text` never splits a multi-byte character; concatenating every
 * delta's text gives the whole (post-processed) answer. The last delta has `finishReason` and
 * `usage` set.
 */
export interface GenerationDelta {
  text: string;
  finishReason?: FinishReason;
  usage?: { promptTokens: number; completionTokens: number };
}

export interface EngineInfo {
  /** Model name shown by /v1/models and the bot. */
  model: string;
  /** `remote`: an OpenAI-compatible endpoint answers (the bot's `--endpoint`). */
  backend: "webgpu" | "onnx" | "remote";
  /** Why this backend was chosen (for `auto`). */
  backendReason?: string;
  /** Trained context length; prompts longer than this are refused. */
  maxContext: number;
  /** True for the embedded demo model. */
  demo: boolean;
  /**
   * What `generate` / `complete` use for each sampling setting a request leaves out (the model's
   * generation_config.json, else the built-in ones). Absent for a remote engine: its server
   * decides.
   */
  defaults?: GenerationDefaults;
  /** What the weights are, e.g. "int4 (per-row scales), 3.6 GiB" (shown by /v1/models). */
  weights?: string;
  /** The model's architecture, config.json's `model_type` ("chatglm", "qwen3", …; /v1/models). */
  architecture?: string;
}

export interface EngineStats {
  /** Sequences decoding right now. */
  active: number;
  /** Requests waiting for a slot. */
  queued: number;
  tokensGenerated: number;
}

export interface Engine {
  readonly info: EngineInfo;
  /** Streams the answer to the conversation. Throws `PromptTooLongError` before yielding. */
  generate(request: GenerationRequest): AsyncIterable<GenerationDelta>;
  /**
   * Prompt tokens the conversation would take (for limits and usage). A conversation that ends
   * with an assistant message (history a front end is sizing) counts as if a question followed.
   */
  countPromptTokens(messages: ChatMessage[]): number;
  /** Optional: streams the continuation of a plain prompt. Throws `PromptTooLongError` first. */
  complete?(request: CompletionRequest): AsyncIterable<GenerationDelta>;
  /** Tokens a plain prompt takes (with `complete`). */
  countTextTokens?(prompt: string): number;
  stats(): EngineStats;
  close(): Promise<void>;
}

export class PromptTooLongError extends Error {
  constructor(public readonly tokens: number, public readonly limit: number) {
    super(`prompt is ${tokens} tokens, over the model's context of ${limit}`);
    this.name = "PromptTooLongError";
  }
}
