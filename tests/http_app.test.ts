// In-process tests of the Hono app with app.request(): every endpoint and every error shape.
import assert from "node:assert/strict";
import { createApp } from "../serve/http/app.ts";
import type { Engine, GenerationDelta } from "../serve/engine/types.ts";
import { PromptTooLongError } from "../serve/engine/types.ts";
import { createScriptedEngine } from "./helpers/scripted_engine.ts";

const USER = [{ role: "user", content: "我最近总是头痛，怎么办？" }];

function post(body: unknown, headers: Record<string, string> = {}): RequestInit {
  return {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  };
}

async function errorOf(res: Response) {
  const body = await res.json();
  assert.deepEqual(Object.keys(body), ["error"], "OpenAI error shape");
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
  assert.equal(typeof body.error.message, "string");
  return body.error as { message: string; type: string; param: string | null; code: string };
}

Deno.test("GET /health is 503 while the engine loads and 200 once it is ready", async () => {
  let resolve!: (e: Engine) => void;
  const app = createApp(new Promise<Engine>((r) => resolve = r));
  let res = await app.request("/health");
  assert.equal(res.status, 503);
  assert.deepEqual(await res.json(), { status: "loading" });

  res = await app.request("/v1/chat/completions", post({ messages: USER }));
  assert.equal(res.status, 503);
  assert.equal(res.headers.get("retry-after"), "5");
  const err = await errorOf(res);
  assert.equal(err.code, "model_loading");
  assert.equal(err.type, "server_error");
  res = await app.request("/v1/models");
  assert.equal(res.status, 503);
  assert.equal((await errorOf(res)).code, "model_loading");
  res = await app.request("/metrics");
  assert.match(await res.text(), /^medglm_engine_ready 0$/m);

  resolve(createScriptedEngine({ delayMs: 0 }));
  await new Promise((r) => setTimeout(r, 0));
  res = await app.request("/health");
  assert.equal(res.status, 200);
  const health = await res.json();
  assert.equal(health.status, "ok");
  assert.equal(health.model, "scripted-test-engine");
  assert.equal(health.maxContext, 2048);
  res = await app.request("/v1/chat/completions", post({ messages: USER }));
  assert.equal(res.status, 200);
  res = await app.request("/metrics");
  assert.match(await res.text(), /^medglm_engine_ready 1$/m);
});

Deno.test("a failed engine load gives 503 with the reason on /health and chat", async () => {
  const logged: unknown[][] = [];
  const quiet = console.error;
  console.error = (...args: unknown[]) => logged.push(args);
  let app;
  try {
    app = createApp(Promise.reject(new Error("config.json: missing hidden_size")));
    await new Promise((r) => setTimeout(r, 0));
  } finally {
    console.error = quiet;
  }
  assert.match(String(logged[0]?.[1]), /missing hidden_size/, "the failure is logged");
  let res = await app.request("/health");
  assert.equal(res.status, 503);
  assert.deepEqual(await res.json(), {
    status: "failed",
    error: "config.json: missing hidden_size",
  });
  res = await app.request("/v1/chat/completions", post({ messages: USER }));
  assert.equal(res.status, 503);
  const err = await errorOf(res);
  assert.equal(err.code, "model_load_failed");
  assert.match(err.message, /missing hidden_size/);
});

Deno.test("GET /v1/models lists the engine's model; /v1/models/:id finds it or 404s", async () => {
  const app = createApp(createScriptedEngine());
  let res = await app.request("/v1/models");
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {
    object: "list",
    data: [{ id: "scripted-test-engine", object: "model", created: 0, owned_by: "medglm" }],
  });
  res = await app.request("/v1/models/scripted-test-engine");
  assert.equal(res.status, 200);
  assert.equal((await res.json()).id, "scripted-test-engine");
  res = await app.request("/v1/models/gpt-4");
  assert.equal(res.status, 404);
  const err = await errorOf(res);
  assert.equal(err.code, "model_not_found");
  assert.equal(err.param, "model");

  const named = createApp(createScriptedEngine(), { modelName: "medglm-6b-lora" });
  res = await named.request("/v1/models");
  assert.equal((await res.json()).data[0].id, "medglm-6b-lora");
});

Deno.test("POST /v1/chat/completions answers a chat.completion with usage", async () => {
  const engine = createScriptedEngine({ delayMs: 0 });
  const app = createApp(engine);
  const res = await app.request(
    "/v1/chat/completions",
    post({ model: "scripted-test-engine", messages: USER }),
  );
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type")!, /application\/json/);
  const body = await res.json();
  assert.match(body.id, /^chatcmpl-/);
  assert.equal(body.object, "chat.completion");
  assert.equal(body.model, "scripted-test-engine");
  assert.equal(typeof body.created, "number");
  assert.equal(body.choices.length, 1);
  const answer = `你问的是：${USER[0].content}。请多休息，必要时就医。`;
  assert.deepEqual(body.choices[0].message, { role: "assistant", content: answer });
  assert.equal(body.choices[0].finish_reason, "stop");
  const prompt = engine.countPromptTokens(USER as never);
  assert.deepEqual(body.usage, {
    prompt_tokens: prompt,
    completion_tokens: [...answer].length,
    total_tokens: prompt + [...answer].length,
  });
  assert.equal(engine.stats().active, 0, "the engine sequence was closed");
});

Deno.test("request fields map onto the engine request; null and unknown fields are ignored", async () => {
  const engine = createScriptedEngine({ delayMs: 0 });
  const app = createApp(engine);
  let res = await app.request(
    "/v1/chat/completions",
    post({
      messages: [
        { role: "system", content: "你是一名医生。" },
        {
          role: "user",
          content: [{ type: "text", text: "第一段" }, { type: "text", text: "第二段" }],
        },
        { role: "assistant", content: "请详细说明。", name: "doc" },
        { role: "user", content: "头晕三天。" },
      ],
      temperature: 0.7,
      top_p: 0.9,
      top_k: 40,
      repetition_penalty: 1.1,
      valid_utf8: true,
      seed: 42,
      max_tokens: 100,
      stop: ["。", "\n\n"],
      n: 1,
      frequency_penalty: 0.5,
      user: "someone",
    }),
  );
  assert.equal(res.status, 200);
  await res.json();
  const req = engine.requests[0];
  assert.deepEqual(req.messages, [
    { role: "system", content: "你是一名医生。" },
    { role: "user", content: "第一段\n第二段" },
    { role: "assistant", content: "请详细说明。" },
    { role: "user", content: "头晕三天。" },
  ]);
  assert.equal(req.temperature, 0.7);
  assert.equal(req.topP, 0.9);
  assert.equal(req.topK, 40);
  assert.equal(req.repetitionPenalty, 1.1);
  assert.equal(req.validUtf8, true);
  assert.equal(req.seed, 42);
  assert.equal(req.maxNewTokens, 100);
  assert.deepEqual(req.stop, ["。", "\n\n"]);
  assert.ok(req.signal instanceof AbortSignal);

  res = await app.request(
    "/v1/chat/completions",
    post({ messages: USER, stop: "。", max_tokens: null, temperature: null, stream: null }),
  );
  assert.equal(res.status, 200);
  assert.equal((await res.json()).object, "chat.completion");
  assert.deepEqual(engine.requests[1].stop, ["。"]);
  assert.equal(engine.requests[1].maxNewTokens, undefined);
  assert.equal(engine.requests[1].temperature, undefined);
  assert.equal(engine.requests[1].validUtf8, undefined, "left out: the engine's default");

  // max_completion_tokens wins over max_tokens.
  res = await app.request(
    "/v1/chat/completions",
    post({ messages: USER, max_tokens: 50, max_completion_tokens: 3 }),
  );
  const body = await res.json();
  assert.equal(engine.requests[2].maxNewTokens, 3);
  assert.equal(body.choices[0].finish_reason, "length");
  assert.equal([...body.choices[0].message.content].length, 3);
  assert.equal(body.usage.completion_tokens, 3);
});

Deno.test("invalid requests get 400 naming the field in OpenAI's error shape", async () => {
  const app = createApp(createScriptedEngine({ delayMs: 0, maxContext: 512 }));
  const cases: [unknown, string, RegExp?][] = [
    [[1, 2], "body"],
    ["null", "body"],
    [{}, "messages"],
    [{ messages: "hi" }, "messages"],
    [{ messages: [] }, "messages"],
    [{ messages: ["hi"] }, "messages[0]"],
    [{ messages: [{ content: "hi" }] }, "messages[0].role"],
    [{ messages: [{ role: "tool", content: "hi" }] }, "messages[0].role", /unknown role "tool"/],
    [{ messages: [{ role: 7, content: "hi" }] }, "messages[0].role"],
    [{ messages: [{ role: "user" }] }, "messages[0].content"],
    [{ messages: [{ role: "user", content: 5 }] }, "messages[0].content"],
    [
      { messages: [{ role: "user", content: [{ type: "image_url", image_url: {} }] }] },
      "messages[0].content[0].type",
    ],
    [{ messages: [{ role: "user", content: ["x"] }] }, "messages[0].content[0]"],
    [
      { messages: [{ role: "user", content: [{ type: "text", text: 1 }] }] },
      "messages[0].content[0].text",
    ],
    [
      { messages: [{ role: "user", content: "a" }, { role: "assistant", content: "b" }] },
      "messages[1].role",
      /last message must be from the user/,
    ],
    [{ messages: [{ role: "user", content: "   " }] }, "messages[0].content"],
    [{ messages: USER, model: 3 }, "model"],
    [{ messages: USER, stream: "yes" }, "stream"],
    [{ messages: USER, stream: true, stream_options: "all" }, "stream_options"],
    [
      { messages: USER, stream: true, stream_options: { include_usage: 1 } },
      "stream_options.include_usage",
    ],
    [{ messages: USER, n: 2 }, "n", /only n = 1/],
    [{ messages: USER, n: 1.5 }, "n"],
    [{ messages: USER, temperature: -0.1 }, "temperature"],
    [{ messages: USER, temperature: 2.5 }, "temperature"],
    [{ messages: USER, temperature: "hot" }, "temperature"],
    [{ messages: USER, top_p: 0 }, "top_p"],
    [{ messages: USER, top_p: 1.01 }, "top_p"],
    [{ messages: USER, top_k: -1 }, "top_k"],
    [{ messages: USER, top_k: 2.5 }, "top_k"],
    [{ messages: USER, repetition_penalty: 0 }, "repetition_penalty"],
    [{ messages: USER, repetition_penalty: "1.1" }, "repetition_penalty"],
    [{ messages: USER, seed: 1.5 }, "seed"],
    [{ messages: USER, max_tokens: 0 }, "max_tokens"],
    [{ messages: USER, max_tokens: 2.5 }, "max_tokens"],
    [{ messages: USER, max_tokens: 513 }, "max_tokens", /context of 512/],
    [{ messages: USER, max_completion_tokens: -1 }, "max_completion_tokens"],
    [{ messages: USER, max_completion_tokens: 5, max_tokens: "5" }, "max_tokens"],
    [{ messages: USER, stop: ["a", "b", "c", "d", "e"] }, "stop", /at most 4/],
    [{ messages: USER, stop: 5 }, "stop"],
    [{ messages: USER, stop: ["a", 1] }, "stop[1]"],
    [{ messages: USER, stop: "" }, "stop"],
  ];
  for (const [body, param, message] of cases) {
    const res = await app.request("/v1/chat/completions", post(body));
    const label = JSON.stringify(body);
    assert.equal(res.status, 400, label);
    const err = await errorOf(res);
    assert.equal(err.type, "invalid_request_error", label);
    assert.equal(err.param, param, label);
    assert.ok(err.message.startsWith(`${param}: `), `${label}: ${err.message}`);
    if (message) assert.match(err.message, message, label);
  }
});

Deno.test("malformed JSON, empty and oversized bodies are refused naming the body", async () => {
  const app = createApp(createScriptedEngine({ delayMs: 0 }), { maxBodyBytes: 1000 });
  let res = await app.request("/v1/chat/completions", post('{"messages": ['));
  assert.equal(res.status, 400);
  let err = await errorOf(res);
  assert.equal(err.param, "body");
  assert.equal(err.code, "invalid_json");
  assert.match(err.message, /malformed JSON/);

  res = await app.request("/v1/chat/completions", post(""));
  assert.equal(res.status, 400);
  err = await errorOf(res);
  assert.equal(err.param, "body");
  assert.equal(err.code, "empty_body");

  res = await app.request(
    "/v1/chat/completions",
    {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]),
    },
  );
  assert.equal(res.status, 400);
  err = await errorOf(res);
  assert.match(err.message, /UTF-8/);
  assert.equal(err.code, "invalid_encoding");

  const big = JSON.stringify({ messages: [{ role: "user", content: "痛".repeat(2000) }] });
  res = await app.request("/v1/chat/completions", post(big));
  assert.equal(res.status, 413);
  err = await errorOf(res);
  assert.equal(err.param, "body");
  assert.equal(err.code, "request_too_large");
  assert.match(err.message, /over the limit of 1000 bytes/);

  // No Content-Length (a streamed body): the limit holds while reading.
  const bytes = new TextEncoder().encode(big);
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < bytes.length; i += 100) c.enqueue(bytes.slice(i, i + 100));
      c.close();
    },
  });
  res = await app.request(
    new Request("http://localhost/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: stream,
    }),
  );
  assert.equal(res.status, 413);
  assert.equal((await errorOf(res)).code, "request_too_large");
});

Deno.test("too-long prompts get 400 context_length_exceeded", async () => {
  const app = createApp(createScriptedEngine({ delayMs: 0, maxContext: 64 }));
  const res = await app.request(
    "/v1/chat/completions",
    post({ messages: [{ role: "user", content: "咳嗽".repeat(40) }], stream: true }),
  );
  assert.equal(res.status, 400);
  const err = await errorOf(res);
  assert.equal(err.code, "context_length_exceeded");
  assert.equal(err.param, "messages");
  assert.match(err.message, /maximum context length is 64 tokens/);

  // The engine's own refusal (its count differs from countPromptTokens) maps the same way.
  const inner = createScriptedEngine({ delayMs: 0, maxContext: 64 });
  const lying: Engine = { ...inner, countPromptTokens: () => 1, generate: inner.generate };
  const app2 = createApp(lying);
  for (const stream of [false, true]) {
    const res2 = await app2.request(
      "/v1/chat/completions",
      post({ messages: [{ role: "user", content: "咳嗽".repeat(40) }], stream }),
    );
    assert.equal(res2.status, 400);
    const err2 = await errorOf(res2);
    assert.equal(err2.code, "context_length_exceeded");
    assert.match(err2.message, /take 86 tokens/);
  }
  const metrics = await (await app2.request("/metrics")).text();
  assert.match(metrics, /^medglm_active_sequences 0$/m, "the refused requests freed their slots");

  // An engine whose generate() throws at once, before returning an iterator.
  const eager: Engine = {
    ...inner,
    countPromptTokens: () => 1,
    generate: () => {
      throw new PromptTooLongError(99, 64);
    },
  };
  const app3 = createApp(eager, { maxConcurrent: 1, maxQueue: 0 });
  for (let i = 0; i < 2; i++) {
    const res3 = await app3.request("/v1/chat/completions", post({ messages: USER }));
    assert.equal(res3.status, 400, "the slot was freed, so no 429 the second time");
    assert.equal((await errorOf(res3)).code, "context_length_exceeded");
  }
});

Deno.test("the bearer API key guards /v1 routes only", async () => {
  const app = createApp(createScriptedEngine({ delayMs: 0 }), { apiKey: "s3cret-key" });
  let res = await app.request("/v1/chat/completions", post({ messages: USER }));
  assert.equal(res.status, 401);
  let err = await errorOf(res);
  assert.equal(err.code, "invalid_api_key");
  assert.equal(err.param, "authorization");
  assert.match(res.headers.get("www-authenticate")!, /^Bearer/);

  res = await app.request(
    "/v1/chat/completions",
    post({ messages: USER }, { Authorization: "Bearer s3cret-kez" }),
  );
  assert.equal(res.status, 401);
  err = await errorOf(res);
  assert.match(err.message, /incorrect API key/);

  res = await app.request("/v1/models", { headers: { Authorization: "Basic s3cret-key" } });
  assert.equal(res.status, 401);

  res = await app.request(
    "/v1/chat/completions",
    post({ messages: USER }, { Authorization: "Bearer s3cret-key" }),
  );
  assert.equal(res.status, 200);
  res = await app.request("/v1/models", { headers: { authorization: "bearer s3cret-key" } });
  assert.equal(res.status, 200);

  for (const path of ["/health", "/metrics", "/"]) {
    assert.equal((await app.request(path)).status, 200, path);
  }
  assert.throws(() => createApp(createScriptedEngine(), { apiKey: "" }), /apiKey/);
});

Deno.test("unknown routes 404 and wrong methods 405, in OpenAI's error shape", async () => {
  const app = createApp(createScriptedEngine());
  let res = await app.request("/v1/embeddings", post({ input: "x" }));
  assert.equal(res.status, 404);
  assert.equal((await errorOf(res)).code, "not_found");

  res = await app.request("/v1/chat/completions");
  assert.equal(res.status, 405);
  assert.equal(res.headers.get("allow"), "POST");
  assert.equal((await errorOf(res)).code, "method_not_allowed");

  res = await app.request("/health", { method: "DELETE" });
  assert.equal(res.status, 405);
  assert.equal(res.headers.get("allow"), "GET");
});

Deno.test("a full queue answers 429 with Retry-After", async () => {
  const engine = createScriptedEngine({ delayMs: 20 });
  const app = createApp(engine, { maxConcurrent: 1, maxQueue: 1 });
  const first = app.request("/v1/chat/completions", post({ messages: USER }));
  await waitFor(() => engine.stats().active === 1);
  const second = app.request("/v1/chat/completions", post({ messages: USER }));
  await waitFor(async () =>
    /^medglm_queue_length 1$/m.test(await (await app.request("/metrics")).text())
  );
  const third = await app.request("/v1/chat/completions", post({ messages: USER, stream: true }));
  assert.equal(third.status, 429);
  const retryAfter = Number(third.headers.get("retry-after"));
  assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1, `Retry-After ${retryAfter}`);
  const err = await errorOf(third);
  assert.equal(err.code, "rate_limit_exceeded");
  assert.equal(err.type, "rate_limit_error");

  assert.equal((await first).status, 200);
  assert.equal((await second).status, 200);
  const metrics = await (await app.request("/metrics")).text();
  assert.match(metrics, /^medglm_requests_rejected_total\{reason="queue_full"\} 1$/m);
  assert.match(
    metrics,
    /^medglm_http_requests_total\{route="\/v1\/chat\/completions",status="429"\} 1$/m,
  );
});

Deno.test("an engine failure is a 500 in OpenAI's shape (non-stream) or an in-band error event", async () => {
  const failing: Engine = {
    ...createScriptedEngine(),
    async *generate(): AsyncIterable<GenerationDelta> {
      yield { text: "部分" };
      throw new Error("device lost");
    },
  };
  const app = createApp(failing);
  const quiet = console.error;
  console.error = () => {};
  try {
    let res = await app.request("/v1/chat/completions", post({ messages: USER }));
    assert.equal(res.status, 500);
    const err = await errorOf(res);
    assert.equal(err.type, "server_error");
    assert.match(err.message, /device lost/);

    res = await app.request("/v1/chat/completions", post({ messages: USER, stream: true }));
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, /"content":"部分"/);
    assert.match(text, /data: \{"error":\{"message":"generation failed: device lost"/);
    assert.doesNotMatch(text, /\[DONE\]/);
  } finally {
    console.error = quiet;
  }
  const metrics = await (await app.request("/metrics")).text();
  assert.match(metrics, /^medglm_generations_finished_total\{finish_reason="error"\} 2$/m);
  assert.match(metrics, /^medglm_active_sequences 0$/m);
});

Deno.test("an engine that aborts a sequence on its own (shutdown) is a 503, not a silent end", async () => {
  const quitting: Engine = {
    ...createScriptedEngine(),
    async *generate(): AsyncIterable<GenerationDelta> {
      yield { text: "部分" };
      yield { text: "", finishReason: "abort", usage: { promptTokens: 3, completionTokens: 1 } };
    },
  };
  const app = createApp(quitting);
  const quiet = console.error;
  console.error = () => {};
  try {
    let res = await app.request("/v1/chat/completions", post({ messages: USER }));
    assert.equal(res.status, 503);
    assert.equal((await errorOf(res)).code, "generation_interrupted");
    res = await app.request("/v1/chat/completions", post({ messages: USER, stream: true }));
    const text = await res.text();
    assert.match(
      text,
      /"error":\{"message":"generation was interrupted.*"code":"generation_interrupted"/,
    );
    assert.doesNotMatch(text, /\[DONE\]/);
  } finally {
    console.error = quiet;
  }
});

Deno.test("GET /metrics is Prometheus text with request, queue, batch, token and latency metrics", async () => {
  const engine = createScriptedEngine({ delayMs: 1 });
  const app = createApp(engine, { maxConcurrent: 2, maxQueue: 3 });
  await Promise.all(
    [1, 2, 3].map(() =>
      Promise.resolve(app.request("/v1/chat/completions", post({ messages: USER }))).then((r) =>
        r.json()
      )
    ),
  );
  await app.request("/v1/chat/completions", post("{"));
  const res = await app.request("/metrics");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  const text = await res.text();
  const answerTokens = [...`你问的是：${USER[0].content}。请多休息，必要时就医。`].length;
  const expect = [
    /^# TYPE medglm_http_requests_total counter$/m,
    /^medglm_http_requests_total\{route="\/v1\/chat\/completions",status="200"\} 3$/m,
    /^medglm_http_requests_total\{route="\/v1\/chat\/completions",status="400"\} 1$/m,
    /^# TYPE medglm_queue_length gauge$/m,
    /^medglm_queue_length 0$/m,
    /^medglm_max_concurrent 2$/m,
    /^medglm_max_queue 3$/m,
    /^# TYPE medglm_batch_size histogram$/m,
    /^medglm_batch_size_count 3$/m,
    /^medglm_batch_size_bucket\{le="2"\} 3$/m,
    new RegExp(`^medglm_tokens_generated_total ${3 * answerTokens}$`, "m"),
    /^medglm_generations_finished_total\{finish_reason="stop"\} 3$/m,
    /^# TYPE medglm_time_to_first_token_seconds histogram$/m,
    /^medglm_time_to_first_token_seconds_count 3$/m,
    /^medglm_time_to_first_token_seconds_bucket\{le="\+Inf"\} 3$/m,
    /^medglm_time_per_output_token_seconds_count 3$/m,
    /^medglm_request_duration_seconds_count 3$/m,
    /^process_resident_memory_bytes \d+$/m,
  ];
  for (const re of expect) assert.match(text, re);
  // Every line is a comment or `name{labels} value`.
  for (const line of text.trimEnd().split("\n")) {
    assert.match(line, /^(# (HELP|TYPE) \w+ .+|[a-z_:]+(\{[^}]*\})? [-+\d.eInfNa]+)$/, line);
  }
});

Deno.test("GET / serves the chat page with a strict Content-Security-Policy", async () => {
  const app = createApp(createScriptedEngine());
  const res = await app.request("/");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type")!, /^text\/html/);
  assert.match(res.headers.get("content-security-policy")!, /default-src 'none'/);
  const html = await res.text();
  assert.match(html, /^<!doctype html>/);
  assert.match(html, /免责声明/);

  const noPage = createApp(createScriptedEngine(), { page: false });
  assert.equal((await noPage.request("/")).status, 404);
});

async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 5000) {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error("timed out waiting for a condition");
    await new Promise((r) => setTimeout(r, 2));
  }
}
