// PEFT adapter config validation, target matching, scaling, saving in peft's layout (byte for byte)
// and refusing adapters made for another base model. No GPU needed.

import assert from "node:assert/strict";
import {
  isTargetModule,
  loraConfigJson,
  loraScaling,
  parseLoraConfig,
  parseLoraTensorKey,
  readLoraConfig,
} from "../core/adapters/peft_config.ts";
import {
  buildLoraAdapter,
  initLoraAdapter,
  loadLoraAdapter,
  saveLoraAdapter,
} from "../core/adapters/lora_weights.ts";
import { parseChatGLMConfig } from "../core/models/chatglm/config.ts";
import { linearModules } from "../core/models/chatglm/params.ts";

const DIR = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const config = parseChatGLMConfig(JSON.parse(await Deno.readTextFile(`${DIR}/config.json`)));
const base = { linearModules: linearModules(config), name: "tiny" };
const qkvJson = JSON.parse(await Deno.readTextFile(`${DIR}/adapter-qkv/adapter_config.json`));

Deno.test("adapter config: the fixture configs parse; scaling is alpha/r (alpha/sqrt(r) with rsLoRA)", async () => {
  const qkv = await readLoraConfig(`${DIR}/adapter-qkv`);
  assert.equal(loraScaling(qkv), qkvJson.lora_alpha / qkvJson.r);
  assert.deepEqual(qkv.targetModules, qkvJson.target_modules);
  const multi = await readLoraConfig(`${DIR}/adapter-multi`);
  assert.equal(multi.targetModules.length, 4);
  const rs = parseLoraConfig({ ...qkvJson, use_rslora: true, r: 16, lora_alpha: 8 });
  assert.equal(loraScaling(rs), 8 / 4);
  // Newer peft keys with their "off" values are accepted.
  parseLoraConfig({
    ...qkvJson,
    use_dora: false,
    rank_pattern: {},
    alpha_pattern: {},
    layers_to_transform: null,
    layers_pattern: null,
    revision: null,
  });
});

Deno.test("adapter config: unsupported settings are refused with the field named", () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ use_dora: true }, /use_dora is true/],
    [{ rank_pattern: { "dense": 4 } }, /rank_pattern is set/],
    [{ alpha_pattern: { "dense": 4 } }, /alpha_pattern is set/],
    [{ layers_to_transform: [0] }, /layers_to_transform is set/],
    [{ bias: "all" }, /bias "all" is not supported/],
    [{ modules_to_save: ["lm_head"] }, /modules_to_save .* is not supported/],
    [{ fan_in_fan_out: true }, /fan_in_fan_out is true/],
    [{ peft_type: "PREFIX_TUNING" }, /peft_type "PREFIX_TUNING" is not supported/],
    [{ target_modules: ".*query_key_value" }, /target_modules is the string .*regular expression/],
    [{ target_modules: [] }, /target_modules must be a non-empty list/],
    [{ r: 0 }, /r must be a positive integer/],
    [{ lora_dropout: 1.5 }, /lora_dropout must be a number in \[0, 1\)/],
    // Options of current peft that change the outputs: refused by name, not by a tensor shape.
    [
      { alora_invocation_tokens: [32, 45] },
      /alora_invocation_tokens is set \(\[32,45\]\): activated LoRA/,
    ],
    [{ exclude_modules: ["dense"] }, /exclude_modules is set .*not supported/],
    [{ exclude_modules: ".*dense" }, /exclude_modules is set/],
    [{ use_bdlora: { lora_a_is_blockdiagonal: true } }, /use_bdlora is set .*BD-LoRA/],
    [{ lora_bias: true }, /lora_bias is true: a bias on lora_B/],
    [{ trainable_token_indices: [5, 6] }, /trainable_token_indices is set/],
    [{ target_parameters: ["mlp.experts.down_proj"] }, /target_parameters is set/],
    [{ use_qalora: true }, /use_qalora is true/],
    [{ layer_replication: [[0, 2]] }, /layer_replication is set/],
    [{ arrow_config: { top_k: 3 } }, /arrow_config is set/],
    [{ init_lora_weights: "pissa_niter_4" }, /init_lora_weights is "pissa_niter_4"/],
    [{ init_lora_weights: "olora" }, /init_lora_weights is "olora".*path_initial_model/],
  ];
  for (const [patch, re] of cases) {
    assert.throws(
      () => parseLoraConfig({ ...qkvJson, ...patch }, "a/adapter_config.json"),
      (e: Error) => {
        assert.match(e.message, /^a\/adapter_config\.json: /);
        assert.match(e.message, re);
        return true;
      },
    );
  }
});

Deno.test("adapter targets: full name or '.'-suffix; 'dense' is only attention.dense", () => {
  const names = [...base.linearModules.keys()];
  const hit = (t: string[]) => names.filter((n) => isTargetModule(n, t));
  assert.deepEqual(hit(["dense"]), names.filter((n) => n.endsWith("attention.dense")));
  assert.equal(hit(["query_key_value"]).length, config.numLayers);
  assert.deepEqual(hit(["transformer.layers.0.mlp.dense_4h_to_h"]), [
    "transformer.layers.0.mlp.dense_4h_to_h",
  ]);
  assert.deepEqual(hit(["key_value"]), []);
  assert.deepEqual(
    parseLoraTensorKey("base_model.model.transformer.layers.0.attention.dense.lora_B.weight"),
    {
      module: "transformer.layers.0.attention.dense",
      which: "B",
    },
  );
  assert.equal(parseLoraTensorKey("base_model.model.x.lora_A.default.weight"), null);
});

Deno.test("adapter save: peft's layout, byte-identical to the fixture for the same tensors", async () => {
  for (const name of ["adapter-qkv", "adapter-multi"]) {
    const adapter = await loadLoraAdapter(`${DIR}/${name}`, base);
    const out = await Deno.makeTempDir();
    try {
      await saveLoraAdapter(out, adapter);
      for (const file of ["adapter_model.safetensors", "adapter_config.json"]) {
        const want = await Deno.readFile(`${DIR}/${name}/${file}`);
        const got = await Deno.readFile(`${out}/${file}`);
        assert.deepEqual(got, want, `${name}/${file}`);
      }
      const again = await loadLoraAdapter(out, base);
      assert.equal(again.scaling, adapter.scaling);
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  }
  // A float dropout keeps its decimal point, as Python writes it.
  const cfg = parseLoraConfig({ ...qkvJson, lora_dropout: 0 });
  assert.match(loraConfigJson(cfg), /"lora_dropout": 0\.0,/);
});

Deno.test("adapter load: an adapter for another base model is refused clearly", async () => {
  const adapter = await loadLoraAdapter(`${DIR}/adapter-qkv`, base);
  const bigger = parseChatGLMConfig({
    ...JSON.parse(await Deno.readTextFile(`${DIR}/config.json`)),
    hidden_size: 128,
    inner_hidden_size: 512,
  });
  const out = await Deno.makeTempDir();
  try {
    await saveLoraAdapter(out, adapter);
    await assert.rejects(
      () => loadLoraAdapter(out, { linearModules: linearModules(bigger), name: "other-base" }),
      (e: Error) => {
        assert.match(
          e.message,
          /adapter_model\.safetensors: .*lora_A\.weight has shape \[8,64\], expected \[8,128\]/,
        );
        assert.match(e.message, /other-base/);
        assert.match(e.message, /made for "medglm\/chatglm6b-tiny"/);
        return true;
      },
    );
    // More layers in the adapter than in the base: tensors of modules the base lacks.
    const fewer = parseChatGLMConfig({
      ...JSON.parse(await Deno.readTextFile(`${DIR}/config.json`)),
      num_layers: 1,
    });
    await assert.rejects(
      () => loadLoraAdapter(out, { linearModules: linearModules(fewer) }),
      /transformer\.layers\.1\.attention\.query_key_value, which is not a targeted linear module/,
    );
  } finally {
    await Deno.remove(out, { recursive: true });
  }
  // A targeted module without its tensors, and targets that match nothing.
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  const cfg = parseLoraConfig(qkvJson);
  assert.throws(
    () => buildLoraAdapter(cfg, tensors, base, "t"),
    /t: missing base_model\.model\.transformer\.layers\.0\.attention\.query_key_value\.lora_A\.weight/,
  );
  const none = parseLoraConfig({ ...qkvJson, target_modules: ["q_proj", "v_proj"] });
  assert.throws(() => buildLoraAdapter(none, tensors, base, "t"), /match no linear module/);
  const dir = await Deno.makeTempDir();
  try {
    await Deno.copyFile(`${DIR}/adapter-qkv/adapter_config.json`, `${dir}/adapter_config.json`);
    await assert.rejects(
      () => loadLoraAdapter(dir, base),
      /no adapter weights \(looked for adapter_model\.safetensors, adapter_model\.bin\)/,
    );
    await assert.rejects(
      () => loadLoraAdapter(`${dir}/nope`, base),
      /adapter_config\.json: not found/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("adapter config: options peft writes at their defaults (off) are accepted", () => {
  const cfg = parseLoraConfig({
    ...qkvJson,
    exclude_modules: null,
    alora_invocation_tokens: null,
    lora_bias: false,
    use_bdlora: null,
    trainable_token_indices: null,
    target_parameters: null,
    use_qalora: false,
    qalora_group_size: 16,
    layer_replication: null,
    arrow_config: null,
    init_lora_weights: "gaussian",
    megatron_core: "megatron.core",
    ensure_weight_tying: false,
  });
  assert.equal(cfg.r, qkvJson.r);
});

Deno.test("adapter config: a 2 GiB sparse adapter_config.json is refused before it is read", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/adapter_config.json`;
    const f = await Deno.open(path, { write: true, create: true });
    await f.truncate(2 ** 31); // sparse: no disk used
    f.close();
    await assert.rejects(() => readLoraConfig(dir), (e: Error) => {
      assert.equal(
        e.message,
        `${path}: the file is 2147483648 bytes, over the limit of 16777216 bytes for this JSON ` +
          "file (real ones are far smaller; is it the right file?)",
      );
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("adapter init: peft's fresh adapter (A uniform in ±1/sqrt(in), B zero) for the targets", () => {
  const cfg = parseLoraConfig({ ...qkvJson, target_modules: ["query_key_value", "dense_4h_to_h"] });
  let s = 1;
  const random = () => ((s = (s * 16807) % 2147483647) / 2147483647);
  const adapter = initLoraAdapter(cfg, base, random);
  assert.equal(adapter.modules.size, 2 * config.numLayers);
  for (const m of adapter.modules.values()) {
    assert.equal(m.a.length, cfg.r * m.inFeatures);
    const bound = 1 / Math.sqrt(m.inFeatures);
    assert.ok(m.a.every((v) => Math.abs(v) <= bound) && m.a.some((v) => v !== 0));
    assert.ok(m.b.every((v) => v === 0));
  }
});
