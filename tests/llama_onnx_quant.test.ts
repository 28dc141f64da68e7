// Quantized ONNX exports of the Llama family (core/onnx/export_llama.ts with graph_parts.ts'
// MatMulNBits linears): on the tiny Qwen2, Qwen3 and Llama 3 fixtures, int4 group-wise, int8 per
// row, and int4 with the embeddings (and head) quantized, exported with `quantize` and run by
// ONNX Runtime, against the WebGPU model loaded with the same `quantize` (the same quantized
// weights, other weights f32). Tolerance: max |diff| ≤ 1e-4·max|webgpu| + 1e-6 over real
// positions (the float export's rule: MatMulNBits with accuracy_level 0 multiplies the same
// dequantized weights in f32), and the greedy tokens with the KV cache are equal. Also: a
// pre-quantized checkpoint written by `quantizeCheckpoint` exports to the same logits without the
// flag; `export-onnx --quantize` and `infer --backend onnx` as commands on a Qwen3 directory with
// the real tokenizer; and the refusals.

import assert from "node:assert/strict";
import { exportModelToOnnx } from "../core/onnx/export_dir.ts";
import { ONNX_EXPORT_INFO, ONNX_MODEL_FILE } from "../core/onnx/export_info.ts";
import { buildLlamaGraph } from "../core/onnx/export_llama.ts";
import { loadModel } from "../core/models/load.ts";
import { readLlamaConfig } from "../core/models/llama/config.ts";
import type { LlamaModel } from "../core/models/llama/model.ts";
import { type QuantizeOption, quantSpecOf } from "../core/models/chatglm/quantized.ts";
import { LLAMA_QUANT_LAYOUT } from "../core/quant/format.ts";
import { quantizeCheckpoint } from "../core/quant/write.ts";
import { loadOnnxModel } from "../serve/onnx/runner.ts";
import { argmax, assertWithinRule, loadGoldens, realRanges } from "./reference/chatglm.ts";
import { runScript } from "./helpers/cli.ts";
import { writeQwen3Dir } from "./helpers/qwen3_model_dir.ts";

const MODELS = ["qwen2-tiny", "qwen3-tiny", "llama3-tiny"];
const dirOf = (m: string) => new URL(`./fixtures/llama-family/${m}`, import.meta.url).pathname;
const quiet = { log: () => {}, progressBar: false, dtype: "f32" as const };
const tmp = await Deno.makeTempDir({ prefix: "medglm-llama-onnx-quant-" });
globalThis.addEventListener("unload", () => Deno.removeSync(tmp, { recursive: true }));

const SPECS: { label: string; quantize: QuantizeOption }[] = [
  { label: "int4 group 32", quantize: { bits: 4, groupSize: 32 } },
  { label: "int8 per row", quantize: 8 },
  { label: "int4 group 16 + embeddings", quantize: { bits: 4, groupSize: 16, embeddings: true } },
];

/** The golden batch (left-padded rows) and its pads. */
function batchOf(dir: string): { rows: number[][]; pads: number[] } {
  const goldens = loadGoldens(dir);
  const ids = goldens.read("forward_batch", "input_ids");
  const [B, S] = ids.shape;
  const rows = Array.from({ length: B }, (_, b) => [...ids.data.subarray(b * S, (b + 1) * S)]);
  const pads = (goldens.cases.get("forward_batch")!.values as { pad: number[] }).pad;
  return { rows, pads };
}

/** Greedy decoding with the cache, in lockstep: the tokens and each step's logits. */
async function greedy<C extends { free(): void }>(
  model: {
    createCache(batch: number, positions: number): C;
    prefill(rows: number[][], cache: C): Promise<Float32Array>;
    decodeStep(ids: number[], cache: C): Promise<Float32Array>;
  },
  rows: number[][],
  V: number,
  steps: number,
): Promise<{ tokens: number[][]; logits: Float32Array[] }> {
  const cache = model.createCache(rows.length, rows[0].length + steps);
  const tokens: number[][] = rows.map(() => []);
  const logits: Float32Array[] = [];
  try {
    let l = await model.prefill(rows, cache);
    for (let t = 0; t < steps; t++) {
      logits.push(l);
      const next = rows.map((_, b) => argmax(l.subarray(b * V, (b + 1) * V)));
      next.forEach((id, b) => tokens[b].push(id));
      if (t + 1 < steps) l = await model.decodeStep(next, cache);
    }
  } finally {
    cache.free();
  }
  return { tokens, logits };
}

const STEPS = 4;

for (const name of MODELS) {
  const dir = dirOf(name);
  for (const { label, quantize } of SPECS) {
    Deno.test(`${name} onnx ${label}: ORT (MatMulNBits) agrees with WebGPU's quantized model`, async () => {
      const spec = quantSpecOf(quantize);
      const out = `${tmp}/${name}-${label.replaceAll(" ", "_")}`;
      const info = await exportModelToOnnx(dir, out, { quantize, quantAccuracy: "f32" });
      assert.deepEqual(info.quantization, spec);
      assert.equal(info.quantAccuracy, "f32");
      const onnx = await loadOnnxModel(out, { modelDir: dir });
      const gpu = await loadModel(dir, { ...quiet, quantize }) as LlamaModel;
      try {
        assert.deepEqual(gpu.config.quantization, spec);
        const { rows, pads } = batchOf(dir);
        const V = onnx.config.vocabSize, S = rows[0].length;
        assertWithinRule(
          "batch",
          await onnx.forward(rows),
          await gpu.forward(rows),
          realRanges(pads, S, V),
          "webgpu",
        );
        const mine = await greedy(onnx, rows, V, STEPS);
        const theirs = await greedy(gpu, rows, V, STEPS);
        mine.logits.forEach((l, t) =>
          assertWithinRule(`step ${t}`, l, theirs.logits[t], undefined, "webgpu")
        );
        assert.deepEqual(mine.tokens, theirs.tokens);
      } finally {
        gpu.dispose();
        await onnx.dispose();
      }
    });
  }
}

Deno.test("llama onnx quantized graph: the seven projections (and the head with embeddings) are MatMulNBits, no float copy", async () => {
  for (const name of MODELS) {
    const config = await readLlamaConfig(dirOf(name));
    for (const { quantize } of SPECS) {
      const spec = quantSpecOf(quantize);
      const graph = buildLlamaGraph(config, () => Promise.reject(new Error("not read")), {
        quant: {
          ...spec,
          layout: LLAMA_QUANT_LAYOUT,
          accuracyLevel: 0,
          read: () => Promise.reject(new Error("not read")),
        },
      });
      const nbits = graph.nodes.filter((n) => n.op === "MatMulNBits");
      assert.equal(nbits.length, 7 * config.numLayers + (spec.embeddings ? 1 : 0), name);
      assert.ok(nbits.every((n) => n.domain === "com.microsoft"));
      // Block size = the group size for the projections, the row (up to 128) for the head.
      for (const n of nbits) {
        const block = Number(n.attributes!.block_size.value);
        const K = Number(n.attributes!.K.value);
        const want = n.name!.endsWith("lm_head.weight.mm") || spec.groupSize === null
          ? Math.min(128, 2 ** Math.ceil(Math.log2(Math.max(16, K))))
          : spec.groupSize;
        assert.equal(block, want, `${name} ${n.name}`);
      }
      // No float matrix left for the projections: only norms (and the float table/head).
      const floats = graph.initializers.filter((t) => t.dtype === "float32" && t.dims.length === 2)
        .map((t) => t.name);
      const allowed = spec.embeddings
        ? []
        : ["model.embed_tokens.weight", ...(config.tieWordEmbeddings ? [] : ["lm_head.weight"])];
      assert.deepEqual(floats.filter((n) => !n.endsWith(".row_scales")), allowed, name);
    }
  }
});

Deno.test("llama onnx: a checkpoint written by quantizeCheckpoint exports quantized without the flag, to the same logits", async () => {
  const dir = dirOf("qwen3-tiny");
  const spec = { bits: 4 as const, groupSize: 32, embeddings: false };
  const qdir = `${tmp}/qwen3-int4-g32-checkpoint`;
  await quantizeCheckpoint(dir, qdir, spec, { progressBar: false });
  const info = await exportModelToOnnx(qdir, `${qdir}/onnx`, { quantAccuracy: "f32" });
  assert.deepEqual(info.quantization, spec);
  const pre = await loadOnnxModel(`${qdir}/onnx`, { modelDir: qdir });
  const atExport = await loadOnnxModel(`${tmp}/qwen3-tiny-int4_group_32`, { modelDir: dir });
  try {
    const { rows } = batchOf(dir);
    // The same stored values and scales: the same graph numbers, bit for bit.
    assert.deepEqual(await pre.forward(rows), await atExport.forward(rows));
  } finally {
    await pre.dispose();
    await atExport.dispose();
  }
  // Asking for another format than the checkpoint's is refused naming both.
  await assert.rejects(
    () => exportModelToOnnx(qdir, `${tmp}/requant`, { quantize: 8 }),
    /already quantized \(int4, group size 32\); it cannot be re-quantized as int8, per-row scales/,
  );
});

Deno.test("llama onnx quantized: refusals name the option, the tensor and the rule, and write nothing", async () => {
  const dir = dirOf("llama3-tiny");
  // MatMulNBits needs a power-of-two block of at least 16 (a valid int4 group of 8 is not).
  await assert.rejects(
    () => exportModelToOnnx(dir, `${tmp}/g8`, { quantize: { bits: 4, groupSize: 8 } }),
    /MatMulNBits: group size 8 is not a power of two >= 16/,
  );
  await assert.rejects(() => Deno.stat(`${tmp}/g8/${ONNX_EXPORT_INFO}`), Deno.errors.NotFound);
  // A group that does not divide an input width (160 for down_proj), named with the tensor.
  await assert.rejects(
    () => exportModelToOnnx(dir, `${tmp}/g64`, { quantize: { bits: 4, groupSize: 64 } }),
    /cannot quantize the weights as int4, group size 64: .*mlp\.down_proj\.weight/,
  );
  // An adapter cannot be merged into int8/int4 weights.
  await assert.rejects(
    () => exportModelToOnnx(dir, `${tmp}/lora`, { quantize: 8, adapter: `${dir}/adapter` }),
    /an adapter cannot be merged into quantized weights/,
  );
  for (const out of ["g64", "lora"]) {
    await assert.rejects(
      () => Deno.stat(`${tmp}/${out}/${ONNX_EXPORT_INFO}`),
      Deno.errors.NotFound,
    );
  }
});

Deno.test("llama onnx quantized: export-onnx --quantize and infer --backend onnx as commands on a Qwen3 directory", async () => {
  // Random weights, the real vocabulary and tokenizer, a tiny width (hidden 32, MLP 64).
  const dir = await writeQwen3Dir("medglm-llama-onnx-quant-cli-");
  try {
    const exp = await runScript("serve/onnx/export_cli.ts", [
      "--model",
      dir,
      "--out",
      `${dir}/onnx`,
      "--quantize",
      "4,group=16",
      "--quant-accuracy",
      "f32",
    ]);
    assert.equal(exp.code, 0, exp.stderr);
    assert.match(exp.stderr, /wrote .*\/onnx\/model\.onnx \(int4, group size 16\)/);
    const float = (await Deno.stat(`${dir}/model.safetensors`)).size;
    const q = (await Deno.stat(`${dir}/onnx/${ONNX_MODEL_FILE}`)).size;
    // The embedding table (151936 × 32) stays f32 and dominates; the projections shrink.
    assert.ok(q < float, `int4 export ${q} B vs f32 checkpoint ${float} B`);
    const args = ["--model", dir, "--prompt", "头痛怎么办", "--max-new-tokens", "6"];
    const onnx = await runScript("serve/infer_cli.ts", [
      ...args,
      "--temperature",
      "0",
      "--backend",
      "onnx",
    ]);
    assert.equal(onnx.code, 0, onnx.stderr);
    assert.match(onnx.stderr, /backend: onnx \(requested/);
    // The same greedy answer from WebGPU with the same quantized weights.
    const webgpu = await runScript("serve/infer_cli.ts", [
      ...args,
      "--temperature",
      "0",
      "--backend",
      "webgpu",
      "--quantize",
      "4,group=16",
      "--dtype",
      "f32",
    ]);
    assert.equal(webgpu.code, 0, webgpu.stderr);
    assert.equal(onnx.stdout, webgpu.stdout);
    assert.ok(onnx.stdout.length > 1, JSON.stringify(onnx.stdout));
    // A bad flag value is refused naming the flag.
    const bad = await runScript("serve/onnx/export_cli.ts", [
      "--model",
      dir,
      "--out",
      `${dir}/bad`,
      "--quantize",
      "3",
    ]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--quantize/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
