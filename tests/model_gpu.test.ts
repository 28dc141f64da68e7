// The GPU ChatGLM model (core/models/chatglm) against every forward golden of the fixture: padded
// batch logits and hidden states, prompts alone, both adapters, the merge, greedy decoding with
// and without the KV cache, and weights stored in f16 / bf16 files or as f16 on the GPU.

import assert from "node:assert/strict";
import { getGpu } from "../core/gpu/device.ts";
import { openCheckpoint, readTensorAsF32 } from "../core/io/checkpoint.ts";
import { numberToF16Bits } from "../core/io/dtype.ts";
import { concatArrays } from "../core/io/concat.ts";
import { poolStats } from "../core/tensor/pool.ts";
import { readTensor } from "../core/tensor/tensor.ts";
import { exportMergedModel } from "../core/adapters/merge.ts";
import { rotaryInvFreq } from "../core/models/chatglm/rotary.ts";
import type { ChatGLMModel } from "../core/models/chatglm/model.ts";
import {
  adapterFromModel,
  attachAdapter,
  detachAdapter,
  loadModel,
  type LoadModelOptions,
  mergeAdapter,
} from "../core/models/chatglm/load.ts";
import { compareRule, loadGoldens, realRanges } from "./reference/chatglm.ts";

const DIR = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const goldens = loadGoldens(DIR);
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
const quiet = { log: () => {}, progressBar: false } satisfies LoadModelOptions;

function assertRule(
  name: string,
  actual: ArrayLike<number>,
  golden: ArrayLike<number>,
  select?: [number, number][],
) {
  const r = compareRule(actual, golden, goldens.rtol, goldens.atol, select);
  assert.ok(r.ok, `${name}: max |diff| ${r.maxDiff} > ${r.limit} (max |golden| ${r.maxGolden})`);
}

function assertFinite(name: string, values: Float32Array) {
  const bad = values.findIndex((v) => !Number.isFinite(v));
  assert.equal(bad, -1, `${name}: non-finite value at ${bad}`);
}

/** Real positions of a padded batch, concatenated (the weights_rounded layout). */
function realRows(logits: Float32Array, V: number): Float32Array {
  return concatArrays(
    batchValues.pad.map((p, b) => logits.subarray((b * S + p) * V, (b + 1) * S * V)),
  );
}

async function withModel(
  dir: string,
  options: LoadModelOptions,
  fn: (m: ChatGLMModel) => Promise<void>,
): Promise<void> {
  const model = await loadModel(dir, { ...quiet, ...options });
  try {
    await fn(model);
  } finally {
    model.dispose();
  }
}

interface GreedyResult {
  tokens: number[][];
  stepLogits: Float32Array[];
}

/** Greedy decoding as §5 states it; the cache path or full recomputation each step. */
async function greedy(
  model: ChatGLMModel,
  prompts: number[][],
  maxNew: number,
  textVocab: number,
  useCache: boolean,
): Promise<GreedyResult> {
  const { padTokenId: pad, eosTokenId: eos, vocabSize: V } = model.config;
  const width = Math.max(...prompts.map((p) => p.length));
  let rows = prompts.map((p) => [...new Array(width - p.length).fill(pad), ...p]);
  const cache = useCache ? model.createCache(prompts.length, width + maxNew) : null;
  const tokens: number[][] = prompts.map(() => []);
  const finished = prompts.map(() => false);
  const stepLogits: Float32Array[] = [];
  try {
    let logits: Float32Array;
    if (cache) logits = await model.prefill(rows, cache);
    else {
      const all = await model.forward(rows);
      logits = lastOf(all, rows.length, rows[0].length, V);
    }
    for (let step = 0; step < maxNew; step++) {
      stepLogits.push(logits);
      const next = finished.map((f, b) => {
        if (f) return pad;
        let best = 0;
        for (let v = 1; v < textVocab; v++) if (logits[b * V + v] > logits[b * V + best]) best = v;
        return best;
      });
      next.forEach((t, b) => {
        if (finished[b]) return;
        tokens[b].push(t);
        if (t === eos) finished[b] = true;
      });
      if (finished.every((f) => f) || step + 1 === maxNew) break;
      rows = rows.map((r, b) => [...r, next[b]]);
      if (cache) logits = await model.decodeStep(next, cache);
      else logits = lastOf(await model.forward(rows), rows.length, rows[0].length, V);
    }
  } finally {
    cache?.free();
  }
  return { tokens, stepLogits };
}

function lastOf(all: Float32Array, b: number, s: number, V: number): Float32Array {
  const out = new Float32Array(b * V);
  for (let i = 0; i < b; i++) out.set(all.subarray((i * s + s - 1) * V, (i * s + s) * V), i * V);
  return out;
}

Deno.test("gpu model: forward_batch logits and per-layer hidden states (f32)", async () => {
  await withModel(DIR, { dtype: "f32" }, async (model) => {
    const V = model.config.vocabSize, h = model.config.hiddenSize;
    const hidden: Float32Array[] = [];
    const logits = await model.forward(inputIds, { onHidden: (i, x) => (hidden[i] = x) });
    assert.equal(logits.length, B * S * V);
    assertFinite("logits (pad rows included)", logits);
    assertRule(
      "logits",
      logits,
      goldens.read("forward_batch", "logits").data,
      realRanges(batchValues.pad, S, V),
    );
    const gh = goldens.read("forward_batch", "hidden");
    assert.equal(hidden.length, gh.shape[0]);
    hidden.forEach((x, i) => {
      const g = gh.data.subarray(i * B * S * h, (i + 1) * B * S * h);
      assertRule(`hidden[${i}]`, x, g, realRanges(batchValues.pad, S, h));
    });
  });
});

Deno.test("gpu model: each prompt alone equals its batch rows; prefill returns the last position", async () => {
  await withModel(DIR, { dtype: "f32" }, async (model) => {
    const V = model.config.vocabSize;
    const golden = goldens.read("forward_batch", "logits").data;
    for (const [b, ids] of batchValues.ids_unpadded.entries()) {
      const logits = await model.forward([ids]);
      const pad = batchValues.pad[b];
      assertRule(`prompt ${b} alone`, logits, golden.subarray((b * S + pad) * V, (b + 1) * S * V));
    }
    const cache = model.createCache(B, S);
    try {
      const last = await model.prefill(inputIds, cache);
      assert.equal(last.length, B * V);
      assert.equal(cache.length, S);
      for (let b = 0; b < B; b++) {
        const off = (b * S + S - 1) * V;
        assertRule(
          `prefill row ${b}`,
          last.subarray(b * V, (b + 1) * V),
          golden.subarray(off, off + V),
        );
      }
      await assert.rejects(() => model.decodeStep([1, 2], cache), /cache is full/);
      await assert.rejects(() => model.decodeStep([1], cache), /expected 2 ids/);
    } finally {
      cache.free();
    }
    await assert.rejects(() => model.decodeStep([1, 2], cache), /freed/);
  });
});

for (const name of ["adapter_qkv", "adapter_multi"]) {
  Deno.test(`gpu model: ${name} logits (f32)`, async () => {
    const adapter = `${DIR}/${name.replace("_", "-")}`;
    await withModel(DIR, { dtype: "f32", adapter }, async (model) => {
      const V = model.config.vocabSize;
      const logits = await model.forward(inputIds);
      assertRule(
        name,
        logits,
        goldens.read(name, "logits").data,
        realRanges(batchValues.pad, S, V),
      );
    });
  });
}

Deno.test("gpu model: merge-and-unload gives merged_qkv and reproduces adapter_qkv", async () => {
  await withModel(DIR, { dtype: "f32", adapter: `${DIR}/adapter-qkv` }, async (model) => {
    await mergeAdapter(model);
    assert.equal(model.adapter, null);
    const golden = goldens.read("merged_qkv", "weights").data;
    const per = golden.length / model.layers.length;
    for (const layer of model.layers) {
      const w = await readTensor(layer.queryKeyValue.weight);
      const l = layer.index;
      assertRule(`merged layer ${l}`, w, golden.subarray(l * per, (l + 1) * per));
      assert.equal(layer.queryKeyValue.lora, null);
    }
    const V = model.config.vocabSize;
    const logits = await model.forward(inputIds);
    assertRule(
      "merged logits",
      logits,
      goldens.read("adapter_qkv", "logits").data,
      realRanges(batchValues.pad, S, V),
    );
  });
});

Deno.test("gpu model: exported merged model loads and reproduces adapter_qkv", async () => {
  const out = await Deno.makeTempDir();
  try {
    await exportMergedModel(DIR, `${DIR}/adapter-qkv`, out);
    const ckpt = await openCheckpoint(out);
    const golden = goldens.read("merged_qkv", "weights").data;
    const layers = goldens.read("merged_qkv", "weights").shape[0];
    const per = golden.length / layers;
    for (let l = 0; l < layers; l++) {
      const w = await readTensorAsF32(
        ckpt,
        `transformer.layers.${l}.attention.query_key_value.weight`,
      );
      assertRule(`exported layer ${l}`, w, golden.subarray(l * per, (l + 1) * per));
    }
    await withModel(out, { dtype: "f32" }, async (model) => {
      const V = model.config.vocabSize;
      const logits = await model.forward(inputIds);
      assertRule(
        "exported logits",
        logits,
        goldens.read("adapter_qkv", "logits").data,
        realRanges(batchValues.pad, S, V),
      );
    });
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("gpu model: greedy tokens with and without the KV cache, batched and alone", async () => {
  const g = goldens.cases.get("generate")!.values as {
    max_new_tokens: number;
    text_vocab: number;
    prompts_ids: number[][];
    tokens: Record<string, number[][]>;
    live: Record<string, boolean[][]>;
  };
  const stepGolden = goldens.read("generate", "step_logits").data;
  for (const variant of ["base", "adapter-qkv"]) {
    const adapter = variant === "base" ? undefined : `${DIR}/${variant}`;
    await withModel(DIR, { dtype: "f32", adapter }, async (model) => {
      const V = model.config.vocabSize;
      for (const useCache of [true, false]) {
        const r = await greedy(model, g.prompts_ids, g.max_new_tokens, g.text_vocab, useCache);
        assert.deepEqual(r.tokens, g.tokens[variant], `${variant}, batched, cache ${useCache}`);
        if (variant !== "base") continue;
        r.stepLogits.forEach((logits, step) => {
          for (let b = 0; b < g.prompts_ids.length; b++) {
            if (!g.live.base[step][b]) continue;
            const off = (step * g.prompts_ids.length + b) * V;
            assertRule(
              `step ${step} row ${b} (cache ${useCache})`,
              logits.subarray(b * V, (b + 1) * V),
              stepGolden.subarray(off, off + V),
            );
          }
        });
      }
      for (const [b, p] of g.prompts_ids.entries()) {
        const alone = await greedy(model, [p], g.max_new_tokens, g.text_vocab, true);
        assert.deepEqual(alone.tokens[0], g.tokens[variant][b], `${variant}, prompt ${b} alone`);
      }
    });
  }
});

Deno.test("gpu model: f16 (pytorch/) and bf16 (bf16-sharded/) checkpoints, f32 compute", async () => {
  for (const [key, sub] of [["f16", "pytorch"], ["bf16", "bf16-sharded"]]) {
    await withModel(`${DIR}/${sub}`, { dtype: "f32" }, async (model) => {
      const logits = await model.forward(inputIds);
      assertRule(
        `${sub} logits`,
        realRows(logits, model.config.vocabSize),
        goldens.read("weights_rounded", `${key}.logits`).data,
      );
    });
  }
});

Deno.test("gpu model: the bf16 checkpoint's stored inv_freq is ignored", async () => {
  // The trap is real: the file's bf16 inv_freq differs from the f16 table the model must use.
  const ckpt = await openCheckpoint(`${DIR}/bf16-sharded`);
  const stored = await readTensorAsF32(ckpt, "transformer.layers.0.attention.rotary_emb.inv_freq");
  const used = rotaryInvFreq(stored.length * 2);
  assert.notDeepEqual([...stored], [...used]);
  assert.equal(numberToF16Bits(used[1]).toString(16), "2e66");
  // ...and the model matches the golden computed with the f16 table (checked in the test above);
  // here against the f32-weights golden, which the stored table would miss by ~0.07.
  await withModel(`${DIR}/bf16-sharded`, { dtype: "f32" }, async (model) => {
    const logits = await model.forward(inputIds);
    const golden = goldens.read("weights_rounded", "bf16.logits").data;
    const r = compareRule(realRows(logits, model.config.vocabSize), golden);
    assert.ok(r.maxDiff < 0.01, `bf16 checkpoint logits off by ${r.maxDiff}`);
  });
});

Deno.test("gpu model: f16 weight storage matches weights_rounded.f16 (f32 compute)", async () => {
  const gpu = await getGpu();
  // f16 storage is unpacked with unpack2x16float: it needs no shader-f16 feature.
  console.log(
    `  adapter ${gpu.adapterInfo.description} (${gpu.backend}), shader-f16: ${gpu.hasF16}`,
  );
  await withModel(DIR, { dtype: "f16" }, async (model) => {
    assert.equal(model.embedding.weight.dtype, "f16");
    assert.equal(model.layers[0].queryKeyValue.weight.dtype, "f16");
    const logits = await model.forward(inputIds);
    assertFinite("f16 logits", logits);
    assertRule(
      "f16 storage",
      realRows(logits, model.config.vocabSize),
      goldens.read("weights_rounded", "f16.logits").data,
    );
  });
  await withModel(DIR, { dtype: "f16", adapter: `${DIR}/adapter-qkv` }, async (model) => {
    const logits = await model.forward(inputIds);
    const r = compareRule(
      logits,
      goldens.read("adapter_qkv", "logits").data,
      0,
      0,
      realRanges(batchValues.pad, S, model.config.vocabSize),
    );
    // The fixture README's half-precision tolerance for f16 weights: 0.15.
    assert.ok(r.maxDiff <= 0.15, `f16 + adapter logits off by ${r.maxDiff}`);
  });
});

Deno.test("gpu model: dispose returns the weights to the pool; bad calls are refused", async () => {
  const gpu = await getGpu();
  const before = poolStats(gpu).bytesInUse;
  const model = await loadModel(DIR, { ...quiet, dtype: "f32", maxContext: 16 });
  assert.ok(poolStats(gpu).bytesInUse > before);
  await assert.rejects(
    () => model.forward(inputIds),
    new RegExp(`${S} tokens exceed the model's context of 16`),
  );
  assert.throws(() => model.createCache(1, 17), /maxLen 17/);
  await assert.rejects(() => model.forward([[1, 2, 3]]), /no <sop>/);
  model.dispose();
  assert.equal(poolStats(gpu).bytesInUse, before);
  await assert.rejects(() => model.forward([batchValues.ids_unpadded[0]]), /disposed/);
});

Deno.test("gpu model: a prefill over the activation limit runs in row groups, same numbers", async () => {
  // S tokens × max(3h, inner) f32 per row: allow a bit more than one row per pass.
  const cfg = JSON.parse(await Deno.readTextFile(`${DIR}/config.json`));
  const row = S * Math.max(3 * cfg.hidden_size, cfg.inner_hidden_size) * 4;
  await withModel(DIR, { dtype: "f32", maxActivationBytes: row + 4 }, async (model) => {
    const V = model.config.vocabSize, h = model.config.hiddenSize;
    const hidden: Float32Array[] = [];
    const passes: number[] = [];
    model.profiler = (p) => passes.push(p.tokens);
    const logits = await model.forward(inputIds, { onHidden: (i, x) => (hidden[i] = x) });
    model.profiler = null;
    assert.deepEqual(passes, inputIds.map(() => S), "one pass per row");
    assertRule(
      "grouped logits",
      logits,
      goldens.read("forward_batch", "logits").data,
      realRanges(batchValues.pad, S, V),
    );
    const gh = goldens.read("forward_batch", "hidden").data;
    const last = hidden.length - 1;
    assertRule(
      "grouped final hidden",
      hidden[last],
      gh.subarray(last * B * S * h, (last + 1) * B * S * h),
      realRanges(batchValues.pad, S, h),
    );
    const g = goldens.cases.get("generate")!.values as {
      text_vocab: number;
      prompts_ids: number[][];
      tokens: Record<string, number[][]>;
    };
    const r = await greedy(model, g.prompts_ids, 12, g.text_vocab, true);
    assert.deepEqual(r.tokens, g.tokens.base);
  });
});

Deno.test("gpu model: weights that do not match config.json, or a foreign adapter, are refused before upload", async () => {
  const gpu = await getGpu();
  const dir = await Deno.makeTempDir();
  try {
    const cfg = JSON.parse(await Deno.readTextFile(`${DIR}/config.json`));
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ ...cfg, inner_hidden_size: 128 }),
    );
    await Deno.copyFile(`${DIR}/model.safetensors`, `${dir}/model.safetensors`);
    const before = poolStats(gpu).bytesInUse;
    await assert.rejects(
      () => loadModel(dir, { ...quiet, dtype: "f32" }),
      /weights do not match config\.json: .*transformer\.layers\.0\.mlp\.dense_h_to_4h\.weight has shape \[256,64\], config\.json implies \[128,64\]/,
    );
    // A model whose MLP is narrower than the adapter-multi adapter expects.
    await assert.rejects(
      () => loadModel(dir, { ...quiet, dtype: "f32", adapter: `${DIR}/adapter-multi` }),
      /adapter_model\.safetensors: .*dense_h_to_4h\.lora_B\.weight has shape \[256,4\], expected \[128,4\]/,
    );
    assert.equal(poolStats(gpu).bytesInUse, before);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("gpu model: loading prints the memory plan and reports progress up to the total", async () => {
  const lines: string[] = [];
  const progress: { loadedBytes: number; totalBytes: number }[] = [];
  const model = await loadModel(`${DIR}/bf16-sharded`, {
    dtype: "f32",
    progressBar: false,
    log: (l) => lines.push(l),
    onProgress: (p) => progress.push(p),
  });
  try {
    assert.match(lines.join("\n"), /GPU memory plan \(f32 weights, context \d+, batch 1\)/);
    assert.ok(progress.length > 0);
    const last = progress[progress.length - 1];
    assert.equal(last.loadedBytes, last.totalBytes);
    // Every parameter was loaded, the inv_freq buffers were not.
    assert.equal(progress.length, model.parameters().size);
  } finally {
    model.dispose();
  }
});

Deno.test("gpu model: detach, re-attach and read back an adapter (what a trainer saves)", async () => {
  await withModel(DIR, { dtype: "f32", adapter: `${DIR}/adapter-qkv` }, async (model) => {
    const V = model.config.vocabSize;
    const back = await adapterFromModel(model);
    for (const [name, m] of model.adapter!.modules) {
      assert.deepEqual(back.modules.get(name)!.a, m.a);
      assert.deepEqual(back.modules.get(name)!.b, m.b);
    }
    detachAdapter(model);
    assert.equal(model.layers[0].queryKeyValue.lora, null);
    const baseLogits = await model.forward(inputIds);
    assertRule(
      "detached",
      baseLogits,
      goldens.read("forward_batch", "logits").data,
      realRanges(batchValues.pad, S, V),
    );
    attachAdapter(model, back);
    assert.throws(() => attachAdapter(model, back), /already has an adapter/);
    const logits = await model.forward(inputIds);
    assertRule(
      "re-attached",
      logits,
      goldens.read("adapter_qkv", "logits").data,
      realRanges(batchValues.pad, S, V),
    );
  });
});
