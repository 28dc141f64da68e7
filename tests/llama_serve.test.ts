// The engine, `deno task infer` and the HTTP app on a Llama-family model directory: a Qwen3
// model with random weights, the real vocabulary (151936 rows, so the real Qwen3 tokenizer fits)
// and a tiny width (hidden 32, one layer: ~19 MB of f32 in a temp dir). Its answers are noise; what
// is checked is that every layer above the model works on it: the architecture dispatch, the chat
// template prompt, end-of-turn ids, the finish reason, /v1/models, the CLI's exit status, and the
// clear refusals of what is ChatGLM-only.
import assert from "node:assert/strict";
import { getGpu } from "../core/gpu/device.ts";
import { loadModel } from "../core/models/load.ts";
import { defaultWeightDtype } from "../core/models/chatglm/weights.ts";
import { createEngine } from "../serve/engine/create.ts";
import { type Decoder, webgpuDecoder } from "../serve/engine/decoder.ts";
import { createScheduler } from "../serve/engine/scheduler.ts";
import type { SamplerSettings } from "../serve/engine/sampling.ts";
import { createRng } from "../base/random.ts";
import { EngineLoadError } from "../serve/engine/load.ts";
import { createApp } from "../serve/http/app.ts";
import { QWEN3_TOKENIZER_FIXTURES } from "./helpers/qwen3_tokenizer.ts";
import { ENDOFTEXT, IM_END, writeQwen3Dir } from "./helpers/qwen3_model_dir.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const CLI = new URL("../serve/infer_cli.ts", import.meta.url).pathname;
const quiet = { log: () => {}, progressBar: false };
const dirPromise = writeQwen3Dir();
// The ~19 MB directory goes when the test process ends, whichever tests were filtered in.
const made = await dirPromise;
globalThis.addEventListener("unload", () => Deno.removeSync(made, { recursive: true }));
// Transformers' renderings of the Qwen3 chat template (fixture), with their ids.
const cases = (await Deno.readTextFile(`${QWEN3_TOKENIZER_FIXTURES}chat_template.jsonl`))
  .split("\n").filter((l) => l).map((l) => JSON.parse(l));

Deno.test({
  name: "llama serve: createEngine on a Qwen3 directory answers, with the template's prompt",
  fn: async () => {
    const dir = await dirPromise;
    const engine = await createEngine({ model: dir, ...quiet });
    try {
      assert.equal(engine.info.architecture, "qwen3");
      assert.equal(engine.info.backend, "webgpu");
      // The load's default dtype, the same rule as ChatGLM-6B's (tests/weight_dtype.test.ts).
      assert.match(
        engine.info.weights ?? "",
        new RegExp(`^${defaultWeightDtype(await getGpu(), 1)}, `), // 1: a tiny model's size
      );
      assert.deepEqual([...engine.tokenizer.endOfTurnIds].sort(), [ENDOFTEXT, IM_END].sort());
      const withPrompt = cases.filter((c) =>
        c.add_generation_prompt && c.enable_thinking === undefined
      );
      assert.ok(withPrompt.length > 0, "the fixture has generation-prompt cases");
      for (const c of withPrompt) assert.deepEqual(engine.encodeMessages(c.messages), c.ids, c.id);

      let text = "";
      let finish: string | undefined;
      let deltas = 0;
      for await (
        const d of engine.generate({
          messages: [{ role: "user", content: "你好" }],
          maxNewTokens: 6,
          temperature: 0,
        })
      ) {
        text += d.text;
        deltas++;
        if (d.finishReason) finish = d.finishReason;
      }
      assert.ok(deltas > 0);
      assert.ok(text.length > 0, "the answer has text");
      assert.ok(finish === "length" || finish === "stop", `finish reason ${finish}`);

      const app = createApp(engine);
      const health = await (await app.request("/health")).json();
      assert.equal(health.architecture, "qwen3");
      const res = await app.request("/v1/models");
      assert.equal(res.status, 200);
      const card = (await res.json()).data[0];
      assert.equal(card.medglm.architecture, "qwen3");
      assert.equal(card.medglm.backend, "webgpu");

      const chat = await app.request("/v1/chat/completions", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          model: card.id,
          messages: [{ role: "user", content: "头痛怎么办" }],
          max_tokens: 4,
          temperature: 0,
        }),
      });
      assert.equal(chat.status, 200);
      const body = await chat.json();
      assert.ok(body.choices[0].finish_reason, "the HTTP answer has a finish reason");
    } finally {
      await engine.close();
    }
  },
});

Deno.test("llama serve: --merged is refused as ChatGLM-only, ONNX without an export", async () => {
  const dir = await dirPromise;
  for (
    const [opts, flag] of [
      [{ merged: true, adapter: dir }, /--merged is implemented for ChatGLM-6B only/],
    ] as const
  ) {
    await assert.rejects(
      () => createEngine({ model: dir, ...quiet, ...opts }),
      (e: unknown) =>
        e instanceof EngineLoadError && flag.test(e.message) && /qwen3/.test(e.message),
    );
  }
  // ONNX runs a Llama-family export (tests/llama_onnx.test.ts); without one it says how to make it.
  await assert.rejects(
    () => createEngine({ model: dir, ...quiet, backend: "onnx" }),
    /--backend onnx: no usable ONNX export in .*\/onnx: [^]*deno task export-onnx --model/,
  );
});

Deno.test("llama serve: `deno task infer --prompt` on a Qwen3 directory exits 0", async () => {
  const dir = await dirPromise;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      CLI,
      "--model",
      dir,
      "--prompt",
      "你好",
      "--max-new-tokens",
      "4",
      "--temperature",
      "0",
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  assert.ok(new TextDecoder().decode(out.stdout).endsWith("\n"));
});

Deno.test("llama serve: grouped GPU decoding gives the per-token path's tokens (greedy, sampled)", async () => {
  const dir = await dirPromise;
  const model = await loadModel(dir, { ...quiet, gpu: await getGpu() });
  // Three requests at once (batched slots), each 12 tokens: greedy, HTTP's default sampling, and
  // top-k with a repetition penalty; seeded.
  const settings: SamplerSettings[] = [
    { temperature: 0 },
    { temperature: 0.95, topP: 0.7 },
    { temperature: 1.2, topK: 20, repetitionPenalty: 1.25 },
  ];
  const run = async (gpuSampling: boolean) => {
    const inner = webgpuDecoder(model, { slots: 3, ownsModel: false });
    let groups = 0, perToken = 0;
    const decoder: Decoder = {
      ...inner,
      decode(steps) {
        perToken++;
        return inner.decode(steps);
      },
      decodeGroup(g) {
        groups++;
        return inner.decodeGroup!(g);
      },
    };
    // endId -1: random weights must not stop early.
    const sched = createScheduler(decoder, { textVocab: 151643, endId: -1, gpuSampling });
    try {
      const tokens = await Promise.all(
        settings.map((s, i) =>
          new Promise<number[]>((resolve, reject) => {
            const ids: number[] = [];
            sched.submit({
              promptIds: [IM_END - 1, 872, 100 + i],
              settings: s,
              rng: createRng(40 + i),
              maxNewTokens: 12,
              onToken(id) {
                ids.push(id);
                return false;
              },
              onEnd: (_r, err) => err ? reject(err) : resolve(ids),
            });
          })
        ),
      );
      return { tokens, groups, perToken };
    } finally {
      await sched.close();
      await inner.close();
    }
  };
  try {
    const want = await run(false);
    assert.equal(want.groups, 0);
    const got = await run(true);
    assert.deepEqual(got.tokens, want.tokens);
    assert.ok(got.groups > 0, "the Llama decoder runs GPU groups");
    assert.equal(got.perToken, 0);
    assert.ok(want.tokens.every((t) => t.length === 12));
  } finally {
    model.dispose();
  }
});

Deno.test("llama serve: `deno task serve` on a Qwen3 directory lists it and answers", async () => {
  const dir = await dirPromise;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", `${ROOT}/serve/cli.ts`, "--model", dir, "--port", "0"],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stderrText = new Response(child.stderr).text();
  let seen = "";
  let url = "";
  try {
    while (!url) {
      const { value, done } = await stdout.read();
      if (done) throw new Error(`serve exited early: ${seen}\n${await stderrText}`);
      seen += value;
      url = seen.match(/listening on (http:\/\/\S+)/)?.[1] ?? "";
    }
    let ready = false;
    for (let i = 0; i < 600 && !ready; i++) {
      const health = await fetch(`${url}/health`);
      ready = health.status === 200;
      await health.body?.cancel();
      if (!ready) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(ready, "the model loaded");
    const models = await (await fetch(`${url}/v1/models`)).json();
    assert.equal(models.data[0].medglm.architecture, "qwen3");
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        messages: [{ role: "user", content: "头痛怎么办" }],
        temperature: 0,
        max_tokens: 4,
      }),
    });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.ok(body.usage.completion_tokens > 0);
    assert.ok(body.choices[0].finish_reason);
  } finally {
    child.kill("SIGINT");
  }
  const status = await child.status;
  await stdout.cancel();
  const err = await stderrText;
  assert.equal(status.code, 0, err);
  assert.match(err, /\(qwen3\)/);
});
