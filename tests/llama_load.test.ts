// Loading Llama-family checkpoints (tests/fixtures/llama-family/README.md §3): sharded
// safetensors with an index (as real Qwen3-8B / Llama-3.1-8B ship), the v4 config layout, an
// old Llama-era rotary `inv_freq` tensor (skipped), a tied model that also stores lm_head (must
// equal the embedding), and mismatching checkpoints refused before any upload.

import assert from "node:assert/strict";
import { iterateTensors, openCheckpoint } from "../core/io/checkpoint.ts";
import { writeSafetensors } from "../core/io/safetensors.ts";
import { bytesToF32 } from "../core/io/dtype.ts";
import { loadLlamaModel } from "../core/models/llama/load.ts";
import { compareRule, loadGoldens } from "./reference/chatglm.ts";

const FIX = new URL("./fixtures/llama-family", import.meta.url).pathname;
const quiet = { log: () => {}, progressBar: false };

interface Stored {
  name: string;
  shape: number[];
  data: Float32Array;
}

async function tensorsOf(dir: string): Promise<Stored[]> {
  const out: Stored[] = [];
  for await (const t of iterateTensors(await openCheckpoint(dir))) {
    out.push({ name: t.name, shape: t.shape, data: bytesToF32(t.data, t.dtype) });
  }
  return out;
}

/** A model directory: `model`'s configs with the given tensors, in `shards` files + index. */
async function writeModel(model: string, tensors: Stored[], shards: number, v4 = false) {
  const dir = await Deno.makeTempDir();
  await Deno.copyFile(
    `${FIX}/${model}/${v4 ? "config.v4-layout.json" : "config.json"}`,
    `${dir}/config.json`,
  );
  await Deno.copyFile(`${FIX}/${model}/generation_config.json`, `${dir}/generation_config.json`);
  const f = (t: Stored) => ({ name: t.name, dtype: "F32" as const, shape: t.shape, data: t.data });
  if (shards === 1) {
    await writeSafetensors(`${dir}/model.safetensors`, tensors.map(f), { format: "pt" });
    return dir;
  }
  const weightMap: Record<string, string> = {};
  const per = Math.ceil(tensors.length / shards);
  for (let i = 0; i < shards; i++) {
    const file = `model-0000${i + 1}-of-0000${shards}.safetensors`;
    const part = tensors.slice(i * per, (i + 1) * per);
    for (const t of part) weightMap[t.name] = file;
    await writeSafetensors(`${dir}/${file}`, part.map(f), { format: "pt" });
  }
  await Deno.writeTextFile(
    `${dir}/model.safetensors.index.json`,
    JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }),
  );
  return dir;
}

async function logitsOf(dir: string, ids: number[][]): Promise<Float32Array> {
  const model = await loadLlamaModel(dir, quiet);
  try {
    return await model.forward(ids);
  } finally {
    model.dispose();
  }
}

Deno.test("sharded safetensors + v4 config + inv_freq + tied lm_head load to the same model", async () => {
  const goldens = loadGoldens(`${FIX}/qwen3-tiny`);
  const prompts = (goldens.cases.get("forward_batch")!.values as { prompts_ids: number[][] })
    .prompts_ids;
  const ids = [prompts[1]];
  const tensors = await tensorsOf(`${FIX}/qwen3-tiny`);
  const want = await logitsOf(`${FIX}/qwen3-tiny`, ids);
  const embed = tensors.find((t) => t.name === "model.embed_tokens.weight")!;
  const extra: Stored[] = [
    ...tensors,
    {
      name: "model.layers.0.self_attn.rotary_emb.inv_freq",
      shape: [16],
      data: new Float32Array(16),
    },
    { name: "lm_head.weight", shape: embed.shape, data: embed.data },
  ];
  const dir = await writeModel("qwen3-tiny", extra, 3, true);
  try {
    const got = await logitsOf(dir, ids);
    const r = compareRule(got, want, 0, 0);
    assert.ok(r.ok, `sharded logits differ by ${r.maxDiff}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkpoints that do not match the config are refused with the tensor named", async () => {
  const tensors = await tensorsOf(`${FIX}/qwen2-tiny`);
  const cases: [Stored[], RegExp][] = [
    [
      tensors.filter((t) => t.name !== "model.layers.1.self_attn.k_proj.bias"),
      /missing tensor model\.layers\.1\.self_attn\.k_proj\.bias/,
    ],
    [[...tensors, {
      name: "model.layers.0.self_attn.o_proj.bias",
      shape: [64],
      data: new Float32Array(64),
    }], /unexpected tensor model\.layers\.0\.self_attn\.o_proj\.bias/],
  ];
  const embed = tensors.find((t) => t.name === "model.embed_tokens.weight")!;
  const other = Float32Array.from(embed.data, (v) => v + 1);
  cases.push([
    [...tensors, { name: "lm_head.weight", shape: embed.shape, data: other }],
    /lm_head\.weight differs from model\.embed_tokens\.weight/,
  ]);
  for (const [set, re] of cases) {
    const dir = await writeModel("qwen2-tiny", set, 1);
    try {
      await assert.rejects(() => loadLlamaModel(dir, quiet), re);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }
});

Deno.test("f16 weights on the GPU (f32 compute) stay close to the f32 logits", async () => {
  const goldens = loadGoldens(`${FIX}/llama3-tiny`);
  const gl = goldens.read("forward_batch", "logits").data as Float32Array;
  const ids = goldens.read("forward_batch", "input_ids");
  const [B, S] = ids.shape;
  const pads = (goldens.cases.get("forward_batch")!.values as { pad: number[] }).pad;
  const rows = Array.from({ length: B }, (_, b) => [...ids.data.subarray(b * S, (b + 1) * S)]);
  const model = await loadLlamaModel(`${FIX}/llama3-tiny`, { ...quiet, dtype: "f16" });
  try {
    assert.equal(model.lmHead.weight.dtype, "f16");
    const got = await model.forward(rows);
    const V = model.config.vocabSize;
    // f16 storage rounds each weight by up to 2^-11 relative: a loose bound, not the golden rule.
    const r = compareRule(got, gl, 1e-2, 0, pads.map((p, b) => [(b * S + p) * V, (b + 1) * S * V]));
    assert.ok(r.ok, `f16 logits differ by ${r.maxDiff} (limit ${r.limit})`);
  } finally {
    model.dispose();
  }
});
