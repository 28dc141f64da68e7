// The Llama-family ONNX export (core/onnx/export_llama.ts) run by onnxruntime-node through the
// runner and the engine decoder (serve/onnx), against the fixture's goldens
// (tests/fixtures/llama-family/README.md §10, same comparison rule as the WebGPU tests: max |diff|
// ≤ 1e-4·max|golden| + 1e-6 over real positions), for each tiny model: left-padded batch logits
// with derived and with the goldens' explicit masks and positions, the prompts alone, greedy
// decoding with the KV cache (lockstep and through the decoder's slots), the peft adapter merged at
// export; ORT beside WebGPU on the same inputs; and the refusals (unknown model_type, a checkpoint
// that does not fit its config, an export of another model).

import assert from "node:assert/strict";
import { exportModelToOnnx } from "../core/onnx/export_dir.ts";
import { ONNX_DATA_FILE, ONNX_EXPORT_INFO, ONNX_MODEL_FILE } from "../core/onnx/export_info.ts";
import { getGpu } from "../core/gpu/device.ts";
import { loadLlamaModel } from "../core/models/llama/load.ts";
import { readLlamaConfig } from "../core/models/llama/config.ts";
import { randomLlamaWeights } from "../core/models/llama/random_init.ts";
import { writeSafetensors } from "../core/io/safetensors.ts";
import { loadOnnxModel, type OnnxModel } from "../serve/onnx/runner.ts";
import { onnxDecoder } from "../serve/onnx/decoder.ts";
import { createEngine } from "../serve/engine/create.ts";
import type { Engine } from "../serve/engine/types.ts";
import { createApp } from "../serve/http/app.ts";
import { argmax, assertWithinRule, loadGoldens, realRanges } from "./reference/chatglm.ts";
import { writeQwen3Dir } from "./helpers/qwen3_model_dir.ts";
import { runScript } from "./helpers/cli.ts";

const MODELS = ["qwen2-tiny", "qwen3-tiny", "llama3-tiny"];
const dirOf = (m: string) => new URL(`./fixtures/llama-family/${m}`, import.meta.url).pathname;
const tmp = await Deno.makeTempDir({ prefix: "medglm-llama-onnx-" });
globalThis.addEventListener("unload", () => Deno.removeSync(tmp, { recursive: true }));

/** The exports made so far (one per model and adapter), loaded once. */
const loaded = new Map<string, Promise<OnnxModel>>();
function exported(name: string, adapter = false): Promise<OnnxModel> {
  const key = `${name}${adapter ? "+lora" : ""}`;
  let m = loaded.get(key);
  if (!m) {
    const dir = dirOf(name), out = `${tmp}/${key}`;
    const adapterDir = adapter ? `${dir}/adapter` : null;
    m = exportModelToOnnx(dir, out, { adapter: adapterDir })
      .then(() => loadOnnxModel(out, { modelDir: dir, adapterDir }));
    loaded.set(key, m);
  }
  return m;
}

for (const name of MODELS) {
  const dir = dirOf(name);
  const goldens = loadGoldens(dir);
  const batch = goldens.cases.get("forward_batch")!.values as {
    pad: number[];
    prompts_ids: number[][];
  };
  const gen = goldens.cases.get("generate")!.values as {
    tokens: number[][];
    max_new_tokens: number;
  };
  const ids = goldens.read("forward_batch", "input_ids");
  const [B, S] = ids.shape;
  const inputIds = Array.from({ length: B }, (_, b) => [...ids.data.subarray(b * S, (b + 1) * S)]);
  const goldLogits = goldens.read("forward_batch", "logits").data as Float32Array;
  const stepLogits = goldens.read("generate", "step_logits").data as Float32Array;

  Deno.test(`${name} onnx: batch logits (derived and explicit masks), prompts alone`, async () => {
    const model = await exported(name);
    assert.equal(model.rules.architecture, name.split("-")[0].replace("llama3", "llama"));
    assert.equal(model.rules.cacheHeads, 2, "the cache holds the key/value heads only");
    const V = model.config.vocabSize;
    const real = realRanges(batch.pad, S, V);
    assertWithinRule("derived", await model.forward(inputIds), goldLogits, real);
    // The goldens' own mask and positions (attention_allowed: 1 = may attend).
    const allowed = goldens.read("forward_batch", "attention_allowed").data;
    const explicit = await model.forwardWithInputs({
      batch: B,
      seq: S,
      inputIds: ids.data,
      positionIds: goldens.read("forward_batch", "position_ids").data,
      attentionMask: Uint8Array.from(allowed, (a) => (a ? 0 : 1)),
    });
    assertWithinRule("explicit", explicit, goldLogits, real);
    for (let b = 0; b < B; b++) {
      const alone = await model.forward([batch.prompts_ids[b]]);
      const p = batch.pad[b];
      assertWithinRule(
        `prompt ${b} alone`,
        alone,
        goldLogits.subarray((b * S + p) * V, (b + 1) * S * V),
      );
    }
  });

  Deno.test(`${name} onnx: greedy tokens with the KV cache (lockstep and decoder slots)`, async () => {
    const model = await exported(name);
    const V = model.config.vocabSize;
    const cache = model.createCache(B, S + gen.max_new_tokens);
    try {
      let logits = await model.prefill(inputIds, cache);
      const tokens: number[][] = inputIds.map(() => []);
      for (let t = 0; t < gen.max_new_tokens; t++) {
        assertWithinRule(`step ${t}`, logits, stepLogits.subarray(t * B * V, (t + 1) * B * V));
        const next = tokens.map((_, b) => argmax(logits.subarray(b * V, (b + 1) * V)));
        next.forEach((id, b) => tokens[b].push(id));
        if (t + 1 < gen.max_new_tokens) logits = await model.decodeStep(next, cache);
      }
      assert.deepEqual(tokens, gen.tokens);
    } finally {
      cache.free();
    }
    // The engine's decoder: unpadded prompts in slots 2 and 0 (a third joins and leaves, so the
    // grouped cache is repacked around it), decoded together.
    const decoder = onnxDecoder(model, { slots: 3, ownsModel: false });
    try {
      const first = await decoder.prefill(2, batch.prompts_ids[0]);
      const second = await decoder.prefill(0, batch.prompts_ids[1]);
      await decoder.prefill(1, batch.prompts_ids[0].slice(0, 5));
      let logits: Float32Array = new Float32Array(2 * V);
      logits.set(first, 0);
      logits.set(second, V);
      const tokens: number[][] = [[], []];
      for (let t = 0; t < gen.max_new_tokens; t++) {
        assertWithinRule(`slot step ${t}`, logits, stepLogits.subarray(t * B * V, (t + 1) * B * V));
        const next = [0, 1].map((b) => argmax(logits.subarray(b * V, (b + 1) * V)));
        next.forEach((id, b) => tokens[b].push(id));
        if (t + 1 === gen.max_new_tokens) break;
        const steps = [{ slot: 2, id: next[0] }, { slot: 0, id: next[1] }];
        // Step 0 decodes slot 1 too, which then leaves the group.
        logits = (await decoder.decode(t === 0 ? [...steps, { slot: 1, id: 5 }] : steps))
          .slice(0, 2 * V);
        if (t === 0) decoder.release(1);
      }
      assert.deepEqual(tokens, gen.tokens);
    } finally {
      decoder.close();
    }
  });

  Deno.test(`${name} onnx: the peft adapter merged at export gives the lora logits`, async () => {
    const model = await exported(name, true);
    assert.ok(model.info.source.adapter, "onnx_export.json records the merged adapter");
    const logits = await model.forward(inputIds);
    assertWithinRule(
      "lora",
      logits,
      goldens.read("lora", "logits").data,
      realRanges(batch.pad, S, model.config.vocabSize),
    );
    await assert.rejects(
      () => loadOnnxModel(`${tmp}/${name}+lora`, { modelDir: dir }),
      /adapter .* merged in/,
    );
  });

  Deno.test(`${name} onnx: ORT agrees with WebGPU on the batch and a decode step`, async () => {
    const onnx = await exported(name);
    const gpu = await loadLlamaModel(dir, { log: () => {}, progressBar: false, dtype: "f32" });
    try {
      const V = onnx.config.vocabSize;
      const mine = await onnx.forward(inputIds);
      const theirs = await gpu.forward(inputIds);
      assertWithinRule("ort vs webgpu", mine, theirs, realRanges(batch.pad, S, V));
      const a = onnx.createCache(B, S + 1), b = gpu.createCache(B, S + 1);
      try {
        await onnx.prefill(inputIds, a);
        await gpu.prefill(inputIds, b);
        const next = gen.tokens.map((t) => t[0]);
        assertWithinRule("decode", await onnx.decodeStep(next, a), await gpu.decodeStep(next, b));
      } finally {
        a.free();
        b.free();
      }
    } finally {
      gpu.dispose();
    }
  });
}

/**
 * Config variants the fixture lacks, on random weights, ORT against WebGPU: Llama with
 * attention_bias and mlp_bias (o and MLP biases), head_dim ≠ hidden / heads and a group of 4 query
 * heads per kv head; Qwen2 without grouping (nkv = nh). Biases are random, not zero, so a bias left
 * out shows.
 */
const VARIANTS: Record<string, Record<string, unknown>> = {
  "llama-biases-gqa4": {
    model_type: "llama",
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 1,
    head_dim: 16,
    attention_bias: true,
    mlp_bias: true,
    rms_norm_eps: 1e-5,
    rope_theta: 500000,
    rope_scaling: {
      rope_type: "llama3",
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 16,
    },
    tie_word_embeddings: false,
    vocab_size: 96,
    eos_token_id: [1, 2],
    max_position_embeddings: 128,
  },
  "qwen2-no-gqa": {
    model_type: "qwen2",
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 4,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000,
    tie_word_embeddings: true,
    vocab_size: 96,
    eos_token_id: 2,
    pad_token_id: 0,
    max_position_embeddings: 128,
  },
};

for (const [variant, config] of Object.entries(VARIANTS)) {
  Deno.test(`llama onnx: ${variant} (random weights): ORT agrees with WebGPU`, async () => {
    const dir = `${tmp}/${variant}`;
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
    let x = 7;
    const noise = () => ((x = (x * 48271) % 2147483647) / 2147483647 - 0.5) * 0.2;
    const tensors = [...randomLlamaWeights(await readLlamaConfig(dir), 11)].map((t) => ({
      name: t.name,
      dtype: "F32" as const,
      shape: t.shape,
      data: t.name.endsWith(".bias") ? t.data.map(noise) : t.data,
    }));
    await writeSafetensors(`${dir}/model.safetensors`, tensors, { format: "pt" });
    await exportModelToOnnx(dir, `${dir}/onnx`);
    const onnx = await loadOnnxModel(`${dir}/onnx`, { modelDir: dir });
    const gpu = await loadLlamaModel(dir, { log: () => {}, progressBar: false, dtype: "f32" });
    try {
      const pad = onnx.config.padTokenId;
      const rows = [[pad, pad, pad, 5, 17, 33, 9, 60], [4, 8, 15, 16, 23, 42, 50, 70]];
      const V = onnx.config.vocabSize;
      assertWithinRule(
        "batch",
        await onnx.forward(rows),
        await gpu.forward(rows),
        realRanges([3, 0], 8, V),
      );
      const a = onnx.createCache(2, 12), b = gpu.createCache(2, 12);
      try {
        let mine = await onnx.prefill(rows, a), theirs = await gpu.prefill(rows, b);
        for (let step = 0; step < 3; step++) {
          assertWithinRule(`step ${step}`, mine, theirs);
          const next = [0, 1].map((r) => argmax(theirs.subarray(r * V, (r + 1) * V)));
          [mine, theirs] = [await onnx.decodeStep(next, a), await gpu.decodeStep(next, b)];
        }
      } finally {
        a.free();
        b.free();
      }
    } finally {
      gpu.dispose();
      await onnx.dispose();
    }
  });
}

Deno.test("llama onnx: qwen3's BF16 weights stored f16 in an external data file still match the goldens", async () => {
  // BF16 → f16 is exact for every value in f16's normal range (8 ≤ 11 significant bits); only
  // weights under 6e-5 in magnitude round, by at most 3e-8.
  const dir = dirOf("qwen3-tiny"), out = `${tmp}/qwen3-f16`;
  const info = await exportModelToOnnx(dir, out, { dtype: "f16", externalData: true });
  assert.equal(info.dtype, "f16");
  assert.equal(info.externalData, ONNX_DATA_FILE);
  const f32Bytes = (await Deno.stat(`${tmp}/qwen3-tiny/${ONNX_MODEL_FILE}`)).size;
  const f16Bytes = (await Deno.stat(`${out}/${ONNX_DATA_FILE}`)).size;
  assert.ok(f16Bytes < 0.55 * f32Bytes, `f16 data ${f16Bytes} B vs f32 model ${f32Bytes} B`);
  const model = await loadOnnxModel(out, { modelDir: dir });
  try {
    const goldens = loadGoldens(dir);
    const ids = goldens.read("forward_batch", "input_ids");
    const [B, S] = ids.shape;
    const rows = Array.from({ length: B }, (_, b) => [...ids.data.subarray(b * S, (b + 1) * S)]);
    const pad = (goldens.cases.get("forward_batch")!.values as { pad: number[] }).pad;
    assertWithinRule(
      "f16 logits",
      await model.forward(rows),
      goldens.read("forward_batch", "logits").data,
      realRanges(pad, S, model.config.vocabSize),
    );
  } finally {
    await model.dispose();
  }
});

Deno.test("llama onnx: refusals name the file, the option and the rule", async () => {
  const qwen2 = dirOf("qwen2-tiny"), qwen3 = dirOf("qwen3-tiny");
  // An unknown architecture.
  const odd = `${tmp}/odd`;
  await Deno.mkdir(odd, { recursive: true });
  const cfg = JSON.parse(await Deno.readTextFile(`${qwen3}/config.json`));
  await Deno.writeTextFile(`${odd}/config.json`, JSON.stringify({ ...cfg, model_type: "gpt2" }));
  await assert.rejects(
    () => exportModelToOnnx(odd, `${tmp}/odd-out`),
    /odd\/config\.json: model_type "gpt2" has no ONNX export \(known: chatglm, qwen2, qwen3, llama\)/,
  );
  // (int8/int4 exports and their refusals: tests/llama_onnx_quant.test.ts.)
  // A checkpoint that does not fit its config (a tensor missing) is refused before writing.
  const cut = `${tmp}/cut`;
  await Deno.mkdir(cut, { recursive: true });
  await Deno.writeTextFile(
    `${cut}/config.json`,
    JSON.stringify({ ...cfg, num_hidden_layers: 3 }),
  );
  await Deno.copyFile(`${qwen3}/model.safetensors`, `${cut}/model.safetensors`);
  await assert.rejects(
    () => exportModelToOnnx(cut, `${tmp}/cut-out`),
    /does not match config\.json \(qwen3\): missing tensor model\.layers\.2/,
  );
  await assert.rejects(() => Deno.stat(`${tmp}/cut-out/${ONNX_EXPORT_INFO}`), Deno.errors.NotFound);
  // An export used for another model.
  await exported("qwen2-tiny");
  await assert.rejects(
    () => loadOnnxModel(`${tmp}/qwen2-tiny`, { modelDir: qwen3 }),
    /made for another model/,
  );
  // A stale exporter version is refused with what to do.
  const stale = `${tmp}/stale`;
  await Deno.mkdir(stale, { recursive: true });
  const info = JSON.parse(await Deno.readTextFile(`${tmp}/qwen2-tiny/${ONNX_EXPORT_INFO}`));
  await Deno.writeTextFile(
    `${stale}/${ONNX_EXPORT_INFO}`,
    JSON.stringify({ ...info, exporter: "medglm-chatglm-onnx/1" }),
  );
  await assert.rejects(
    () => loadOnnxModel(stale, { modelDir: qwen2 }),
    /this runner reads medglm-llama-onnx\/2: re-export the model/,
  );
});

async function answer(engine: Engine, content: string): Promise<string> {
  let text = "";
  for await (
    const d of engine.generate({
      messages: [{ role: "user", content }],
      maxNewTokens: 6,
      temperature: 0,
    })
  ) text += d.text;
  return text;
}

Deno.test("llama onnx: export-onnx and infer --backend onnx as commands; serve's engine and HTTP app on the export", async () => {
  // A Qwen3 directory with the real tokenizer (random weights, real vocabulary, tiny width).
  const dir = await writeQwen3Dir("medglm-llama-onnx-cli-");
  try {
    const exp = await runScript("serve/onnx/export_cli.ts", [
      "--model",
      dir,
      "--out",
      `${dir}/onnx`,
    ]);
    assert.equal(exp.code, 0, exp.stderr);
    assert.match(exp.stderr, /wrote .*\/onnx\/model\.onnx \(f32 weights\)/);
    const args = [
      "--model",
      dir,
      "--prompt",
      "头痛怎么办",
      "--max-new-tokens",
      "6",
      "--temperature",
      "0",
    ];
    const onnx = await runScript("serve/infer_cli.ts", [...args, "--backend", "onnx"]);
    assert.equal(onnx.code, 0, onnx.stderr);
    assert.match(onnx.stderr, /backend: onnx \(requested/);
    // The same greedy answer from WebGPU.
    const webgpu = await runScript("serve/infer_cli.ts", [...args, "--backend", "webgpu"]);
    assert.equal(webgpu.code, 0, webgpu.stderr);
    // (Tied random weights repeat the last prompt token: here the template's final newline, so
    // the answer is 6 newlines; the fixture goldens above check the numbers.)
    assert.equal(onnx.stdout, webgpu.stdout);
    assert.equal(onnx.stdout.length, 7);

    // serve --backend onnx: the engine and the HTTP app over it.
    const quiet = { log: () => {}, progressBar: false };
    const engine = await createEngine({ model: dir, backend: "onnx", ...quiet });
    try {
      assert.equal(engine.info.backend, "onnx");
      assert.equal(engine.info.architecture, "qwen3");
      const app = createApp(engine);
      const card = (await (await app.request("/v1/models")).json()).data[0];
      assert.equal(card.medglm.backend, "onnx");
      assert.equal(card.medglm.architecture, "qwen3");
      const res = await app.request("/v1/chat/completions", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          messages: [{ role: "user", content: "头痛怎么办" }],
          max_tokens: 6,
          temperature: 0,
        }),
      });
      assert.equal(res.status, 200);
      const body = await res.json();
      assert.ok(body.usage.completion_tokens > 0);
      assert.equal(body.choices[0].message.content, await answer(engine, "头痛怎么办"));
    } finally {
      await engine.close();
    }
    // `auto` takes the export on a software adapter (and WebGPU on a hardware one).
    const auto = await createEngine({ model: dir, ...quiet });
    try {
      const gpu = await getGpu();
      assert.equal(auto.info.backend, gpu.isSoftware ? "onnx" : "webgpu", auto.info.backendReason);
    } finally {
      await auto.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("llama onnx: cleanup", async () => {
  for (const m of loaded.values()) await (await m).dispose();
});
