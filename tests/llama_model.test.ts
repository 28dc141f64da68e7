// The Llama-family GPU model (core/models/llama) against the fixture's goldens
// (tests/fixtures/llama-family/README.md §10), for each tiny model: rope, forward_batch (logits and
// hidden states at real positions), forward_single, generate (12 greedy tokens with the KV cache)
// and lora (the peft adapter).

import assert from "node:assert/strict";
import { llamaInvFreq } from "../core/models/llama/rotary.ts";
import { parseLlamaConfig, readLlamaConfig } from "../core/models/llama/config.ts";
import { loadLlamaModel, mergeLlamaAdapter } from "../core/models/llama/load.ts";
import type { LlamaModel } from "../core/models/llama/model.ts";
import { argmax, assertWithinRule, loadGoldens } from "./reference/chatglm.ts";

const MODELS = ["qwen2-tiny", "qwen3-tiny", "llama3-tiny"];
const dirOf = (m: string) => new URL(`./fixtures/llama-family/${m}`, import.meta.url).pathname;
// f32 weights: the goldens are f32 numbers (a plain load takes f16 where the adapter has it).
const quiet = { log: () => {}, progressBar: false, dtype: "f32" as const };

function rows(data: Int32Array, shape: number[]): number[][] {
  const [b, s] = shape;
  return Array.from({ length: b }, (_, i) => [...data.subarray(i * s, (i + 1) * s)]);
}

/** Element ranges of the real positions of a left-padded [b, S, w] tensor. */
function real(pads: number[], S: number, w: number, offset = 0): [number, number][] {
  return pads.map((p, b) => [offset + (b * S + p) * w, offset + (b + 1) * S * w]);
}

for (const name of MODELS) {
  const dir = dirOf(name);
  const goldens = loadGoldens(dir);
  const batch = goldens.cases.get("forward_batch")!.values as {
    pad: number[];
    prompts_ids: number[][];
  };

  Deno.test(`${name}: v4 and v5 config layouts give the same config`, async () => {
    const v5 = await readLlamaConfig(dir);
    const v4 = parseLlamaConfig(
      JSON.parse(await Deno.readTextFile(`${dir}/config.v4-layout.json`)),
      "v4",
      JSON.parse(await Deno.readTextFile(`${dir}/generation_config.json`)),
    );
    assert.deepEqual({ ...v4, torchDtype: null }, { ...v5, torchDtype: null });
  });

  Deno.test(`${name}: rope inv_freq`, async () => {
    const config = await readLlamaConfig(dir);
    const golden = goldens.read("rope", "inv_freq").data as Float32Array;
    assertWithinRule("inv_freq", llamaInvFreq(config.headDim, config.rope), golden);
  });

  Deno.test(`${name}: forward_batch, forward_single, generate`, async () => {
    const model = await loadLlamaModel(dir, quiet);
    try {
      const ids = goldens.read("forward_batch", "input_ids");
      const [B, S] = ids.shape;
      const inputIds = rows(ids.data as Int32Array, ids.shape);
      const hidden = new Map<number, Float32Array>();
      const logits = await model.forward(inputIds, { onHidden: (i, x) => hidden.set(i, x) });
      const V = model.config.vocabSize, h = model.config.hiddenSize;
      const gl = goldens.read("forward_batch", "logits").data as Float32Array;
      assertWithinRule("logits", logits, gl, real(batch.pad, S, V));
      const gh = goldens.read("forward_batch", "hidden").data as Float32Array;
      for (let k = 0; k < model.config.numLayers + 2; k++) {
        const sel = real(batch.pad, S, h);
        const mine = hidden.get(k)!;
        const g = gh.subarray(k * B * S * h, (k + 1) * B * S * h);
        assertWithinRule(`hidden[${k}]`, mine, g, sel);
      }
      // forward_single: each prompt alone equals the batch's real positions.
      for (let b = 0; b < B; b++) {
        const alone = await model.forward([batch.prompts_ids[b]]);
        const p = batch.pad[b];
        assertWithinRule(`single ${b}`, alone, gl.subarray((b * S + p) * V, (b + 1) * S * V));
      }
      await checkGenerate(model, goldens, inputIds);
    } finally {
      model.dispose();
    }
  });

  Deno.test(`${name}: generate golden through the slot cache (continuous batching)`, async () => {
    const model = await loadLlamaModel(dir, quiet);
    try {
      const g = goldens.cases.get("generate")!.values as {
        tokens: number[][];
        max_new_tokens: number;
      };
      const stepLogits = goldens.read("generate", "step_logits").data as Float32Array;
      const V = model.config.vocabSize, B = batch.prompts_ids.length;
      const cache = model.createCache(3, 64);
      try {
        // Prompt 0 alone into slot 2, then prompt 1 into slot 0 by the batched path with a
        // third prompt (slot 1) that is released before decoding.
        const first = await model.prefillSlot(batch.prompts_ids[0], cache, 2);
        const both = await model.prefillSlots([
          { slot: 0, ids: batch.prompts_ids[1] },
          { slot: 1, ids: batch.prompts_ids[0].slice(0, 5) },
        ], cache);
        model.releaseSlot(cache, 1);
        let logits: Float32Array = new Float32Array(B * V);
        logits.set(first, 0);
        logits.set(both.subarray(0, V), V);
        const tokens: number[][] = [[], []];
        for (let t = 0; t < g.max_new_tokens; t++) {
          assertWithinRule(
            `slot step ${t}`,
            logits,
            stepLogits.subarray(t * B * V, (t + 1) * B * V),
          );
          const next = [0, 1].map((b) => argmax(logits.subarray(b * V, (b + 1) * V)));
          next.forEach((id, b) => tokens[b].push(id));
          if (t + 1 < g.max_new_tokens) {
            logits = await model.decodeSlots(
              [{ slot: 2, id: next[0] }, { slot: 0, id: next[1] }],
              cache,
            );
          }
        }
        assert.deepEqual(tokens, g.tokens);
      } finally {
        cache.free();
      }
    } finally {
      model.dispose();
    }
  });

  Deno.test(`${name}: a batch split into row groups (small activation limit) gives the same logits`, async () => {
    const ids = goldens.read("forward_batch", "input_ids");
    const [, S] = ids.shape;
    const model = await loadLlamaModel(dir, { ...quiet, maxActivationBytes: S * 160 * 4 });
    try {
      const hidden = new Map<number, Float32Array>();
      const logits = await model.forward(rows(ids.data as Int32Array, ids.shape), {
        onHidden: (i, x) => hidden.set(i, x),
      });
      const gl = goldens.read("forward_batch", "logits").data as Float32Array;
      assertWithinRule("grouped logits", logits, gl, real(batch.pad, S, model.config.vocabSize));
      assert.equal(hidden.get(0)!.length, 2 * S * model.config.hiddenSize);
    } finally {
      model.dispose();
    }
  });

  Deno.test(`${name}: lora adapter logits`, async () => {
    const model = await loadLlamaModel(dir, { ...quiet, adapter: `${dir}/adapter` });
    try {
      const ids = goldens.read("forward_batch", "input_ids");
      const [, S] = ids.shape;
      const logits = await model.forward(rows(ids.data as Int32Array, ids.shape));
      const gl = goldens.read("lora", "logits").data as Float32Array;
      assertWithinRule("lora logits", logits, gl, real(batch.pad, S, model.config.vocabSize));
      // Merged into the base weights (W + scaling·B·A), the adapter gives the same logits.
      await mergeLlamaAdapter(model);
      assert.equal(model.adapter, null);
      const merged = await model.forward(rows(ids.data as Int32Array, ids.shape));
      assertWithinRule(
        "merged lora logits",
        merged,
        gl,
        real(batch.pad, S, model.config.vocabSize),
      );
    } finally {
      model.dispose();
    }
  });
}

async function checkGenerate(
  model: LlamaModel,
  goldens: ReturnType<typeof loadGoldens>,
  inputIds: number[][],
) {
  const g = goldens.cases.get("generate")!.values as { tokens: number[][]; max_new_tokens: number };
  const stepLogits = goldens.read("generate", "step_logits").data as Float32Array;
  const V = model.config.vocabSize, B = inputIds.length;
  const cache = model.createCache(B, inputIds[0].length + g.max_new_tokens);
  try {
    let logits = await model.prefill(inputIds, cache);
    const tokens: number[][] = inputIds.map(() => []);
    for (let t = 0; t < g.max_new_tokens; t++) {
      assertWithinRule(`step ${t} logits`, logits, stepLogits.subarray(t * B * V, (t + 1) * B * V));
      const next = Array.from({ length: B }, (_, b) => argmax(logits.subarray(b * V, (b + 1) * V)));
      next.forEach((id, b) => tokens[b].push(id));
      if (t + 1 < g.max_new_tokens) logits = await model.decodeStep(next, cache);
    }
    assert.deepEqual(tokens, g.tokens);
  } finally {
    cache.free();
  }
}
