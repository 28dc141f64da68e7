// Grouped decoding (ids sampled on the GPU, read back once per group) against the per-token path
// on the tiny fixture model: the same tokens for greedy and seeded sampling, alone and batched
// with requests joining; a stop string spanning a group stops at the same text; an abort frees
// the slot within one group.

import assert from "node:assert/strict";
import { loadModel, type LoadModelOptions } from "../core/models/chatglm/load.ts";
import { loadTokenizer } from "../data/tokenizer/chatglm/load.ts";
import { type Decoder, webgpuDecoder } from "../serve/engine/decoder.ts";
import { createEngine, type LocalEngine, type TokenDelta } from "../serve/engine/mod.ts";
import { loadGoldens } from "./reference/chatglm.ts";

const DIR = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const gen = loadGoldens(DIR).cases.get("generate")!.values as { prompts_ids: number[][] };
const quiet = { log: () => {}, progressBar: false, dtype: "f32" } satisfies LoadModelOptions;
const tokenizer = await loadTokenizer(DIR);

interface Counts {
  groups: number[];
  perToken: number;
  released: number[];
}

/** An engine over the tiny model whose decoder counts groups (their sizes) and per-token steps. */
async function withEngine(
  gpuSampling: boolean | "greedy" | undefined,
  fn: (e: LocalEngine, counts: Counts) => Promise<void>,
  maxBatch = 4,
  /** Answers -1 (the decoder could not choose) for these steps of every group (by index). */
  refuse?: (step: number, row: number) => boolean,
): Promise<void> {
  const model = await loadModel(DIR, quiet);
  const inner = webgpuDecoder(model, { slots: maxBatch });
  const counts: Counts = { groups: [], perToken: 0, released: [] };
  const decoder: Decoder = {
    ...inner,
    decode(steps) {
      counts.perToken++;
      return inner.decode(steps);
    },
    async decodeGroup(g) {
      counts.groups.push(g.steps);
      const ids = await inner.decodeGroup!(g);
      if (refuse) {
        const n = g.slots.length;
        for (let j = 0; j < g.steps; j++) {
          for (let i = 0; i < n; i++) if (refuse(j, i)) ids[j * n + i] = -1;
        }
      }
      return ids;
    },
    release(slot) {
      counts.released.push(slot);
      inner.release(slot);
    },
  };
  const engine = createEngine({ decoder, tokenizer, gpuSampling });
  try {
    await fn(engine, counts);
  } finally {
    await engine.close();
  }
}

async function collect(it: AsyncIterable<TokenDelta>) {
  const tokens: number[] = [];
  const deltas: TokenDelta[] = [];
  for await (const d of it) {
    tokens.push(...d.tokens);
    deltas.push(d);
  }
  return { tokens, deltas, text: deltas.map((d) => d.text).join(""), last: deltas.at(-1)! };
}

const SETTINGS = [
  { temperature: 0 },
  { temperature: 0, repetitionPenalty: 1.5 },
  { temperature: 0.9, topP: 0.8, seed: 7 },
  { temperature: 1.2, topK: 30, repetitionPenalty: 1.25, seed: 11 },
  { temperature: 0.7, topK: 50, topP: 0.95, repetitionPenalty: 1.1, seed: 3 },
];

/** Every prompt × settings at once, some joining after others started; tokens per request. */
async function runAll(engine: LocalEngine): Promise<number[][]> {
  const jobs: Promise<number[]>[] = [];
  for (const [si, s] of SETTINGS.entries()) {
    for (const p of gen.prompts_ids) {
      jobs.push(
        collect(engine.generateTokens({ promptIds: p, maxNewTokens: 24, validUtf8: false, ...s }))
          .then((r) => r.tokens),
      );
    }
    // Later settings join while the earlier ones decode.
    if (si % 2 === 1) await new Promise((r) => setTimeout(r, 30));
  }
  return await Promise.all(jobs);
}

Deno.test("grouped GPU decoding gives the per-token path's tokens (greedy, seeded, batched)", async () => {
  let perToken: number[][] = [];
  await withEngine(false, async (e, counts) => {
    perToken = await runAll(e);
    assert.equal(counts.groups.length, 0, "gpuSampling false never groups");
    assert.ok(counts.perToken > 0);
  });
  await withEngine(true, async (e, counts) => {
    const grouped = await runAll(e);
    assert.deepEqual(grouped, perToken);
    assert.equal(counts.perToken, 0, "every step went through groups");
    assert.ok(Math.max(...counts.groups) >= 8, `groups grew: ${counts.groups}`);
    assert.equal(e.stats().active, 0);
  });
});

Deno.test("grouped decoding: a stop string spanning a group stops at the same text", async () => {
  const p = gen.prompts_ids[1];
  const base = { promptIds: p, maxNewTokens: 30, temperature: 0, validUtf8: false };
  let full = "";
  await withEngine(false, async (e) => {
    full = (await collect(e.generateTokens(base))).text;
  });
  const chars = [...full];
  assert.ok(chars.length >= 14, `answer long enough to cut: ${JSON.stringify(full)}`);
  // Tokens 8.. come from groups of 4 and 8 steps: a stop string there spans ids of one group.
  const stop = chars.slice(10, 13).join("");
  const at = full.indexOf(stop);
  const results: { tokens: number[] }[] = [];
  for (const gpu of [false, true]) {
    await withEngine(gpu, async (e, counts) => {
      const r = await collect(e.generateTokens({ ...base, stop: [stop] }));
      results.push(r);
      assert.equal(r.text, full.slice(0, at), `gpuSampling ${gpu}`);
      assert.equal(r.last.finishReason, "stop");
      if (gpu) assert.ok(counts.groups.some((k) => k >= 4), `groups: ${counts.groups}`);
    });
  }
  assert.deepEqual(results[0].tokens, results[1].tokens);
});

Deno.test("grouped decoding: an abort frees the slot within one group", async () => {
  await withEngine(true, async (e, counts) => {
    const ac = new AbortController();
    const deltas: TokenDelta[] = [];
    let groupsAtAbort = -1;
    for await (
      const d of e.generateTokens({
        promptIds: gen.prompts_ids[1],
        maxNewTokens: 300,
        temperature: 0,
        validUtf8: false,
        signal: ac.signal,
      })
    ) {
      deltas.push(d);
      if (deltas.length === 6) {
        groupsAtAbort = counts.groups.length;
        ac.abort();
      }
    }
    assert.equal(deltas.at(-1)!.finishReason, "abort", `${deltas.length} deltas`);
    // The abort ends the stream at once; the loop frees the slot when the running group is done.
    const t0 = Date.now();
    while (counts.released.length === 0 && Date.now() - t0 < 10_000) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.deepEqual(counts.released, [0], "the slot was released");
    assert.ok(
      counts.groups.length <= groupsAtAbort + 1,
      `at most one more group ran after the abort (${groupsAtAbort} → ${counts.groups.length})`,
    );
    assert.equal(e.stats().active, 0);
    // The slot serves the next request.
    const r = await collect(
      e.generateTokens({ promptIds: gen.prompts_ids[1], maxNewTokens: 5, temperature: 0 }),
    );
    assert.equal(r.tokens.length > 0, true);
  }, 1);
});

Deno.test("grouped decoding: steps a decoder answers -1 for are redone on the host, same ids", async () => {
  // Flat distributions (high temperature, no top-k/top-p) sampled on the GPU; the decoder then
  // refuses some steps (-1): the slot is rewound, the step redone on the host with the same
  // draw, and a group already following is discarded.
  const jobs = (e: LocalEngine) =>
    Promise.all(gen.prompts_ids.map((p, i) =>
      collect(e.generateTokens({
        promptIds: p,
        maxNewTokens: 20,
        temperature: 1.5,
        repetitionPenalty: 1.25,
        seed: 40 + i,
        validUtf8: false,
      })).then((r) => r.tokens)
    ));
  let want: number[][] = [];
  await withEngine(false, async (e) => {
    want = await jobs(e);
  });
  await withEngine(
    true,
    async (e, counts) => {
      assert.deepEqual(await jobs(e), want);
      assert.ok(counts.perToken > 0, "some steps were redone on the host");
      assert.ok(counts.groups.length > 0);
      assert.equal(e.stats().active, 0);
    },
    4,
    (j, i) => (j + i) % 3 === 2,
  );
});

Deno.test("grouped decoding: greedy with the UTF-8 mask gives the per-token path's tokens", async () => {
  // The mask is checked on the host as the ids arrive; a rejected greedy id is redone there.
  const jobs = (e: LocalEngine) =>
    Promise.all(
      [...gen.prompts_ids, ...gen.prompts_ids].map((p, i) =>
        collect(e.generateTokens({
          promptIds: p,
          maxNewTokens: 24,
          temperature: 0,
          repetitionPenalty: i % 2 ? 1.25 : 1,
          validUtf8: true,
        })).then((r) => r.tokens)
      ),
    );
  let want: number[][] = [];
  await withEngine(false, async (e) => {
    want = await jobs(e);
  });
  await withEngine(true, async (e, counts) => {
    assert.deepEqual(await jobs(e), want);
    assert.ok(counts.groups.length > 0, "greedy requests with the mask use groups");
  });
});

Deno.test("grouped decoding: sampling with the UTF-8 mask runs in groups, the per-token path's tokens", async () => {
  // The mask is applied on the GPU (each row's trailing bytes kept there), so sampled requests
  // with it decode in groups too; the same seeds give the same tokens.
  const jobs = (e: LocalEngine) =>
    Promise.all(
      SETTINGS.flatMap((s) =>
        gen.prompts_ids.map((p) =>
          collect(e.generateTokens({ promptIds: p, maxNewTokens: 24, ...s, validUtf8: true }))
            .then((r) => r.tokens)
        )
      ),
    );
  let want: number[][] = [];
  await withEngine(false, async (e) => {
    want = await jobs(e);
  });
  await withEngine(true, async (e, counts) => {
    assert.deepEqual(await jobs(e), want);
    assert.ok(counts.groups.length > 0, "sampled requests with the mask use groups");
    assert.equal(counts.perToken, 0, "every step went through groups");
  });
});

Deno.test('by default greedy and sampled requests decode in GPU groups; "greedy" keeps sampled ones per-token', async () => {
  await withEngine(undefined, async (e, counts) => {
    const before = counts.groups.length;
    await collect(
      e.generateTokens({
        promptIds: gen.prompts_ids[0],
        maxNewTokens: 8,
        validUtf8: false,
        temperature: 0.95,
        topP: 0.7,
        seed: 1,
      }),
    );
    assert.ok(counts.groups.length > before, "a sampled request decodes in groups");
    assert.equal(counts.perToken, 0);
  });
  await withEngine("greedy", async (e, counts) => {
    const p = gen.prompts_ids[0];
    await collect(
      e.generateTokens({ promptIds: p, maxNewTokens: 8, validUtf8: false, temperature: 0 }),
    );
    assert.ok(counts.groups.length > 0, "a greedy request decodes in groups");
    const before = counts.perToken;
    await collect(
      e.generateTokens({
        promptIds: p,
        maxNewTokens: 8,
        validUtf8: false,
        temperature: 0.9,
        seed: 1,
      }),
    );
    assert.ok(counts.perToken > before, "a sampled request decodes per token");
  });
});
