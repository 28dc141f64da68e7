// At ChatGLM-6B's size the tied output layer (130528 × 4096, 1 GiB in f16) is bound in row chunks
// on an adapter with 128 MiB bindings (llvmpipe), and the LoRA backward has to take dx through it
// (dx = dy · W over a chunked W). These tests force the same split on the tiny model (a 128 KiB
// binding limit: its [2048, 64] table needs 4 buffers in f32, 2 in f16) and check that LoRA gradients and the loss equal those of the unsplit model, for a float
// base (f32 and f16) and an int4 base quantized at load (the QLoRA case: int4 blocks, float head).

import assert from "node:assert/strict";
import { createGpu, getGpu, type Gpu } from "../core/gpu/device.ts";
import { readTensor } from "../core/tensor/tensor.ts";
import { loadModel } from "../core/models/chatglm/load.ts";
import { buildTrainBatch } from "../core/models/chatglm/train_batch.ts";
import { prepareTraining } from "../core/models/chatglm/train_forward.ts";
import { runMicroStep } from "../train/loop/step.ts";
import { loadGoldens } from "./reference/chatglm.ts";
import { assertSameGrads, seededLoraAdapter } from "./helpers/grads.ts";

const TINY = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
const train = loadGoldens(TINY).cases.get("train")!.values as {
  input_ids: number[][];
  labels: number[][];
};

async function loraStep(gpu: Gpu, dtype: "f32" | "f16", quantize: 4 | undefined) {
  const adapter = await seededLoraAdapter(TINY, ["query_key_value"], 11);
  const model = await loadModel(TINY, {
    log: () => {},
    progressBar: false,
    gpu,
    dtype,
    adapter,
    trainable: true,
    quantize,
    maxContext: 64, // one row's activations fit the small binding limit
  });
  const tm = prepareTraining(model, "lora");
  try {
    // One row: a whole batch's activations would not fit the small bindings either.
    const batch = buildTrainBatch(
      train.input_ids.slice(0, 1),
      train.labels.slice(0, 1),
      model.config,
    );
    const r = await runMicroStep(tm, batch, { zeroGrads: true, dropout: 0, recompute: true });
    const grads = new Map<string, Float32Array>();
    for (const p of tm.params) grads.set(p.name, await readTensor(p.grad) as Float32Array);
    return { loss: r.loss, grads, headChunks: model.lmHead.weight.chunks.length };
  } finally {
    tm.dispose();
    model.dispose();
  }
}

for (const [dtype, quantize] of [["f32", undefined], ["f16", undefined], ["f16", 4]] as const) {
  const base = quantize ? "int4 base (quantized at load)" : `${dtype} base`;
  Deno.test(`LoRA gradients through a row-chunked tied head equal the unsplit ones: ${base}`, async () => {
    const small = await createGpu({ limits: { maxStorageBufferBindingSize: 128 * 1024 } });
    try {
      const split = await loraStep(small, dtype, quantize);
      const whole = await loraStep(await getGpu(), dtype, quantize);
      assert.ok(split.headChunks > 1, `the head is split (${split.headChunks} chunks)`);
      assert.equal(whole.headChunks, 1);
      assert.ok(Math.abs(split.loss - whole.loss) <= 1e-5 * Math.abs(whole.loss), "loss");
      assertSameGrads(base, split.grads, whole.grads);
    } finally {
      small.device.destroy();
    }
  });
}
