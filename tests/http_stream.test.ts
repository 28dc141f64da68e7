// Streaming chat completions through app.request(): SSE chunks read as they come, the chunk
// protocol (role first, finish_reason, usage, [DONE]), and cancellation by the client.
import assert from "node:assert/strict";
import { createApp } from "../serve/http/app.ts";
import { createScriptedEngine } from "./helpers/scripted_engine.ts";

const QUESTION = "孩子发烧到39度怎么办？";
const ANSWER = "先物理降温，多喝水；若持续高烧或精神差，请及时就医。";

function streamRequest(body: Record<string, unknown>, signal?: AbortSignal): RequestInit {
  return {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      messages: [{ role: "user", content: QUESTION }],
      stream: true,
      ...body,
    }),
    signal,
  };
}

/** Reads SSE events one at a time from a response body. */
function sseReader(res: Response) {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  return {
    async next(): Promise<string | null> {
      while (true) {
        const cut = buffer.indexOf("\n\n");
        if (cut >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          assert.match(event, /^data: /, "every event is a data line");
          return event.slice(6);
        }
        const { done, value } = await reader.read();
        if (done) {
          assert.equal(buffer, "", "no partial event at the end");
          return null;
        }
        buffer += decoder.decode(value, { stream: true });
      }
    },
    cancel: () => reader.cancel(),
  };
}

Deno.test("SSE chunks arrive while the engine is still generating", async () => {
  const engine = createScriptedEngine({ answer: () => ANSWER, chunkChars: 2, delayMs: 25 });
  const app = createApp(engine);
  const res = await app.request("/v1/chat/completions", streamRequest({}));
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/event-stream");
  assert.equal(res.headers.get("cache-control"), "no-cache");
  const events = sseReader(res);

  const first = JSON.parse((await events.next())!);
  assert.deepEqual(first.choices[0].delta, { role: "assistant", content: "" });
  const second = JSON.parse((await events.next())!);
  assert.equal(second.choices[0].delta.content, [...ANSWER].slice(0, 2).join(""));
  // The answer is far from done when its first piece reaches the client.
  assert.equal(engine.stats().active, 1, "the engine is still decoding");
  assert.ok(engine.stats().tokensGenerated < [...ANSWER].length);

  const arrivals: number[] = [];
  let content = second.choices[0].delta.content;
  let last;
  while (true) {
    const data = await events.next();
    assert.ok(data !== null, "the stream ends with [DONE]");
    if (data === "[DONE]") break;
    arrivals.push(performance.now());
    last = JSON.parse(data);
    assert.equal(last.id, first.id);
    assert.equal(last.object, "chat.completion.chunk");
    assert.equal(last.model, "scripted-test-engine");
    assert.ok(!("usage" in last), "no usage field unless include_usage");
    content += last.choices[0].delta.content ?? "";
  }
  assert.equal(await events.next(), null, "nothing after [DONE]");
  assert.equal(content, ANSWER);
  assert.deepEqual(last.choices[0].delta, {});
  assert.equal(last.choices[0].finish_reason, "stop");
  // Pieces came spread out in time, not in one burst at the end.
  const spread = arrivals[arrivals.length - 2] - arrivals[0];
  assert.ok(spread > 5 * 25 * 0.8, `content chunks spread over ${spread.toFixed(0)} ms`);
});

Deno.test("stream_options.include_usage adds a usage chunk before [DONE]", async () => {
  const engine = createScriptedEngine({ answer: () => ANSWER, delayMs: 0 });
  const app = createApp(engine);
  const res = await app.request(
    "/v1/chat/completions",
    streamRequest({ stream_options: { include_usage: true } }),
  );
  const events = sseReader(res);
  const chunks = [];
  for (let d = await events.next(); d !== "[DONE]"; d = await events.next()) {
    assert.ok(d !== null);
    chunks.push(JSON.parse(d));
  }
  const usageChunk = chunks.pop();
  assert.deepEqual(usageChunk.choices, []);
  const prompt = engine.countPromptTokens([{ role: "user", content: QUESTION }]);
  assert.deepEqual(usageChunk.usage, {
    prompt_tokens: prompt,
    completion_tokens: [...ANSWER].length,
    total_tokens: prompt + [...ANSWER].length,
  });
  for (const c of chunks) assert.equal(c.usage, null, "other chunks carry usage: null");
  assert.equal(chunks[chunks.length - 1].choices[0].finish_reason, "stop");
});

Deno.test("max_tokens ends the stream with finish_reason length", async () => {
  const app = createApp(createScriptedEngine({ answer: () => ANSWER, delayMs: 0 }));
  const text = await (await app.request(
    "/v1/chat/completions",
    streamRequest({
      max_tokens: 5,
    }),
  )).text();
  const datas = text.trimEnd().split("\n\n").map((e) => e.slice(6));
  assert.equal(datas.pop(), "[DONE]");
  const chunks = datas.map((d) => JSON.parse(d));
  const content = chunks.map((c) => c.choices[0].delta.content ?? "").join("");
  assert.equal(content, [...ANSWER].slice(0, 5).join(""));
  assert.equal(chunks[chunks.length - 1].choices[0].finish_reason, "length");
});

Deno.test("cancelling the response stream aborts the engine request and frees the slot", async () => {
  const engine = createScriptedEngine({ answer: () => ANSWER.repeat(20), delayMs: 10 });
  const app = createApp(engine, { maxConcurrent: 1, maxQueue: 0 });
  const res = await app.request("/v1/chat/completions", streamRequest({}));
  const events = sseReader(res);
  await events.next();
  await events.next();
  assert.equal(engine.requests[0].signal!.aborted, false);
  await events.cancel();
  await waitFor(() => engine.stats().active === 0);
  assert.equal(engine.requests[0].signal!.aborted, true);
  const metrics = await (await app.request("/metrics")).text();
  assert.match(metrics, /^medglm_active_sequences 0$/m);
  assert.match(metrics, /^medglm_generations_finished_total\{finish_reason="abort"\} 1$/m);
  // The slot is free again: with one slot and no queue, a new request is admitted.
  const again = await app.request("/v1/chat/completions", streamRequest({ max_tokens: 2 }));
  assert.equal(again.status, 200);
  assert.match(await again.text(), /\[DONE\]/);
});

Deno.test("aborting the request signal mid-answer aborts a non-streaming generation", async () => {
  const engine = createScriptedEngine({ answer: () => ANSWER.repeat(20), delayMs: 10 });
  const app = createApp(engine);
  const controller = new AbortController();
  const pending = app.request(
    "/v1/chat/completions",
    streamRequest({ stream: false }, controller.signal),
  );
  await waitFor(() => engine.stats().tokensGenerated >= 4);
  controller.abort();
  const res = await pending;
  assert.equal(res.status, 499, "nobody reads it, but it is not a 200");
  await waitFor(() => engine.stats().active === 0);
  assert.equal(engine.requests[0].signal!.aborted, true);
  assert.ok(engine.stats().tokensGenerated < [...ANSWER.repeat(20)].length);
});

Deno.test("a queued request whose client leaves gives up its place and never reaches the engine", async () => {
  const engine = createScriptedEngine({ answer: () => ANSWER, delayMs: 15 });
  const app = createApp(engine, { maxConcurrent: 1, maxQueue: 1 });
  const metric = async (name: string) => {
    const text = await (await app.request("/metrics")).text();
    return Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)![1]);
  };
  const first = app.request("/v1/chat/completions", streamRequest({ stream: false }));
  await waitFor(() => engine.stats().active === 1);
  const leaving = new AbortController();
  const queued = app.request("/v1/chat/completions", streamRequest({}, leaving.signal));
  await waitFor(async () => (await metric("medglm_queue_length")) === 1);
  leaving.abort();
  assert.equal((await queued).status, 499);
  assert.equal(await metric("medglm_queue_length"), 0);
  // Its place is free: another request can queue behind the first one.
  const third = app.request("/v1/chat/completions", streamRequest({ stream: false }));
  const [a, c] = await Promise.all([first, third]);
  assert.equal(a.status, 200);
  assert.equal(c.status, 200);
  assert.equal(engine.requests.length, 2, "the abandoned request never started");
});

Deno.test("queued requests are admitted in arrival order, one slot at a time", async () => {
  const engine = createScriptedEngine({ answer: (m) => `答${m[0].content}`, delayMs: 3 });
  const app = createApp(engine, { maxConcurrent: 1, maxQueue: 5 });
  let maxActive = 0;
  const watch = setInterval(() => maxActive = Math.max(maxActive, engine.stats().active), 1);
  try {
    const results = [];
    for (let i = 0; i < 6; i++) {
      results.push(
        Promise.resolve(app.request("/v1/chat/completions", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ messages: [{ role: "user", content: String(i) }] }),
        })).then((r) => r.json()),
      );
      // Arrival order must be definite for the FIFO check.
      await new Promise((r) => setTimeout(r, 1));
    }
    const bodies = await Promise.all(results);
    bodies.forEach((b, i) => assert.equal(b.choices[0].message.content, `答${i}`));
    assert.deepEqual(engine.requests.map((r) => r.messages[0].content), [
      "0",
      "1",
      "2",
      "3",
      "4",
      "5",
    ]);
  } finally {
    clearInterval(watch);
  }
  assert.equal(maxActive, 1, "never more than --max-concurrent sequences decode");
});

async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 5000) {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error("timed out waiting for a condition");
    await new Promise((r) => setTimeout(r, 2));
  }
}
