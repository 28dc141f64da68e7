// The fused residual-sum LayerNorm (`addScaledLayerNorm`, used by the ChatGLM block on no-grad
// tapes) against the unfused kernels it replaces (`addScaled`, then `layerNorm`), f32, both row
// designs; the nn op's choice (fused only without gradients); the model's logits either way.
import assert from "node:assert/strict";
import { beginRecording, getGpu, submit } from "../core/gpu/mod.ts";
import { f16Round, readTensor, releaseTensor, uploadTensor } from "../core/tensor/mod.ts";
import { addScaled, addScaledLayerNorm, layerNorm } from "../core/kernels/mod.ts";
import { createTape, param, unref } from "../core/autograd/tape.ts";
import { addScaledLayerNormForward, createLayerNorm } from "../core/nn/layer_norm.ts";
import { loadModel } from "../core/models/chatglm/load.ts";
import { randomArray, relError } from "./reference/kernels.ts";
import { rowDesignTest } from "./helpers/row_designs.ts";

const gpu = await getGpu();
const ALPHA = Math.sqrt(56);

rowDesignTest(
  "addScaledLayerNorm equals addScaled then layerNorm (odd shapes, f32/f16 weights)",
  async () => {
    for (
      const [rows, cols, seed] of [[1, 1, 1], [1, 128, 2], [3, 7, 3], [65, 130, 4], [5, 4099, 5]]
    ) {
      const a = randomArray(rows * cols, seed, -3, 5);
      const b = randomArray(rows * cols, seed + 1, -40, 40);
      const w = randomArray(cols, seed + 10, 0.5, 1.5);
      const bias = randomArray(cols, seed + 20);
      for (const dtype of ["f32", "f16"] as const) {
        const ta = uploadTensor(gpu, a, [rows, cols]);
        const tb = uploadTensor(gpu, b, [rows, cols]);
        const tw = uploadTensor(gpu, dtype === "f16" ? w.map(f16Round) : w, [cols], dtype);
        const tbias = uploadTensor(gpu, dtype === "f16" ? bias.map(f16Round) : bias, [cols], dtype);
        const rec = beginRecording(gpu);
        const sum = addScaled(rec, ta, ALPHA, tb);
        const want = layerNorm(rec, sum, tw, tbias, 1e-5);
        const before = rec.dispatches;
        const got = addScaledLayerNorm(rec, ta, ALPHA, tb, tw, tbias, 1e-5);
        assert.equal(rec.dispatches - before, 1, "one dispatch");
        await submit(rec);
        const e = relError(await readTensor(got), await readTensor(want));
        assert.ok(e < 1e-6, `[${rows}, ${cols}] ${dtype}: ${e}`);
        for (const t of [ta, tb, tw, tbias, sum, want, got]) releaseTensor(t);
      }
    }
  },
);

Deno.test("addScaledLayerNorm checks its operands", () => {
  const rec = beginRecording(gpu);
  const a = uploadTensor(gpu, new Float32Array(8), [2, 4]);
  const b = uploadTensor(gpu, new Float32Array(6), [2, 3]);
  const w = uploadTensor(gpu, new Float32Array(4), [4]);
  assert.throws(() => addScaledLayerNorm(rec, a, 2, b, w, w, 1e-5), /a \[2, 4\] and b \[2, 3\]/);
  for (const t of [a, b, w]) releaseTensor(t);
});

Deno.test("addScaledLayerNormForward: fused on a no-grad tape, the two ops (with backward) when recording", async () => {
  const rows = 3, cols = 96;
  const ln = createLayerNorm(
    "ln",
    uploadTensor(gpu, randomArray(cols, 1, 0.5, 1.5), [cols]),
    uploadTensor(gpu, randomArray(cols, 2), [cols]),
    1e-5,
  );
  const a = uploadTensor(gpu, randomArray(rows * cols, 3, -2, 2), [rows, cols]);
  const b = uploadTensor(gpu, randomArray(rows * cols, 4, -9, 9), [rows, cols]);
  const values: Float32Array[] = [];
  for (const recording of [false, true]) {
    const rec = beginRecording(gpu);
    const tape = createTape(rec, recording);
    const y = addScaledLayerNormForward(tape, ln, param(tape, a), ALPHA, param(tape, b));
    // Recording: addScaled, then layerNorm (their backward); no-grad: the one fused kernel.
    assert.equal(rec.dispatches, recording ? 2 : 1);
    await submit(rec);
    values.push(await readTensor(y.value) as Float32Array);
    unref(tape, y);
  }
  assert.ok(relError(values[0], values[1]) < 1e-6);
  for (const t of [a, b, ln.weight, ln.bias]) releaseTensor(t);
});

Deno.test("ChatGLM logits: the fused blocks (no hooks) equal the unfused ones (hooked)", async () => {
  const dir = new URL("./fixtures/chatglm6b-tiny", import.meta.url).pathname;
  const model = await loadModel(dir, { log: () => {}, progressBar: false, dtype: "f32" });
  try {
    const ids = [[5, 9, 33, 70, 1200, 1657, 1660], [8, 8, 8, 8, 8, 1657, 1660]];
    const fused = await model.forward(ids);
    let hooked = 0;
    const unfused = await model.forward(ids, { onHidden: () => hooked++ });
    assert.equal(hooked, model.config.numLayers + 2);
    const e = relError(fused, unfused);
    assert.ok(e < 1e-6, `relative error ${e}`);
  } finally {
    model.dispose();
  }
});
