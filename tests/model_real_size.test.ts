/**
 * The real-size load path at small width: make-checkpoint's layout, streaming load byte-identical
 * to the checkpoint reader for every fixture layout, one copy of each weight (the CPU-packed
 * texture equals the GPU-packed one), the tied output layer, weights split under a forced small
 * binding limit, clear refusals (missing shard, tensor twice, hostile sizes), and the memory plan
 * against the measured peak of a mid-size load.
 */

import assert from "node:assert/strict";
import { createGpu, getGpu, type Gpu } from "../core/gpu/device.ts";
import { beginRecording, submit } from "../core/gpu/recording.ts";
import { openCheckpoint, readTensor as readStored } from "../core/io/checkpoint.ts";
import { convertBytes } from "../core/io/dtype.ts";
import { writeSafetensors } from "../core/io/safetensors.ts";
import { openTorchZip } from "../core/io/torch_zip.ts";
import { encodeStoredZip } from "../core/io/torch_writer.ts";
import { pickleStateDict } from "../core/io/pickle_writer.ts";
import { embedding, hostPackedWeight, prepackWeight } from "../core/kernels/mod.ts";
import { main as makeCheckpointMain } from "../core/cli/make_checkpoint.ts";
import { readChatGLMConfig } from "../core/models/chatglm/config.ts";
import { loadModel, type LoadModelOptions } from "../core/models/chatglm/load.ts";
import { planMemory } from "../core/models/chatglm/memory_plan.ts";
import {
  type ChatGLMSizes,
  writeSyntheticCheckpoint,
} from "../core/models/chatglm/synthetic_checkpoint.ts";
import {
  dropStorage,
  emptyTensor,
  readRaw,
  readTensor,
  releaseTensor,
  type Tensor,
  uploadTensor,
} from "../core/tensor/tensor.ts";
import { loadTokenizer } from "../data/mod.ts";
import { withTempDir } from "./helpers/temp_dir.ts";

const TINY = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const TOKENIZER = new URL("./fixtures/chatglm-tokenizer/ice_text.model", import.meta.url).pathname;
const quiet = { log: () => {}, progressBar: false } satisfies LoadModelOptions;
const PROMPT = [5, 6, 1657, 1660];

const SMALL: ChatGLMSizes = {
  hiddenSize: 64,
  numHeads: 4,
  innerHiddenSize: 256,
  vocabSize: 130528,
  numLayers: 2,
  maxSequenceLength: 256,
};

const withTemp = (fn: (dir: string) => Promise<void>) => withTempDir("medglm-real-size-", fn);

/** The rgba32 texels of a 2-D texture, row by row. */
async function readTexture(gpu: Gpu, texture: GPUTexture): Promise<Uint8Array> {
  const rowBytes = texture.width * 16;
  const padded = Math.ceil(rowBytes / 256) * 256;
  const buffer = gpu.device.createBuffer({
    size: padded * texture.height,
    usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ,
  });
  const enc = gpu.device.createCommandEncoder();
  enc.copyTextureToBuffer({ texture }, { buffer, bytesPerRow: padded }, [
    texture.width,
    texture.height,
  ]);
  gpu.device.queue.submit([enc.finish()]);
  await buffer.mapAsync(GPUMapMode.READ);
  const mapped = new Uint8Array(buffer.getMappedRange());
  const out = new Uint8Array(rowBytes * texture.height);
  for (let r = 0; r < texture.height; r++) {
    out.set(mapped.subarray(r * padded, r * padded + rowBytes), r * rowBytes);
  }
  buffer.unmap();
  buffer.destroy();
  return out;
}

/** The forward textures of a weight ("nk" order), in key order. */
function forwardTextures(w: Tensor): GPUTexture[] {
  const out: GPUTexture[] = [];
  const keys = [...w.meta.attachments.keys()].filter((k) => k.includes(":nk:")).sort();
  for (const k of keys) {
    out.push(...(w.meta.attachments.get(k) as unknown as { textures: GPUTexture[] }).textures);
  }
  return out;
}

Deno.test("make-checkpoint: the real release layout at small width, loadable, real token ids", async () => {
  await withTemp(async (dir) => {
    const made = await writeSyntheticCheckpoint(dir, {
      sizes: SMALL,
      shards: 2,
      tokenizerModel: await Deno.readFile(TOKENIZER),
    });
    assert.deepEqual(made.files.slice(0, 3), [
      "pytorch_model-00001-of-00002.bin",
      "pytorch_model-00002-of-00002.bin",
      "pytorch_model.bin.index.json",
    ]);
    const index = JSON.parse(await Deno.readTextFile(`${dir}/pytorch_model.bin.index.json`));
    const names = Object.keys(index.weight_map);
    assert.deepEqual(names, [...names].sort());
    assert.ok(names.includes("transformer.layers.1.attention.rotary_emb.inv_freq"));
    assert.equal(index.metadata.total_size, made.tensorBytes);
    // Same keys in the same order as the real config.json (the fixture copies them).
    const real = Object.keys(JSON.parse(await Deno.readTextFile(`${TINY}/config.json`)));
    const ours = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    assert.deepEqual(Object.keys(ours), real);
    assert.equal(ours.gmask_token_id, 130001);
    const tok = await loadTokenizer(dir);
    assert.deepEqual(tok.encode("头痛").slice(-2), [130001, 130004]);
    // Deterministic: the same seed gives the same bytes.
    await withTemp(async (again) => {
      await writeSyntheticCheckpoint(again, { sizes: SMALL, shards: 2 });
      for (const f of made.files.slice(0, 2)) {
        assert.deepEqual(await Deno.readFile(`${again}/${f}`), await Deno.readFile(`${dir}/${f}`));
      }
    });
    const model = await loadModel(dir, quiet);
    try {
      const logits = await model.forward([[5, 6, 130001, 130004]]);
      assert.equal(logits.length, 4 * SMALL.vocabSize);
      assert.ok(logits.every(Number.isFinite));
    } finally {
      model.dispose();
    }
  });
});

Deno.test("make-checkpoint CLI: flags, a tied small checkpoint, bad flags exit 2", async () => {
  await withTemp(async (dir) => {
    const args = ["--out", dir, "--preset", "tiny", "--vocab", "2048", "--no-lm-head"];
    assert.equal(await makeCheckpointMain([...args, "--format", "safetensors"]), 0);
    const ckpt = await openCheckpoint(dir);
    assert.equal(ckpt.format, "safetensors");
    assert.ok(!ckpt.locate.has("lm_head.weight"));
    const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    assert.equal(config.gmask_token_id, 1657); // a vocabulary without the real ids: the tokenizer's
    assert.equal(await makeCheckpointMain(["--out", dir, "--layers", "x"]), 2);
    assert.equal(await makeCheckpointMain(["--out", dir, "--format", "zip"]), 2);
    assert.equal(await makeCheckpointMain(["--layers", "2"]), 2);
  });
});

Deno.test("streaming load: weights byte-identical to the checkpoint reader, every fixture layout", async () => {
  const gpu = await getGpu();
  for (const sub of ["", "pytorch", "bf16-sharded"]) {
    const dir = sub ? `${TINY}/${sub}` : TINY;
    const ckpt = await openCheckpoint(dir);
    for (const dtype of gpu.hasF16 ? ["f32", "f16"] as const : ["f32"] as const) {
      // trainable keeps every storage buffer, so each weight can be read back as uploaded.
      const kept = await loadModel(dir, { ...quiet, dtype, trainable: true });
      const packed = await loadModel(dir, { ...quiet, dtype });
      try {
        for (const [name, t] of kept.parameters()) {
          const stored = await readStored(ckpt, name);
          const want = convertBytes(stored.data, stored.dtype, dtype === "f16" ? "F16" : "F32");
          assert.deepEqual(new Uint8Array(await readRaw(t)), want, `${dir} ${dtype} ${name}`);
        }
        // One copy: the weights the forward reads as textures have no buffer, and their
        // CPU-packed textures equal what the GPU pack makes from the buffer.
        let packedCount = 0;
        for (const [name, t] of packed.parameters()) {
          if (!t.meta.storageDropped) continue;
          packedCount++;
          const ref = kept.parameters().get(name)!;
          const rec = beginRecording(gpu);
          assert.ok(prepackWeight(rec, ref));
          await submit(rec);
          const a = forwardTextures(t), b = forwardTextures(ref);
          assert.equal(a.length, b.length);
          for (let i = 0; i < a.length; i++) {
            assert.deepEqual(await readTexture(gpu, a[i]), await readTexture(gpu, b[i]), name);
          }
          await assert.rejects(() => readRaw(t), /has no storage buffer \(kept only as its packed/);
        }
        if (gpu.isSoftware) assert.ok(packedCount > 0, "lm_head is packed on a software adapter");
        assert.deepEqual(
          await packed.forward([PROMPT]),
          await kept.forward([PROMPT]),
          `${dir} ${dtype}: logits`,
        );
      } finally {
        kept.dispose();
        packed.dispose();
      }
    }
  }
});

Deno.test("host upload equals the GPU pack: f16 and f32, odd K, long rows, column slices, chunks, pieces", async () => {
  const gpu = await getGpu();
  if (!gpu.isSoftware) {
    console.log("skipped: weights are packed into textures only on a software adapter");
    return;
  }
  const maxDim = gpu.limits.maxTextureDimension2D;
  const cases: { N: number; K: number; dtype: "f16" | "f32"; chunkBytes?: number }[] = [
    { N: 4096, K: 20, dtype: "f16" }, // K % 8 ≠ 0: rows copied with zero padding
    { N: 512, K: 136, dtype: "f16", chunkBytes: 256 * 136 * 2 }, // two chunks
    { N: 1024, K: 66, dtype: "f32" },
    { N: 16, K: maxDim + 64, dtype: "f16" }, // a row longer than the texture limit in texels of A
    { N: 16, K: 4 * maxDim + 64, dtype: "f16" }, // two column slices
    { N: 2048, K: 4096 + 8, dtype: "f16" }, // > WRITE_PIECE_BYTES: written in pieces
  ];
  for (const { N, K, dtype, chunkBytes } of cases) {
    const values = new Float32Array(N * K).map((_, i) => Math.sin(i * 0.37) * 3);
    const ref = uploadTensor(gpu, values, [N, K], dtype, { chunkBytes });
    const host = emptyTensor(gpu, [N, K], dtype, { chunkBytes });
    try {
      const rec = beginRecording(gpu);
      assert.ok(prepackWeight(rec, ref));
      await submit(rec);
      const packer = hostPackedWeight(gpu, host);
      assert.ok(packer);
      const bytes = new Uint8Array(await readRaw(ref));
      const el = dtype === "f16" ? 2 : 4;
      for (let i = 0; i < host.chunks.length; i++) {
        const c = host.chunks[i];
        packer.writeChunk(i, bytes.slice(c.rowStart * K * el, (c.rowStart + c.rows) * K * el));
      }
      const a = forwardTextures(host), b = forwardTextures(ref);
      assert.equal(a.length, b.length);
      for (let i = 0; i < a.length; i++) {
        assert.deepEqual(await readTexture(gpu, a[i]), await readTexture(gpu, b[i]), `${N}x${K}`);
      }
    } finally {
      releaseTensor(ref);
      releaseTensor(host);
    }
  }
});

Deno.test("a table kept only as its texture (tied head): the lookup reads the texture, same rows, NaN for bad ids", async () => {
  const gpu = await getGpu();
  if (!gpu.isSoftware) {
    console.log("skipped: weights are kept only as textures on a software adapter");
    return;
  }
  const cases: { V: number; h: number; dtype: "f16" | "f32"; chunkBytes?: number }[] = [
    { V: 300, h: 20, dtype: "f16" }, // a row that is not whole texels
    { V: 256, h: 136, dtype: "f16", chunkBytes: 64 * 136 * 2 }, // four chunks
    { V: 100, h: 66, dtype: "f32" },
  ];
  for (const { V, h, dtype, chunkBytes } of cases) {
    const values = new Float32Array(V * h).map((_, i) => Math.cos(i * 0.11) * 2);
    const ref = uploadTensor(gpu, values, [V, h], dtype, { chunkBytes });
    const tex = uploadTensor(gpu, values, [V, h], dtype, { chunkBytes });
    const ids = uploadTensor(gpu, new Int32Array([0, V - 1, 5, 64, V, -1, 130]), [7], "i32");
    try {
      const pack = beginRecording(gpu);
      assert.ok(prepackWeight(pack, tex));
      await submit(pack);
      dropStorage(tex, "texture only (test)");
      const rec = beginRecording(gpu);
      const want = embedding(rec, ref, ids);
      const got = embedding(rec, tex, ids);
      await submit(rec);
      const [w, g] = [await readTensor(want), await readTensor(got)];
      assert.ok(Number.isNaN(g[4 * h]) && Number.isNaN(g[6 * h - 1]), "out-of-range ids give NaN");
      assert.deepEqual(g, w, `${V}x${h} ${dtype}`);
    } finally {
      for (const t of [ref, tex, ids]) releaseTensor(t);
    }
  }
});

Deno.test("tied output layer: lm_head absent uses the embeddings; tie_word_embeddings false refuses", async () => {
  const ckpt = await openCheckpoint(TINY);
  const tensors: { name: string; dtype: "F32"; shape: number[]; data: Uint8Array }[] = [];
  for (const name of ckpt.tensorNames) {
    const t = await readStored(ckpt, name);
    tensors.push({ name, dtype: "F32", shape: t.shape, data: t.data });
  }
  const emb = tensors.find((t) => t.name === "transformer.word_embeddings.weight")!;
  await withTemp(async (dir) => {
    const config = JSON.parse(await Deno.readTextFile(`${TINY}/config.json`));
    await Deno.mkdir(`${dir}/tied`);
    await Deno.mkdir(`${dir}/copied`);
    await Deno.writeTextFile(`${dir}/tied/config.json`, JSON.stringify(config));
    await Deno.writeTextFile(`${dir}/copied/config.json`, JSON.stringify(config));
    await writeSafetensors(
      `${dir}/tied/model.safetensors`,
      tensors.filter((t) => t.name !== "lm_head.weight"),
    );
    await writeSafetensors(
      `${dir}/copied/model.safetensors`,
      tensors.map((t) => t.name === "lm_head.weight" ? { ...emb, name: t.name } : t),
    );
    const lines: string[] = [];
    const tied = await loadModel(`${dir}/tied`, { ...quiet, log: (l) => lines.push(l) });
    const copied = await loadModel(`${dir}/copied`, quiet);
    try {
      assert.equal(tied.lmHead.weight, tied.embedding.weight);
      assert.match(lines.join("\n"), /no lm_head\.weight; the output layer uses/);
      assert.deepEqual(await tied.forward([PROMPT]), await copied.forward([PROMPT]));
    } finally {
      tied.dispose();
      copied.dispose();
    }
    await Deno.writeTextFile(
      `${dir}/tied/config.json`,
      JSON.stringify({ ...config, tie_word_embeddings: false }),
    );
    await assert.rejects(
      () => loadModel(`${dir}/tied`, quiet),
      /missing tensor lm_head\.weight \(config\.json sets tie_word_embeddings to false/,
    );
  });
});

Deno.test("a forced small binding limit splits the embedding and lm_head; same logits", async () => {
  const gpu = await getGpu();
  for (const dtype of gpu.hasF16 ? ["f32", "f16"] as const : ["f32"] as const) {
    const whole = await loadModel(TINY, { ...quiet, dtype });
    // 16 KiB: the [2048, 64] tables split into 32 (f16: 16) buffers of whole rows.
    const split = await loadModel(TINY, { ...quiet, dtype, chunkBytes: 16384 });
    try {
      const per = dtype === "f16" ? 16 : 32;
      assert.equal(split.embedding.weight.chunks.length, per);
      assert.equal(split.lmHead.weight.chunks.length, per);
      assert.equal(whole.lmHead.weight.chunks.length, 1);
      assert.deepEqual(await split.forward([PROMPT]), await whole.forward([PROMPT]));
    } finally {
      whole.dispose();
      split.dispose();
    }
  }
});

Deno.test("a device asking for a small binding limit splits the tables and gives the same logits", async () => {
  const gpu = await getGpu();
  // 256 KiB: the f32 [2048, 64] embedding and lm_head (512 KiB each) need two buffers each.
  const small = await createGpu({ limits: { maxStorageBufferBindingSize: 256 * 1024 } });
  assert.equal(small.limits.maxStorageBufferBindingSize, 256 * 1024);
  const whole = await loadModel(TINY, { ...quiet, dtype: "f32", gpu });
  const split = await loadModel(TINY, { ...quiet, dtype: "f32", gpu: small });
  try {
    assert.equal(split.embedding.weight.chunks.length, 2);
    assert.equal(split.lmHead.weight.chunks.length, 2);
    assert.deepEqual(await split.forward([PROMPT]), await whole.forward([PROMPT]));
  } finally {
    whole.dispose();
    split.dispose();
    small.device.destroy();
  }
});

Deno.test("an index naming a missing shard, and a tensor named twice, fail clearly", async () => {
  await withTemp(async (dir) => {
    await writeSyntheticCheckpoint(dir, { sizes: SMALL, shards: 2 });
    await Deno.rename(`${dir}/pytorch_model-00002-of-00002.bin`, `${dir}/elsewhere.bin`);
    await assert.rejects(
      () => loadModel(dir, quiet),
      /pytorch_model\.bin\.index\.json: names shard pytorch_model-00002-of-00002\.bin, which is missing/,
    );
  });
  await withTemp(async (dir) => {
    const a = { dtype: "F32" as const, shape: [2], data: new Float32Array([1, 2]) };
    await writeSafetensors(`${dir}/one.safetensors`, { x: a, y: a });
    await writeSafetensors(`${dir}/two.safetensors`, { x: a });
    await assert.rejects(() => openCheckpoint(dir), /tensor "x" is in both .*one.* and .*two/);
  });
});

/**
 * Runs `fn` and asserts it rejects matching `re`, in bounded time: these inputs took minutes (or
 * ran out of memory) before; the bound is loose because the test machine is shared.
 */
async function refusesFast(fn: () => Promise<unknown>, re: RegExp, seconds = 5) {
  const t0 = performance.now();
  await assert.rejects(fn, re);
  const took = (performance.now() - t0) / 1000;
  console.log(`refused ${re.source.slice(0, 50)}… in ${took.toFixed(3)} s`);
  assert.ok(took < seconds, `took ${took.toFixed(2)} s`);
}

Deno.test("hostile sizes are refused in well under a second, naming the file and field", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${TINY}/config.json`));
  await withTemp(async (dir) => {
    for (const [key, value] of [["num_layers", 1e9], ["num_layers", 1e6], ["hidden_size", 1e12]]) {
      await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...config, [key]: value }));
      await refusesFast(
        () => loadModel(dir, quiet),
        new RegExp(`config\\.json: ${key} ${value} is over the limit`),
      );
    }
    // Each size within its bound, together too many parameters.
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ ...config, hidden_size: 65536, num_layers: 1024, vocab_size: 4_000_000 }),
    );
    await refusesFast(() => readChatGLMConfig(dir), /config\.json: the sizes .* parameters/);
    // A 2 GiB sparse config.json is not read.
    const f = await Deno.open(`${dir}/config.json`, { write: true, truncate: true });
    await f.truncate(2 ** 31);
    f.close();
    await refusesFast(() => readChatGLMConfig(dir), /config\.json: the file is 2147483648 bytes/);
  });
  await withTemp(async (dir) => {
    // 200k shards named by a 6 MB index: refused in linear time, before any is opened.
    const map: Record<string, string> = {};
    for (let i = 0; i < 200_000; i++) map[`t${i}`] = `s${i}.safetensors`;
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ metadata: {}, weight_map: map }),
    );
    await refusesFast(
      () => openCheckpoint(dir),
      /model\.safetensors\.index\.json: weight_map names more than 10000 shard files, over the limit/,
    );
    // 50k entries naming 5k shards: the first missing shard is named at once.
    const fewer: Record<string, string> = {};
    for (let i = 0; i < 50_000; i++) fewer[`t${i}`] = `s${i % 5000}.safetensors`;
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ weight_map: fewer }),
    );
    await refusesFast(() => openCheckpoint(dir), /names shard s0\.safetensors, which is missing/);
    const f = await Deno.open(`${dir}/model.safetensors.index.json`, { write: true });
    await f.truncate(2 ** 31);
    f.close();
    await refusesFast(
      () => openCheckpoint(dir),
      /model\.safetensors\.index\.json: not a valid index file: the file is 2147483648 bytes/,
    );
  });
  await withTemp(async (dir) => {
    // A zip whose ZIP64 end record declares a million entries.
    const buf = new Uint8Array(56 + 20 + 22);
    const dv = new DataView(buf.buffer);
    dv.setUint32(0, 0x06064b50, true);
    dv.setBigUint64(4, 44n, true);
    dv.setBigUint64(24, 1_000_000n, true);
    dv.setBigUint64(32, 1_000_000n, true);
    dv.setBigUint64(40, 46_000_000n, true);
    dv.setBigUint64(48, 0n, true);
    dv.setUint32(56, 0x07064b50, true);
    dv.setBigUint64(56 + 8, 0n, true);
    dv.setUint32(56 + 16, 1, true);
    dv.setUint32(76, 0x06054b50, true);
    dv.setUint16(76 + 8, 0xffff, true);
    dv.setUint16(76 + 10, 0xffff, true);
    dv.setUint32(76 + 12, 0xffffffff, true);
    dv.setUint32(76 + 16, 0xffffffff, true);
    await Deno.writeFile(`${dir}/million.bin`, buf);
    await refusesFast(
      () => openTorchZip(`${dir}/million.bin`),
      /million\.bin: .*declares 1000000 entries, over the limit of 100000/,
    );
    // A safetensors header listing 100,001 one-byte tensors.
    const parts: string[] = [];
    for (let i = 0; i <= 100_000; i++) {
      parts.push(`"t${i}":{"dtype":"U8","shape":[1],"data_offsets":[${i},${i + 1}]}`);
    }
    const header = new TextEncoder().encode(`{${parts.join(",")}}`);
    const file = new Uint8Array(8 + header.length + 100_001);
    new DataView(file.buffer).setBigUint64(0, BigInt(header.length), true);
    file.set(header, 8);
    await Deno.writeFile(`${dir}/many.safetensors`, file);
    await refusesFast(
      () => openCheckpoint(`${dir}/many.safetensors`),
      /many\.safetensors: .*lists more than 100000 tensors/,
    );
    // A stride-0 view whose shape cannot be counted names the file and the tensor.
    // (Written by hand: our writer, like torch, refuses to describe such a view.)
    const pkl = pickleStateDict([{
      name: "w",
      storageKey: "0",
      dtype: "F32",
      storageNumel: 1,
      storageOffset: 0,
      shape: [2 ** 30, 2 ** 30],
      stride: [0, 0],
      requiresGrad: false,
    }]);
    await Deno.writeFile(
      `${dir}/stride0.bin`,
      await encodeStoredZip([
        { name: "stride0/data.pkl", data: pkl },
        { name: "stride0/data/0", data: new Uint8Array(4) },
        { name: "stride0/version", data: new TextEncoder().encode("3\n") },
      ]),
    );
    await refusesFast(
      () => openTorchZip(`${dir}/stride0.bin`),
      /stride0\.bin: refused: tensor "w": shape \[1073741824,1073741824\] has too many elements/,
    );
  });
});

Deno.test("memory plan: a mid-size load's measured peak within 15% of the plan, f16 and f32", async () => {
  const gpu = await getGpu();
  if (!gpu.isSoftware) {
    console.log("skipped: the host peak is planned for software adapters, this one is not");
    return;
  }
  const free = /MemAvailable:\s+(\d+)/.exec(await Deno.readTextFile("/proc/meminfo"));
  if (free && Number(free[1]) * 1024 < 3 * 2 ** 30) {
    console.log("skipped: less than 3 GiB of memory available for the mid-size checkpoint");
    return;
  }
  await withTemp(async (dir) => {
    // ~0.7 GB of f16 weights: the embedding and lm_head are 267 MB each, as in ChatGLM's vocab.
    const sizes = { ...SMALL, hiddenSize: 1024, numHeads: 16, innerHiddenSize: 4096, numLayers: 4 };
    await writeSyntheticCheckpoint(dir, { sizes, shards: 2 });
    const config = await readChatGLMConfig(dir);
    const ckpt = await openCheckpoint(dir);
    let largest = 0;
    for (const { tensor } of ckpt.locate.values()) largest = Math.max(largest, tensor.byteLength);
    // f16 as full-size loads take it, f32 as a mid-size model's default on llvmpipe (converted
    // from the f16 file piece by piece).
    for (const dtype of gpu.hasF16 ? ["f16", "f32"] as const : ["f32"] as const) {
      const child = new URL("../bench/real_size_child.ts", import.meta.url).pathname;
      const core = new URL("../core/mod.ts", import.meta.url).href;
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", child, core, dir, "0", dtype],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      const measured = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
      const plan = planMemory(config, {
        dtype,
        maxContext: config.maxSequenceLength,
        batch: 1,
        packedWeights: true,
        largestStoredTensorBytes: largest,
      });
      const ratio = measured.loadPeakRss / plan.hostLoadPeakBytes;
      console.log(
        `${dtype}: planned load peak ${
          (plan.hostLoadPeakBytes / 2 ** 20).toFixed(0)
        } MiB, measured ` +
          `${(measured.loadPeakRss / 2 ** 20).toFixed(0)} MiB (×${ratio.toFixed(3)})`,
      );
      assert.ok(Math.abs(ratio - 1) <= 0.15, `${dtype}: measured/planned = ${ratio.toFixed(3)}`);
    }
  });
});
