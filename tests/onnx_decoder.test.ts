// The engine's Decoder over the ONNX Runtime backend (serve/onnx/decoder.ts): slots prefilled one
// by one and decoded together in a shared batched cache; sequences joining and leaving mid-way
// (the cache repacked) decode exactly as alone; and the generation engine driven end to end by it.

import assert from "node:assert/strict";
import type { ChatGLMConfig } from "../core/models/chatglm/config.ts";
import { exportChatGLMToOnnx } from "../core/onnx/export_dir.ts";
import { loadOnnxModel, type OnnxModel } from "../serve/onnx/runner.ts";
import { onnxDecoder } from "../serve/onnx/decoder.ts";
import { defaultOnnxExportDir, loadOnnxDecoder, probeOnnxExport } from "../serve/onnx/backend.ts";
import { createEngine } from "../serve/engine/mod.ts";
import { loadTokenizer } from "../data/tokenizer/chatglm/load.ts";
import { compareRule, loadGoldens } from "./reference/chatglm.ts";

const DIR = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const goldens = loadGoldens(DIR);
const gen = goldens.cases.get("generate")!.values as {
  max_new_tokens: number;
  text_vocab: number;
  prompts_ids: number[][];
  tokens: Record<string, number[][]>;
  live: Record<string, boolean[][]>;
};
const tmp = await Deno.makeTempDir({ prefix: "medglm-onnx-decoder-" });
await exportChatGLMToOnnx(DIR, `${tmp}/base`);
await exportChatGLMToOnnx(DIR, `${tmp}/qkv`, { adapter: `${DIR}/adapter-qkv` });

function argmax(logits: Float32Array, at: number, V: number): number {
  let best = 0;
  for (let v = 1; v < gen.text_vocab; v++) if (logits[at * V + v] > logits[at * V + best]) best = v;
  return best;
}

/**
 * Greedy decoding through the decoder; `joinAt[i]` is the step at which prompt i is prefilled
 * (0 = at the start). Returns each prompt's tokens and the logits that chose them.
 */
async function run(model: OnnxModel, joinAt: number[], slots = 4) {
  const dec = onnxDecoder(model, { slots, ownsModel: false });
  const V = model.config.vocabSize, eos = (model.config as ChatGLMConfig).eosTokenId;
  const n = gen.prompts_ids.length;
  const tokens: number[][] = Array.from({ length: n }, () => []);
  const chosen: Float32Array[][] = Array.from({ length: n }, () => []);
  const live = new Set<number>();
  const last = new Map<number, number>();
  try {
    for (
      let step = 0;
      step < 64 && (live.size || tokens.some((t, i) => !t.length && joinAt[i] >= step));
      step++
    ) {
      for (let i = 0; i < n; i++) {
        if (joinAt[i] !== step) continue;
        const logits = await dec.prefill(i, gen.prompts_ids[i]);
        const id = argmax(logits, 0, V);
        tokens[i].push(id);
        chosen[i].push(logits.slice());
        if (id === eos) dec.release(i);
        else live.add(i), last.set(i, id);
      }
      const steps = [...live].map((slot) => ({ slot, id: last.get(slot)! }));
      if (!steps.length) continue;
      const logits = await dec.decode(steps);
      steps.forEach(({ slot }, k) => {
        const id = argmax(logits, k, V);
        tokens[slot].push(id);
        chosen[slot].push(logits.slice(k * V, (k + 1) * V));
        last.set(slot, id);
        if (id === eos || tokens[slot].length === gen.max_new_tokens) {
          live.delete(slot);
          dec.release(slot);
        }
      });
      if (!live.size) dec.idle();
    }
  } finally {
    dec.close();
  }
  return { tokens, chosen };
}

Deno.test("onnx decoder: slots decoded together give the golden tokens and step logits", async () => {
  const model = await loadOnnxModel(`${tmp}/base`);
  try {
    const { tokens, chosen } = await run(model, gen.prompts_ids.map(() => 0));
    assert.deepEqual(tokens, gen.tokens.base);
    const golden = goldens.read("generate", "step_logits").data;
    const V = model.config.vocabSize, rows = gen.prompts_ids.length;
    chosen.forEach((steps, b) =>
      steps.forEach((logits, step) => {
        assert.ok(gen.live.base[step][b]);
        const at = (step * rows + b) * V;
        const r = compareRule(logits, golden.subarray(at, at + V), goldens.rtol, goldens.atol);
        assert.ok(r.ok, `step ${step} row ${b}: ${r.maxDiff} > ${r.limit}`);
      })
    );
  } finally {
    await model.dispose();
  }
});

Deno.test("onnx decoder: sequences joining and leaving mid-way decode exactly as alone", async () => {
  for (const [variant, dir] of [["base", "base"], ["adapter-qkv", "qkv"]]) {
    const model = await loadOnnxModel(`${tmp}/${dir}`);
    try {
      for (const joinAt of [[3, 0], [0, 5], [2, 2]]) {
        const { tokens } = await run(model, joinAt, 3);
        assert.deepEqual(tokens, gen.tokens[variant], `${variant} joinAt ${joinAt}`);
      }
      // A slot re-prefilled while its old row is still in the group starts afresh.
      const dec = onnxDecoder(model, { slots: 2, ownsModel: false });
      const [p0, p1] = gen.prompts_ids;
      const V = model.config.vocabSize;
      let l0 = await dec.prefill(0, p0);
      const l1 = await dec.prefill(1, p1);
      const both = await dec.decode([{ slot: 1, id: argmax(l1, 0, V) }, {
        slot: 0,
        id: argmax(l0, 0, V),
      }]);
      assert.equal(argmax(both, 1, V), gen.tokens[variant][0][1]);
      assert.equal(argmax(both, 0, V), gen.tokens[variant][1][1]);
      dec.release(0);
      l0 = await dec.prefill(0, p0);
      assert.equal(argmax(l0, 0, V), gen.tokens[variant][0][0]);
      const again = await dec.decode([{ slot: 0, id: argmax(l0, 0, V) }]);
      assert.equal(argmax(again, 0, V), gen.tokens[variant][0][1]);
      await assert.rejects(() => dec.decode([{ slot: 0, id: 1 }, { slot: 0, id: 1 }]), /twice/);
      dec.release(1);
      await assert.rejects(() => dec.decode([{ slot: 1, id: 1 }]), /slot 1 is free/);
      await assert.rejects(() => dec.prefill(2, p0), /outside/);
      dec.close();
    } finally {
      await model.dispose();
    }
  }
});

Deno.test("onnx decoder: the generation engine runs on it unchanged", async () => {
  const tokenizer = await loadTokenizer(DIR);
  const model = await loadOnnxModel(`${tmp}/base`);
  const engine = createEngine({
    decoder: onnxDecoder(model, { slots: 3 }),
    tokenizer,
    info: { backend: "onnx", model: "tiny" },
  });
  try {
    assert.equal(engine.info.backend, "onnx");
    const prompts = [...gen.prompts_ids, ...gen.prompts_ids];
    const runs = await Promise.all(prompts.map(async (promptIds) => {
      const out: number[] = [];
      for await (
        const d of engine.generateTokens({
          promptIds,
          maxNewTokens: gen.max_new_tokens,
          temperature: 0,
        })
      ) out.push(...d.tokens);
      return out;
    }));
    runs.forEach((t, i) =>
      assert.deepEqual(t, gen.tokens.base[i % gen.prompts_ids.length], `request ${i}`)
    );
  } finally {
    await engine.close();
  }
  assert.ok(model.disposed, "closing the engine disposes the ONNX model it owns");
});

Deno.test("onnx backend: probing an export for --backend auto, loading the decoder", async () => {
  assert.equal(defaultOnnxExportDir("/m/", null), "/m/onnx");
  assert.equal(defaultOnnxExportDir("/m", "/a/"), "/a/onnx");
  const ok = await probeOnnxExport(`${tmp}/base`, DIR);
  assert.ok(ok.usable);
  const withAdapter = await probeOnnxExport(`${tmp}/base`, DIR, `${DIR}/adapter-qkv`);
  assert.ok(!withAdapter.usable && /no adapter merged in/.test(withAdapter.reason));
  const none = await probeOnnxExport(`${tmp}/missing`, DIR);
  assert.ok(!none.usable && /not found/.test(none.reason));
  const { decoder, model } = await loadOnnxDecoder({
    modelDir: DIR,
    adapterDir: `${DIR}/adapter-qkv`,
    exportDir: `${tmp}/qkv`,
    slots: 2,
  });
  try {
    assert.equal(decoder.slots, 2);
    const logits = await decoder.prefill(0, gen.prompts_ids[0]);
    assert.equal(argmax(logits, 0, model.config.vocabSize), gen.tokens["adapter-qkv"][0][0]);
  } finally {
    decoder.close();
  }
  assert.ok(model.disposed);
});

Deno.test("onnx decoder: cleanup", async () => {
  await Deno.remove(tmp, { recursive: true });
});
