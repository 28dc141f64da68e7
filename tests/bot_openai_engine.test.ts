/**
 * The OpenAI-compatible remote engine against a small SSE server of our own on 127.0.0.1, and the
 * bot answering through it.
 */
import assert from "node:assert/strict";
import { createBot } from "../bot/bot.ts";
import {
  connectOpenAIEngine,
  createOpenAIEngine,
  endpointUrls,
  estimateTokens,
} from "../bot/openai_engine.ts";
import { PromptTooLongError } from "../serve/engine/types.ts";
import type { GenerationDelta } from "../serve/engine/types.ts";
import { startFakeTelegram } from "./helpers/fake_telegram.ts";

interface Seen {
  path: string;
  auth: string | null;
  body: Record<string, unknown>;
}

/** Streams `pieces` as chat.completion.chunk events, `delayMs` apart, split at awkward places. */
function startSseServer(pieces: string[], opts: { delayMs?: number; usage?: boolean } = {}) {
  const seen: Seen[] = [];
  let cancelled = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/v1/models") {
      return Response.json({ object: "list", data: [{ id: "medglm-demo", object: "model" }] });
    }
    const body = await req.json();
    seen.push({ path: url.pathname, auth: req.headers.get("authorization"), body });
    const question = String(body.messages.at(-1).content);
    if (question === "too long") {
      return Response.json({
        error: {
          message: "messages: this model's maximum context length is 2048 tokens, but the " +
            "messages take 5000 tokens; shorten the conversation",
          type: "invalid_request_error",
          code: "context_length_exceeded",
        },
      }, { status: 400 });
    }
    if (question === "broken") return new Response("upstream exploded", { status: 502 });
    const enc = new TextEncoder();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stream = new ReadableStream<Uint8Array>({
      async start(controller) {
        const send = (obj: unknown) => `data: ${JSON.stringify(obj)}\r\n\r\n`;
        const frames: string[] = [": keep-alive\n\n"];
        for (const p of pieces) {
          frames.push(
            send({
              object: "chat.completion.chunk",
              choices: [{ index: 0, delta: { content: p }, finish_reason: null }],
            }),
          );
        }
        frames.push(send({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }] }));
        if (opts.usage) {
          frames.push(
            send({ choices: [], usage: { prompt_tokens: 11, completion_tokens: pieces.length } }),
          );
        }
        frames.push("data: [DONE]\n\n");
        // Split frames mid-line (and mid-character) to exercise the parser's buffering.
        const bytes = enc.encode(frames.join(""));
        for (let i = 0; i < bytes.length; i += 7) {
          try {
            controller.enqueue(bytes.slice(i, i + 7));
          } catch {
            return;
          }
          await new Promise<void>((r) => timer = setTimeout(r, opts.delayMs ?? 0));
        }
        controller.close();
      },
      cancel() {
        cancelled++;
        clearTimeout(timer);
      },
    });
    return new Response(stream, { headers: { "content-type": "text/event-stream" } });
  });
  const port = (server.addr as Deno.NetAddr).port;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    cancelled: () => cancelled,
    close: () => server.shutdown(),
  };
}

async function collect(it: AsyncIterable<GenerationDelta>) {
  const out: GenerationDelta[] = [];
  for await (const d of it) out.push(d);
  return out;
}

Deno.test("endpoint URLs: root, /v1 and the full path all reach /v1/chat/completions", () => {
  for (
    const e of [
      "http://h:8000",
      "http://h:8000/",
      "http://h:8000/v1",
      "http://h:8000/v1/chat/completions",
    ]
  ) {
    assert.deepEqual(endpointUrls(e), {
      chat: "http://h:8000/v1/chat/completions",
      models: "http://h:8000/v1/models",
    });
  }
  assert.throws(() => endpointUrls("localhost:8000"), /not a URL|http/);
  assert.ok(estimateTokens([{ role: "user", content: "头痛" }]) > estimateTokens([]));
});

Deno.test("streams SSE deltas with the API key, sampling options and usage", async () => {
  const pieces = ["多喝", "水，", "注意", "休息😀", "。"];
  const srv = startSseServer(pieces, { usage: true });
  try {
    const engine = await connectOpenAIEngine({ endpoint: srv.url, apiKey: "sk-test" });
    assert.equal(engine.info.model, "medglm-demo");
    const deltas = await collect(engine.generate({
      messages: [{ role: "user", content: "感冒" }],
      maxNewTokens: 64,
      temperature: 0.3,
    }));
    assert.equal(deltas.map((d) => d.text).join(""), pieces.join(""));
    const last = deltas.at(-1)!;
    assert.equal(last.finishReason, "stop");
    assert.deepEqual(last.usage, { promptTokens: 11, completionTokens: 5 });
    const req = srv.seen[0];
    assert.equal(req.path, "/v1/chat/completions");
    assert.equal(req.auth, "Bearer sk-test");
    assert.equal(req.body.stream, true);
    assert.equal(req.body.model, "medglm-demo");
    assert.equal(req.body.max_tokens, 64);
    assert.equal(req.body.temperature, 0.3);
    assert.equal(engine.stats().active, 0);
    await engine.close();
  } finally {
    await srv.close();
  }
});

Deno.test("aborting ends the stream with finishReason abort and drops the connection", async () => {
  const srv = startSseServer(Array.from({ length: 200 }, (_, i) => `${i}，`), { delayMs: 2 });
  try {
    const engine = createOpenAIEngine({ endpoint: `${srv.url}/v1`, model: "m" });
    const ac = new AbortController();
    const deltas: GenerationDelta[] = [];
    for await (
      const d of engine.generate({ messages: [{ role: "user", content: "q" }], signal: ac.signal })
    ) {
      deltas.push(d);
      if (deltas.length === 3) ac.abort();
    }
    assert.equal(deltas.at(-1)!.finishReason, "abort");
    assert.ok(deltas.length < 50);
    assert.equal(engine.stats().active, 0);
  } finally {
    await srv.close();
  }
});

Deno.test("server errors: context overflow is PromptTooLongError, others name the URL", async () => {
  const srv = startSseServer(["x"]);
  try {
    const engine = createOpenAIEngine({ endpoint: srv.url, model: "m" });
    await assert.rejects(
      collect(engine.generate({ messages: [{ role: "user", content: "too long" }] })),
      (e) => e instanceof PromptTooLongError && e.tokens === 5000 && e.limit === 2048,
    );
    await assert.rejects(
      collect(engine.generate({ messages: [{ role: "user", content: "broken" }] })),
      /127\.0\.0\.1.*HTTP 502: upstream exploded/,
    );
    const dead = createOpenAIEngine({ endpoint: "http://127.0.0.1:9/v1", model: "m" });
    await assert.rejects(
      collect(dead.generate({ messages: [{ role: "user", content: "q" }] })),
      /cannot reach http:\/\/127\.0\.0\.1:9\/v1\/chat\/completions/,
    );
  } finally {
    await srv.close();
  }
});

Deno.test("the bot answers through a remote OpenAI-compatible endpoint", async () => {
  const pieces = ["建议", "多休息，", "必要时", "就医。"];
  const srv = startSseServer(pieces, { delayMs: 1 });
  const fake = startFakeTelegram();
  const engine = await connectOpenAIEngine({ endpoint: srv.url });
  const bot = createBot(engine, {
    token: fake.token,
    apiRoot: fake.apiRoot,
    editIntervalMs: 20,
    pollingTimeoutSeconds: 5,
    log: () => {},
  });
  try {
    await new Promise<void>((resolve, reject) => {
      bot.start({ onStart: () => resolve() }).catch(reject);
    });
    fake.sendText({ chatId: 61, text: "失眠怎么办" });
    await fake.waitFor(() => fake.botTexts(61)[0] === pieces.join(""), 10_000, "answer");
    assert.deepEqual((srv.seen[0].body.messages as unknown[]).at(-1), {
      role: "user",
      content: "失眠怎么办",
    });
  } finally {
    await bot.stop();
    await engine.close();
    await fake.close();
    await srv.close();
  }
});
