// Tensors: upload/read for every dtype, chunked storage, views, the buffer pool and its stats.
import assert from "node:assert/strict";
import { beginRecording, getGpu, submit } from "../core/gpu/mod.ts";
import {
  emptyTensor,
  f16Round,
  f32ToF16Bits,
  poolStats,
  readFloat32,
  readTensor,
  readTensors,
  releaseTensor,
  reshape,
  sizeClass,
  sliceRows,
  trimPool,
  uploadTensor,
} from "../core/tensor/mod.ts";
import { fill, gelu, scale } from "../core/kernels/mod.ts";
import { randomArray } from "./reference/kernels.ts";

const gpu = await getGpu();

Deno.test("upload/read round trips for f32, f16, i32, u32 (odd lengths, empty)", async () => {
  const f = randomArray(7, 1, -100, 100);
  assert.deepEqual([...await readTensor(uploadTensor(gpu, f, [7]))], [...f]);
  // f16 from f32 (rounded on the CPU) and from raw bits; read back as f32
  assert.deepEqual([...await readTensor(uploadTensor(gpu, f, [7], "f16"))], [...f.map(f16Round)]);
  const bits = Uint16Array.from(f, (v) => f32ToF16Bits(v));
  const h = uploadTensor(gpu, bits, [7]);
  assert.equal(h.dtype, "f16");
  assert.deepEqual([...await readTensor(h)], [...f.map(f16Round)]);
  const i = new Int32Array([-5, 0, 7, 2147483647, -2147483648]);
  const ti = uploadTensor(gpu, i, [5]);
  assert.ok((await readTensor(ti)) instanceof Int32Array);
  assert.deepEqual([...await readTensor(ti)], [...i]);
  const u = new Uint32Array([0, 1, 4294967295]);
  assert.deepEqual([...await readTensor(uploadTensor(gpu, u, [3]))], [...u]);
  assert.equal((await readTensor(uploadTensor(gpu, new Float32Array(0), [0, 3]))).length, 0);
  // several tensors (mixed dtypes, chunked, empty) in one round trip
  const chunked = uploadTensor(gpu, f, [7, 1], "f16", { rowsPerChunk: 3 });
  const many = await readTensors([ti, chunked, uploadTensor(gpu, new Int32Array(0), [0]), h]);
  assert.deepEqual([...many[0]], [...i]);
  assert.deepEqual([...many[1]], [...f.map(f16Round)]);
  assert.equal(many[2].length, 0);
  assert.deepEqual([...many[3]], [...f.map(f16Round)]);
  assert.throws(() => uploadTensor(gpu, f, [2, 3]), /7 values for shape \[2, 3\]/);
  assert.throws(() => uploadTensor(gpu, i, [5], "f16"), /f16 needs/);
  assert.throws(() => emptyTensor(gpu, [2, -1]), /invalid shape/);
});

Deno.test("chunked tensors: rows split over buffers, round trip, kernels see every chunk", async () => {
  const rows = 23, cols = 5;
  const data = randomArray(rows * cols, 2);
  // 4 rows per chunk (80 bytes) -> 6 chunks
  const t = uploadTensor(gpu, data, [rows, cols], "f32", { chunkBytes: 4 * cols * 4 });
  assert.equal(t.chunks.length, 6);
  assert.deepEqual(t.chunks.map((c) => c.rowStart), [0, 4, 8, 12, 16, 20]);
  assert.equal(t.chunks[5].rows, 3);
  assert.deepEqual([...await readTensor(t)], [...data]);
  // f16 with an odd row length: chunks hold an odd number of halves
  const h = uploadTensor(gpu, data, [rows, cols], "f16", { rowsPerChunk: 3 });
  assert.equal(h.chunks.length, 8);
  assert.deepEqual([...await readTensor(h)], [...data.map(f16Round)]);
  // a single row larger than the chunk limit is refused clearly
  assert.throws(
    () => emptyTensor(gpu, [2, 100], "f32", { chunkBytes: 256 }),
    /one row of 400 bytes/,
  );
  // fill works chunk by chunk
  const rec = beginRecording(gpu);
  fill(rec, t, 3);
  await submit(rec);
  assert.ok((await readTensor(t)).every((v) => v === 3));
  // kernels that need one binding say so
  const rec2 = beginRecording(gpu);
  assert.throws(() => gelu(rec2, t), /chunked/);
  await submit(rec2);
});

Deno.test("views: reshape and aligned row slices share storage; releasing a view is refused", async () => {
  const data = randomArray(8 * 16, 3);
  const t = uploadTensor(gpu, data, [8, 16]);
  const r = reshape(t, [2, 4, 16]);
  assert.deepEqual(r.shape, [2, 4, 16]);
  assert.equal(r.buffer, t.buffer);
  assert.deepEqual(reshape(t, [-1, 32]).shape, [4, 32]);
  assert.throws(() => reshape(t, [3, 5]), /reshape/);
  // rows 2..5 start at byte 128: a multiple of the storage offset alignment
  const s = sliceRows(t, 2, 3);
  assert.deepEqual([...await readTensor(s)], [...data.subarray(32, 80)]);
  const rec = beginRecording(gpu);
  const y = scale(rec, s, 2);
  await submit(rec);
  assert.deepEqual([...await readFloat32(y)], [...data.subarray(32, 80).map((v) => v * 2)]);
  const odd = uploadTensor(gpu, new Float32Array(3 * 3), [3, 3]);
  assert.throws(() => sliceRows(odd, 1, 1), /not a multiple/);
  assert.throws(() => releaseTensor(s), /view/);
  releaseTensor(t);
  await assert.rejects(() => readTensor(s), /released/);
  assert.throws(() => releaseTensor(t), /already released/);
});

Deno.test("pool: freed buffers are reused, stats track bytes in use", async () => {
  trimPool(gpu);
  const base = poolStats(gpu);
  const a = emptyTensor(gpu, [1000], "f32");
  const s1 = poolStats(gpu);
  assert.equal(s1.bytesInUse - base.bytesInUse, sizeClass(4000));
  releaseTensor(a);
  const s2 = poolStats(gpu);
  assert.equal(s2.bytesInUse, base.bytesInUse);
  assert.equal(s2.bytesCached, base.bytesCached + sizeClass(4000));
  const b = emptyTensor(gpu, [990], "f32"); // same size class
  assert.equal(b.buffer, a.buffer);
  assert.equal(poolStats(gpu).reuses, s2.reuses + 1);
  releaseTensor(b);
  // Within a recording: an output released mid-step is reused by a later dispatch of the same
  // step, but not by an upload (which would overwrite it before the step runs).
  const x = uploadTensor(gpu, randomArray(256, 4), [256]);
  const rec = beginRecording(gpu);
  const g = gelu(rec, x);
  const h = scale(rec, g, 2);
  releaseTensor(g, rec);
  const up = uploadTensor(gpu, new Float32Array(256).fill(9), [256]);
  assert.notEqual(up.buffer, g.buffer);
  const k = scale(rec, h, 0.5);
  assert.equal(k.buffer, g.buffer);
  await submit(rec);
  const want = (await readTensor(x)).map((v) =>
    0.5 * v * (1 + Math.tanh(0.7978845608028654 * v * (1 + 0.044715 * v * v)))
  );
  const got = await readTensor(k);
  for (let i = 0; i < 256; i++) assert.ok(Math.abs(got[i] - want[i]) < 1e-5);
  // after submit the released buffer is free for anyone
  assert.ok(poolStats(gpu).buffersCached > 0);
  for (const t of [x, h, up, k]) releaseTensor(t);
  assert.equal(poolStats(gpu).bytesInUse, base.bytesInUse);
  trimPool(gpu);
  assert.equal(poolStats(gpu).bytesCached, 0);
});

Deno.test("size classes waste at most 25%", () => {
  for (const n of [1, 255, 4097, 100000, 123456789]) {
    const c = sizeClass(n);
    assert.ok(c >= n && (c <= 256 || c <= n * 1.25 + 256), `${n} -> ${c}`);
  }
});
