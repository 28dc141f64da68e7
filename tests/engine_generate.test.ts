// The generation engine on the tiny fixture model: greedy tokens equal the `generate` golden
// (base and adapter, alone and batched, joining mid-way), the slot cache against the lockstep
// cache, seeded sampling, streaming deltas, stop strings, max tokens, prompt too long, abort.

import assert from "node:assert/strict";
import { loadModel, type LoadModelOptions } from "../core/models/chatglm/load.ts";
import type { ChatGLMModel } from "../core/models/chatglm/model.ts";
import { poolStats } from "../core/tensor/pool.ts";
import { loadTokenizer } from "../data/tokenizer/chatglm/load.ts";
import { processResponse } from "../data/prompt/response.ts";
import { createEngine, type LocalEngine, type TokenDelta } from "../serve/engine/mod.ts";
import { PromptTooLongError } from "../serve/engine/types.ts";
import { loadGoldens } from "./reference/chatglm.ts";

const DIR = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const goldens = loadGoldens(DIR);
const gen = goldens.cases.get("generate")!.values as {
  max_new_tokens: number;
  text_vocab: number;
  prompts_ids: number[][];
  tokens: Record<string, number[][]>;
};
const quiet = { log: () => {}, progressBar: false, dtype: "f32" } satisfies LoadModelOptions;
const tokenizer = await loadTokenizer(DIR);

async function withEngine(
  opts: { adapter?: string; maxBatch?: number },
  fn: (e: LocalEngine, model: ChatGLMModel) => Promise<void>,
): Promise<void> {
  const model = await loadModel(DIR, { ...quiet, adapter: opts.adapter });
  const engine = createEngine({ model, tokenizer, maxBatch: opts.maxBatch ?? 4 });
  try {
    await fn(engine, model);
  } finally {
    await engine.close();
  }
  assert.ok(model.disposed, "closing the engine disposes the model it owns");
}

async function collect(it: AsyncIterable<TokenDelta>) {
  const tokens: number[] = [];
  const deltas: TokenDelta[] = [];
  for await (const d of it) {
    tokens.push(...d.tokens);
    deltas.push(d);
  }
  return { tokens, deltas, last: deltas[deltas.length - 1] };
}

function greedyRun(e: LocalEngine, promptIds: number[], maxNewTokens = gen.max_new_tokens) {
  return collect(e.generateTokens({ promptIds, maxNewTokens, temperature: 0 }));
}

Deno.test("engine: greedy tokens equal the golden, alone and batched, base and adapter", async () => {
  assert.equal(tokenizer.textVocabSize, gen.text_vocab);
  for (const variant of Object.keys(gen.tokens)) {
    const adapter = variant === "base" ? undefined : `${DIR}/${variant}`;
    await withEngine({ adapter }, async (engine) => {
      for (const [i, p] of gen.prompts_ids.entries()) {
        const r = await greedyRun(engine, p);
        assert.deepEqual(r.tokens, gen.tokens[variant][i], `${variant} prompt ${i} alone`);
        const eop = r.tokens[r.tokens.length - 1] === tokenizer.eopId;
        assert.equal(r.last.finishReason, eop ? "stop" : "length");
        assert.deepEqual(r.last.usage, {
          promptTokens: p.length,
          completionTokens: r.tokens.length,
        });
      }
      // Every prompt at once (several copies, so rows of different lengths share each step).
      const prompts = [...gen.prompts_ids, ...gen.prompts_ids];
      const all = await Promise.all(prompts.map((p) => greedyRun(engine, p)));
      all.forEach((r, i) => {
        const want = gen.tokens[variant][i % gen.prompts_ids.length];
        assert.deepEqual(r.tokens, want, `${variant} prompt ${i} batched`);
      });
      assert.equal(engine.stats().active, 0);
    });
  }
});

Deno.test("engine: a request joining mid-way decodes exactly as alone", async () => {
  await withEngine({ maxBatch: 2 }, async (engine) => {
    const [p0, p1] = gen.prompts_ids;
    const alone0 = await greedyRun(engine, p0, 30);
    const alone1 = await greedyRun(engine, p1, 30);
    // p1 starts generating; once it has produced 5 tokens, p0 joins its running batch.
    const first = engine.generateTokens({ promptIds: p1, maxNewTokens: 30, temperature: 0 });
    const tokens1: number[] = [];
    let joined: Promise<{ tokens: number[] }> | null = null;
    let sawTwoActive = false;
    for await (const d of first) {
      tokens1.push(...d.tokens);
      if (tokens1.length === 5) joined = greedyRun(engine, p0, 30);
      if (engine.stats().active === 2) sawTwoActive = true;
    }
    assert.ok(joined, "the second request was started");
    const tokens0 = (await joined!).tokens;
    assert.ok(sawTwoActive, "both sequences were live in the same steps");
    assert.deepEqual(tokens1, alone1.tokens);
    assert.deepEqual(tokens0, alone0.tokens);
  });
});

Deno.test("engine: more requests than slots queue and all finish with their own tokens", async () => {
  await withEngine({ maxBatch: 2 }, async (engine) => {
    const want = await Promise.all(gen.prompts_ids.map((p) => greedyRun(engine, p, 6)));
    const prompts = Array.from({ length: 5 }, (_, i) => gen.prompts_ids[i % 2]);
    const runs = prompts.map((p) => greedyRun(engine, p, 6));
    await new Promise((r) => setTimeout(r, 0));
    const s = engine.stats();
    assert.ok(s.active + s.queued === 5 && s.active <= 2, JSON.stringify(s));
    const got = await Promise.all(runs);
    got.forEach((r, i) => assert.deepEqual(r.tokens, want[i % 2].tokens, `request ${i}`));
  });
});

Deno.test("engine: slot decode matches the lockstep KV cache step logits", async () => {
  const model = await loadModel(DIR, quiet);
  try {
    const [p0, p1] = gen.prompts_ids;
    const width = Math.max(p0.length, p1.length);
    const pad = model.config.padTokenId;
    const rows = [p0, p1].map((p) => [...new Array(width - p.length).fill(pad), ...p]);
    const lock = model.createCache(2, width + 4);
    const slots = model.createCache(3, width + 4);
    try {
      const V = model.config.vocabSize;
      const a = await model.prefill(rows, lock);
      // Slot 2 and 0, in the other order, to show slots need not match batch rows.
      const s1 = await model.prefillSlot(p1, slots, 2);
      const s0 = await model.prefillSlot(p0, slots, 0);
      assertClose(s0, a.subarray(0, V), "prefill row 0");
      assertClose(s1, a.subarray(V), "prefill row 1");
      const next = [7, 9];
      const b = await model.decodeStep(next, lock);
      const t = await model.decodeSlots(
        [{ slot: 2, id: next[1] }, { slot: 0, id: next[0] }],
        slots,
      );
      assertClose(t.subarray(0, V), b.subarray(V), "decode row 1");
      assertClose(t.subarray(V), b.subarray(0, V), "decode row 0");
      assert.deepEqual(slots.slots.map((s) => s.length), [p0.length + 1, 0, p1.length + 1]);
      await assert.rejects(() => model.decodeSlots([{ slot: 1, id: 5 }], slots), /slot 1 is free/);
      await assert.rejects(
        () => model.decodeSlots([{ slot: 0, id: 5 }, { slot: 0, id: 5 }], slots),
        /appears twice/,
      );
      await assert.rejects(() => model.prefillSlot(p0, slots, 3), /not a row/);
      // Several prompts prefilled together into slots 1 and 0 give each its logits alone, and
      // their slots then decode as the lockstep rows do.
      model.releaseSlot(slots, 0);
      const both = await model.prefillSlots([{ slot: 1, ids: p1 }, { slot: 0, ids: p0 }], slots);
      assertClose(both.subarray(0, V), a.subarray(V), "batched slot prefill row 1");
      assertClose(both.subarray(V), a.subarray(0, V), "batched slot prefill row 0");
      const u = await model.decodeSlots(
        [{ slot: 0, id: next[0] }, { slot: 1, id: next[1] }],
        slots,
      );
      assertClose(u, b, "decode after batched slot prefill");
      assert.deepEqual(slots.slots.map((s) => s.length), [
        p0.length + 1,
        p1.length + 1,
        p1.length + 1,
      ]);
      model.releaseSlot(slots, 2);
      assert.deepEqual(slots.slots[2], { length: 0, layout: null });
    } finally {
      lock.free();
      slots.free();
    }
  } finally {
    model.dispose();
  }
});

function assertClose(a: Float32Array, b: Float32Array, what: string) {
  assert.equal(a.length, b.length, what);
  let max = 0, diff = 0;
  for (let i = 0; i < a.length; i++) {
    max = Math.max(max, Math.abs(b[i]));
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
  }
  assert.ok(diff <= 1e-4 * max + 1e-6, `${what}: max |diff| ${diff} (max ${max})`);
}

Deno.test("engine: seeded sampling is reproducible and differs between seeds", async () => {
  await withEngine({}, async (engine) => {
    const p = gen.prompts_ids[1];
    const sample = (seed: number) =>
      collect(engine.generateTokens({
        promptIds: p,
        maxNewTokens: 16,
        temperature: 1.5,
        topP: 0.95,
        topK: 50,
        repetitionPenalty: 1.1,
        seed,
      }));
    const a = await sample(42);
    const [b, c] = await Promise.all([sample(42), sample(7)]);
    assert.deepEqual(b.tokens, a.tokens, "same seed, same tokens (also when batched)");
    assert.notDeepEqual(c.tokens, a.tokens, "another seed differs");
    assert.ok(a.tokens.every((t) => t < tokenizer.textVocabSize), "no non-text ids");
  });
});

Deno.test("engine: chat deltas concatenate to the processed answer; usage; max tokens", async () => {
  await withEngine({}, async (engine) => {
    const messages = [{ role: "user" as const, content: "头痛怎么办" }];
    assert.deepEqual(engine.encodeMessages(messages), gen.prompts_ids[0]);
    assert.equal(engine.countPromptTokens(messages), gen.prompts_ids[0].length);
    const ids = await greedyRun(engine, gen.prompts_ids[0], 40);
    let text = "";
    let last;
    let count = 0;
    for await (const d of engine.generate({ messages, maxNewTokens: 40, temperature: 0 })) {
      text += d.text;
      last = d;
      count++;
      // A delta never ends inside a UTF-16 pair; a byte sequence still incomplete would show as a
      // U+FFFD that the final text does not have, which the equality below rules out.
      assert.ok(!/[\uD800-\uDBFF]$/.test(d.text), `delta ${JSON.stringify(d.text)} splits a pair`);
    }
    const answer = ids.tokens.filter((t) => t !== tokenizer.eopId);
    assert.equal(text, processResponse(tokenizer.decode(answer)));
    assert.ok(count >= 2, "the answer streams in several deltas");
    assert.equal(last!.finishReason, ids.last.finishReason);
    assert.deepEqual(last!.usage, ids.last.usage);
    // max tokens
    const short = await collect(
      engine.generateTokens({ promptIds: gen.prompts_ids[1], maxNewTokens: 3 }),
    );
    assert.equal(short.tokens.length, 3);
    assert.equal(short.last.finishReason, "length");
    const none = await collect(
      engine.generateTokens({ promptIds: gen.prompts_ids[1], maxNewTokens: 0 }),
    );
    assert.deepEqual(none.tokens, []);
    assert.equal(none.last.finishReason, "length");
  });
});

Deno.test("engine: a stop string ends the answer before it", async () => {
  await withEngine({}, async (engine) => {
    const p = gen.prompts_ids[1];
    const full = await greedyRun(engine, p, 12);
    const fullText = processResponse(
      tokenizer.decode(full.tokens.filter((t) => t !== tokenizer.eopId)),
    );
    const chars = [...fullText.trim()];
    assert.ok(chars.length >= 6, `answer long enough to cut: ${JSON.stringify(fullText)}`);
    const stop = chars.slice(3, 5).join("");
    const at = fullText.indexOf(stop);
    const r = await collect(
      engine.generateTokens({ promptIds: p, maxNewTokens: 12, stop: [stop] }),
    );
    assert.equal(r.deltas.map((d) => d.text).join(""), fullText.slice(0, at));
    assert.equal(r.last.finishReason, "stop");
    assert.ok(r.tokens.length < full.tokens.length, "generation stopped early");
  });
});

Deno.test("engine: prompt too long, bad settings, closed engine", async () => {
  await withEngine({}, async (engine) => {
    const long = "头痛怎么办".repeat(200);
    await assert.rejects(async () => {
      for await (const _ of engine.generate({ messages: [{ role: "user", content: long }] })) {
        // never reached
      }
    }, (e: unknown) => e instanceof PromptTooLongError && e.limit === engine.info.maxContext);
    await assert.rejects(
      () => collect(engine.generateTokens({ promptIds: gen.prompts_ids[0], temperature: -1 })),
      /temperature/,
    );
    await assert.rejects(
      () => collect(engine.generateTokens({ promptIds: gen.prompts_ids[0], topP: 0 })),
      /topP/,
    );
  });
});

Deno.test("engine: abort frees the slot and its cache at once", async () => {
  const model = await loadModel(DIR, quiet);
  const engine = createEngine({ model, tokenizer, maxBatch: 2 });
  try {
    const before = poolStats(model.gpu).bytesInUse;
    const ac = new AbortController();
    const it = engine.generateTokens({
      promptIds: gen.prompts_ids[1],
      maxNewTokens: 200,
      signal: ac.signal,
    });
    const seen: TokenDelta[] = [];
    for await (const d of it) {
      seen.push(d);
      if (seen.length === 3) {
        assert.equal(engine.stats().active, 1);
        assert.ok(poolStats(model.gpu).bytesInUse > before, "the slot cache is allocated");
        ac.abort();
      }
    }
    const last = seen[seen.length - 1];
    assert.equal(last.finishReason, "abort");
    assert.ok(seen.length <= 5, `ended promptly (${seen.length} deltas)`);
    assert.equal(engine.stats().active, 0);
    await waitFor(() => poolStats(model.gpu).bytesInUse === before);
    // A consumer that breaks out of the loop frees its slot too.
    for await (
      const _ of engine.generateTokens({ promptIds: gen.prompts_ids[0], maxNewTokens: 50 })
    ) {
      break;
    }
    await waitFor(() => engine.stats().active === 0 && poolStats(model.gpu).bytesInUse === before);
    // An already aborted signal never takes a slot.
    const r = await collect(
      engine.generateTokens({ promptIds: gen.prompts_ids[0], signal: AbortSignal.abort() }),
    );
    assert.equal(r.last.finishReason, "abort");
    assert.deepEqual(r.tokens, []);
  } finally {
    await engine.close();
  }
});

async function waitFor(check: () => boolean, timeoutMs = 10_000) {
  const t0 = Date.now();
  while (!check()) {
    if (Date.now() - t0 > timeoutMs) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 10));
  }
}
