// The CPU reference model (tests/reference/chatglm.ts) and the model's input rules against every
// forward golden of the fixture: it is the oracle the GPU model is then held to.

import assert from "node:assert/strict";
import { readChatGLMConfig } from "../core/models/chatglm/config.ts";
import { buildMask, buildPositions, layoutRows } from "../core/models/chatglm/inputs.ts";
import { linearModules } from "../core/models/chatglm/params.ts";
import { rotaryInvFreq } from "../core/models/chatglm/rotary.ts";
import { loadLoraAdapter } from "../core/adapters/lora_weights.ts";
import { mergeLoraWeight } from "../core/adapters/merge.ts";
import {
  compareRule,
  loadGoldens,
  loadRefWeights,
  realRanges,
  refForward,
  refGenerate,
  type RefLora,
  refLoss,
  type RefModel,
  refPadBatch,
  refRule41,
} from "./reference/chatglm.ts";
import { numberToF16Bits } from "../core/io/dtype.ts";

const DIR = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const goldens = loadGoldens(DIR);
const config = await readChatGLMConfig(DIR);
const weights = await loadRefWeights(DIR);
const base: RefModel = { config, weights };

const batchValues = goldens.cases.get("forward_batch")!.values as {
  ids_unpadded: number[][];
  pad: number[];
};
const idsData = goldens.read("forward_batch", "input_ids");
const [B, S] = idsData.shape;
const inputIds = Array.from(
  { length: B },
  (_, b) => [...idsData.data.subarray(b * S, (b + 1) * S)],
);
const V = config.vocabSize;

function assertRule(
  name: string,
  actual: ArrayLike<number>,
  golden: ArrayLike<number>,
  select?: [number, number][],
) {
  const r = compareRule(actual, golden, goldens.rtol, goldens.atol, select);
  assert.ok(r.ok, `${name}: max |diff| ${r.maxDiff} > ${r.limit} (max |golden| ${r.maxGolden})`);
}

async function refAdapter(name: string): Promise<RefLora> {
  const a = await loadLoraAdapter(`${DIR}/${name}`, { linearModules: linearModules(config) });
  return { scaling: a.scaling, modules: a.modules };
}

function refBatchForward(model: RefModel, onHidden?: (i: number, h: Float32Array) => void) {
  const mask = goldens.read("forward_batch", "attention_mask").data;
  const pos = goldens.read("forward_batch", "position_ids").data;
  return refForward(model, inputIds.flat(), B, S, mask, pos, { onHidden });
}

Deno.test("inputs: left-padded batch layout gives the golden masks and positions", () => {
  const rows = layoutRows(inputIds, config);
  assert.deepEqual(rows.map((r) => r.pads), batchValues.pad);
  assert.deepEqual([...buildMask(rows, 0, S, S)], [
    ...goldens.read("forward_batch", "attention_mask").data,
  ]);
  assert.deepEqual([...buildPositions(rows, 0, S)], [
    ...goldens.read("forward_batch", "position_ids").data,
  ]);
  const ref = refPadBatch(batchValues.ids_unpadded, config);
  assert.deepEqual(ref.ids, inputIds);
  assert.deepEqual([...ref.mask], [...goldens.read("forward_batch", "attention_mask").data]);
});

Deno.test("inputs: single prompts and right-padded training rows follow rule 4.1", () => {
  for (const [p, ids] of batchValues.ids_unpadded.entries()) {
    const rows = layoutRows([ids], config);
    assert.equal(rows[0].pads, 0);
    const mask = goldens.read("forward_single", `p${p}.attention_mask`).data;
    const pos = goldens.read("forward_single", `p${p}.position_ids`).data;
    assert.deepEqual([...buildMask(rows, 0, ids.length, ids.length)], [...mask]);
    assert.deepEqual([...buildPositions(rows, 0, ids.length)], [...pos]);
    assert.deepEqual([...refRule41(ids, config).mask], [...mask]);
  }
  const train = goldens.cases.get("train")!.values as { input_ids: number[][] };
  const rows = layoutRows(train.input_ids, config);
  const T = train.input_ids[0].length;
  assert.deepEqual([...buildMask(rows, 0, T, T)], [
    ...goldens.read("train", "attention_mask").data,
  ]);
  assert.deepEqual([...buildPositions(rows, 0, T)], [
    ...goldens.read("train", "position_ids").data,
  ]);
});

Deno.test("inputs: bad batches are refused with the row named", () => {
  assert.throws(() => layoutRows([[1, 2, 3]], config), /inputIds\[0\]: no <sop>/);
  assert.throws(
    () => layoutRows([[config.gmaskTokenId, config.bosTokenId], [config.bosTokenId]], config),
    /inputIds\[1\] has 1 ids/,
  );
  assert.throws(() => layoutRows([[5, config.bosTokenId]], config), /neither \[gMASK\]/);
  assert.throws(() => layoutRows([[config.vocabSize, 1]], config), /not a token id/);
});

Deno.test("rotary: inv_freq is the float16-rounded table of the spec", () => {
  const bits = [...rotaryInvFreq(8)].map((v) => numberToF16Bits(v).toString(16));
  assert.deepEqual(bits, ["3c00", "2e66", "211f", "1419"]);
  const real = [...rotaryInvFreq(64)].map((v) => numberToF16Bits(v).toString(16).padStart(4, "0"));
  assert.equal(
    real.join(" "),
    "3c00 3a00 3880 36bf 350f 3397 31b1 3044 2e66 2ccd 2b33 2966 280c 2612 248d 22d4 " +
      "211f 1fae 1dc2 1c51 1a7a 18db 1749 1576 1419 1225 109b 0ee9 0d2e 0bc5 09d4 085f",
  );
});

Deno.test("reference: forward_batch logits and hidden states", () => {
  const hidden: Float32Array[] = [];
  const logits = refBatchForward(base, (i, h) => (hidden[i] = h.slice()));
  assertRule(
    "logits",
    logits,
    goldens.read("forward_batch", "logits").data,
    realRanges(batchValues.pad, S, V),
  );
  const gh = goldens.read("forward_batch", "hidden").data;
  const h = config.hiddenSize;
  assert.equal(hidden.length, config.numLayers + 2);
  hidden.forEach((x, i) => {
    const g = gh.subarray(i * B * S * h, (i + 1) * B * S * h);
    assertRule(`hidden[${i}]`, x, g, realRanges(batchValues.pad, S, h));
  });
});

Deno.test("reference: each prompt alone equals its rows of the batch", () => {
  const golden = goldens.read("forward_batch", "logits").data;
  batchValues.ids_unpadded.forEach((ids, b) => {
    const { mask, pos } = refRule41(ids, config);
    const logits = refForward(base, ids, 1, ids.length, mask, pos);
    const pad = batchValues.pad[b];
    assertRule(`p${b}`, logits, golden.subarray((b * S + pad) * V, (b + 1) * S * V));
  });
});

for (const name of ["adapter_qkv", "adapter_multi"]) {
  Deno.test(`reference: ${name} logits`, async () => {
    const lora = await refAdapter(name.replace("_", "-"));
    const logits = refBatchForward({ ...base, lora });
    assertRule(name, logits, goldens.read(name, "logits").data, realRanges(batchValues.pad, S, V));
  });
}

Deno.test("adapter: .bin and .safetensors hold the same tensors", async () => {
  for (const name of ["adapter-qkv", "adapter-multi"]) {
    const st = await loadLoraAdapter(`${DIR}/${name}`, { linearModules: linearModules(config) });
    const tmp = await Deno.makeTempDir();
    try {
      await Deno.copyFile(`${DIR}/${name}/adapter_config.json`, `${tmp}/adapter_config.json`);
      await Deno.copyFile(`${DIR}/${name}/adapter_model.bin`, `${tmp}/adapter_model.bin`);
      const bin = await loadLoraAdapter(tmp, { linearModules: linearModules(config) });
      assert.deepEqual([...bin.modules.keys()], [...st.modules.keys()]);
      for (const [k, m] of st.modules) {
        assert.deepEqual(bin.modules.get(k)!.a, m.a);
        assert.deepEqual(bin.modules.get(k)!.b, m.b);
      }
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  }
});

Deno.test("merge: merged_qkv weights, and the merged model reproduces adapter_qkv", async () => {
  const adapter = await loadLoraAdapter(`${DIR}/adapter-qkv`, {
    linearModules: linearModules(config),
  });
  const golden = goldens.read("merged_qkv", "weights").data;
  const merged = new Map(weights);
  const per = golden.length / config.numLayers;
  for (let l = 0; l < config.numLayers; l++) {
    const name = `transformer.layers.${l}.attention.query_key_value`;
    const w = mergeLoraWeight(
      weights.get(`${name}.weight`)!,
      adapter.modules.get(name)!,
      adapter.scaling,
    );
    assertRule(`merged layer ${l}`, w, golden.subarray(l * per, (l + 1) * per));
    merged.set(`${name}.weight`, w);
  }
  const logits = refBatchForward({ config, weights: merged });
  assertRule(
    "merged logits",
    logits,
    goldens.read("adapter_qkv", "logits").data,
    realRanges(batchValues.pad, S, V),
  );
});

Deno.test("reference: greedy generation batched and alone, with and without the KV cache", async () => {
  const g = goldens.cases.get("generate")!.values as {
    max_new_tokens: number;
    text_vocab: number;
    prompts_ids: number[][];
    tokens: Record<string, number[][]>;
    live: Record<string, boolean[][]>;
  };
  const opts = { maxNewTokens: g.max_new_tokens, textVocab: g.text_vocab };
  const stepGolden = goldens.read("generate", "step_logits").data;
  for (const variant of ["base", "adapter-qkv"]) {
    const model = variant === "base" ? base : { ...base, lora: await refAdapter(variant) };
    for (const useCache of [true, false]) {
      const r = refGenerate(model, g.prompts_ids, { ...opts, useCache });
      assert.deepEqual(r.tokens, g.tokens[variant], `${variant} batched cache=${useCache}`);
      assert.deepEqual(r.live, g.live[variant].slice(0, r.live.length));
      if (variant === "base" && useCache) {
        r.stepLogits.forEach((logits, step) => {
          for (let b = 0; b < B; b++) {
            if (!g.live.base[step][b]) continue;
            const off = (step * B + b) * V;
            assertRule(
              `step ${step} row ${b}`,
              logits.subarray(b * V, (b + 1) * V),
              stepGolden.subarray(off, off + V),
            );
          }
        });
      }
    }
    g.prompts_ids.forEach((p, b) => {
      const alone = refGenerate(model, [p], { ...opts, useCache: true });
      assert.deepEqual(alone.tokens[0], g.tokens[variant][b], `${variant} prompt ${b} alone`);
    });
  }
});

Deno.test("reference: weights rounded to f16 (pytorch/) and bf16 (bf16-sharded/)", async () => {
  for (const [key, sub] of [["f16", "pytorch"], ["bf16", "bf16-sharded"]]) {
    const w = await loadRefWeights(`${DIR}/${sub}`);
    const logits = refBatchForward({ config, weights: w });
    const real = new Float32Array(goldens.read("weights_rounded", `${key}.logits`).data.length);
    let o = 0;
    batchValues.pad.forEach((p, b) => {
      const part = logits.subarray((b * S + p) * V, (b + 1) * S * V);
      real.set(part, o);
      o += part.length;
    });
    assertRule(`${key} logits`, real, goldens.read("weights_rounded", `${key}.logits`).data);
  }
});

Deno.test("reference: training losses (base and LoRA) of the train case", async () => {
  const t = goldens.cases.get("train")!.values as {
    input_ids: number[][];
    labels: number[][];
    base_loss: number;
    lora_loss: number;
  };
  const T = t.input_ids[0].length, n = t.input_ids.length;
  const mask = goldens.read("train", "attention_mask").data;
  const pos = goldens.read("train", "position_ids").data;
  const baseLogits = refForward(base, t.input_ids.flat(), n, T, mask, pos);
  const baseLoss = refLoss(baseLogits, t.labels, V);
  assert.ok(
    Math.abs(baseLoss - t.base_loss) <= 1e-4 * Math.abs(t.base_loss),
    `${baseLoss} vs ${t.base_loss}`,
  );
  const lora = await refAdapter("adapter-qkv");
  const loraLoss = refLoss(
    refForward({ ...base, lora }, t.input_ids.flat(), n, T, mask, pos),
    t.labels,
    V,
  );
  assert.ok(
    Math.abs(loraLoss - t.lora_loss) <= 1e-4 * Math.abs(t.lora_loss),
    `${loraLoss} vs ${t.lora_loss}`,
  );
});
