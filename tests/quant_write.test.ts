// `deno task quantize`: the written checkpoint holds exactly the fixture's q and scales, loads
// back with the same logits as quantizing at load (per row and group-wise), in both formats.
import assert from "node:assert/strict";
import { getGpu } from "../core/gpu/device.ts";
import { openCheckpoint, readTensor } from "../core/io/checkpoint.ts";
import { loadModel, type LoadModelOptions } from "../core/models/chatglm/load.ts";
import { main as quantizeMain } from "../core/cli/quantize.ts";
import { writeSafetensors } from "../core/io/safetensors.ts";

const FIX = new URL("./fixtures/chatglm6b-tiny-quantized/", import.meta.url).pathname;
const quiet = { log: () => {}, progressBar: false, dtype: "f32" } satisfies LoadModelOptions;
const IDS = [[1009, 336, 1974, 1872, 1886, 1071, 1973, 1882, 1902, 1657, 1660]];
await getGpu();

async function logits(dir: string, options: LoadModelOptions = {}): Promise<Float32Array> {
  const m = await loadModel(dir, { ...quiet, ...options });
  try {
    return await m.forward(IDS);
  } finally {
    m.dispose();
  }
}

async function quiet2<T>(fn: () => Promise<T>): Promise<T> {
  const err = console.error;
  console.error = () => {};
  try {
    return await fn();
  } finally {
    console.error = err;
  }
}

for (const [bits, format] of [[8, "torch"], [4, "safetensors"]] as const) {
  Deno.test(`quantize --bits ${bits} --format ${format} writes the original's checkpoint`, async () => {
    const tmp = await Deno.makeTempDir();
    try {
      const out = `${tmp}/q`;
      const rc = await quiet2(() =>
        quantizeMain([
          "--model",
          `${FIX}f16-tied`,
          "--bits",
          `${bits}`,
          "--out",
          out,
          "--format",
          format,
        ])
      );
      assert.equal(rc, 0);
      const mine = await openCheckpoint(out);
      const ref = await openCheckpoint(`${FIX}int${bits}`);
      assert.deepEqual([...mine.tensorNames].sort(), [...ref.tensorNames].sort());
      for (const name of ref.tensorNames) {
        const a = await readTensor(mine, name), b = await readTensor(ref, name);
        assert.equal(a.dtype, b.dtype, name);
        assert.deepEqual(a.shape, b.shape, name);
        assert.deepEqual(a.data, b.data, `${name}: bytes differ`);
      }
      const config = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
      assert.equal(config.quantization_bit, bits);
      assert.ok((await Deno.stat(`${out}/ice_text.model`)).isFile);
      assert.deepEqual(await logits(out), await logits(`${FIX}int${bits}`));
      // Refuses to overwrite.
      const again = await quiet2(() =>
        quantizeMain(["--model", `${FIX}f16-tied`, "--bits", "8", "--out", out])
      );
      assert.equal(again, 1);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  });
}

Deno.test("quantize --group-size 32 --embeddings loads back as quantizing at load does", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    const out = `${tmp}/g`;
    const rc = await quiet2(() =>
      quantizeMain([
        "--model",
        `${FIX}f16-tied`,
        "--bits",
        "4",
        "--out",
        out,
        "--group-size",
        "32",
        "--embeddings",
      ])
    );
    assert.equal(rc, 0);
    const config = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
    assert.equal(config.medglm_quantization_group_size, 32);
    assert.equal(config.quantization_embeddings, true);
    const ck = await openCheckpoint(out);
    assert.deepEqual(
      ck.locate.get("transformer.layers.0.attention.query_key_value.weight_scale")!.tensor.shape,
      [192, 2],
    );
    assert.equal(ck.locate.get("transformer.word_embeddings.weight")!.tensor.dtype, "I8");
    const written = await logits(out);
    const atLoad = await logits(`${FIX}f16-tied`, {
      quantize: { bits: 4, groupSize: 32, embeddings: true },
    });
    assert.deepEqual(written, atLoad);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("quantize flags are checked with the flag named", async () => {
  for (
    const [args, re] of [
      [["--model", "x", "--out", "y", "--bits", "3"], /--bits: expected 4 or 8/],
      [
        ["--model", "x", "--out", "y", "--bits", "4", "--group-size", "12"],
        /--group-size: expected a multiple of 8/,
      ],
      [["--bits", "4", "--out", "y"], /--model: required/],
    ] as const
  ) {
    let msg = "";
    const err = console.error;
    console.error = (m: string) => (msg += m);
    try {
      assert.equal(await quantizeMain([...args]), 2);
    } finally {
      console.error = err;
    }
    assert.match(msg, re);
  }
});

Deno.test("an untied head is kept (quantized per row with --embeddings), never replaced by the embeddings", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    // f16-tied/ plus an lm_head that differs from the embeddings (as the demo model's does).
    const src = `${tmp}/untied`;
    await Deno.mkdir(src);
    await Deno.copyFile(`${FIX}f16-tied/config.json`, `${src}/config.json`);
    const ck = await openCheckpoint(`${FIX}f16-tied`);
    const tensors = [];
    for (const name of ck.tensorNames) {
      const t = await readTensor(ck, name);
      tensors.push({ name, dtype: t.dtype, shape: t.shape, data: t.data });
      if (name === "transformer.word_embeddings.weight") {
        const head = new Uint16Array(t.data.slice().buffer);
        head.reverse(); // other values, same magnitudes
        tensors.push({ name: "lm_head.weight", dtype: t.dtype, shape: t.shape, data: head });
      }
    }
    await writeSafetensors(`${src}/model.safetensors`, tensors);
    const quantize = { bits: 4, embeddings: true } as const;
    const m = await loadModel(src, { ...quiet, quantize });
    try {
      assert.notEqual(m.lmHead.weight, m.embedding.weight);
      assert.equal(m.lmHead.weight.dtype, "q4");
    } finally {
      m.dispose();
    }
    const rc = await quiet2(() =>
      quantizeMain(["--model", src, "--bits", "4", "--out", `${tmp}/q`, "--embeddings"])
    );
    assert.equal(rc, 0);
    const out = await openCheckpoint(`${tmp}/q`);
    assert.equal(out.locate.get("lm_head.weight")!.tensor.dtype, "I8");
    assert.deepEqual(out.locate.get("lm_head.weight_scale")!.tensor.shape, [2048]);
    assert.deepEqual(await logits(`${tmp}/q`), await logits(src, { quantize }));
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
