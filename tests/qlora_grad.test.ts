// QLoRA gradients: LoRA on an int8/int4 base gives the gradients of the same model whose weights
// are the dequantized values in f32 (an independent float path: f32 matmuls, no quant kernels).
// Bases: the tiny pre-quantized fixture (int4, int8) and the tiny f16 model quantized at load
// (per row and group-wise); LoRA on all four linear modules with nonzero A and B, so dx flows
// through every kind of packed weight; with and without recompute.

import assert from "node:assert/strict";
import { readTensor } from "../core/tensor/tensor.ts";
import { loadModel } from "../core/models/chatglm/load.ts";
import { buildTrainBatch } from "../core/models/chatglm/train_batch.ts";
import { prepareTraining } from "../core/models/chatglm/train_forward.ts";
import type { QuantizeOption } from "../core/models/chatglm/quantized.ts";
import { iterateTensors, openCheckpoint } from "../core/io/checkpoint.ts";
import { f16BitsToNumber } from "../core/io/dtype.ts";
import { writeSafetensors } from "../core/io/safetensors.ts";
import { dequantize, quantizeF16 } from "../core/quant/arith.ts";
import { EMBEDDING_NAME, isQuantizedModule } from "../core/quant/format.ts";
import { runMicroStep } from "../train/loop/step.ts";
import { loadGoldens } from "./reference/chatglm.ts";
import { assertSameGrads, seededLoraAdapter } from "./helpers/grads.ts";

const QDIR = new URL("./fixtures/chatglm6b-tiny-quantized", import.meta.url).pathname;
const F16 = `${QDIR}/f16-tied`;
const TINY = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const train = loadGoldens(TINY).cases.get("train")!.values as {
  input_ids: number[][];
  labels: number[][];
};
const quiet = { log: () => {}, progressBar: false, dtype: "f32" as const };
const ALL_MODULES = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"];

/**
 * The f16 model with its block linear weights replaced by `dequantize(quantize(w))` in f32 (the
 * original's arithmetic; q · scale is exact in f32), everything else widened to f32.
 */
async function writeDequantized(
  bits: 4 | 8,
  groupSize: number | null,
  embeddings = false,
): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "medglm-qlora-deq-" });
  await Deno.copyFile(`${F16}/config.json`, `${dir}/config.json`);
  const tensors = [];
  for await (const t of iterateTensors(await openCheckpoint(F16))) {
    assert.equal(t.dtype, "F16", t.name);
    const bitsOf = new Uint16Array(t.data.buffer, t.data.byteOffset, t.data.byteLength / 2);
    let data: Float32Array;
    const module = t.name.replace(/\.weight$/, "");
    if (t.name.endsWith(".weight") && isQuantizedModule(module) && t.shape.length === 2) {
      const [rows, cols] = t.shape;
      data = Float32Array.from(
        dequantize(quantizeF16(bitsOf, rows, cols, bits, groupSize ?? cols, t.name)),
      );
    } else if (embeddings && module === EMBEDDING_NAME) {
      // The embeddings (and so the tied head) per row, as `quantization_embeddings` does.
      const [rows, cols] = t.shape;
      data = Float32Array.from(dequantize(quantizeF16(bitsOf, rows, cols, bits, cols, t.name)));
    } else data = Float32Array.from(bitsOf, f16BitsToNumber);
    tensors.push({ name: t.name, dtype: "F32" as const, shape: t.shape, data });
  }
  await writeSafetensors(`${dir}/model.safetensors`, tensors);
  return dir;
}

/** Loss and every LoRA gradient of one micro-batch (no dropout). */
async function loraGrads(
  dir: string,
  quantize: QuantizeOption | undefined,
  recompute: boolean,
): Promise<{ loss: number; grads: Map<string, Float32Array>; quantized: boolean }> {
  const model = await loadModel(dir, {
    ...quiet,
    adapter: await seededLoraAdapter(F16, ALL_MODULES, 7),
    trainable: true,
    quantize,
  });
  const tm = prepareTraining(model, "lora");
  try {
    const batch = buildTrainBatch(train.input_ids, train.labels, model.config);
    const r = await runMicroStep(tm, batch, { zeroGrads: true, dropout: 0, recompute });
    const grads = new Map<string, Float32Array>();
    for (const p of tm.params) grads.set(p.name, await readTensor(p.grad) as Float32Array);
    return { loss: r.loss, grads, quantized: model.config.quantization != null };
  } finally {
    tm.dispose();
    model.dispose();
  }
}

const cases: {
  name: string;
  dir: string;
  quantize?: QuantizeOption;
  bits: 4 | 8;
  g: number | null;
  /** The embeddings (tied head) quantized too: dx flows through the packed head. */
  emb?: boolean;
}[] = [
  { name: "pre-quantized int4 fixture", dir: `${QDIR}/int4`, bits: 4, g: null },
  { name: "pre-quantized int8 fixture", dir: `${QDIR}/int8`, bits: 8, g: null },
  { name: "f16 model quantized at load, int4 per row", dir: F16, quantize: 4, bits: 4, g: null },
  {
    name: "f16 model quantized at load, int4 group 16",
    dir: F16,
    quantize: { bits: 4, groupSize: 16 },
    bits: 4,
    g: 16,
  },
  {
    name: "f16 model quantized at load, int4 with the embeddings",
    dir: F16,
    quantize: { bits: 4, embeddings: true },
    bits: 4,
    g: null,
    emb: true,
  },
];

for (const c of cases) {
  Deno.test(`QLoRA gradients equal the dequantized f32 model's: ${c.name}`, async () => {
    const ref = await writeDequantized(c.bits, c.g, c.emb);
    try {
      const want = await loraGrads(ref, undefined, false);
      assert.equal(want.quantized, false);
      for (const recompute of [false, true]) {
        const got = await loraGrads(c.dir, c.quantize, recompute);
        assert.equal(got.quantized, true, "the base is loaded quantized");
        const what = `${c.name}, recompute ${recompute}`;
        assert.ok(
          Math.abs(got.loss - want.loss) <= 1e-5 * Math.abs(want.loss),
          `${what}: loss ${got.loss} vs ${want.loss}`,
        );
        assertSameGrads(what, got.grads, want.grads);
      }
    } finally {
      await Deno.remove(ref, { recursive: true });
    }
  });
}

Deno.test("QLoRA gradients differ from the unquantized model's (the test can tell bases apart)", async () => {
  const f16 = await loraGrads(F16, undefined, false);
  const int4 = await loraGrads(F16, 4, false);
  assert.throws(() => assertSameGrads("int4 vs f16", int4.grads, f16.grads), /max diff/);
});
