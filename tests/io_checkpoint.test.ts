import assert from "node:assert/strict";
import {
  iterateTensors,
  type LoadedTensor,
  openCheckpoint,
  readTensor,
  readTensorAsF32,
  tensorBytesAs,
} from "../core/io/checkpoint.ts";
import { bytesToF32, f32ToBf16, f32ToF16 } from "../core/io/dtype.ts";
import { writeSafetensors } from "../core/io/safetensors.ts";
import { writeTorchStateDict } from "../core/io/torch_writer.ts";
import { createProgress } from "../base/progress.ts";

const FIX = new URL("./fixtures/chatglm6b-tiny/", import.meta.url).pathname;

async function collect(dir: string): Promise<Map<string, LoadedTensor>> {
  const out = new Map<string, LoadedTensor>();
  for await (const t of iterateTensors(await openCheckpoint(dir))) out.set(t.name, t);
  return out;
}

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("each layout is found and described", async () => {
  const expect: [string, string, number][] = [
    ["", "safetensors", 1],
    ["pytorch", "torch-sharded", 2],
    ["bf16-sharded", "safetensors-sharded", 2],
    ["adapter-qkv", "safetensors", 1],
  ];
  for (const [dir, format, shards] of expect) {
    const c = await openCheckpoint(FIX + dir);
    assert.equal(c.format, format, dir);
    assert.equal(c.shards.length, shards, dir);
    assert.equal(c.tensorNames.length, new Set(c.tensorNames).size);
  }
  const single = await openCheckpoint(`${FIX}adapter-multi/adapter_model.bin`);
  assert.equal(single.format, "torch");
  assert.equal(single.tensorNames.length, 16);
});

Deno.test("f16 torch shards and bf16 safetensors shards equal model.safetensors rounded", async () => {
  const ref = await collect(FIX);
  const f16 = await collect(`${FIX}pytorch`);
  const bf16 = await collect(`${FIX}bf16-sharded`);
  assert.equal(ref.size, 30);
  for (
    const [other, dtype, round] of [
      [f16, "F16", f32ToF16],
      [bf16, "BF16", f32ToBf16],
    ] as const
  ) {
    assert.deepEqual([...other.keys()].sort(), [...ref.keys()].sort());
    for (const [name, r] of ref) {
      const t = other.get(name)!;
      assert.equal(t.dtype, dtype, name);
      assert.deepEqual(t.shape, r.shape, name);
      const want = round(bytesToF32(r.data, "F32"));
      const got = new Uint16Array(t.data.slice().buffer);
      assert.deepEqual(got, want, `${name} as ${dtype}`);
    }
  }
  // The rotary inv_freq buffers are in every file (the model loader skips them).
  for (const m of [ref, f16, bf16]) {
    assert.ok(m.has("transformer.layers.0.attention.rotary_emb.inv_freq"));
    assert.ok(m.has("transformer.layers.1.attention.rotary_emb.inv_freq"));
  }
  const inv = bf16.get("transformer.layers.0.attention.rotary_emb.inv_freq")!;
  assert.equal(bytesToF32(inv.data, inv.dtype)[1], 0.10009765625); // the bf16 trap of §2
});

Deno.test("readTensor, readTensorAsF32, conversions and name filters", async () => {
  const c = await openCheckpoint(`${FIX}pytorch`);
  const t = await readTensor(c, "transformer.final_layernorm.weight");
  assert.equal(t.dtype, "F16");
  assert.ok(t.shard.endsWith("pytorch_model-00002-of-00002.bin"));
  const f = await readTensorAsF32(c, "transformer.final_layernorm.weight");
  assert.deepEqual(f, bytesToF32(t.data, "F16"));
  assert.deepEqual(new Float32Array(tensorBytesAs(t, "F32").slice().buffer), f);
  assert.equal(tensorBytesAs(t, "F16"), t.data);
  await assert.rejects(readTensor(c, "missing"), /no tensor named "missing"/);

  const some: string[] = [];
  for await (
    const x of iterateTensors(c, {
      names: ["lm_head.weight", "transformer.layers.0.mlp.dense_h_to_4h.bias"],
    })
  ) {
    some.push(x.name);
  }
  assert.deepEqual(some, ["transformer.layers.0.mlp.dense_h_to_4h.bias", "lm_head.weight"]);
  const filtered: string[] = [];
  for await (const x of iterateTensors(c, { names: (n) => n.endsWith("inv_freq") })) {
    filtered.push(x.name);
  }
  assert.equal(filtered.length, 2);
  await assert.rejects(async () => {
    for await (const _ of iterateTensors(c, { names: ["nope"] })) { /* not reached */ }
  }, /no tensor named "nope"/);
});

Deno.test("clear errors: missing dir, no weights, bad index, misplaced tensors", async () => {
  await assert.rejects(
    openCheckpoint("/nonexistent/model"),
    /\/nonexistent\/model: checkpoint directory not found/,
  );
  await withTemp(async (dir) => {
    await Deno.writeTextFile(`${dir}/config.json`, "{}");
    await assert.rejects(
      openCheckpoint(dir),
      /no weights found \(looked for model\.safetensors\.index\.json/,
    );

    const a = { dtype: "F32" as const, shape: [2], data: Float32Array.of(1, 2) };
    await writeSafetensors(`${dir}/model-00001-of-00002.safetensors`, { a });
    await writeSafetensors(`${dir}/model-00002-of-00002.safetensors`, { b: a });
    const index = (map: Record<string, string>) =>
      Deno.writeTextFile(
        `${dir}/model.safetensors.index.json`,
        JSON.stringify({ metadata: { total_size: 16 }, weight_map: map }),
      );
    await index({ a: "model-00001-of-00002.safetensors", b: "model-00002-of-00002.safetensors" });
    const ok = await openCheckpoint(dir);
    assert.deepEqual(ok.tensorNames, ["a", "b"]);
    assert.equal(ok.totalBytes, 16);
    assert.ok(ok.indexPath?.endsWith("model.safetensors.index.json"));

    await index({ a: "model-00001-of-00002.safetensors", b: "model-00003-of-00002.safetensors" });
    await assert.rejects(
      openCheckpoint(dir),
      /names shard model-00003-of-00002\.safetensors, which is missing/,
    );
    await index({ a: "model-00002-of-00002.safetensors", b: "model-00002-of-00002.safetensors" });
    await assert.rejects(
      openCheckpoint(dir),
      /index\.json: places tensor "a" in model-00002-of-00002\.safetensors, which does not hold it/,
    );
    await index({ a: "model-00002-of-00002.safetensors", b: "model-00001-of-00002.safetensors" });
    await assert.rejects(
      openCheckpoint(dir),
      /model-00001-of-00002\.safetensors: holds tensor "a", which .*index\.json places in model-00002/,
    );
    // Only the shards the index names are loaded.
    await index({ a: "model-00001-of-00002.safetensors" });
    assert.deepEqual((await openCheckpoint(dir)).tensorNames, ["a"]);
    await writeSafetensors(`${dir}/model-00001-of-00002.safetensors`, { a, c: a });
    await assert.rejects(
      openCheckpoint(dir),
      /holds tensor "c", which .*index\.json does not list/,
    );
    await index({ a: "../model-00001-of-00002.safetensors" });
    await assert.rejects(openCheckpoint(dir), /names no valid shard file/);
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, "{not json");
    await assert.rejects(
      openCheckpoint(dir),
      /model\.safetensors\.index\.json: not a valid index file/,
    );
  });
});

Deno.test("single .bin and several loose files; duplicates across files refused", async () => {
  await withTemp(async (dir) => {
    await writeTorchStateDict(`${dir}/pytorch_model.bin`, {
      x: { dtype: "F32", shape: [1], data: Float32Array.of(3) },
    });
    await Deno.writeFile(`${dir}/training_args.bin`, new Uint8Array([0x80, 2, 0x2e]));
    const c = await openCheckpoint(dir);
    assert.equal(c.format, "torch");
    assert.deepEqual(await readTensorAsF32(c, "x"), Float32Array.of(3));
    await Deno.remove(`${dir}/pytorch_model.bin`);
    await writeTorchStateDict(`${dir}/one.bin`, {
      x: { dtype: "F32", shape: [1], data: Float32Array.of(3) },
    });
    await writeTorchStateDict(`${dir}/two.bin`, {
      x: { dtype: "F32", shape: [1], data: Float32Array.of(4) },
    });
    await assert.rejects(openCheckpoint(dir), /tensor "x" is in both .*one\.bin and .*two\.bin/);
  });
});

Deno.test("progress: plain lines off a terminal, in-place redraws on one, rate and ETA", () => {
  const written: string[] = [];
  const stream = {
    writeSync: (b: Uint8Array) => (written.push(new TextDecoder().decode(b)), b.length),
  };
  let t = 0;
  const p = createProgress({
    label: "loading",
    total: 4 * 1024 * 1024,
    unit: "B",
    stream,
    tty: false,
    now: () => t,
  });
  for (let i = 0; i < 4; i++) {
    t += 1000;
    p.tick(1024 * 1024);
  }
  p.done();
  p.done();
  // First tick draws, the next ones fall inside the 10 s line interval, done() draws once more.
  assert.equal(written.length, 2);
  assert.match(
    written[0],
    /^loading \[#{6}-{18}\] 25\.0% 1\.0 MiB\/4\.0 MiB 1\.0 MiB\/s ETA 0:03\n$/,
  );
  assert.match(written[1], /100\.0% 4\.0 MiB\/4\.0 MiB .* in 0:04\n$/);

  const tty: string[] = [];
  t = 0;
  const q = createProgress({
    label: "steps",
    total: 100,
    stream: { writeSync: (b) => (tty.push(new TextDecoder().decode(b)), b.length) },
    tty: true,
    now: () => t,
  });
  for (let i = 0; i < 100; i++) {
    t += 10; // 100 ticks over 1 s: at most ~10 redraws
    q.tick();
  }
  q.done();
  assert.ok(tty.length >= 5 && tty.length <= 13, `${tty.length} redraws`);
  assert.ok(tty.slice(0, -1).every((s) => s.startsWith("\r")));
  assert.equal(tty[tty.length - 1], "\n");
});

Deno.test("iterateTensors shows a progress bar when asked", async () => {
  const c = await openCheckpoint(`${FIX}adapter-qkv`);
  const lines: string[] = [];
  const progressStream = {
    writeSync: (b: Uint8Array) => (lines.push(new TextDecoder().decode(b)), b.length),
  };
  let n = 0;
  for await (const _ of iterateTensors(c, { progress: "adapter", progressStream })) n++;
  assert.equal(n, 4);
  assert.match(lines[0], /^adapter \[/);
  assert.match(lines[lines.length - 1], /100\.0% 16\.0 KiB\/16\.0 KiB/);
});
