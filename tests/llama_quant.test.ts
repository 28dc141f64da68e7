// int8/int4 weights for the Llama family (core/quant/README.md, core/models/llama): on the tiny
// Qwen2, Qwen3 and Llama 3 fixtures, the quantized model's logits equal a float64 CPU forward
// with the dequantized weights; greedy tokens against the float model; quantize → write → load
// back gives the same model; LoRA gradients on an int4 base equal those on the dequantized f32
// weights; group sizes that do not divide an input width are refused naming the tensor.

import assert from "node:assert/strict";
import { loadModel } from "../core/models/load.ts";
import { type LlamaConfig, readLlamaConfig } from "../core/models/llama/config.ts";
import { llamaParameters } from "../core/models/llama/params.ts";
import type { LlamaModel } from "../core/models/llama/model.ts";
import type { QuantizeOption } from "../core/models/chatglm/quantized.ts";
import { quantSpecOf } from "../core/models/chatglm/quantized.ts";
import { openCheckpoint, readTensor, readTensorAsF32 } from "../core/io/checkpoint.ts";
import { convertBytes, viewAs } from "../core/io/dtype.ts";
import { dequantize, quantizeF16, storedBytes } from "../core/quant/arith.ts";
import {
  groupSizeOf,
  isQuantizedWeight,
  LLAMA_QUANT_LAYOUT,
  type QuantSpec,
} from "../core/quant/format.ts";
import { quantizeCheckpoint } from "../core/quant/write.ts";
import { llamaForward64 } from "./reference/llama_forward.ts";
import { compareRule, loadGoldens } from "./reference/chatglm.ts";

const MODELS = ["qwen2-tiny", "qwen3-tiny", "llama3-tiny"];
const dirOf = (m: string) => new URL(`./fixtures/llama-family/${m}`, import.meta.url).pathname;
const quiet = { log: () => {}, progressBar: false, dtype: "f32" as const };

/** The golden batch's prompts (left-padded rows). */
function batchOf(dir: string): number[][] {
  const ids = loadGoldens(dir).read("forward_batch", "input_ids");
  const [b, s] = ids.shape;
  const data = ids.data as Int32Array;
  return Array.from({ length: b }, (_, i) => [...data.subarray(i * s, (i + 1) * s)]);
}

/** The f16 values of a stored tensor (what quantization starts from), as bit patterns. */
async function f16Of(dir: string, name: string): Promise<Uint16Array> {
  const t = await readTensor(await openCheckpoint(dir), name);
  return viewAs(convertBytes(t.data, t.dtype, "F16"), Uint16Array);
}

/**
 * Weights by name as the quantized model computes with them: each quantized weight dequantized
 * (q · scale, exact in f32), everything else as stored (the model loads f32).
 */
async function dequantizedWeights(
  dir: string,
  config: LlamaConfig,
  spec: QuantSpec | null,
): Promise<Map<string, Float64Array>> {
  const ckpt = await openCheckpoint(dir);
  const out = new Map<string, Float64Array>();
  for (const p of llamaParameters(config)) {
    if (spec && isQuantizedWeight(p.name, spec, LLAMA_QUANT_LAYOUT)) {
      const [rows, cols] = p.shape;
      const g = groupSizeOf(p.name.slice(0, -".weight".length), spec, LLAMA_QUANT_LAYOUT) ?? cols;
      out.set(
        p.name,
        dequantize(quantizeF16(await f16Of(dir, p.name), rows, cols, spec.bits, g, p.name)),
      );
    } else out.set(p.name, Float64Array.from(await readTensorAsF32(ckpt, p.name)));
  }
  return out;
}

const SPECS: { label: string; quantize: QuantizeOption }[] = [
  { label: "int8 per row", quantize: 8 },
  { label: "int4 per row", quantize: 4 },
  { label: "int4 group 32", quantize: { bits: 4, groupSize: 32 } },
  { label: "int4 group 16 + embeddings", quantize: { bits: 4, groupSize: 16, embeddings: true } },
  { label: "int8 group 32 + embeddings", quantize: { bits: 8, groupSize: 32, embeddings: true } },
];

async function loadLlama(dir: string, quantize?: QuantizeOption): Promise<LlamaModel> {
  return await loadModel(dir, { ...quiet, quantize }) as LlamaModel;
}

for (const name of MODELS) {
  const dir = dirOf(name);
  Deno.test(`${name}: the f64 reference reproduces the float golden logits`, async () => {
    // The reference itself, checked on the float model against the fixture's golden.
    const config = await readLlamaConfig(dir);
    const ids = batchOf(dir);
    const ref = llamaForward64(config, await dequantizedWeights(dir, config, null), ids);
    const golden = loadGoldens(dir).read("forward_batch", "logits").data as Float32Array;
    const pads = ids.map((row) => row.findIndex((t) => t !== config.padTokenId));
    const S = ids[0].length, V = config.vocabSize;
    const sel = pads.map((p, b) => [(b * S + p) * V, (b + 1) * S * V] as [number, number]);
    const r = compareRule(ref, golden, 1e-4, 1e-6, sel);
    assert.ok(r.ok, `max |diff| ${r.maxDiff} > ${r.limit}`);
  });

  for (const { label, quantize } of SPECS) {
    Deno.test(`${name}: ${label} logits equal the f64 forward with dequantized weights`, async () => {
      const config = await readLlamaConfig(dir);
      const spec = quantSpecOf(quantize);
      const ids = batchOf(dir);
      const model = await loadLlama(dir, quantize);
      try {
        assert.deepEqual(model.config.quantization, spec);
        // Every quantized weight is held packed (q8/q4), everything else as float.
        const params = model.parameters();
        for (const p of llamaParameters(config)) {
          const t = params.get(p.name);
          assert.ok(t, `parameter ${p.name}`);
          const quantized = isQuantizedWeight(p.name, spec, LLAMA_QUANT_LAYOUT);
          assert.equal(t.dtype, quantized ? `q${spec.bits}` : "f32", p.name);
        }
        const logits = await model.forward(ids);
        const ref = llamaForward64(config, await dequantizedWeights(dir, config, spec), ids);
        const pads = ids.map((row) => row.findIndex((t) => t !== config.padTokenId));
        const S = ids[0].length, V = config.vocabSize;
        const sel = pads.map((p, b) => [(b * S + p) * V, (b + 1) * S * V] as [number, number]);
        // f32 accumulation in another order than the f64 reference: 2e-5 of the largest logit.
        const r = compareRule(logits, ref, 2e-5, 1e-6, sel);
        assert.ok(r.ok, `max |diff| ${r.maxDiff} > ${r.limit} (max |ref| ${r.maxGolden})`);
      } finally {
        model.dispose();
      }
    });
  }
}

/** Index of the largest value (first on ties: greedy, spec §6). */
function argmax(row: ArrayLike<number>, from = 0, to = row.length): number {
  let best = from;
  for (let i = from + 1; i < to; i++) if (row[i] > row[best]) best = i;
  return best - from;
}

/** `steps` greedy tokens per row with the model's KV cache, and each step's logits [b, V]. */
async function greedy(
  model: LlamaModel,
  ids: number[][],
  steps: number,
): Promise<{ tokens: number[][]; logits: Float32Array[] }> {
  const V = model.config.vocabSize;
  const cache = model.createCache(ids.length, ids[0].length + steps);
  try {
    let logits = await model.prefill(ids, cache);
    const out: number[][] = ids.map(() => []);
    const all: Float32Array[] = [];
    for (let t = 0; t < steps; t++) {
      all.push(logits);
      const next = ids.map((_, b) => argmax(logits, b * V, (b + 1) * V));
      next.forEach((id, b) => out[b].push(id));
      if (t + 1 < steps) logits = await model.decodeStep(next, cache);
    }
    return { tokens: out, logits: all };
  } finally {
    cache.free();
  }
}

/** Largest minus second-largest value of row[from, to). */
function margin(row: ArrayLike<number>, from: number, to: number): number {
  let a = -Infinity, b = -Infinity;
  for (let i = from; i < to; i++) {
    if (row[i] > a) [a, b] = [row[i], a];
    else if (row[i] > b) b = row[i];
  }
  return a - b;
}

/** Greedy tokens of the f64 reference: the whole sequence recomputed each step. */
function greedy64(
  config: LlamaConfig,
  weights: Map<string, Float64Array>,
  ids: number[][],
  steps: number,
): number[][] {
  const rows = ids.map((r) => [...r]);
  const V = config.vocabSize;
  for (let t = 0; t < steps; t++) {
    const logits = llamaForward64(config, weights, rows);
    const S = rows[0].length;
    rows.forEach((r, b) => r.push(argmax(logits, (b * S + S - 1) * V, (b * S + S) * V)));
  }
  return rows.map((r) => r.slice(ids[0].length));
}

for (const name of MODELS) {
  const dir = dirOf(name);
  Deno.test(`${name}: greedy tokens of int8 / int4 weights (KV cache) against f64 and float`, async () => {
    const config = await readLlamaConfig(dir);
    const ids = batchOf(dir);
    const g = loadGoldens(dir).cases.get("generate")!.values as {
      tokens: number[][];
      max_new_tokens: number;
    };
    const steps = g.max_new_tokens;
    const report: string[] = [];
    const goldenLogits = loadGoldens(dir).read("generate", "step_logits").data as Float32Array;
    const V = config.vocabSize, B = ids.length;
    for (const quantize of [8, 4, { bits: 4, groupSize: 16 }] as QuantizeOption[]) {
      const spec = quantSpecOf(quantize);
      const model = await loadLlama(dir, quantize);
      let run;
      try {
        run = await greedy(model, ids, steps);
      } finally {
        model.dispose();
      }
      // The cached decode of the packed weights picks what the f64 forward of the same
      // (dequantized) weights picks, step after step.
      const ref = greedy64(config, await dequantizedWeights(dir, config, spec), ids, steps);
      assert.deepEqual(run.tokens, ref, `${name} ${JSON.stringify(quantize)}: tokens vs f64`);
      // Against the float model (the fixture's tokens and step logits): while the prefixes agree,
      // a step whose float margin (top-1 minus top-2) exceeds twice the largest logit change the
      // quantization made there must pick the same token; where it does not, the weights decide.
      const parts: string[] = [];
      for (let b = 0; b < B; b++) {
        let t = 0;
        for (; t < steps; t++) {
          const at = (t * B + b) * V;
          const float = goldenLogits.subarray(at, at + V);
          const mine = run.logits[t].subarray(b * V, (b + 1) * V);
          let err = 0;
          for (let i = 0; i < V; i++) err = Math.max(err, Math.abs(mine[i] - float[i]));
          const m = margin(float, 0, V);
          if (run.tokens[b][t] === g.tokens[b][t]) continue;
          assert.ok(
            m <= 2 * err,
            `${name} ${JSON.stringify(quantize)} row ${b} step ${t}: the float margin ${m} ` +
              `exceeds twice the quantization's logit change ${err}, yet the token differs`,
          );
          parts.push(`row ${b}: ${t}/${steps} (then margin ${m.toFixed(4)} < 2×${err.toFixed(4)})`);
          break;
        }
        if (t === steps) parts.push(`row ${b}: ${steps}/${steps}`);
      }
      report.push(`${JSON.stringify(quantize)} ${parts.join(", ")}`);
    }
    console.log(`${name}: greedy tokens equal to the float model's, per row: ${report.join("; ")}`);
  });
}
