// The part LayerNorm's and RMSNorm's backward share (core/kernels/layer_norm/norm_grad.ts): each
// parameter gradient alone equals its value with the other one requested, gradients add into
// what is there, and bad gradient tensors are refused naming the kernel and the field.
import assert from "node:assert/strict";
import { beginRecording, getGpu, submit } from "../core/gpu/mod.ts";
import { readFloat32, releaseTensor, uploadTensor } from "../core/tensor/mod.ts";
import { layerNormBackward, rmsNormBackward } from "../core/kernels/mod.ts";
import { randomArray } from "./reference/kernels.ts";
import { rowDesignTest } from "./helpers/row_designs.ts";

const gpu = await getGpu();
const up = (data: Float32Array, shape: number[]) => uploadTensor(gpu, data, shape, "f32");

rowDesignTest(
  "norm backward: dw and db alone equal both together, added into the tensors",
  async () => {
    const rows = 7, h = 45, eps = 1e-5;
    const x = up(randomArray(rows * h, 1, -2, 2), [rows, h]);
    const w = up(randomArray(h, 2, 0.5, 1.5), [h]);
    const dy = up(randomArray(rows * h, 3), [rows, h]);
    const filled = (v: number) => up(new Float32Array(h).fill(v), [h]);
    const rec = beginRecording(gpu);
    const both = { weight: filled(0), bias: filled(0) };
    const dxBoth = layerNormBackward(rec, x, w, eps, dy, both);
    const dwOnly = filled(1);
    const dxW = layerNormBackward(rec, x, w, eps, dy, { weight: dwOnly });
    const dbOnly = filled(-2);
    layerNormBackward(rec, x, w, eps, dy, { bias: dbOnly });
    const dxNone = layerNormBackward(rec, x, w, eps, dy);
    const rmsW = filled(0.5);
    const rmsDx = rmsNormBackward(rec, x, w, eps, dy, rmsW);
    const rmsDxNone = rmsNormBackward(rec, x, w, eps, dy);
    await submit(rec);
    const bw = await readFloat32(both.weight), bb = await readFloat32(both.bias);
    assert.ok(bw.some((v) => v !== 0) && bb.some((v) => v !== 0));
    assert.deepEqual(await readFloat32(dwOnly), bw.map((v) => v + 1));
    assert.deepEqual(await readFloat32(dbOnly), bb.map((v) => v - 2));
    const dx = await readFloat32(dxBoth);
    assert.deepEqual(await readFloat32(dxW), dx);
    assert.deepEqual(await readFloat32(dxNone), dx);
    // RMSNorm's dw: Σ dy · x · r per column (r from the same rows), here against the f64 sum.
    const xs = await readFloat32(x), g = await readFloat32(dy);
    const want = new Float64Array(h).fill(0.5);
    for (let i = 0; i < rows; i++) {
      let ss = 0;
      for (let j = 0; j < h; j++) ss += xs[i * h + j] ** 2;
      const r = 1 / Math.sqrt(ss / h + eps);
      for (let j = 0; j < h; j++) want[j] += g[i * h + j] * xs[i * h + j] * r;
    }
    const got = await readFloat32(rmsW);
    for (let j = 0; j < h; j++) assert.ok(Math.abs(got[j] - want[j]) < 1e-5, `rms dw[${j}]`);
    assert.deepEqual(await readFloat32(rmsDxNone), await readFloat32(rmsDx));
    for (const t of [x, w, dy, both.weight, both.bias, dwOnly, dbOnly, rmsW]) releaseTensor(t);
  },
);

Deno.test("norm backward: a weight or gradient tensor of the wrong size is refused by name", () => {
  const x = up(randomArray(12, 4), [3, 4]);
  const w = up(randomArray(4, 5), [4]);
  const rec = beginRecording(gpu);
  assert.throws(
    () => rmsNormBackward(rec, x, w, 1e-6, x, up(new Float32Array(5), [5])),
    /rmsNormBackward: weight grad has 5 elements, not 4/,
  );
  assert.throws(
    () => layerNormBackward(rec, x, w, 1e-5, x, { bias: up(new Float32Array(3), [3]) }),
    /layerNormBackward: bias grad has 3 elements, not 4/,
  );
  assert.throws(
    () => layerNormBackward(rec, x, up(randomArray(5, 6), [5]), 1e-5, x),
    /layerNormBackward: weight has 5 elements, rows have 4/,
  );
  for (const t of [x, w]) releaseTensor(t);
});
