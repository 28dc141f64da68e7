// Row kernels, elementwise kernels, casts, reductions, embedding and cross-entropy vs the f64
// reference on odd shapes (not multiples of the workgroup) and zero-length edges.
import assert from "node:assert/strict";
import { beginRecording, getGpu, submit } from "../core/gpu/mod.ts";
import {
  emptyTensor,
  f16Round,
  readRaw,
  readTensor,
  toF16Bits,
  uploadTensor,
} from "../core/tensor/mod.ts";
import {
  add,
  addScaled,
  axpby,
  cast,
  copyTensor,
  crossEntropy,
  embedding,
  fill,
  gelu,
  layerNorm,
  mul,
  reduce,
  rmsNorm,
  scale,
  silu,
  softmax,
} from "../core/kernels/mod.ts";
import {
  crossEntropyRef,
  embeddingRef,
  geluRef,
  layerNormRef,
  randomArray,
  randomInts,
  reduceRef,
  relError,
  rmsNormRef,
  siluRef,
  softmaxRef,
} from "./reference/kernels.ts";
import { rowDesignTest } from "./helpers/row_designs.ts";

const gpu = await getGpu();
const TOL = 1e-5;

rowDesignTest("layerNorm and rmsNorm: odd rows and widths, f32 and f16 weights", async () => {
  for (const [rows, cols, seed] of [[1, 1, 1], [3, 7, 2], [65, 130, 3], [5, 4099, 4], [0, 8, 5]]) {
    const x = randomArray(rows * cols, seed, -3, 5);
    const w = randomArray(cols, seed + 10, 0.5, 1.5);
    const b = randomArray(cols, seed + 20);
    for (const dtype of ["f32", "f16"] as const) {
      const wr = dtype === "f16" ? w.map(f16Round) : w;
      const br = dtype === "f16" ? b.map(f16Round) : b;
      const rec = beginRecording(gpu);
      const tx = uploadTensor(gpu, x, [rows, cols]);
      const ln = layerNorm(
        rec,
        tx,
        uploadTensor(gpu, wr, [cols], dtype),
        uploadTensor(gpu, br, [cols], dtype),
        1e-5,
      );
      const rn = rmsNorm(rec, tx, uploadTensor(gpu, wr, [cols], dtype), 1e-6);
      await submit(rec);
      const e1 = relError(await readTensor(ln), layerNormRef(x, cols, wr, br, 1e-5));
      const e2 = relError(await readTensor(rn), rmsNormRef(x, cols, wr, 1e-6));
      assert.ok(e1 < TOL && e2 < TOL, `[${rows}, ${cols}] ${dtype}: ${e1} ${e2}`);
    }
  }
});

rowDesignTest("softmax and reductions over the last dim", async () => {
  for (
    const [rows, cols, seed] of [
      [1, 1, 1],
      [7, 3, 2],
      [33, 1000, 3],
      [3, 30000, 6],
      [2, 70001, 4],
      [0, 5, 5],
    ]
  ) {
    const x = randomArray(rows * cols, seed, -20, 20);
    const rec = beginRecording(gpu);
    const tx = uploadTensor(gpu, x, [rows, cols]);
    const sm = softmax(rec, tx);
    const sum = reduce(rec, tx, "sum");
    const mx = reduce(rec, tx, "max");
    const sq = reduce(rec, tx, "sumsq");
    await submit(rec);
    assert.ok(relError(await readTensor(sm), softmaxRef(x, cols)) < TOL);
    assert.deepEqual(sum.shape, [rows]);
    // sums of many values: compare relative to the sum of magnitudes (f32 accumulation order).
    const sumErr = relError(await readTensor(sum), reduceRef(x, cols, "sum")) /
      Math.max(1, Math.sqrt(cols));
    assert.ok(sumErr < TOL, `sum ${sumErr}`);
    assert.ok(relError(await readTensor(mx), reduceRef(x, cols, "max")) === 0);
    assert.ok(relError(await readTensor(sq), reduceRef(x, cols, "sumsq")) < TOL);
  }
});

Deno.test("gelu (tanh form), silu, scale, add/mul/axpby with broadcast", async () => {
  for (const [n, seed] of [[1, 1], [1000, 2], [65537, 3], [0, 4]]) {
    const x = randomArray(n, seed, -12, 12);
    const y = randomArray(n, seed + 1, -3, 3);
    const rec = beginRecording(gpu);
    const tx = uploadTensor(gpu, x, [n]);
    const ty = uploadTensor(gpu, y, [n]);
    const g = gelu(rec, tx);
    const s = silu(rec, tx);
    const sc = scale(rec, tx, 0.37);
    const a = add(rec, tx, ty);
    const m = mul(rec, tx, ty);
    const r = addScaled(rec, tx, Math.sqrt(56), ty);
    const ab = axpby(rec, tx, 2, ty, -3);
    await submit(rec);
    const check = async (t: typeof g, f: (i: number) => number, what: string) => {
      const want = Float64Array.from({ length: n }, (_, i) => f(i));
      const err = relError(await readTensor(t), want);
      assert.ok(err < TOL, `${what} n=${n}: ${err}`);
    };
    await check(g, (i) => geluRef(x[i]), "gelu");
    await check(s, (i) => siluRef(x[i]), "silu");
    await check(sc, (i) => x[i] * 0.37, "scale");
    await check(a, (i) => x[i] + y[i], "add");
    await check(m, (i) => x[i] * y[i], "mul");
    await check(r, (i) => x[i] * Math.sqrt(56) + y[i], "addScaled");
    await check(ab, (i) => 2 * x[i] - 3 * y[i], "axpby");
  }
  // bias broadcast over rows
  const x = randomArray(5 * 7, 9);
  const b = randomArray(7, 10);
  const rec = beginRecording(gpu);
  const out = add(rec, uploadTensor(gpu, x, [5, 7]), uploadTensor(gpu, b, [7]));
  assert.throws(
    () => add(rec, uploadTensor(gpu, x, [5, 7]), uploadTensor(gpu, b.subarray(0, 5), [5])),
    /cannot broadcast/,
  );
  await submit(rec);
  const want = Float64Array.from(x, (v, i) => v + b[i % 7]);
  assert.ok(relError(await readTensor(out), want) < TOL);
});

Deno.test("cast f32 <-> f16 rounds to nearest even, odd lengths, chunked tensors", async () => {
  for (const n of [0, 1, 7, 1001]) {
    const x = randomArray(n, n + 3, -70000, 70000);
    x[0 % Math.max(n, 1)] = n > 0 ? 1.00048828125 : 0; // exactly halfway between two halves
    const rec = beginRecording(gpu);
    const tx = uploadTensor(gpu, x, [n]);
    const h = cast(rec, tx, "f16");
    const back = cast(rec, h, "f32");
    await submit(rec);
    const bits = new Uint16Array(await readRaw(h));
    assert.deepEqual([...bits], [...toF16Bits(x)], `n=${n}`);
    assert.deepEqual([...await readTensor(back)], [...x.map(f16Round)]);
  }
  // chunked: 3 rows of 5 per chunk
  const x = randomArray(11 * 5, 5);
  const tx = uploadTensor(gpu, x, [11, 5], "f32", { chunkBytes: 3 * 5 * 4 });
  const rec = beginRecording(gpu);
  const h = cast(rec, tx, "f16");
  const back = cast(rec, h, "f32");
  await submit(rec);
  assert.equal(h.chunks.length, 4);
  assert.deepEqual([...await readTensor(h)], [...x.map(f16Round)]);
  assert.deepEqual([...await readTensor(back)], [...x.map(f16Round)]);
});

Deno.test("fill and copyTensor", async () => {
  const t = emptyTensor(gpu, [3, 5], "f32");
  const i = emptyTensor(gpu, [9], "i32");
  const rec = beginRecording(gpu);
  fill(rec, t, -2.5);
  fill(rec, i, -7);
  const c = copyTensor(rec, t, emptyTensor(gpu, [15], "f32"));
  await submit(rec);
  assert.deepEqual([...await readTensor(c)], new Array(15).fill(-2.5));
  assert.deepEqual([...await readTensor(i)], new Array(9).fill(-7));
});

Deno.test("embedding gather: f32 and f16 tables, chunked table, out-of-range ids give NaN", async () => {
  const V = 37, h = 13;
  const table = randomArray(V * h, 3);
  const ids = randomInts(29, 4, 0, V);
  for (const dtype of ["f32", "f16"] as const) {
    const tab = dtype === "f16" ? table.map(f16Round) : table;
    for (const chunkBytes of [undefined, 4 * h * 4]) {
      const tt = uploadTensor(gpu, tab, [V, h], dtype, { chunkBytes });
      if (chunkBytes) assert.ok(tt.chunks.length >= 5);
      const rec = beginRecording(gpu);
      const out = embedding(rec, tt, uploadTensor(gpu, ids, [29]));
      await submit(rec);
      assert.deepEqual(out.shape, [29, h]);
      assert.deepEqual([...await readTensor(out)], [...embeddingRef(tab, h, ids)]);
    }
  }
  const rec = beginRecording(gpu);
  const bad = embedding(
    rec,
    uploadTensor(gpu, table, [V, h]),
    uploadTensor(gpu, new Int32Array([1, V, -1]), [1, 3]),
  );
  const none = embedding(
    rec,
    uploadTensor(gpu, table, [V, h]),
    uploadTensor(gpu, new Int32Array(0), [0]),
  );
  await submit(rec);
  const got = await readTensor(bad);
  assert.deepEqual(bad.shape, [1, 3, h]);
  assert.deepEqual([...got.subarray(0, h)], [...table.subarray(h, 2 * h)]);
  assert.ok(got.subarray(h).every(Number.isNaN));
  assert.deepEqual(none.shape, [0, h]);
});

rowDesignTest(
  "cross-entropy with ignored labels over a large vocabulary, chunked logits",
  async () => {
    for (const [R, V, chunkRows] of [[7, 5003, 0], [9, 130, 2], [3, 1, 0], [0, 10, 0]]) {
      const logits = randomArray(R * V, R + V, -8, 8);
      const labels = randomInts(R, V, 0, V);
      if (R > 1) labels[1] = -100;
      if (R > 4) labels[4] = -100;
      const t = uploadTensor(
        gpu,
        logits,
        [R, V],
        "f32",
        chunkRows ? { chunkBytes: chunkRows * V * 4 } : {},
      );
      const rec = beginRecording(gpu);
      const ce = crossEntropy(rec, t, uploadTensor(gpu, labels, [R]));
      await submit(rec);
      const want = crossEntropyRef(logits, V, labels);
      assert.ok(relError(await readTensor(ce.loss), want.loss) < TOL);
      assert.ok(relError(await readTensor(ce.lse), want.lse) < TOL);
      const [mean, count] = await readTensor(ce.mean);
      assert.equal(count, want.count);
      assert.ok(
        Math.abs(mean - want.mean) < TOL * Math.max(1, want.mean),
        `${mean} vs ${want.mean}`,
      );
    }
    // every label ignored -> mean 0, count 0
    const rec = beginRecording(gpu);
    const ce = crossEntropy(
      rec,
      uploadTensor(gpu, randomArray(6, 1), [2, 3]),
      uploadTensor(gpu, new Int32Array([-100, -100]), [2]),
    );
    await submit(rec);
    assert.deepEqual([...await readTensor(ce.mean)], [0, 0]);
  },
);
