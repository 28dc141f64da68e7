/**
 * An `Engine` backed by any OpenAI-compatible `/v1/chat/completions` endpoint (our own `serve`,
 * vLLM, llama.cpp, ...), streamed with server-sent events. Lets the bot run apart from the model.
 */
import {
  type ChatMessage,
  type Engine,
  type EngineInfo,
  type FinishReason,
  type GenerationDelta,
  type GenerationRequest,
  PromptTooLongError,
} from "../serve/mod.ts";

export interface OpenAIEngineOptions {
  /** Server root (`http://host:8000`), its `/v1`, or the full `/v1/chat/completions` URL. */
  endpoint: string;
  /** Sent as `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Model name sent with each request; `connectOpenAIEngine` asks `/v1/models` when absent. */
  model?: string;
  /** The model's context length (the API does not say); default 2048. */
  maxContext?: number;
  /** Token counter for history limits; default a character-based estimate. */
  countTokens?: (messages: ChatMessage[]) => number;
  /** For tests. */
  fetch?: typeof fetch;
}

/** An HTTP error answer of the endpoint; `status` lets a pool tell refusals from failures. */
export class EndpointHttpError extends Error {
  constructor(message: string, readonly status: number) {
    super(message);
    this.name = "EndpointHttpError";
  }
}

/** The endpoint's chat-completions and models URLs. */
export function endpointUrls(endpoint: string): { chat: string; models: string } {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new Error(`--endpoint: not a URL: ${endpoint}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error(`--endpoint: must be http(s), got ${endpoint}`);
  }
  let path = url.pathname.replace(/\/+$/, "");
  if (path.endsWith("/chat/completions")) path = path.slice(0, -"/chat/completions".length);
  else if (!path.endsWith("/v1")) path += "/v1";
  const base = `${url.origin}${path}`;
  return { chat: `${base}/chat/completions`, models: `${base}/models` };
}

/** The endpoint's `/health`, beside `/v1` (our serve, vLLM and llama.cpp all answer it there). */
export function healthUrl(endpoint: string): string {
  return endpointUrls(endpoint).chat.replace(/\/v1\/chat\/completions$/, "/health");
}

/**
 * A rough token count for when the server's tokenizer is out of reach: ChatGLM's tokenizer gives
 * about one token per CJK character and one per 3-4 Latin characters; plus the chat template's
 * few tokens per turn. It errs high, so history limits stay on the safe side.
 */
export function estimateTokens(messages: ChatMessage[]): number {
  let n = 2;
  for (const m of messages) {
    n += 6;
    let latin = 0;
    for (const ch of m.content) {
      if (ch.codePointAt(0)! < 0x2e80) latin++;
      else n++;
    }
    n += Math.ceil(latin / 3);
  }
  return n;
}

/** The engine, with `model` as given (default "default"). */
export function createOpenAIEngine(opts: OpenAIEngineOptions): Engine {
  const urls = endpointUrls(opts.endpoint);
  const doFetch = opts.fetch ?? fetch;
  const count = opts.countTokens ?? estimateTokens;
  const maxContext = opts.maxContext ?? 2048;
  const info: EngineInfo = {
    model: opts.model ?? "default",
    backend: "remote",
    backendReason: `remote OpenAI-compatible endpoint ${urls.chat}`,
    maxContext,
    demo: false,
  };
  const inFlight = new Set<AbortController>();
  let active = 0;
  let tokensGenerated = 0;
  let closed = false;

  const headers = (): Record<string, string> => ({
    "content-type": "application/json",
    accept: "text/event-stream",
    ...(opts.apiKey ? { authorization: `Bearer ${opts.apiKey}` } : {}),
  });

  async function* generate(req: GenerationRequest): AsyncGenerator<GenerationDelta> {
    if (closed) throw new Error("the engine is closed");
    const controller = new AbortController();
    const onAbort = () => controller.abort(req.signal?.reason);
    req.signal?.addEventListener("abort", onAbort, { once: true });
    if (req.signal?.aborted) controller.abort(req.signal.reason);
    inFlight.add(controller);
    active++;
    let completionTokens = 0;
    let usage: GenerationDelta["usage"];
    let finishReason: FinishReason | undefined;
    let reader: ReadableStreamDefaultReader<string> | undefined;
    const aborted = () => req.signal?.aborted === true;
    const finish = (reason: FinishReason): GenerationDelta => ({
      text: "",
      finishReason: reason,
      usage: usage ?? { promptTokens: count(req.messages), completionTokens },
    });
    try {
      let res: Response;
      try {
        res = await doFetch(urls.chat, {
          method: "POST",
          headers: headers(),
          body: JSON.stringify(requestBody(info.model, req)),
          signal: controller.signal,
        });
      } catch (err) {
        if (aborted()) {
          yield finish("abort");
          return;
        }
        throw new Error(`cannot reach ${urls.chat}: ${(err as Error).message}`);
      }
      if (!res.ok) throw await responseError(res, urls.chat, () => count(req.messages), maxContext);
      if (!res.body) throw new Error(`${urls.chat}: the answer has no body`);
      reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let done = false;
      try {
        for await (const data of sseEvents(reader)) {
          if (data === "[DONE]") {
            done = true;
            break;
          }
          const chunk = parseChunk(data, urls.chat);
          if (chunk.usage) usage = chunk.usage;
          if (chunk.finishReason) finishReason = chunk.finishReason;
          if (chunk.text) {
            completionTokens++;
            tokensGenerated++;
            yield { text: chunk.text };
          }
        }
      } catch (err) {
        if (aborted()) {
          yield finish("abort");
          return;
        }
        throw err;
      }
      if (aborted()) {
        yield finish("abort");
        return;
      }
      if (!done && !finishReason) throw new Error(`${urls.chat}: the stream ended early`);
      yield finish(finishReason ?? "stop");
    } finally {
      req.signal?.removeEventListener("abort", onAbort);
      inFlight.delete(controller);
      active--;
      // Stopping early (abort, or the caller left the loop): drop the connection.
      if (reader) await reader.cancel().catch(() => {});
      controller.abort();
    }
  }

  return {
    info,
    generate,
    countPromptTokens: count,
    stats: () => ({ active, queued: 0, tokensGenerated }),
    close() {
      closed = true;
      for (const c of inFlight) c.abort(new Error("the engine is closing"));
      return Promise.resolve();
    },
  };
}

/** Like `createOpenAIEngine`, but first asks `/v1/models` (for the model name when not given). */
export async function connectOpenAIEngine(opts: OpenAIEngineOptions): Promise<Engine> {
  if (opts.model) return createOpenAIEngine(opts);
  const { models } = endpointUrls(opts.endpoint);
  let res: Response;
  try {
    res = await (opts.fetch ?? fetch)(models, {
      headers: opts.apiKey ? { authorization: `Bearer ${opts.apiKey}` } : {},
    });
  } catch (err) {
    throw new Error(`cannot reach ${models}: ${(err as Error).message}`);
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`${models}: HTTP ${res.status}; give the model name with --endpoint-model`);
  }
  const body = await res.json().catch(() => undefined);
  const id = body?.data?.[0]?.id;
  if (typeof id !== "string") {
    throw new Error(
      `${models}: no model listed in "data"; give the model name with --endpoint-model`,
    );
  }
  return createOpenAIEngine({ ...opts, model: id });
}

function requestBody(model: string, req: GenerationRequest): Record<string, unknown> {
  const body: Record<string, unknown> = {
    model,
    messages: req.messages.map((m) => ({ role: m.role, content: m.content })),
    stream: true,
    stream_options: { include_usage: true },
  };
  if (req.maxNewTokens !== undefined) body.max_tokens = req.maxNewTokens;
  if (req.temperature !== undefined) body.temperature = req.temperature;
  if (req.topP !== undefined) body.top_p = req.topP;
  if (req.seed !== undefined) body.seed = req.seed;
  if (req.stop?.length) body.stop = req.stop;
  // Not in OpenAI's API, but understood by vLLM, llama.cpp and our serve; sent only when asked.
  if (req.topK !== undefined) body.top_k = req.topK;
  if (req.repetitionPenalty !== undefined) body.repetition_penalty = req.repetitionPenalty;
  return body;
}

async function responseError(
  res: Response,
  url: string,
  promptTokens: () => number,
  maxContext: number,
): Promise<Error> {
  const text = await res.text().catch(() => "");
  let message = text.slice(0, 500);
  let code: unknown;
  try {
    const err = JSON.parse(text)?.error;
    if (typeof err?.message === "string") message = err.message;
    code = err?.code ?? err?.type;
  } catch { /* not JSON: keep the text */ }
  if (
    (res.status === 400 || res.status === 413) &&
    (code === "context_length_exceeded" || /context length|too long|maximum context/i.test(message))
  ) {
    // OpenAI and our serve both name the limit ("maximum context length is N tokens") and the
    // prompt's size ("resulted in M tokens" / "take M tokens").
    const limitText = message.match(/context length is (\d+)/i)?.[1];
    const limit = limitText ? Number(limitText) : maxContext;
    const sizes = [...message.matchAll(/(\d+)\s*tokens/g)].map((m) => Number(m[1]));
    return new PromptTooLongError(sizes.find((n) => n !== limit) ?? promptTokens(), limit);
  }
  return new EndpointHttpError(`${url}: HTTP ${res.status}: ${message}`, res.status);
}

/** The `data` of each server-sent event (multi-line data joined with "\n"). */
export async function* sseEvents(
  reader: ReadableStreamDefaultReader<string>,
): AsyncGenerator<string> {
  let buffer = "";
  let data: string[] = [];
  while (true) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let nl: number;
    while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
      // A lone "\r" at the end may be the first half of "\r\n": wait for more.
      if (buffer[nl] === "\r" && nl === buffer.length - 1) break;
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
      if (line === "") {
        if (data.length) yield data.join("\n");
        data = [];
      } else if (line.startsWith("data:")) {
        data.push(line.slice(line[5] === " " ? 6 : 5));
      }
      // Other fields (event:, id:, retry:) and comments (":") carry nothing we need.
    }
  }
  if (buffer.startsWith("data:")) data.push(buffer.slice(buffer[5] === " " ? 6 : 5));
  if (data.length) yield data.join("\n");
}

function parseChunk(
  data: string,
  url: string,
): { text?: string; finishReason?: FinishReason; usage?: GenerationDelta["usage"] } {
  let json;
  try {
    json = JSON.parse(data);
  } catch {
    throw new Error(`${url}: a stream event is not JSON: ${data.slice(0, 200)}`);
  }
  if (json?.error) {
    throw new Error(
      `${url}: the server reported an error: ${json.error.message ?? JSON.stringify(json.error)}`,
    );
  }
  const choice = json?.choices?.[0];
  const out: { text?: string; finishReason?: FinishReason; usage?: GenerationDelta["usage"] } = {};
  const content = choice?.delta?.content;
  if (typeof content === "string" && content) out.text = content;
  const reason = choice?.finish_reason;
  if (typeof reason === "string") out.finishReason = reason === "length" ? "length" : "stop";
  const u = json?.usage;
  if (u && typeof u.prompt_tokens === "number" && typeof u.completion_tokens === "number") {
    out.usage = { promptTokens: u.prompt_tokens, completionTokens: u.completion_tokens };
  }
  return out;
}
