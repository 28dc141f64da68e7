// Hostile and unusual HTTP clients against the app (issue 19): an unknown model, bodies that are
// not declared JSON, bodies that never finish or whose client hangs up, empty and non-UTF-8
// bodies, and /v1/completions with stream_options.include_usage as OpenAI defines them.
import assert from "node:assert/strict";
import { createApp } from "../serve/http/app.ts";
import { startServer } from "../serve/http/server.ts";
import { createScriptedEngine } from "./helpers/scripted_engine.ts";

const USER = [{ role: "user", content: "我最近总是头痛，怎么办？" }];
const json = (body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method: "POST",
  headers: { "Content-Type": "application/json", ...headers },
  body: JSON.stringify(body),
});

async function errorOf(res: Response) {
  const body = await res.json();
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
  assert.equal(typeof body.error.code, "string", "every error has a code");
  return body.error as { message: string; type: string; param: string | null; code: string };
}

Deno.test("an unknown model is 404 model_not_found on both generation routes", async () => {
  const engine = createScriptedEngine({ delayMs: 0 });
  const app = createApp(engine);
  for (
    const [route, body] of [
      ["/v1/chat/completions", { model: "gpt-4o", messages: USER }],
      ["/v1/completions", { model: "gpt-4o", prompt: "头痛" }],
    ] as const
  ) {
    const res = await app.request(route, json(body));
    assert.equal(res.status, 404, route);
    const err = await errorOf(res);
    assert.equal(err.code, "model_not_found");
    assert.equal(err.param, "model");
    assert.match(err.message, /"gpt-4o" does not exist; this server serves "scripted-test-engine"/);
  }
  assert.equal(engine.requests.length + engine.completions.length, 0, "nothing was generated");
  // The served name, or none, is fine.
  for (const model of ["scripted-test-engine", undefined]) {
    const res = await app.request("/v1/chat/completions", json({ model, messages: USER }));
    assert.equal(res.status, 200);
    await res.body?.cancel();
  }
});

Deno.test("bodies not declared as JSON are refused with 415 before anything runs", async () => {
  const engine = createScriptedEngine({ delayMs: 0 });
  const app = createApp(engine);
  const body = JSON.stringify({ messages: USER });
  for (
    const [headers, got] of [
      [{ "Content-Type": "text/plain;charset=UTF-8" }, "got 'text/plain;charset=UTF-8'"],
      [{ "Content-Type": "application/x-www-form-urlencoded" }, "got 'application/x-www-form"],
      [{ "Content-Type": "multipart/form-data; boundary=x" }, "got 'multipart/form-data"],
      [{}, "the header is missing"],
    ] as [Record<string, string>, string][]
  ) {
    // A cross-site form or fetch without preflight can only send these. (Bytes, so that no
    // content type is added for us.)
    const res = await app.request("/v1/chat/completions", {
      method: "POST",
      headers,
      body: new TextEncoder().encode(body),
    });
    assert.equal(res.status, 415);
    const err = await errorOf(res);
    assert.equal(err.code, "unsupported_media_type");
    assert.equal(err.param, "content-type");
    assert.ok(err.message.includes(got), err.message);
  }
  assert.equal(engine.requests.length, 0);
  for (
    const type of ["application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.x+json"]
  ) {
    const res = await app.request("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": type },
      body,
    });
    assert.equal(res.status, 200, type);
    await res.body?.cancel();
  }
});

Deno.test("empty and non-UTF-8 bodies get a real error code", async () => {
  const app = createApp(createScriptedEngine({ delayMs: 0 }));
  for (
    const [body, code] of [
      ["", "empty_body"],
      ["  \n", "empty_body"],
      [new Uint8Array([0x7b, 0x22, 0xc3, 0x22, 0x7d]), "invalid_encoding"],
    ] as const
  ) {
    const res = await app.request("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body,
    });
    assert.equal(res.status, 400);
    const err = await errorOf(res);
    assert.equal(err.code, code);
    assert.equal(err.param, "body");
  }
});

/** Sends raw bytes to the server and returns what it answers (until it closes or `ms` pass). */
async function rawExchange(url: string, parts: string[], opts: { hangUp?: boolean; ms?: number }) {
  const { hostname, port } = new URL(url);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  const enc = new TextEncoder();
  for (const p of parts) await conn.write(enc.encode(p));
  if (opts.hangUp) {
    conn.close();
    return "";
  }
  let out = "";
  const buf = new Uint8Array(4096);
  const deadline = setTimeout(() => conn.close(), opts.ms ?? 5000);
  try {
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      out += new TextDecoder().decode(buf.subarray(0, n));
      if (/\r\n\r\n[\s\S]*\}/.test(out)) break;
    }
  } catch {
    // closed by the deadline
  } finally {
    clearTimeout(deadline);
    try {
      conn.close();
    } catch { /* already closed */ }
  }
  return out;
}

Deno.test("a body that never finishes gets 408; a client hanging up mid-body is no 500", async () => {
  const engine = createScriptedEngine({ delayMs: 0 });
  const app = createApp(engine, { bodyTimeoutMs: 300 });
  const server = startServer(app, { port: 0, onListen: () => {} });
  const logged: unknown[][] = [];
  const realError = console.error;
  console.error = (...args: unknown[]) => logged.push(args);
  try {
    const head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" +
      "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
    const answer = await rawExchange(server.url, [head, '{"messages": ['], { ms: 5000 });
    assert.match(answer, /^HTTP\/1\.1 408 /);
    assert.match(answer, /"code":"request_timeout"/);
    assert.match(answer, /did not arrive within 0\.3 s/);

    for (let i = 0; i < 3; i++) {
      await rawExchange(server.url, [head, '{"messages": [{"role":'], { hangUp: true });
    }
    // The server notices the hang-ups; give it a moment, then read the counters.
    let metrics = "";
    for (let t = 0; t < 50; t++) {
      metrics = await (await fetch(`${server.url}/metrics`)).text();
      if (/route="\/v1\/chat\/completions",status="499"\} 3/.test(metrics)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.match(
      metrics,
      /medglm_http_requests_total\{route="\/v1\/chat\/completions",status="499"\} 3/,
    );
    assert.doesNotMatch(metrics, /status="5\d\d"/);
    assert.deepEqual(logged, [], "nothing was logged for clients that left");
    assert.equal(engine.requests.length, 0);
  } finally {
    console.error = realError;
    await server.shutdown();
  }
});

Deno.test("POST /v1/completions: a text_completion, streamed or not, with include_usage", async () => {
  const answer = "多喝水，注意休息。";
  const engine = createScriptedEngine({ answer: () => answer, delayMs: 0 });
  const app = createApp(engine);
  let res = await app.request("/v1/completions", json({ prompt: "头痛怎么办？", max_tokens: 50 }));
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.match(body.id, /^cmpl-/);
  assert.equal(body.object, "text_completion");
  assert.deepEqual(body.choices, [{
    text: answer,
    index: 0,
    logprobs: null,
    finish_reason: "stop",
  }]);
  const prompt = engine.countTextTokens!("头痛怎么办？");
  const n = [...answer].length;
  assert.deepEqual(body.usage, {
    prompt_tokens: prompt,
    completion_tokens: n,
    total_tokens: prompt + n,
  });
  assert.equal(engine.completions[0].prompt, "头痛怎么办？");
  assert.equal(engine.completions[0].maxNewTokens, 50);

  // OpenAI's default max_tokens for completions is 16; a one-element prompt list is one prompt.
  res = await app.request("/v1/completions", json({ prompt: ["头痛"] }));
  assert.equal(res.status, 200);
  await res.json();
  assert.equal(engine.completions[1].maxNewTokens, 16);
  assert.equal(engine.completions[1].prompt, "头痛");

  res = await app.request(
    "/v1/completions",
    json({ prompt: "头痛", stream: true, stream_options: { include_usage: true } }),
  );
  assert.match(res.headers.get("content-type")!, /text\/event-stream/);
  const events = (await res.text()).trimEnd().split("\n\n").map((e) => e.replace(/^data: /, ""));
  assert.equal(events.pop(), "[DONE]");
  const chunks = events.map((e) => JSON.parse(e));
  const usageChunk = chunks.pop();
  assert.deepEqual(usageChunk.choices, []);
  assert.equal(usageChunk.object, "text_completion");
  assert.equal(usageChunk.usage.completion_tokens, n);
  for (const c of chunks) {
    assert.equal(c.object, "text_completion");
    assert.equal(c.usage, null);
    assert.deepEqual(Object.keys(c.choices[0]).sort(), [
      "finish_reason",
      "index",
      "logprobs",
      "text",
    ]);
  }
  assert.equal(chunks.map((c) => c.choices[0].text).join(""), answer);
  assert.equal(chunks.at(-1).choices[0].finish_reason, "stop");
  assert.ok(chunks.slice(0, -1).every((c) => c.choices[0].finish_reason === null));
});

Deno.test("/v1/completions refuses what it does not implement, naming the field", async () => {
  const app = createApp(createScriptedEngine({ delayMs: 0, maxContext: 64 }));
  const cases: [Record<string, unknown>, string, string][] = [
    [{}, "prompt", "missing_required_parameter"],
    [{ prompt: 3 }, "prompt", "invalid_type"],
    [{ prompt: [1, 2, 3] }, "prompt", "unsupported_value"],
    [{ prompt: ["a", "b"] }, "prompt", "unsupported_value"],
    [{ prompt: "a", echo: true }, "echo", "unsupported_value"],
    [{ prompt: "a", suffix: "b" }, "suffix", "unsupported_value"],
    [{ prompt: "a", logprobs: 2 }, "logprobs", "unsupported_value"],
    [{ prompt: "a", best_of: 3 }, "best_of", "unsupported_value"],
    [{ prompt: "a", n: 2 }, "n", "unsupported_value"],
    [{ prompt: "a", stream_options: { include_usage: true } }, "stream_options", "invalid_value"],
    [{ prompt: "痛".repeat(100) }, "prompt", "context_length_exceeded"],
  ];
  for (const [body, param, code] of cases) {
    const res = await app.request("/v1/completions", json(body));
    assert.equal(res.status, 400, JSON.stringify(body));
    const err = await errorOf(res);
    assert.equal(err.param, param, JSON.stringify(body));
    assert.equal(err.code, code, JSON.stringify(body));
  }
  const res = await app.request("/v1/completions");
  assert.equal(res.status, 405);
});
