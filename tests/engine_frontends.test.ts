// The front ends driven by the real engine on the tiny fixture model: one streamed chat completion
// through the Hono app, one Telegram answer through the grammY bot and the fake Bot API, and the
// bot CLI's lazy `createEngine({ model: dir })`.

import assert from "node:assert/strict";
import { createBot } from "../bot/bot.ts";
import { createApp } from "../serve/http/app.ts";
import { createEngine, type LocalEngine } from "../serve/engine/mod.ts";
import { writeSafetensors } from "../core/io/safetensors.ts";
import { startFakeTelegram } from "./helpers/fake_telegram.ts";

const DIR = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const QUESTION = "头痛怎么办";

function loadTiny(): Promise<LocalEngine> {
  return createEngine({ model: DIR, dtype: "f32", maxBatch: 4, log: () => {}, progressBar: false });
}

async function expectedAnswer(engine: LocalEngine, maxNewTokens: number) {
  let text = "";
  let finishReason;
  const messages = [{ role: "user" as const, content: QUESTION }];
  for await (const d of engine.generate({ messages, maxNewTokens, temperature: 0 })) {
    text += d.text;
    finishReason = d.finishReason;
  }
  return { text, finishReason };
}

Deno.test("http: a streamed chat completion from the real engine", async () => {
  const engine = await loadTiny();
  try {
    const want = await expectedAnswer(engine, 12);
    const app = createApp(engine);
    const res = await app.request("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        messages: [{ role: "user", content: QUESTION }],
        stream: true,
        temperature: 0,
        max_tokens: 12,
      }),
    });
    assert.equal(res.status, 200);
    const body = await res.text();
    const events = body.split("\n\n").filter((e) => e.startsWith("data: ")).map((e) => e.slice(6));
    assert.equal(events[events.length - 1], "[DONE]");
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e));
    const content = chunks.map((c) => c.choices?.[0]?.delta?.content ?? "").join("");
    assert.equal(content, want.text);
    const finish = chunks.map((c) => c.choices?.[0]?.finish_reason).filter(Boolean);
    assert.deepEqual(finish, [want.finishReason]);
    assert.equal(engine.stats().active, 0);
  } finally {
    await engine.close();
  }
});

Deno.test("bot: a Telegram question answered by the real engine", async () => {
  const engine = await loadTiny();
  const fake = startFakeTelegram();
  const dir = await Deno.makeTempDir({ prefix: "medglm-engine-bot-" });
  const bot = createBot(engine, {
    token: fake.token,
    apiRoot: fake.apiRoot,
    kvPath: `${dir}/bot.kv`,
    editIntervalMs: 40,
    maxMessagesPerSecond: 1000,
    pollingTimeoutSeconds: 5,
    log: () => {},
  });
  try {
    await new Promise<void>((resolve, reject) => {
      bot.start({ onStart: () => resolve() }).catch(reject);
    });
    const before = engine.stats().tokensGenerated;
    fake.sendText({ chatId: 7, text: QUESTION });
    const texts = await fake.waitFor(
      () => {
        const t = fake.botTexts(7);
        return t.length > 0 && engine.stats().active === 0 &&
          engine.stats().tokensGenerated > before && t;
      },
      60_000,
      "the bot's answer",
    );
    assert.ok(texts[texts.length - 1].length > 0, "the answer message has text");
  } finally {
    await bot.stop();
    await bot.finished;
    await fake.close();
    await engine.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("createEngine({ model: dir }) loads; bad directories get errors with the fix", async () => {
  await assert.rejects(
    () => createEngine({ model: `${DIR}/no-such-dir`, log: () => {} }),
    /no such directory\.\nfix: /,
  );
  await assert.rejects(
    () => createEngine({ model: DIR, adapter: `${DIR}/nope`, log: () => {} }),
    /--adapter .*no such directory/,
  );
  await assert.rejects(
    () => createEngine({ model: DIR, backend: "onnx", log: () => {} }),
    /--backend onnx: no usable ONNX export in [^]*fix: /,
  );
  // An unknown architecture and a tokenizer of another model, in temporary copies.
  const tmp = await Deno.makeTempDir({ prefix: "medglm-engine-load-" });
  try {
    for (const f of ["model.safetensors", "ice_text.model", "tokenizer_config.json"]) {
      await Deno.copyFile(`${DIR}/${f}`, `${tmp}/${f}`);
    }
    const config = JSON.parse(await Deno.readTextFile(`${DIR}/config.json`));
    await Deno.writeTextFile(
      `${tmp}/config.json`,
      JSON.stringify({ ...config, model_type: "gpt2", architectures: ["GPT2LMHeadModel"] }),
    );
    await assert.rejects(
      () => createEngine({ model: tmp, log: () => {} }),
      /not supported[^]*fix:/,
    );
    // Fewer embedding rows than the tokenizer has tokens: the tokenizer is another model's.
    await Deno.writeTextFile(
      `${tmp}/config.json`,
      JSON.stringify({
        ...config,
        vocab_size: 1700,
        bos_token_id: 10,
        eos_token_id: 11,
        mask_token_id: 12,
        gmask_token_id: 13,
      }),
    );
    await assert.rejects(
      () => createEngine({ model: tmp, log: () => {} }),
      /tokenizer has \d+ tokens but the model's embedding has only 1700 rows[^]*fix:/,
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
  // An adapter for another base model (hidden 128 instead of the fixture's).
  const other = await Deno.makeTempDir({ prefix: "medglm-engine-adapter-" });
  try {
    const cfg = JSON.parse(await Deno.readTextFile(`${DIR}/adapter-qkv/adapter_config.json`));
    await Deno.writeTextFile(
      `${other}/adapter_config.json`,
      JSON.stringify({ ...cfg, base_model_name_or_path: "someone/bigger-chatglm" }),
    );
    const h = 128, r = cfg.r as number;
    const tensors = [0, 1].flatMap((l) => {
      const m = `base_model.model.transformer.layers.${l}.attention.query_key_value`;
      return [
        {
          name: `${m}.lora_A.weight`,
          dtype: "F32" as const,
          shape: [r, h],
          data: new Float32Array(r * h),
        },
        {
          name: `${m}.lora_B.weight`,
          dtype: "F32" as const,
          shape: [3 * h, r],
          data: new Float32Array(3 * h * r),
        },
      ];
    });
    await writeSafetensors(`${other}/adapter_model.safetensors`, tensors, { format: "pt" });
    await assert.rejects(
      () => createEngine({ model: DIR, adapter: other, dtype: "f32", log: () => {} }),
      /bigger-chatglm[^]*fix: this adapter does not fit/,
    );
  } finally {
    await Deno.remove(other, { recursive: true });
  }
  // A fitting adapter, merged at load.
  const engine = await createEngine({
    model: DIR,
    adapter: `${DIR}/adapter-multi`,
    merged: true,
    dtype: "f32",
    log: () => {},
  });
  try {
    assert.equal(engine.info.model, "chatglm6b-tiny+adapter-multi");
    assert.equal(engine.info.backend, "webgpu");
    assert.ok(engine.info.backendReason);
  } finally {
    await engine.close();
  }
});

Deno.test("bot on the demo model: it answers as trained, uses the history, /reset clears it", async () => {
  const samples = JSON.parse(
    await Deno.readTextFile(new URL("../data/samples/medical_qa.json", import.meta.url)),
  ) as { instruction: string; output: string }[];
  const engine = await createEngine({ maxBatch: 2, log: () => {}, progressBar: false });
  assert.equal(engine.info.demo, true);
  const seen: number[] = [];
  const recorded: LocalEngine = {
    ...engine,
    generate(req) {
      seen.push(req.messages.length);
      return engine.generate(req);
    },
  };
  const fake = startFakeTelegram();
  const dir = await Deno.makeTempDir({ prefix: "medglm-demo-bot-" });
  const bot = createBot(recorded, {
    token: fake.token,
    apiRoot: fake.apiRoot,
    kvPath: `${dir}/bot.kv`,
    editIntervalMs: 40,
    maxMessagesPerSecond: 1000,
    pollingTimeoutSeconds: 5,
    defaultSettings: { temperature: 0 },
    log: () => {},
  });
  // Waits for the engine call this question makes and for the bot to finish with the chat.
  const answerTo = async (text: string, count: number) => {
    const calls = seen.length;
    fake.sendText({ chatId: 9, text });
    try {
      return await fake.waitFor(
        () => {
          const t = fake.botTexts(9);
          return seen.length > calls && bot.stats().busyChats === 0 && t.length >= count && t;
        },
        20_000,
        `answer ${count}`,
      );
    } catch (err) {
      throw new Error(
        `${(err as Error).message}: engine calls ${seen.length - calls}, bot texts ${
          JSON.stringify(fake.botTexts(9))
        }, ${JSON.stringify(bot.stats())}`,
      );
    }
  };
  try {
    await new Promise<void>((resolve, reject) => {
      bot.start({ onStart: () => resolve() }).catch(reject);
    });
    await answerTo(samples[0].instruction, 1);
    // The last throttled edit brings the whole answer: the training answer, as trained.
    await fake.waitFor(
      () => fake.botTexts(9)[0] === samples[0].output,
      10_000,
      `the trained answer ${samples[0].output} (got ${fake.botTexts(9)[0]})`,
    );
    await answerTo(samples[5].instruction, 2);
    assert.deepEqual(seen.slice(-2), [1, 3], "the second question carries the first turn");
    fake.sendText({ chatId: 9, text: "/reset" });
    await fake.waitFor(() => fake.botTexts(9).length >= 3, 10_000, "the /reset reply");
    await answerTo(samples[5].instruction, 4);
    assert.equal(seen.at(-1), 1, "after /reset the question goes alone");
  } finally {
    await bot.stop();
    await bot.finished;
    await fake.close();
    await engine.close();
    await Deno.remove(dir, { recursive: true });
  }
});
