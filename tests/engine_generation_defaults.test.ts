// One set of generation defaults for every front end (issue 19): read from the model's
// generation_config.json when it has one, else ours; the engine fills what a request leaves out,
// so the terminal, the HTTP API and the bot sample alike.
import assert from "node:assert/strict";
import {
  BUILTIN_GENERATION_DEFAULTS,
  parseGenerationConfig,
  readGenerationDefaults,
  withGenerationDefaults,
} from "../serve/engine/generation_defaults.ts";
import { buildEngine, createEngine } from "../serve/engine/mod.ts";
import type { Decoder } from "../serve/engine/decoder.ts";
import { loadTokenizer } from "../data/tokenizer/chatglm/load.ts";
import { parseInferFlags } from "../serve/infer_flags.ts";
import { chatRequest } from "../serve/infer_cli.ts";
import { getGpu } from "../core/gpu/device.ts";

const DIR = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;

Deno.test("ours: ChatGLM-6B's chat settings", () => {
  assert.deepEqual({ ...BUILTIN_GENERATION_DEFAULTS }, {
    temperature: 0.95,
    topP: 0.7,
    topK: 0,
    repetitionPenalty: 1,
    maxNewTokens: 512,
    validUtf8: false,
    source: "built-in",
  });
});

Deno.test("generation_config.json: HF's fields override ours; errors name file and field", async () => {
  const d = parseGenerationConfig(
    {
      temperature: 0.6,
      top_p: 0.8,
      top_k: 20,
      repetition_penalty: 1.1,
      max_new_tokens: 300,
      eos_token_id: 2,
      max_length: 8192,
    },
    "m/generation_config.json",
  );
  assert.deepEqual(d, {
    temperature: 0.6,
    topP: 0.8,
    topK: 20,
    repetitionPenalty: 1.1,
    maxNewTokens: 300,
    validUtf8: false,
    source: "m/generation_config.json",
  });
  // Without do_sample, HF generates greedily.
  assert.equal(parseGenerationConfig({ do_sample: false, temperature: 0.6 }, "g").temperature, 0);
  for (
    const [json, re] of [
      [{ top_p: 0 }, /^Error: g: top_p must be a number in \(0, 1\] \(got 0\)$/],
      [{ temperature: "hot" }, /^Error: g: temperature must be a number >= 0/],
      [{ top_k: 2.5 }, /^Error: g: top_k must be an integer >= 0/],
      [{ do_sample: "yes" }, /^Error: g: do_sample must be true or false/],
      [[1], /^Error: g: expected a JSON object/],
    ] as [unknown, RegExp][]
  ) {
    assert.throws(() => parseGenerationConfig(json, "g"), re);
  }
  const dir = await Deno.makeTempDir();
  try {
    assert.deepEqual(await readGenerationDefaults(dir), { ...BUILTIN_GENERATION_DEFAULTS });
    await Deno.writeTextFile(`${dir}/generation_config.json`, '{"top_p": 0.9, "do_sample": true}');
    const got = await readGenerationDefaults(dir);
    assert.equal(got.topP, 0.9);
    assert.equal(got.temperature, 0.95);
    assert.equal(got.source, `${dir}/generation_config.json`);
    const f = await Deno.open(`${dir}/generation_config.json`, { write: true, truncate: true });
    await f.truncate(2 ** 31);
    f.close();
    await assert.rejects(
      () => readGenerationDefaults(dir),
      new RegExp(`^Error: ${dir}/generation_config\\.json: the file is 2147483648 bytes`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("withGenerationDefaults fills only what a request leaves out", () => {
  const d = { ...BUILTIN_GENERATION_DEFAULTS, validUtf8: true };
  assert.deepEqual(withGenerationDefaults({ temperature: 0, maxNewTokens: 5 }, d), {
    temperature: 0,
    topP: 0.7,
    topK: 0,
    repetitionPenalty: 1,
    maxNewTokens: 5,
    validUtf8: true,
  });
});

/** A decoder that always proposes token `id`. */
function constantDecoder(id: number, vocab: number): Decoder {
  const row = () => {
    const r = new Float32Array(vocab);
    r[id] = 10;
    return r;
  };
  return {
    vocabSize: vocab,
    maxContext: 256,
    slots: 1,
    prefill: () => Promise.resolve(row()),
    decode: (steps) => Promise.resolve(row().slice(0, vocab * steps.length)),
    release: () => {},
    idle: () => {},
    close: () => {},
  };
}

Deno.test("the engine applies its defaults to chat and plain requests (the terminal's too)", async () => {
  const tok = await loadTokenizer(DIR);
  const word = tok.encode("好", { special: false }).at(-1)!;
  const defaults = { ...BUILTIN_GENERATION_DEFAULTS, maxNewTokens: 3, temperature: 0 };
  const engine = buildEngine({
    decoder: constantDecoder(word, tok.textVocabSize),
    tokenizer: tok,
    info: { defaults },
  });
  try {
    assert.equal(engine.info.defaults, defaults);
    const count = async (
      deltas: AsyncIterable<{ finishReason?: string; usage?: { completionTokens: number } }>,
    ) => {
      for await (const d of deltas) {
        if (d.finishReason) return [d.finishReason, d.usage!.completionTokens];
      }
    };
    const messages = [{ role: "user" as const, content: "头痛" }];
    assert.deepEqual(await count(engine.generate({ messages })), ["length", 3]);
    assert.deepEqual(await count(engine.complete!({ prompt: "头痛" })), ["length", 3]);
    assert.deepEqual(await count(engine.generate({ messages, maxNewTokens: 5 })), ["length", 5]);
    // The terminal leaves unset flags to the engine (it used to send its own 0.95 / 0.7 / 512).
    const { request } = chatRequest(engine, parseInferFlags([]), "头痛", []);
    assert.equal(request.temperature, undefined);
    assert.equal(request.topP, undefined);
    assert.equal(request.maxNewTokens, undefined);
    assert.deepEqual(await count(engine.generate(request)), ["length", 3]);
  } finally {
    await engine.close();
  }
});

Deno.test("a model directory's generation_config.json becomes the engine's defaults", async () => {
  try {
    await getGpu();
  } catch (err) {
    console.log(`skipped: no WebGPU adapter (${(err as Error).message})`);
    return;
  }
  const dir = await Deno.makeTempDir();
  try {
    for (
      const f of ["config.json", "ice_text.model", "tokenizer_config.json", "model.safetensors"]
    ) {
      await Deno.copyFile(`${DIR}/${f}`, `${dir}/${f}`);
    }
    await Deno.writeTextFile(
      `${dir}/generation_config.json`,
      '{"top_p": 0.85, "max_new_tokens": 7}',
    );
    const engine = await createEngine({
      model: dir,
      dtype: "f32",
      backend: "webgpu",
      log: () => {},
      progressBar: false,
    });
    try {
      assert.equal(engine.info.defaults?.topP, 0.85);
      assert.equal(engine.info.defaults?.maxNewTokens, 7);
      assert.equal(engine.info.defaults?.temperature, 0.95);
      assert.equal(engine.info.defaults?.validUtf8, false, "on by default only for the demo model");
    } finally {
      await engine.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
