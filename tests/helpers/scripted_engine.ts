/**
 * A test double for the engine contract: answers with a scripted text, streamed in small pieces
 * with a delay between them, honouring abort signals and a concurrency cap like the real engine.
 * Front-end tests use it to check protocol behaviour (SSE framing, backpressure, Telegram edits)
 * independently of any model; the same tests also run against the demo model.
 */
import type {
  ChatMessage,
  CompletionRequest,
  Engine,
  GenerationDelta,
  GenerationRequest,
} from "../../serve/engine/types.ts";
import { PromptTooLongError } from "../../serve/engine/types.ts";

export interface ScriptedEngineOptions {
  /** Builds the answer for a conversation; default echoes the last user message. */
  answer?: (messages: ChatMessage[]) => string;
  /** Characters per streamed delta. */
  chunkChars?: number;
  /** Milliseconds between deltas. */
  delayMs?: number;
  maxContext?: number;
}

export function createScriptedEngine(opts: ScriptedEngineOptions = {}): Engine & {
  requests: GenerationRequest[];
  completions: CompletionRequest[];
} {
  const answer = opts.answer ??
    ((m: ChatMessage[]) => `你问的是：${m[m.length - 1]?.content ?? ""}。请多休息，必要时就医。`);
  const chunk = opts.chunkChars ?? 2;
  const delay = opts.delayMs ?? 5;
  const maxContext = opts.maxContext ?? 2048;
  let active = 0;
  let tokensGenerated = 0;
  const requests: GenerationRequest[] = [];
  const completions: CompletionRequest[] = [];
  const count = (messages: ChatMessage[]) =>
    messages.reduce((n, m) => n + [...m.content].length + 4, 2);

  const engine = {
    requests,
    completions,
    info: { model: "scripted-test-engine", backend: "webgpu" as const, maxContext, demo: true },
    countPromptTokens: count,
    stats: () => ({ active, queued: 0, tokensGenerated }),
    close: () => Promise.resolve(),
    countTextTokens: (prompt: string) => count([{ role: "user", content: prompt }]),
    // Plain prompts: the answer for a one-message conversation holding the prompt.
    complete(req: CompletionRequest): AsyncIterable<GenerationDelta> {
      completions.push(req);
      return engine.generate({ ...req, messages: [{ role: "user", content: req.prompt }] }, false);
    },
    async *generate(req: GenerationRequest, record = true): AsyncIterable<GenerationDelta> {
      if (record) requests.push(req);
      const promptTokens = count(req.messages);
      if (promptTokens > maxContext) throw new PromptTooLongError(promptTokens, maxContext);
      const chars = [...answer(req.messages)];
      const limit = req.maxNewTokens ?? Infinity;
      active++;
      let produced = 0;
      try {
        for (let i = 0; i < chars.length; i += chunk) {
          if (req.signal?.aborted) {
            yield finish("abort");
            return;
          }
          await new Promise((r) => setTimeout(r, delay));
          const piece = chars.slice(i, Math.min(i + chunk, chars.length, limit));
          if (piece.length === 0) break;
          produced += piece.length;
          tokensGenerated += piece.length;
          yield { text: piece.join("") };
          if (produced >= limit) {
            yield finish("length");
            return;
          }
        }
        yield finish("stop");
      } finally {
        active--;
      }
      function finish(reason: "stop" | "length" | "abort"): GenerationDelta {
        return {
          text: "",
          finishReason: reason,
          usage: { promptTokens, completionTokens: produced },
        };
      }
    },
  };
  return engine;
}
