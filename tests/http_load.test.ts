// Load against the real server on 127.0.0.1 (Deno.serve, port 0) over the scripted engine:
// 32 concurrent streaming clients, a burst past the queue, clients that leave mid-answer, and
// the heap returning to its start level afterwards.
import assert from "node:assert/strict";
import { runLoad, settledHeap, streamChat } from "../bench/http.ts";
import { createApp } from "../serve/http/app.ts";
import { startServer } from "../serve/http/server.ts";
import { createScriptedEngine } from "./helpers/scripted_engine.ts";

const QUESTION = "最近总是头痛，应该怎么办？";
const answerFor = (q: string) => `关于“${q}”：建议规律作息，清淡饮食，适量运动；如持续不适请就医。`;

function serve(maxConcurrent: number, maxQueue: number, delayMs: number) {
  const engine = createScriptedEngine({
    answer: (m) => answerFor(m[m.length - 1].content),
    chunkChars: 2,
    delayMs,
  });
  const app = createApp(engine, { maxConcurrent, maxQueue });
  const server = startServer(app, { host: "127.0.0.1", port: 0, onListen: () => {} });
  let peak = 0;
  const watch = setInterval(() => peak = Math.max(peak, engine.stats().active), 1);
  return {
    engine,
    server,
    peak: () => peak,
    metric: async (name: string) => {
      const text = await (await fetch(`${server.url}/metrics`)).text();
      return Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
    },
    async close() {
      clearInterval(watch);
      await server.shutdown();
    },
  };
}

Deno.test("32 concurrent streaming clients all complete, never more than --max-concurrent decoding", async () => {
  const s = serve(8, 32, 3);
  try {
    assert.match(s.server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.notEqual(s.server.port, 0, "port 0 resolved to the bound port");
    const health = await fetch(`${s.server.url}/health`);
    assert.equal(health.status, 200);
    await health.body?.cancel();

    const results = await runLoad(s.server.url, 32, QUESTION, AbortSignal.timeout(60_000));
    results.forEach((r, i) => {
      assert.equal(r.status, 200, `client ${i}: ${r.error ?? ""}`);
      assert.equal(r.error, undefined);
      assert.ok(r.done, `client ${i} got [DONE]`);
      assert.equal(r.finishReason, "stop");
      assert.equal(r.content, answerFor(`${QUESTION} #${i}`));
      assert.ok(r.ttftMs > 0 && r.ttftMs <= r.totalMs);
    });
    assert.ok(s.peak() <= 8, `peak ${s.peak()} sequences decoding together`);
    assert.ok(s.peak() >= 2, "requests did decode together");
    assert.equal(await s.metric("medglm_active_sequences"), 0);
    assert.equal(await s.metric("medglm_queue_length"), 0);
    assert.equal(await s.metric("medglm_time_to_first_token_seconds_count"), 32);
  } finally {
    await s.close();
  }
});

Deno.test("a burst past the queue: every admitted request completes, the rest get 429, no 500", async () => {
  const maxConcurrent = 4, maxQueue = 8, burst = 48;
  const s = serve(maxConcurrent, maxQueue, 10);
  try {
    const results = await runLoad(s.server.url, burst, QUESTION, AbortSignal.timeout(60_000));
    const admitted = results.filter((r) => r.status === 200);
    const rejected = results.filter((r) => r.status === 429);
    assert.equal(admitted.length + rejected.length, burst, "only 200s and 429s");
    assert.ok(admitted.length >= maxConcurrent + maxQueue, `${admitted.length} admitted`);
    assert.ok(rejected.length > 0, "the burst went past the queue");
    for (const r of admitted) {
      assert.ok(r.done && r.finishReason === "stop" && r.error === undefined);
      assert.ok(r.content.startsWith(`关于“${QUESTION} #`));
    }
    for (const r of rejected) assert.ok(Number(r.retryAfter) >= 1, `Retry-After ${r.retryAfter}`);
    assert.ok(s.peak() <= maxConcurrent, `peak ${s.peak()}`);
    assert.equal(
      await s.metric('medglm_requests_rejected_total{reason="queue_full"}'),
      rejected.length,
    );
    assert.equal(await s.metric("medglm_active_sequences"), 0);
  } finally {
    await s.close();
  }
});

Deno.test("clients that disconnect mid-answer cancel their sequences on the real server", async () => {
  const s = serve(4, 4, 10);
  try {
    const clients = Array.from({ length: 6 }, async (_, i) => {
      const controller = new AbortController();
      const res = await fetch(`${s.server.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          messages: [{ role: "user", content: `${QUESTION.repeat(10)} #${i}` }],
          stream: true,
        }),
        signal: controller.signal,
      });
      assert.equal(res.status, 200);
      const reader = res.body!.getReader();
      await reader.read(); // at least the first chunk
      controller.abort();
      await reader.closed.catch(() => {});
    });
    await Promise.all(clients);
    await waitFor(() => s.engine.stats().active === 0);
    await waitFor(async () => (await s.metric("medglm_active_sequences")) === 0);
    assert.equal(await s.metric("medglm_queue_length"), 0);
    // Every sequence that started was told to stop.
    assert.ok(s.engine.requests.length > 0);
    for (const r of s.engine.requests) assert.equal(r.signal?.aborted, true);
    const full = [...answerFor(`${QUESTION.repeat(10)} #0`)].length;
    assert.ok(s.engine.stats().tokensGenerated < 6 * full, "generation stopped early");
    // The server still answers normally afterwards.
    const after = await streamChat(s.server.url, { messages: [{ role: "user", content: "好" }] });
    assert.equal(after.status, 200);
    assert.ok(after.done);
  } finally {
    await s.close();
  }
});

Deno.test("the heap returns to its start level after repeated load rounds", async () => {
  const s = serve(8, 64, 1);
  try {
    // Warm up (JIT, connection pools, lazily created state) before taking the baseline.
    await runLoad(s.server.url, 32, QUESTION);
    const start = settledHeap();
    for (let round = 0; round < 3; round++) {
      const results = await runLoad(s.server.url, 32, QUESTION, AbortSignal.timeout(60_000));
      assert.ok(results.every((r) => r.status === 200 && r.done));
    }
    const end = settledHeap();
    const grownMiB = (end - start) / 2 ** 20;
    assert.ok(grownMiB < 1, `heap grew by ${grownMiB.toFixed(2)} MiB over 96 requests`);
  } finally {
    await s.close();
  }
});

async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 10_000) {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error("timed out waiting for a condition");
    await new Promise((r) => setTimeout(r, 5));
  }
}
