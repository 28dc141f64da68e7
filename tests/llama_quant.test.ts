// int8/int4 weights for the Llama family (core/quant/README.md, core/models/llama): on the tiny
// Qwen2, Qwen3 and Llama 3 fixtures, the quantized model's logits equal a float64 CPU forward
// with the dequantized weights; greedy tokens against the float model; quantize → write → load
// back gives the same model; LoRA gradients on an int4 base equal those on the dequantized f32
// weights; group sizes that do not divide an input width are refused naming the tensor.

import assert from "node:assert/strict";
import { loadModel } from "../core/models/load.ts";
import { type LlamaConfig, readLlamaConfig } from "../core/models/llama/config.ts";
import { linearShapes, llamaParameters } from "../core/models/llama/params.ts";
import { mergeLlamaAdapter } from "../core/models/llama/load.ts";
import { buildTrainBatchFor, prepareTrainingFor } from "../core/models/training.ts";
import { loadLoraAdapter, type LoraAdapter } from "../core/adapters/lora_weights.ts";
import { baseQuantizationOf, readLoraConfig } from "../core/adapters/peft_config.ts";
import { writeSafetensors } from "../core/io/safetensors.ts";
import { readTensor as readTensorGpu } from "../core/tensor/tensor.ts";
import { runMicroStep } from "../train/loop/step.ts";
import { assertSameGrads, seededAdapter } from "./helpers/grads.ts";
import { runScript as runCli } from "./helpers/cli.ts";
import { buildTinyTrainData, tinyTrainConfig } from "./helpers/tiny_training.ts";
import { train } from "../train/train.ts";
import type { LlamaModel } from "../core/models/llama/model.ts";
import type { QuantizeOption } from "../core/models/chatglm/quantized.ts";
import { quantSpecOf } from "../core/models/chatglm/quantized.ts";
import { openCheckpoint, readTensor, readTensorAsF32 } from "../core/io/checkpoint.ts";
import { convertBytes, viewAs } from "../core/io/dtype.ts";
import { dequantize, quantizeF16, storedBytes } from "../core/quant/arith.ts";
import {
  describeQuant,
  groupSizeOf,
  isQuantizedWeight,
  LLAMA_QUANT_LAYOUT,
  type QuantSpec,
} from "../core/quant/format.ts";
import { quantizeCheckpoint } from "../core/quant/write.ts";
import { gib, planMemoryOf } from "../core/models/chatglm/memory_plan.ts";
import { llamaPlanArch } from "../core/models/llama/memory_plan.ts";
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

const WRITE_SPECS: Record<string, QuantSpec> = {
  "qwen2-tiny": { bits: 4, groupSize: 32, embeddings: false },
  "qwen3-tiny": { bits: 8, groupSize: 16, embeddings: true },
  // Untied: the stored head is quantized per row with the embeddings.
  "llama3-tiny": { bits: 4, groupSize: null, embeddings: true },
};

for (const name of MODELS) {
  const dir = dirOf(name);
  const spec = WRITE_SPECS[name];
  Deno.test(`${name}: quantize → write → load back gives the same model (${JSON.stringify(spec)})`, async () => {
    const tmp = await Deno.makeTempDir({ prefix: "medglm-llama-quant-" });
    const out = `${tmp}/out`;
    try {
      const path = await quantizeCheckpoint(dir, out, spec, { progressBar: false });
      assert.equal(path, `${out}/model.safetensors`, "safetensors is the Llama family's default");
      const config = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
      assert.deepEqual(config.medglm_quantization, {
        bits: spec.bits,
        group_size: spec.groupSize,
        embeddings: spec.embeddings,
      });
      assert.equal(config.quantization_bit, undefined, "ChatGLM's key is not written");
      assert.ok(await Deno.stat(`${out}/generation_config.json`), "non-weight files are copied");
      // The stored values and scales are the arithmetic's, tensor by tensor.
      const parsed = await readLlamaConfig(dir);
      const ckpt = await openCheckpoint(out);
      let quantized = 0;
      for (const p of llamaParameters(parsed)) {
        if (!isQuantizedWeight(p.name, spec, LLAMA_QUANT_LAYOUT)) {
          // Float tensors keep their stored dtype and values.
          const src = await readTensor(await openCheckpoint(dir), p.name);
          const t = await readTensor(ckpt, p.name);
          assert.equal(t.dtype, src.dtype, p.name);
          assert.deepEqual(t.data, src.data, p.name);
          continue;
        }
        const [rows, cols] = p.shape;
        const g = groupSizeOf(p.name.slice(0, -".weight".length), spec, LLAMA_QUANT_LAYOUT);
        const m = quantizeF16(await f16Of(dir, p.name), rows, cols, spec.bits, g ?? cols, p.name);
        const w = await readTensor(ckpt, p.name);
        const sc = await readTensor(ckpt, `${p.name}_scale`);
        assert.equal(w.dtype, "I8");
        assert.deepEqual(
          new Int8Array(w.data.buffer, w.data.byteOffset, w.data.length),
          storedBytes(m),
        );
        assert.deepEqual(viewAs(sc.data, Uint16Array), m.scales, `${p.name}_scale`);
        quantized++;
      }
      assert.equal(
        quantized,
        7 * parsed.numLayers + (spec.embeddings ? (parsed.tieWordEmbeddings ? 1 : 2) : 0),
      );
      assert.equal(ckpt.locate.has("lm_head.weight"), !parsed.tieWordEmbeddings);

      // Loaded back without options: the same spec and the same logits, bit for bit.
      const ids = batchOf(dir);
      const atLoad = await loadLlama(dir, spec);
      const back = await loadLlama(out);
      try {
        assert.deepEqual(back.config.quantization, spec);
        const [a, b] = [await atLoad.forward(ids), await back.forward(ids)];
        assert.equal(a.length, b.length);
        assert.ok(
          a.every((v, i) => Object.is(v, b[i])),
          "logits differ between load-time and written",
        );
      } finally {
        atLoad.dispose();
        back.dispose();
      }
      // Asking for another quantization of a quantized checkpoint is refused naming both.
      await assert.rejects(
        () => loadLlama(out, { bits: spec.bits === 8 ? 4 : 8 }),
        /already quantized .*cannot be re-quantized/,
      );
      // …and quantizing it again too.
      await assert.rejects(
        () => quantizeCheckpoint(out, `${tmp}/again`, spec, { progressBar: false }),
        /already quantized/,
      );
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  });
}

Deno.test("a group size that does not divide an input width is refused naming the tensor", async () => {
  const dir = dirOf("qwen3-tiny"); // inputs 64 (hidden), 128 (o_proj: 4 heads × 32), 160 (down)
  await assert.rejects(
    () => loadLlama(dir, { bits: 4, groupSize: 48 }),
    /model\.layers\.0\.self_attn\.q_proj\.weight: group size 48 must divide the input width 64/,
  );
  // 64 divides the hidden width and o_proj's 128, not down_proj's 160.
  await assert.rejects(
    () => loadLlama(dir, { bits: 8, groupSize: 64 }),
    (e: Error) =>
      /model\.layers\.0\.mlp\.down_proj\.weight: group size 64 must divide the input width 160/
        .test(e.message) && !/q_proj/.test(e.message),
  );
  const tmp = await Deno.makeTempDir({ prefix: "medglm-llama-quant-bad-" });
  try {
    await assert.rejects(
      () =>
        quantizeCheckpoint(dir, `${tmp}/out`, { bits: 4, groupSize: 64, embeddings: false }, {
          progressBar: false,
        }),
      /mlp\.down_proj\.weight: group size 64 must divide the input width 160/,
    );
    // Nothing was written: no output directory, no temporary one left behind.
    assert.deepEqual([...Deno.readDirSync(tmp)], []);
    // A checkpoint whose config records such a group is refused at load, naming the tensor.
    const out = `${tmp}/g32`;
    await quantizeCheckpoint(dir, out, { bits: 4, groupSize: 32, embeddings: false }, {
      progressBar: false,
    });
    const cfg = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
    cfg.medglm_quantization.group_size = 64;
    await Deno.writeTextFile(`${out}/config.json`, JSON.stringify(cfg));
    await assert.rejects(() => loadLlama(out), /mlp\.down_proj\.weight: group size 64 must divide/);
    // HF's quantization_config (GPTQ, AWQ, …) is another format: refused by name.
    delete cfg.medglm_quantization;
    cfg.quantization_config = { quant_method: "awq", bits: 4 };
    await Deno.writeTextFile(`${out}/config.json`, JSON.stringify(cfg));
    await assert.rejects(
      () => loadLlama(out),
      /quantization_config \(quant_method "awq"\) is not supported/,
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

// --- QLoRA: LoRA on an int4 base, gradients against the dequantized f32 model -------------------

/** The model with its quantized weights replaced by their dequantized values, all in f32. */
async function writeDequantizedLlama(dir: string, spec: QuantSpec): Promise<string> {
  const out = await Deno.makeTempDir({ prefix: "medglm-llama-qlora-deq-" });
  for (const f of ["config.json", "generation_config.json"]) {
    await Deno.copyFile(`${dir}/${f}`, `${out}/${f}`);
  }
  const config = await readLlamaConfig(dir);
  const weights = await dequantizedWeights(dir, config, spec);
  // q · scale (a small integer times an f16) is exact in f32, as the kernels compute it.
  await writeSafetensors(
    `${out}/model.safetensors`,
    llamaParameters(config).map((p) => ({
      name: p.name,
      dtype: "F32" as const,
      shape: p.shape,
      data: Float32Array.from(weights.get(p.name)!),
    })),
  );
  return out;
}

/** A seeded adapter on all seven projections with A and B both nonzero. */
async function randomLlamaAdapter(dir: string): Promise<LoraAdapter> {
  const targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
  return seededAdapter(targets, linearShapes(await readLlamaConfig(dir)), dir, 11);
}

/** Loss and every LoRA gradient of the fixture's training batch through the trainer's step. */
async function llamaLoraGrads(
  dir: string,
  adapterDir: string,
  quantize: QuantizeOption | undefined,
  recompute: boolean,
): Promise<{ loss: number; grads: Map<string, Float32Array>; quantized: boolean }> {
  const v = loadGoldens(adapterDir).cases.get("train")!.values as {
    input_ids: number[][];
    labels: number[][];
  };
  // What `deno task train --quantize` loads (train/loop/model_setup.ts).
  const model = await loadModel(dir, {
    ...quiet,
    adapter: await randomLlamaAdapter(adapterDir),
    trainable: true,
    quantize,
  });
  const tm = prepareTrainingFor(model, "lora");
  try {
    const batch = buildTrainBatchFor(model, v.input_ids, v.labels);
    const r = await runMicroStep(tm, batch, { zeroGrads: true, dropout: 0, recompute });
    const grads = new Map<string, Float32Array>();
    for (const p of tm.params) grads.set(p.name, await readTensorGpu(p.grad) as Float32Array);
    return { loss: r.loss, grads, quantized: model.config.quantization != null };
  } finally {
    tm.dispose();
    model.dispose();
  }
}

for (const name of MODELS) {
  const dir = dirOf(name);
  for (const spec of [quantSpecOf(4), quantSpecOf({ bits: 4, groupSize: 32 })]) {
    Deno.test(`${name}: QLoRA gradients on ${JSON.stringify(spec)} equal the dequantized f32 model's`, async () => {
      const ref = await writeDequantizedLlama(dir, spec);
      try {
        const want = await llamaLoraGrads(ref, dir, undefined, false);
        assert.equal(want.quantized, false);
        for (const recompute of [false, true]) {
          const got = await llamaLoraGrads(dir, dir, spec, recompute);
          assert.equal(got.quantized, true, "the base is loaded quantized");
          const what = `${name} ${JSON.stringify(spec)}, recompute ${recompute}`;
          assert.ok(
            Math.abs(got.loss - want.loss) <= 1e-5 * Math.abs(want.loss),
            `${what}: loss ${got.loss} vs ${want.loss}`,
          );
          assert.equal(got.grads.size, 7 * 2 * 2, "A and B of seven modules in two layers");
          assertSameGrads(what, got.grads, want.grads);
        }
        // The comparison tells bases apart: the float model's gradients are others.
        const float = await llamaLoraGrads(dir, dir, undefined, false);
        assert.throws(
          () => assertSameGrads("float vs dequantized", float.grads, want.grads),
          /max diff/,
        );
      } finally {
        await Deno.remove(ref, { recursive: true });
      }
    });
  }
}

// --- the commands: train --quantize, infer --quantize, deno task quantize on a Llama dir ----------

Deno.test("train --quantize 4,group=16 trains a LoRA on an int4 Qwen3 base and records it", async () => {
  // The tiny ChatGLM tokenizer's ids (vocabulary 2048) fit the tiny Qwen3's vocabulary too.
  const data = await buildTinyTrainData("llama-qlora", 8);
  const out = await Deno.makeTempDir({ prefix: "medglm-llama-qlora-train-" });
  try {
    const lines: string[] = [];
    const result = await train(
      tinyTrainConfig(data, out, {
        model: dirOf("qwen3-tiny"),
        quantize: "4,group=16",
        targetModules: ["q_proj", "k_proj", "v_proj", "o_proj"],
        lr: 5e-3,
        warmupSteps: 1,
        gradAccumulation: 1,
        maxSteps: 2,
        evalSteps: 2,
        saveSteps: 2,
        recompute: true,
      }),
      { log: (l) => lines.push(l), progressStream: { writeSync: (b: Uint8Array) => b.length } },
    );
    assert.equal(result.steps, 2);
    assert.ok(result.losses.every((l) => Number.isFinite(l.loss)), "finite losses");
    // The run's plan is printed for the int4 base.
    assert.ok(
      lines.some((l) => /GPU memory plan \(training:/.test(l)) &&
        lines.some((l) => /LoRA r \d+ on q_proj, k_proj, v_proj, o_proj \(8 modules\)/.test(l)),
      lines.join("\n"),
    );
    const ckpt = `${out}/checkpoint-2`;
    assert.deepEqual(baseQuantizationOf(await readLoraConfig(ckpt)), { bits: 4, groupSize: 16 });
  } finally {
    await Deno.remove(out, { recursive: true });
    await Deno.remove(data, { recursive: true });
  }
});

Deno.test("infer --quantize 8 --prompt-ids and deno task quantize on a Llama-family directory", async () => {
  const dir = dirOf("qwen3-tiny");
  const prompt = (loadGoldens(dir).cases.get("forward_batch")!.values as {
    prompts_ids: number[][];
  }).prompts_ids[0];
  const model = await loadLlama(dir, 8);
  let want: number[];
  try {
    want = (await greedy(model, [prompt], 6)).tokens[0];
  } finally {
    model.dispose();
  }
  const ids = ["--prompt-ids", prompt.join(","), "--max-new-tokens", "6"];
  const r = await runCli("serve/infer_cli.ts", ["--model", dir, "--quantize", "8", ...ids]);
  assert.equal(r.code, 0, r.stderr);
  const eos = (await readLlamaConfig(dir)).eosTokenIds;
  const cut = want.findIndex((id) => eos.includes(id));
  assert.equal(r.stdout.trim(), (cut < 0 ? want : want.slice(0, cut + 1)).join(" "));

  const tmp = await Deno.makeTempDir({ prefix: "medglm-llama-quantize-cli-" });
  try {
    const q = await runCli("core/cli/quantize.ts", [
      "--model",
      dir,
      "--bits",
      "8",
      "--out",
      `${tmp}/int8`,
    ]);
    assert.equal(q.code, 0, q.stderr);
    assert.match(q.stderr, /wrote .*int8\/model\.safetensors \(int8, per-row scales\)/);
    // The written directory answers without --quantize, as the quantized-at-load model does.
    const back = await runCli("serve/infer_cli.ts", ["--model", `${tmp}/int8`, ...ids]);
    assert.equal(back.code, 0, back.stderr);
    assert.equal(back.stdout, r.stdout);
    const bad = await runCli("core/cli/quantize.ts", [
      "--model",
      dir,
      "--bits",
      "4",
      "--group-size",
      "48",
      "--out",
      `${tmp}/bad`,
    ]);
    assert.equal(bad.code, 1);
    assert.match(
      bad.stderr,
      /nothing was written.*k_proj\.weight: group size 48 must divide the input width 64/,
    );
    assert.equal(await Deno.stat(`${tmp}/bad`).then(() => true, () => false), false);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("a Llama-family load prints its memory plan, whose weights are the loaded bytes, and keeps to a budget", async () => {
  for (
    const [name, quantize] of [["qwen3-tiny", { bits: 4, groupSize: 16 }], [
      "llama3-tiny",
      8,
    ]] as const
  ) {
    const lines: string[] = [];
    const model = await loadModel(dirOf(name), {
      ...quiet,
      quantize,
      log: (l) => lines.push(l),
    }) as LlamaModel;
    try {
      const spec = quantSpecOf(quantize);
      assert.match(lines.join("\n"), new RegExp(`GPU memory plan \\(${describeQuant(spec)}`));
      let bytes = 0;
      for (const t of new Set(model.parameters().values())) {
        bytes += t.quant
          ? (t.shape[0] * t.shape[1] * spec.bits) / 8 +
            t.shape[0] * (t.shape[1] / t.quant.groupSize) * 2
          : t.byteLength;
      }
      assert.match(
        lines.join("\n"),
        new RegExp(`  weights ${gib(bytes)}, `),
        `${name}: plan vs loaded`,
      );
      const exact = planMemoryOf(llamaPlanArch(model.config), {
        dtype: "f32",
        maxContext: 1,
        batch: 1,
        tiedHead: model.config.tieWordEmbeddings,
        quant: spec,
      }).weightsBytes;
      assert.equal(exact, bytes, `${name}: planned weight bytes vs the loaded tensors`);
    } finally {
      model.dispose();
    }
  }
  await assert.rejects(
    () => loadModel(dirOf("qwen3-tiny"), { ...quiet, quantize: 4, memoryBudgetBytes: 1024 }),
    /exceeds the GPU memory budget of 1\.0 KiB/,
  );
});

Deno.test("a peft adapter runs on an int4 Llama base, and merging into int4 weights is refused", async () => {
  const dir = dirOf("qwen3-tiny");
  const ids = batchOf(dir);
  const base = await loadLlama(dir, { bits: 4, groupSize: 32 });
  const withAdapter = await loadModel(dir, {
    ...quiet,
    quantize: { bits: 4, groupSize: 32 },
    adapter: `${dir}/adapter`,
  }) as LlamaModel;
  try {
    const [a, b] = [await base.forward(ids), await withAdapter.forward(ids)];
    assert.ok(a.some((v, i) => v !== b[i]), "the adapter changes the logits");
    // Against the f64 forward of W_dequantized + scaling · B·A.
    const config = await readLlamaConfig(dir);
    const spec = quantSpecOf({ bits: 4, groupSize: 32 });
    const weights = await dequantizedWeights(dir, config, spec);
    const adapter = await loadLoraAdapter(`${dir}/adapter`, {
      linearModules: linearShapes(config),
      name: dir,
    });
    for (const [name, m] of adapter.modules) {
      const w = weights.get(`${name}.weight`)!;
      for (let o = 0; o < m.outFeatures; o++) {
        for (let i = 0; i < m.inFeatures; i++) {
          let s = 0;
          for (let k = 0; k < m.r; k++) s += m.b[o * m.r + k] * m.a[k * m.inFeatures + i];
          w[o * m.inFeatures + i] += adapter.scaling * s;
        }
      }
    }
    const ref = llamaForward64(config, weights, ids);
    const S = ids[0].length, V = config.vocabSize;
    const pads = ids.map((row) => row.findIndex((t) => t !== config.padTokenId));
    const sel = pads.map((p, r) => [(r * S + p) * V, (r + 1) * S * V] as [number, number]);
    const r = compareRule(b, ref, 2e-5, 1e-6, sel);
    assert.ok(r.ok, `adapter on int4: max |diff| ${r.maxDiff} > ${r.limit}`);
    await assert.rejects(() => mergeLlamaAdapter(withAdapter), /cannot be merged/);
  } finally {
    base.dispose();
    withAdapter.dispose();
  }
});
