// Llama-family config.json rules (tests/fixtures/llama-family/README.md §2), the parameter check
// (§3) and the architecture dispatcher `loadModel` (core/models/load.ts).

import assert from "node:assert/strict";
import { parseLlamaConfig } from "../core/models/llama/config.ts";
import { checkParameters, llamaParameters } from "../core/models/llama/params.ts";
import { isLlamaModel, loadModel, modelTypeOf } from "../core/models/load.ts";

const FIX = new URL("./fixtures/llama-family", import.meta.url).pathname;
const read = (m: string, f = "config.json") =>
  JSON.parse(Deno.readTextFileSync(`${FIX}/${m}/${f}`));

Deno.test("llama config: head_dim, kv heads, biases, tied and rope per model", () => {
  const q2 = parseLlamaConfig(
    read("qwen2-tiny"),
    "q2",
    read("qwen2-tiny", "generation_config.json"),
  );
  assert.equal(q2.headDim, 16);
  assert.equal(q2.numKvHeads, 2);
  assert.equal(q2.qkvBias, true);
  assert.equal(q2.oBias, false);
  assert.equal(q2.tieWordEmbeddings, true);
  assert.deepEqual(q2.eosTokenIds, [2002, 2000]);
  assert.equal(q2.padTokenId, 2000);
  const q3 = parseLlamaConfig(read("qwen3-tiny"));
  assert.equal(q3.headDim, 32);
  assert.equal(q3.qkNorm, true);
  assert.equal(q3.qkvBias, false);
  const l3 = parseLlamaConfig(
    read("llama3-tiny"),
    "l3",
    read("llama3-tiny", "generation_config.json"),
  );
  assert.deepEqual(l3.rope, {
    type: "llama3",
    theta: 500000,
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositions: 64,
  });
  assert.equal(l3.tieWordEmbeddings, false);
  assert.equal(l3.padTokenId, 2001); // no pad id anywhere: the first eos
});

Deno.test("llama config: v4 rope_scaling with `type`, theta precedence, defaults", () => {
  const base = read("llama3-tiny", "config.v4-layout.json");
  const old = {
    ...base,
    rope_scaling: { ...base.rope_scaling, type: "llama3", rope_type: undefined },
  };
  assert.equal(parseLlamaConfig(old).rope.type, "llama3");
  const inner = { ...base, rope_theta: 7, rope_scaling: { ...base.rope_scaling, rope_theta: 9 } };
  assert.equal(parseLlamaConfig(inner).rope.theta, 9);
  const none = { ...read("qwen2-tiny"), rope_parameters: undefined, rope_theta: undefined };
  assert.deepEqual(parseLlamaConfig(none).rope, { type: "default", theta: 10000 });
  const untied = { ...read("qwen2-tiny"), tie_word_embeddings: undefined };
  assert.equal(parseLlamaConfig(untied).tieWordEmbeddings, false);
  const noKv = { ...read("qwen2-tiny"), num_key_value_heads: null };
  assert.equal(parseLlamaConfig(noKv).numKvHeads, 4);
});

Deno.test("llama config: refusals name the field and the rule", () => {
  const q2 = read("qwen2-tiny");
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ model_type: "mistral" }, /model_type "mistral".*known: qwen2, qwen3, llama/],
    [{ hidden_act: "gelu" }, /hidden_act "gelu"/],
    [{ num_key_value_heads: 3 }, /multiple of num_key_value_heads 3/],
    [{ partial_rotary_factor: 0.5 }, /partial_rotary_factor/],
    [{ use_sliding_window: true }, /use_sliding_window/],
    [{ layer_types: ["full_attention", "sliding_attention"] }, /layer_types\[1\]/],
    [{ rope_parameters: { rope_type: "yarn", rope_theta: 1 } }, /rope_type "yarn"/],
  ];
  for (const [patch, re] of cases) {
    assert.throws(() => parseLlamaConfig({ ...q2, ...patch }, "cfg.json"), re);
  }
  // A number in sliding_window with use_sliding_window false is ignored (real Qwen configs).
  parseLlamaConfig({ ...q2, sliding_window: 32768, use_sliding_window: false });
});

Deno.test("llama params: missing, extra, mis-shaped tensors; inv_freq skipped", () => {
  const config = parseLlamaConfig(read("qwen3-tiny"));
  const table = llamaParameters(config);
  assert.ok(table.some((p) => p.name === "model.layers.1.self_attn.q_norm.weight"));
  assert.ok(!table.some((p) => p.name === "lm_head.weight"));
  checkParameters(config, [
    ...table,
    { name: "model.layers.0.self_attn.rotary_emb.inv_freq", shape: [16] },
    { name: "lm_head.weight", shape: [2048, 64] },
  ], "ok");
  assert.throws(
    () => checkParameters(config, table.slice(1), "x"),
    /missing tensor model\.embed_tokens/,
  );
  assert.throws(
    () => checkParameters(config, [...table, { name: "model.extra", shape: [1] }], "x"),
    /unexpected tensor model\.extra/,
  );
  const bad = table.map((p) =>
    p.name === "model.layers.0.self_attn.q_proj.weight" ? { ...p, shape: [64, 64] } : p
  );
  assert.throws(
    () => checkParameters(config, bad, "x"),
    /q_proj\.weight is \[64,64\], expected \[128,64\]/,
  );
});

Deno.test("loadModel picks the architecture from model_type; unknown ones are refused", async () => {
  assert.equal(await modelTypeOf(`${FIX}/qwen3-tiny`), "qwen3");
  const model = await loadModel(`${FIX}/llama3-tiny`, { log: () => {}, progressBar: false });
  try {
    assert.ok(isLlamaModel(model));
    assert.equal(model.config.vocabSize, 2048);
  } finally {
    model.dispose();
  }
  const tmp = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${tmp}/config.json`, JSON.stringify({ model_type: "gpt2" }));
    await assert.rejects(
      () => loadModel(tmp),
      /model_type "gpt2" is not supported \(known: chatglm, qwen2, qwen3, llama\)/,
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
