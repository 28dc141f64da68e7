// ChatGLM config.json validation, the parameter table check, and the memory plan's refusals.
// No GPU needed.

import assert from "node:assert/strict";
import { parseChatGLMConfig, readChatGLMConfig } from "../core/models/chatglm/config.ts";
import { checkParameters, linearModules, parameterTable } from "../core/models/chatglm/params.ts";
import {
  assertPlanFits,
  formatMemoryPlan,
  planMemory,
} from "../core/models/chatglm/memory_plan.ts";
import type { GpuLimits } from "../core/gpu/device.ts";

const DIR = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const tinyJson = JSON.parse(await Deno.readTextFile(`${DIR}/config.json`));

/** The real chatglm-6b values on the tiny config's keys. */
const realJson = {
  ...tinyJson,
  hidden_size: 4096,
  num_attention_heads: 32,
  num_layers: 28,
  inner_hidden_size: 16384,
  vocab_size: 130528,
  max_sequence_length: 2048,
  bos_token_id: 130004,
  eos_token_id: 130005,
  mask_token_id: 130000,
  gmask_token_id: 130001,
  torch_dtype: "float16",
};

Deno.test("config: the fixture's config.json parses to the values it holds", async () => {
  const c = await readChatGLMConfig(DIR);
  assert.equal(c.hiddenSize, tinyJson.hidden_size);
  assert.equal(c.numHeads, tinyJson.num_attention_heads);
  assert.equal(c.headDim, tinyJson.hidden_size / tinyJson.num_attention_heads);
  assert.equal(c.numLayers, tinyJson.num_layers);
  assert.equal(c.innerHiddenSize, tinyJson.inner_hidden_size);
  assert.equal(c.vocabSize, tinyJson.vocab_size);
  assert.equal(c.padTokenId, tinyJson.pad_token_id);
  assert.equal(c.bosTokenId, tinyJson.bos_token_id);
  assert.equal(c.gmaskTokenId, tinyJson.gmask_token_id);
  const real = parseChatGLMConfig(realJson);
  assert.equal(real.headDim, 128);
});

Deno.test("config: unsupported configs are refused with the field named", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ position_encoding_2d: false }, /position_encoding_2d must be true/],
    [{ pre_seq_len: 128 }, /pre_seq_len is set.*p-tuning/],
    [{ quantization_bit: 3 }, /quantization_bit is 3: only 4 and 8/],
    [{ quantization_embeddings: true }, /quantization_embeddings is true/],
    [{ model_type: "llama" }, /model_type "llama" is not supported/],
    [{ architectures: ["LlamaForCausalLM"] }, /architectures .* is not supported/],
    [{ multi_query_attention: true }, /ChatGLM2\/3/],
    [{ hidden_size: 65 }, /not divisible by num_attention_heads/],
    [{ hidden_size: "64" }, /hidden_size must be an integer/],
    [{ num_layers: 0 }, /num_layers must be an integer >= 1/],
    [{ pad_token_id: 99999 }, /pad_token_id 99999 is outside the vocabulary/],
    [{ layernorm_epsilon: -1 }, /layernorm_epsilon must be a positive number/],
  ];
  for (const [patch, re] of cases) {
    assert.throws(
      () => parseChatGLMConfig({ ...tinyJson, ...patch }, "x/config.json"),
      (e: Error) => {
        assert.match(e.message, /^x\/config\.json: /);
        assert.match(e.message, re);
        return true;
      },
    );
  }
  // quantization_bit 0 and pre_seq_len null are the "off" values of real configs.
  parseChatGLMConfig({ ...tinyJson, quantization_bit: 0, pre_seq_len: null });
  assert.throws(() => parseChatGLMConfig([1, 2]), /expected a JSON object/);
});

Deno.test("config: a missing or malformed config.json names the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(() => readChatGLMConfig(dir), new RegExp(`${dir}/config.json: not found`));
    await Deno.writeTextFile(`${dir}/config.json`, "{not json");
    await assert.rejects(() => readChatGLMConfig(dir), /config.json: not valid JSON/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("params: the table has every checkpoint name; missing, extra and misshapen tensors fail", () => {
  const c = parseChatGLMConfig(tinyJson);
  const table = parameterTable(c);
  assert.equal(table.length, 1 + 12 * c.numLayers + 3);
  const fromTable = table.map((p) => ({ name: p.name, shape: p.shape }));
  const invFreq = {
    name: "transformer.layers.0.attention.rotary_emb.inv_freq",
    shape: [c.headDim / 4],
  };
  checkParameters(c, [...fromTable, invFreq], "ok");
  assert.throws(
    () => checkParameters(c, fromTable.slice(1), "m"),
    /m: .*missing tensor transformer\.word_embeddings\.weight/,
  );
  assert.throws(
    () => checkParameters(c, [...fromTable, { name: "lm_head.bias", shape: [c.vocabSize] }], "m"),
    /unexpected tensor lm_head\.bias/,
  );
  const wrong = fromTable.map((p) => p.name === "lm_head.weight" ? { ...p, shape: [10, 64] } : p);
  assert.throws(
    () => checkParameters(c, wrong, "m"),
    /lm_head\.weight has shape \[10,64\], config\.json implies \[2048,64\]/,
  );
  // An inv_freq of a layer the config does not have is an extra tensor.
  assert.throws(
    () =>
      checkParameters(c, [...fromTable, {
        ...invFreq,
        name: "transformer.layers.9.attention.rotary_emb.inv_freq",
      }], "m"),
    /unexpected tensor transformer\.layers\.9/,
  );
  const mods = linearModules(c);
  assert.equal(mods.size, 4 * c.numLayers);
  assert.deepEqual(mods.get("transformer.layers.0.attention.query_key_value"), [
    3 * c.hiddenSize,
    c.hiddenSize,
  ]);
});

const llvmpipeLimits = {
  maxStorageBufferBindingSize: 134217728,
  maxBufferSize: 2147483648,
} as unknown as GpuLimits;

Deno.test("memory plan: the real model's sizes, and refusals past the binding limit or the budget", () => {
  const real = parseChatGLMConfig(realJson);
  const plan = planMemory(real, { dtype: "f16", maxContext: 2048, batch: 1 });
  // The real f16 checkpoint's tensors hold 13,415,859,968 bytes, 28 f16 inv_freq [32] included.
  assert.equal(plan.weightsBytes, 13_415_859_968 - 28 * 32 * 2);
  assert.equal(plan.kvCacheBytes, 2 * 28 * 2048 * 4096 * 4);
  assert.match(formatMemoryPlan(plan), /f16 weights, context 2048, batch 1/);
  assertPlanFits(plan, llvmpipeLimits);
  const f32 = planMemory(real, { dtype: "f32", maxContext: 2048, batch: 1 });
  assert.equal(f32.weightsBytes, 2 * plan.weightsBytes);
  // Batch 4 at 2048 needs a 128 MiB KV buffer per layer (just fits); batch 8 does not.
  // (Activations are planned per row: a long batched prefill runs row group by row group.)
  assertPlanFits(planMemory(real, { dtype: "f16", maxContext: 2048, batch: 4 }), llvmpipeLimits);
  assert.throws(
    () =>
      assertPlanFits(
        planMemory(real, { dtype: "f16", maxContext: 2048, batch: 8 }),
        llvmpipeLimits,
      ),
    /does not fit this GPU: KV cache \(one layer's k or v\) needs 256\.0 MiB in one binding/,
  );
  assert.throws(
    () => assertPlanFits(plan, llvmpipeLimits, 8 * 2 ** 30),
    /exceeds the GPU memory budget of 8\.00 GiB[\s\S]*GPU memory plan/,
  );
});
