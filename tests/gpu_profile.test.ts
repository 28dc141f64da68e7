// The kernel profiler: a profiled recording runs each command on its own, in order, with the
// same results as an unprofiled one, and sums the time per kernel.
import assert from "node:assert/strict";
import {
  beginRecording,
  getGpu,
  kernelTimes,
  profileReport,
  recordClear,
  recordCopy,
  resetProfile,
  setProfiling,
  submit,
} from "../core/gpu/mod.ts";
import { emptyTensor, readTensor, uploadTensor } from "../core/tensor/mod.ts";
import { linear, scale } from "../core/kernels/mod.ts";

const gpu = await getGpu();

async function step(): Promise<Float32Array> {
  const x = uploadTensor(gpu, Float32Array.from({ length: 12 }, (_, i) => i), [3, 4]);
  const w = uploadTensor(gpu, Float32Array.from({ length: 8 }, (_, i) => i - 4), [2, 4]);
  const out = emptyTensor(gpu, [3, 2], "f32");
  const rec = beginRecording(gpu);
  const y = scale(rec, linear(rec, x, w), 2);
  // Copy, then clear the source: the copy must see the values (commands keep their order).
  recordCopy(rec, y.buffer, 0, out.buffer, 0, 24);
  recordClear(rec, y.buffer, 0, 24);
  await submit(rec);
  return await readTensor(out) as Float32Array;
}

Deno.test("kernel profiler: same results, commands in order, time summed per kernel", async () => {
  const plain = await step();
  // 2 · x · wᵀ with x[m, k] = 4m + k and w[n, k] = 4n + k − 4.
  const want = [0, 1, 2].flatMap((m) =>
    [0, 1].map((n) => 2 * [0, 1, 2, 3].reduce((s, k) => s + (4 * m + k) * (4 * n + k - 4), 0))
  );
  assert.deepEqual([...plain], want);
  resetProfile(gpu);
  setProfiling(gpu, true);
  try {
    assert.deepEqual([...await step()], [...plain]);
    await step();
  } finally {
    setProfiling(gpu, false);
  }
  const times = kernelTimes(gpu);
  const byName = new Map(times.map((t) => [t.kernel, t]));
  assert.equal(byName.get("unary:scale:f32")?.dispatches, 2);
  assert.equal(byName.get("copy")?.dispatches, 2);
  assert.equal(byName.get("clear")?.dispatches, 2);
  // The tiled kernels ("matmul-…") or, for a few rows, the small-M one ("gemv:…").
  assert.ok(times.some((t) => /^(matmul-|gemv:)/.test(t.kernel) && t.dispatches === 2));
  assert.ok(times.every((t) => t.ms >= 0));
  assert.match(profileReport(gpu), /GPU time by kernel/);
  // Off again: nothing more is counted.
  await step();
  assert.equal(kernelTimes(gpu).find((t) => t.kernel === "copy")?.dispatches, 2);
});
