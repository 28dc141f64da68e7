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
