// startServer and runServer on 127.0.0.1 port 0: the bound address, health while the model
// loads, and a graceful stop that lets an in-flight answer finish and closes the engine.
import assert from "node:assert/strict";
import { runServer } from "../serve/http/run_server.ts";
import { startServer } from "../serve/http/server.ts";
import { createApp } from "../serve/http/app.ts";
import type { Engine } from "../serve/engine/types.ts";
import { streamChat } from "../bench/http.ts";
import { createScriptedEngine } from "./helpers/scripted_engine.ts";

Deno.test("startServer binds port 0 on 127.0.0.1 and reports the address", async () => {
  const stop = new AbortController();
  let announced = "";
  const server = startServer(createApp(createScriptedEngine()), {
    host: "127.0.0.1",
    port: 0,
    signal: stop.signal,
    onListen: (url) => announced = url,
  });
  assert.equal(server.hostname, "127.0.0.1");
  assert.ok(server.port > 0);
  assert.equal(server.url, `http://127.0.0.1:${server.port}`);
  assert.equal(announced, server.url);
  const res = await fetch(`${server.url}/v1/models`);
  assert.equal((await res.json()).data[0].id, "scripted-test-engine");
  stop.abort();
  await server.finished;
  await assert.rejects(fetch(`${server.url}/health`));
  assert.throws(() => startServer(createApp(createScriptedEngine()), { port: 70000 }), /port/);
});

Deno.test("runServer answers 503 while loading, serves, and stops gracefully", async () => {
  const engine = createScriptedEngine({ delayMs: 20 });
  let closed = 0;
  const tracked: Engine = { ...engine, close: () => (closed++, Promise.resolve()) };
  let loaded!: (e: Engine) => void;
  const stop = new AbortController();
  let url = "";
  const listening = Promise.withResolvers<void>();
  const running = runServer(
    new Promise<Engine>((r) => loaded = r),
    {
      host: "127.0.0.1",
      port: 0,
      maxConcurrent: 2,
      maxQueue: 2,
      maxBodyBytes: 4096,
      apiKey: undefined,
    },
    {
      signal: stop.signal,
      handleSignals: false,
      onListen: (u) => {
        url = u;
        listening.resolve();
      },
    },
  );
  await listening.promise;
  let res = await fetch(`${url}/health`);
  assert.equal(res.status, 503);
  await res.body?.cancel();
  loaded(tracked);
  await new Promise((r) => setTimeout(r, 0));
  res = await fetch(`${url}/health`);
  assert.equal(res.status, 200);
  await res.body?.cancel();

  // Stop while an answer is streaming: it still completes.
  const inFlight = streamChat(url, { messages: [{ role: "user", content: "胃痛怎么办" }] });
  while (engine.stats().active === 0) await new Promise((r) => setTimeout(r, 2));
  stop.abort();
  const result = await inFlight;
  assert.equal(result.status, 200);
  assert.ok(result.done, "the in-flight answer finished");
  await running;
  assert.equal(closed, 1, "the engine was closed once");
});

Deno.test({
  name: "runServer stops on SIGTERM in a real process, after in-flight answers",
  ignore: Deno.build.os === "windows",
  async fn() {
    const runServerUrl = new URL("../serve/http/run_server.ts", import.meta.url).href;
    const engineUrl = new URL("./helpers/scripted_engine.ts", import.meta.url).href;
    const code = `
      import { runServer } from "${runServerUrl}";
      import { createScriptedEngine } from "${engineUrl}";
      await runServer(createScriptedEngine({ delayMs: 20 }), {
        host: "127.0.0.1", port: 0, maxConcurrent: 2, maxQueue: 2, maxBodyBytes: 4096,
      }, { onListen: (url) => console.log("LISTENING " + url) });
      console.log("STOPPED");
    `;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", "--quiet", code],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    while (!out.includes("\n")) {
      const { done, value } = await lines.read();
      if (done) break;
      out += value;
    }
    const url = /LISTENING (\S+)/.exec(out)?.[1];
    assert.ok(url, `the server announced its URL: ${out}`);
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: "发烧三天了" }], stream: true }),
    });
    assert.equal(res.status, 200);
    const body = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let sse = (await body.read()).value ?? ""; // the answer has begun
    child.kill("SIGTERM");
    while (true) {
      const { done, value } = await body.read();
      if (done) break;
      sse += value;
    }
    assert.match(sse, /"finish_reason":"stop"/);
    assert.match(sse, /data: \[DONE\]\n\n$/, "the answer in flight at SIGTERM finished");
    while (true) {
      const { done, value } = await lines.read();
      if (done) break;
      out += value;
    }
    const status = await child.status;
    const stderr = await new Response(child.stderr).text();
    assert.equal(status.code, 0, stderr);
    assert.match(out, /STOPPED/);
    assert.match(stderr, /stopping: finishing in-flight answers/);
  },
});
