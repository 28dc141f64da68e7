// The ChatGLM ONNX export (core/onnx) run by onnxruntime-node through the runner (serve/onnx)
// against the fixture's goldens: padded-batch logits with the goldens' explicit masks and with
// masks derived by the runner, prompts alone, the qkv adapter merged at export, greedy decoding
// with the KV cache in/out (batched and alone), f16-stored weights with external data, and the
// errors for a missing export or an export made for another model.

import assert from "node:assert/strict";
import type { ChatGLMConfig } from "../core/models/chatglm/config.ts";
import { exportChatGLMToOnnx, ONNX_EXPORT_INFO } from "../core/onnx/export_dir.ts";
import { loadOnnxModel, type OnnxModel } from "../serve/onnx/runner.ts";
import { compareRule, loadGoldens, realRanges } from "./reference/chatglm.ts";

const DIR = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const goldens = loadGoldens(DIR);
const batchValues = goldens.cases.get("forward_batch")!.values as {
  ids_unpadded: number[][];
  pad: number[];
};
const ids = goldens.read("forward_batch", "input_ids");
const [B, S] = ids.shape;
const inputIds = Array.from({ length: B }, (_, b) => [...ids.data.subarray(b * S, (b + 1) * S)]);
const gen = goldens.cases.get("generate")!.values as {
  max_new_tokens: number;
  text_vocab: number;
  prompts_ids: number[][];
  tokens: Record<string, number[][]>;
  live: Record<string, boolean[][]>;
};

function assertRule(
  name: string,
  actual: ArrayLike<number>,
  golden: ArrayLike<number>,
  select?: [number, number][],
) {
  const r = compareRule(actual, golden, goldens.rtol, goldens.atol, select);
  assert.ok(r.ok, `${name}: max |diff| ${r.maxDiff} > ${r.limit} (max |golden| ${r.maxGolden})`);
}

const tmp = await Deno.makeTempDir({ prefix: "medglm-onnx-test-" });
let base: OnnxModel | null = null;
async function baseModel(): Promise<OnnxModel> {
  if (!base) {
    await exportChatGLMToOnnx(DIR, `${tmp}/base`, { dtype: "f32" });
    base = await loadOnnxModel(`${tmp}/base`, { modelDir: DIR });
  }
  return base;
}

/** Greedy decoding as README §5: non-text ids masked, finished rows feed the pad id. */
async function greedy(model: OnnxModel, prompts: number[][]) {
  const { padTokenId: pad, eosTokenId: eos } = model.config as ChatGLMConfig;
  const S = Math.max(...prompts.map((p) => p.length));
  const rows = prompts.map((p) => [...Array(S - p.length).fill(pad), ...p]);
  const cache = model.createCache(rows.length, S + gen.max_new_tokens);
  const V = model.config.vocabSize;
  const out: number[][] = prompts.map(() => []);
  const steps: Float32Array[] = [];
  const done = prompts.map(() => false);
  try {
    let logits = await model.prefill(rows, cache);
    for (let step = 0; step < gen.max_new_tokens; step++) {
      steps.push(logits.slice());
      const next = rows.map((_, b) => {
        if (done[b]) return pad;
        let best = 0;
        for (let v = 1; v < gen.text_vocab; v++) {
          if (logits[b * V + v] > logits[b * V + best]) best = v;
        }
        out[b].push(best);
        if (best === eos) done[b] = true;
        return best;
      });
      if (done.every((x) => x) || step === gen.max_new_tokens - 1) break;
      logits = await model.decodeStep(next, cache);
    }
    assert.equal(cache.length, S + steps.length - 1);
  } finally {
    cache.free();
  }
  return { tokens: out, steps };
}

Deno.test("onnx: forward_batch logits with the goldens' explicit masks and positions", async () => {
  const model = await baseModel();
  const logits = await model.forwardWithInputs({
    batch: B,
    seq: S,
    inputIds: ids.data,
    positionIds: goldens.read("forward_batch", "position_ids").data,
    attentionMask: goldens.read("forward_batch", "attention_mask").data,
  });
  const want = goldens.read("forward_batch", "logits").data;
  const V = model.config.vocabSize;
  assertRule("logits", logits, want, realRanges(batchValues.pad, S, V));
});

Deno.test("onnx: masks and positions derived from a padded batch and from prompts alone", async () => {
  const model = await baseModel();
  const V = model.config.vocabSize;
  const want = goldens.read("forward_batch", "logits").data;
  assertRule("derived", await model.forward(inputIds), want, realRanges(batchValues.pad, S, V));
  for (const [b, prompt] of batchValues.ids_unpadded.entries()) {
    const alone = await model.forward([prompt]);
    const p = batchValues.pad[b];
    assertRule(`prompt ${b} alone`, alone, want.subarray((b * S + p) * V, (b + 1) * S * V));
  }
});

Deno.test("onnx: greedy generation with the KV cache, batched and alone (base)", async () => {
  const model = await baseModel();
  const batched = await greedy(model, gen.prompts_ids);
  assert.deepEqual(batched.tokens, gen.tokens.base);
  const stepLogits = goldens.read("generate", "step_logits").data;
  const V = model.config.vocabSize, rows = gen.prompts_ids.length;
  batched.steps.forEach((logits, step) => {
    for (let b = 0; b < rows; b++) {
      if (!gen.live.base[step][b]) continue;
      const at = (step * rows + b) * V;
      assertRule(
        `step ${step} row ${b}`,
        logits.subarray(b * V, (b + 1) * V),
        stepLogits.subarray(at, at + V),
      );
    }
  });
  for (const [b, prompt] of gen.prompts_ids.entries()) {
    const alone = await greedy(model, [prompt]);
    assert.deepEqual(alone.tokens[0], gen.tokens.base[b], `prompt ${b} alone`);
  }
});

Deno.test("onnx: prefill keeps every position's logits on request; cache misuse is refused", async () => {
  const model = await baseModel();
  const cache = model.createCache(B, S + 1);
  const all = await model.prefill(inputIds, cache, { allLogits: true });
  const V = model.config.vocabSize;
  assert.equal(all.length, B * S * V);
  assertRule(
    "allLogits",
    all,
    goldens.read("forward_batch", "logits").data,
    realRanges(batchValues.pad, S, V),
  );
  await model.decodeStep(inputIds.map(() => model.config.padTokenId), cache);
  await assert.rejects(() => model.decodeStep([1, 1], cache), /cache is full/);
  await assert.rejects(() => model.decodeStep([1], cache), /expected 2 ids/);
  cache.free();
  await assert.rejects(() => model.decodeStep([1, 1], cache), /freed/);
  const fresh = model.createCache(1);
  await assert.rejects(() => model.decodeStep([1], fresh), /prefill/);
  await assert.rejects(() => model.prefill([[model.config.vocabSize]], fresh), /not a token id/);
  assert.throws(() => model.createCache(1, model.maxContext + 1), /maxLen/);
});

Deno.test("onnx: adapters merged at export reproduce adapter logits and tokens", async () => {
  const V = (await baseModel()).config.vocabSize;
  for (
    const [name, golden] of [["adapter-qkv", "adapter_qkv"], ["adapter-multi", "adapter_multi"]]
  ) {
    await exportChatGLMToOnnx(DIR, `${tmp}/${name}`, { adapter: `${DIR}/${name}` });
    const model = await loadOnnxModel(`${tmp}/${name}`, {
      modelDir: DIR,
      adapterDir: `${DIR}/${name}`,
    });
    try {
      assert.equal(model.info.source.adapter?.scaling, goldens.cases.get(golden)!.values.scaling);
      const logits = await model.forward(inputIds);
      assertRule(
        golden,
        logits,
        goldens.read(golden, "logits").data,
        realRanges(batchValues.pad, S, V),
      );
      if (gen.tokens[name]) {
        const { tokens } = await greedy(model, gen.prompts_ids);
        assert.deepEqual(tokens, gen.tokens[name]);
      }
    } finally {
      await model.dispose();
    }
  }
  // The export must carry exactly the adapter being served.
  const qkv = `${tmp}/adapter-qkv`;
  await assert.rejects(
    () => loadOnnxModel(qkv, { modelDir: DIR, adapterDir: `${DIR}/adapter-multi` }),
    /another adapter merged in/,
  );
  await assert.rejects(() => loadOnnxModel(qkv, { modelDir: DIR }), /adapter-qkv merged in/);
  await baseModel();
  await assert.rejects(
    () => loadOnnxModel(`${tmp}/base`, { modelDir: DIR, adapterDir: `${DIR}/adapter-qkv` }),
    /no adapter merged in/,
  );
});

Deno.test("onnx: f16-stored weights in an external data file match weights_rounded.f16", async () => {
  const info = await exportChatGLMToOnnx(DIR, `${tmp}/f16`, { dtype: "f16", externalData: true });
  assert.equal(info.externalData, "model.onnx.data");
  const modelBytes = (await Deno.stat(`${tmp}/f16/model.onnx`)).size;
  const dataBytes = (await Deno.stat(`${tmp}/f16/model.onnx.data`)).size;
  assert.ok(
    modelBytes < dataBytes / 4,
    `graph ${modelBytes} B should be small beside data ${dataBytes} B`,
  );
  const model = await loadOnnxModel(`${tmp}/f16`);
  try {
    const V = model.config.vocabSize;
    const logits = await model.forward(inputIds);
    const real = batchValues.pad.map((p, b) => logits.subarray((b * S + p) * V, (b + 1) * S * V));
    const flat = new Float32Array(real.reduce((n, r) => n + r.length, 0));
    let o = 0;
    for (const r of real) flat.set(r, o), o += r.length;
    assertRule("f16 weights", flat, goldens.read("weights_rounded", "f16.logits").data);
  } finally {
    await model.dispose();
  }
});

Deno.test("onnx: clear errors for a missing export, another model's export, an unfinished export", async () => {
  await assert.rejects(
    () => loadOnnxModel(`${tmp}/nothing-here`),
    /onnx_export\.json: not found.*export-onnx/,
  );
  // A model directory whose config differs in a key the graph depends on.
  const other = `${tmp}/other-model`;
  await Deno.mkdir(other);
  const config = JSON.parse(await Deno.readTextFile(`${DIR}/config.json`));
  config.num_layers += 1;
  await Deno.writeTextFile(`${other}/config.json`, JSON.stringify(config));
  await baseModel();
  await assert.rejects(
    () => loadOnnxModel(`${tmp}/base`, { modelDir: other }),
    /made for another model/,
  );
  // An export whose info file is gone (interrupted) is not taken for finished.
  await exportChatGLMToOnnx(DIR, `${tmp}/cut`, {});
  await Deno.remove(`${tmp}/cut/${ONNX_EXPORT_INFO}`);
  await assert.rejects(() => loadOnnxModel(`${tmp}/cut`), /no finished ONNX export/);
  // An edited info file is refused.
  const info = JSON.parse(await Deno.readTextFile(`${tmp}/base/${ONNX_EXPORT_INFO}`));
  info.config.hidden_size = 128;
  await Deno.mkdir(`${tmp}/edited`);
  await Deno.writeTextFile(`${tmp}/edited/${ONNX_EXPORT_INFO}`, JSON.stringify(info));
  await assert.rejects(() => loadOnnxModel(`${tmp}/edited`), /configHash does not match/);
  await assert.rejects(
    () => exportChatGLMToOnnx(other, `${tmp}/x`),
    /config\.json|model\.safetensors|weights|no /,
  );
});

Deno.test("onnx: device choice: auto falls back to the CPU and says why; bad names refused", async () => {
  await baseModel();
  const auto = await loadOnnxModel(`${tmp}/base`, { device: "auto" });
  try {
    if (auto.providers[0] === "cpu") {
      assert.match(auto.providerNote ?? "", /CPU: (CUDA unavailable|no NVIDIA driver)/);
    } else assert.deepEqual(auto.providers, ["cuda", "cpu"]);
    const V = auto.config.vocabSize;
    assertRule(
      "auto device",
      await auto.forward(inputIds),
      goldens.read("forward_batch", "logits").data,
      realRanges(batchValues.pad, S, V),
    );
  } finally {
    await auto.dispose();
  }
  await assert.rejects(
    // deno-lint-ignore no-explicit-any
    () => loadOnnxModel(`${tmp}/base`, { device: "tpu" as any }),
    /expected cpu, cuda or auto/,
  );
});

Deno.test("onnx: cleanup", async () => {
  await base?.dispose();
  await Deno.remove(tmp, { recursive: true });
});
