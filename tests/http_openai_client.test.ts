// The official `openai` npm client (pinned) against the app served on 127.0.0.1: chat and plain
// completions, streamed with stream_options.include_usage, and OpenAI's errors as the client
// types them.
import assert from "node:assert/strict";
import OpenAI from "npm:openai@5.23.2";
import { createApp } from "../serve/http/app.ts";
import { startServer } from "../serve/http/server.ts";
import { createScriptedEngine } from "./helpers/scripted_engine.ts";

const ANSWER = "多喝水，注意休息；持续高烧请就医。";
const MODEL = "scripted-test-engine";

async function withClient(fn: (client: OpenAI) => Promise<void>): Promise<void> {
  const engine = createScriptedEngine({ answer: () => ANSWER, delayMs: 1 });
  const server = startServer(createApp(engine, { apiKey: "sk-local" }), {
    port: 0,
    onListen: () => {},
  });
  try {
    await fn(new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "sk-local", maxRetries: 0 }));
  } finally {
    await server.shutdown();
  }
}

Deno.test("openai client: chat completions, plain and streamed with usage", async () => {
  await withClient(async (client) => {
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), [MODEL]);

    const chat = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "发烧怎么办？" }],
      temperature: 0,
    });
    assert.equal(chat.object, "chat.completion");
    assert.equal(chat.choices[0].message.content, ANSWER);
    assert.equal(chat.choices[0].finish_reason, "stop");
    assert.equal(chat.usage!.completion_tokens, [...ANSWER].length);

    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "发烧怎么办？" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      if (chunk.choices.length) {
        text += chunk.choices[0].delta.content ?? "";
        finish = chunk.choices[0].finish_reason ?? finish;
        assert.equal(chunk.usage, null);
      } else usage = chunk.usage;
    }
    assert.equal(text, ANSWER);
    assert.equal(finish, "stop");
    assert.equal(usage!.completion_tokens, [...ANSWER].length);
    assert.equal(usage!.total_tokens, usage!.prompt_tokens + usage!.completion_tokens);
  });
});

Deno.test("openai client: plain completions, plain and streamed with usage", async () => {
  await withClient(async (client) => {
    const done = await client.completions.create({ model: MODEL, prompt: "头痛", max_tokens: 64 });
    assert.equal(done.object, "text_completion");
    assert.equal(done.choices[0].text, ANSWER);
    assert.equal(done.choices[0].finish_reason, "stop");

    const short = await client.completions.create({ model: MODEL, prompt: "头痛" });
    assert.equal(short.choices[0].text, [...ANSWER].slice(0, 16).join(""), "default 16 tokens");
    assert.equal(short.choices[0].finish_reason, "length");

    const stream = await client.completions.create({
      model: MODEL,
      prompt: "头痛",
      max_tokens: 64,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      if (chunk.choices.length) text += chunk.choices[0].text;
      else usage = chunk.usage;
    }
    assert.equal(text, ANSWER);
    assert.equal(usage!.completion_tokens, [...ANSWER].length);
  });
});

Deno.test("openai client: an unknown model is NotFoundError with code model_not_found", async () => {
  await withClient(async (client) => {
    await assert.rejects(
      () =>
        client.chat.completions.create({
          model: "gpt-4o",
          messages: [{ role: "user", content: "hi" }],
        }),
      (e: unknown) => {
        assert.ok(e instanceof OpenAI.NotFoundError, String(e));
        assert.equal(e.status, 404);
        assert.equal(e.code, "model_not_found");
        assert.equal(e.param, "model");
        return true;
      },
    );
    await assert.rejects(
      () => client.completions.create({ model: MODEL, prompt: "x", echo: true }),
      (e: unknown) => {
        assert.ok(e instanceof OpenAI.BadRequestError, String(e));
        assert.equal(e.code, "unsupported_value");
        return true;
      },
    );
    const wrongKey = new OpenAI({ baseURL: client.baseURL, apiKey: "nope", maxRetries: 0 });
    await assert.rejects(() => wrongKey.models.list(), OpenAI.AuthenticationError);
  });
});
