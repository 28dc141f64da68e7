// ChatGLM-6B's int8/int4 checkpoints (fixtures/chatglm6b-tiny-quantized): the goldens (logits
// and greedy tokens) through loadModel, on both kernel designs; --quantize at load equals the
// stored checkpoint; bad checkpoints are refused naming the tensor and the rule.
import assert from "node:assert/strict";
import { getGpu } from "../core/gpu/device.ts";
import { openCheckpoint, readTensor } from "../core/io/checkpoint.ts";
import { writeSafetensors } from "../core/io/safetensors.ts";
import type { Dtype } from "../core/io/dtype.ts";
import type { ChatGLMModel } from "../core/models/chatglm/model.ts";
import { loadModel, type LoadModelOptions, mergeAdapter } from "../core/models/chatglm/load.ts";
import { compareRule } from "./reference/chatglm.ts";

const FIX = new URL("./fixtures/chatglm6b-tiny-quantized/", import.meta.url).pathname;
const quiet = { log: () => {}, progressBar: false } satisfies LoadModelOptions;
await getGpu();

interface Golden {
  input_ids: number[][];
  pads: number[];
  greedy_tokens: number[][];
  max_new_tokens: number;
  compare: { rtol: number; atol: number };
}

function golden(bits: 8 | 4): { g: Golden; logits: Float32Array } {
  const dir = `${FIX}int${bits}/goldens/`;
  const g = JSON.parse(Deno.readTextFileSync(`${dir}index.json`)) as Golden;
  const bytes = Deno.readFileSync(`${dir}forward_batch.logits.f32`);
  return { g, logits: new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4) };
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

function checkLogits(name: string, logits: Float32Array, g: Golden, want: Float32Array) {
  const S = g.input_ids[0].length, V = want.length / (g.input_ids.length * S);
  const ranges = g.pads.map((p, b) => [(b * S + p) * V, (b + 1) * S * V] as [number, number]);
  const r = compareRule(logits, want, g.compare.rtol, g.compare.atol, ranges);
  assert.ok(r.ok, `${name}: max |diff| ${r.maxDiff} > ${r.limit}`);
}

/** Greedy tokens with the KV cache (no text-vocab mask: the tiny vocabulary is all text). */
async function greedy(model: ChatGLMModel, g: Golden): Promise<number[][]> {
  const V = model.config.vocabSize;
  const prompts = g.input_ids.map((row, b) => row.slice(g.pads[b]));
  const width = Math.max(...prompts.map((p) => p.length));
  const rows = prompts.map((p) => [
    ...new Array(width - p.length).fill(model.config.padTokenId),
    ...p,
  ]);
  const cache = model.createCache(rows.length, width + g.max_new_tokens);
  const tokens: number[][] = rows.map(() => []);
  try {
    let logits = await model.prefill(rows, cache);
    for (let step = 0; step < g.max_new_tokens; step++) {
      const next = rows.map((_, b) => {
        let best = 0;
        for (let v = 1; v < V; v++) if (logits[b * V + v] > logits[b * V + best]) best = v;
        return best;
      });
      next.forEach((t, b) => tokens[b].push(t));
      if (step + 1 < g.max_new_tokens) logits = await model.decodeStep(next, cache);
    }
  } finally {
    cache.free();
  }
  return tokens;
}

for (const bits of [8, 4] as const) {
  for (const design of ["texture", "buffer"] as const) {
    Deno.test(`int${bits} checkpoint (${design}): goldens' logits and greedy tokens`, async () => {
      const { g, logits: want } = golden(bits);
      await withModel(`${FIX}int${bits}`, { dtype: "f32", quantDesign: design }, async (m) => {
        assert.equal(m.layers[0].queryKeyValue.weight.dtype, bits === 8 ? "q8" : "q4");
        assert.equal(m.parameters().get("lm_head.weight"), m.embedding.weight, "tied head");
        checkLogits(`int${bits} ${design}`, await m.forward(g.input_ids), g, want);
        assert.deepEqual(await greedy(m, g), g.greedy_tokens);
      });
    });
  }
  Deno.test(`--quantize ${bits} on f16-tied/ gives the int${bits} goldens (f16 storage)`, async () => {
    const { g, logits: want } = golden(bits);
    await withModel(`${FIX}f16-tied`, { dtype: "f16", quantize: bits }, async (m) => {
      checkLogits(`quantize ${bits}`, await m.forward(g.input_ids), g, want);
      assert.deepEqual(await greedy(m, g), g.greedy_tokens);
    });
  });
}

/** A copy of a fixture checkpoint as safetensors with tensors and config patched. */
async function patchedCopy(
  from: string,
  patchConfig: Record<string, unknown>,
  patchTensor: (
    name: string,
    t: { dtype: Dtype; shape: number[]; data: Uint8Array },
  ) => { dtype: Dtype; shape: number[]; data: Uint8Array } | null,
): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "quant-bad-" });
  const config = JSON.parse(await Deno.readTextFile(`${from}/config.json`));
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...config, ...patchConfig }));
  const ckpt = await openCheckpoint(from);
  const tensors = [];
  for (const name of ckpt.tensorNames) {
    const t = await readTensor(ckpt, name);
    const p = patchTensor(name, { dtype: t.dtype, shape: t.shape, data: t.data });
    if (p) tensors.push({ name, ...p });
  }
  await writeSafetensors(`${dir}/model.safetensors`, tensors);
  return dir;
}

Deno.test("bad quantized checkpoints are refused naming the tensor and the rule", async () => {
  const keep = (_: string, t: { dtype: Dtype; shape: number[]; data: Uint8Array }) => t;
  const bit3 = await patchedCopy(`${FIX}int4`, { quantization_bit: 3 }, keep);
  const shortScale = await patchedCopy(
    `${FIX}int8`,
    {},
    (name, t) =>
      name === "transformer.layers.1.attention.dense.weight_scale"
        ? { ...t, shape: [63], data: t.data.slice(0, 126) }
        : t,
  );
  // An odd MLP width: dense_4h_to_h then has an odd input width, which int4 cannot pack.
  const odd = await patchedCopy(`${FIX}f16-tied`, { inner_hidden_size: 255 }, (name, t) => {
    if (name.endsWith("dense_h_to_4h.weight")) {
      return { ...t, shape: [255, 64], data: t.data.slice(0, 255 * 64 * 2) };
    }
    if (name.endsWith("dense_h_to_4h.bias")) {
      return { ...t, shape: [255], data: t.data.slice(0, 510) };
    }
    if (name.endsWith("dense_4h_to_h.weight")) {
      const out = new Uint8Array(64 * 255 * 2);
      for (let r = 0; r < 64; r++) out.set(t.data.subarray(r * 512, r * 512 + 510), r * 510);
      return { ...t, shape: [64, 255], data: out };
    }
    return t;
  });
  try {
    await assert.rejects(
      loadModel(bit3, quiet),
      /config\.json: quantization_bit is 3: only 4 and 8/,
    );
    await assert.rejects(
      loadModel(shortScale, quiet),
      /transformer\.layers\.1\.attention\.dense\.weight_scale has shape \[63\], expected \[64\] \(one f16 scale per output row\)/,
    );
    await assert.rejects(
      loadModel(odd, { ...quiet, quantize: 4 }),
      /transformer\.layers\.0\.mlp\.dense_4h_to_h\.weight: input width 255 is odd; int4 packs two columns per byte/,
    );
    await assert.rejects(
      loadModel(`${FIX}int8`, { ...quiet, quantize: 4 }),
      /already quantized \(int8, per-row scales\); it cannot be re-quantized as int4/,
    );
  } finally {
    for (const d of [bit3, shortScale, odd]) await Deno.remove(d, { recursive: true });
  }
});

Deno.test("a LoRA adapter runs on an int4 base (f32 branch); merging into int4 is refused", async () => {
  const adapter = new URL("./fixtures/chatglm6b-tiny/adapter-qkv", import.meta.url).pathname;
  const { g } = golden(4);
  const base = await loadModel(`${FIX}int4`, { ...quiet, dtype: "f32" });
  const tuned = await loadModel(`${FIX}int4`, { ...quiet, dtype: "f32", adapter });
  try {
    const a = await base.forward(g.input_ids), b = await tuned.forward(g.input_ids);
    assert.ok(b.every(Number.isFinite));
    assert.ok(a.some((v, i) => Math.abs(v - b[i]) > 1e-3), "the adapter changes the logits");
    await assert.rejects(mergeAdapter(tuned), /weights are quantized .* cannot be merged/);
  } finally {
    base.dispose();
    tuned.dispose();
  }
});

Deno.test("--quantize keeps one tensor for an lm_head equal to the embeddings (the full release)", async () => {
  const dir = await patchedCopy(`${FIX}f16-tied`, {}, (_name, t) => t);
  try {
    // Add lm_head = the embeddings, as THUDM's full-precision release stores it.
    const ck = await openCheckpoint(dir);
    const tensors = [];
    for (const name of ck.tensorNames) {
      const t = await readTensor(ck, name);
      tensors.push({ name, dtype: t.dtype, shape: t.shape, data: t.data });
      if (name === "transformer.word_embeddings.weight") {
        tensors.unshift({ name: "lm_head.weight", dtype: t.dtype, shape: t.shape, data: t.data });
      }
    }
    await writeSafetensors(`${dir}/model.safetensors`, tensors);
    const { g, logits: want } = golden(4);
    await withModel(dir, { dtype: "f32", quantize: 4 }, async (m) => {
      assert.equal(m.lmHead.weight, m.embedding.weight);
      checkLogits("tied by content", await m.forward(g.input_ids), g, want);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
