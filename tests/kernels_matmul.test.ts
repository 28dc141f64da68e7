// matmul / linear vs the f64 reference: batched, transposed variants, bias, f16 storage, chunked
// weights and outputs, zero-length edges.
import assert from "node:assert/strict";
import {
  beginCapture,
  beginRecording,
  discardRecording,
  endCapture,
  getGpu,
  submit,
} from "../core/gpu/mod.ts";
import {
  emptyTensor,
  f16Round,
  readTensor,
  releaseTensor,
  uploadTensor,
  writeTensor,
} from "../core/tensor/mod.ts";
import { linear, matmul, MATMUL_KERNEL_ENV } from "../core/kernels/mod.ts";
import { matmulRef, randomArray, relError } from "./reference/kernels.ts";
import { rowDesignTest } from "./helpers/row_designs.ts";

const gpu = await getGpu();

interface Case {
  kernel?: "generic" | "shared" | "gemv";
  batch: number[];
  M: number;
  N: number;
  K: number;
  transposeA?: boolean;
  transposeB?: boolean;
  sharedB?: boolean;
  bias?: boolean;
  f16?: boolean;
}

async function runCase(c: Case, seed: number): Promise<number> {
  const batch = c.batch.reduce((a, b) => a * b, 1);
  const a = randomArray(batch * c.M * c.K, seed);
  const bCount = (c.sharedB ? 1 : batch) * c.K * c.N;
  let b = randomArray(bCount, seed + 1);
  let bias = c.bias ? randomArray(c.N, seed + 2) : undefined;
  if (c.f16) {
    b = b.map(f16Round);
    if (bias) bias = bias.map(f16Round);
  }
  const aShape = [...c.batch, ...(c.transposeA ? [c.K, c.M] : [c.M, c.K])];
  const bInner = c.transposeB ? [c.N, c.K] : [c.K, c.N];
  const bShape = c.sharedB ? bInner : [...c.batch, ...bInner];
  const ta = uploadTensor(gpu, a, aShape);
  const tb = uploadTensor(gpu, b, bShape, c.f16 ? "f16" : "f32");
  const tbias = bias ? uploadTensor(gpu, bias, [c.N], c.f16 ? "f16" : "f32") : undefined;
  const rec = beginRecording(gpu);
  const out = matmul(rec, ta, tb, {
    bias: tbias,
    transposeA: c.transposeA,
    transposeB: c.transposeB,
    kernel: c.kernel,
  });
  await submit(rec);
  assert.deepEqual(out.shape, [...c.batch, c.M, c.N]);
  const got = await readTensor(out);
  const want = matmulRef(a, b, batch, c.M, c.N, c.K, {
    transposeA: c.transposeA,
    transposeB: c.transposeB,
    sharedB: c.sharedB,
    bias,
  });
  for (const t of [ta, tb, out, ...(tbias ? [tbias] : [])]) releaseTensor(t);
  return relError(got, want);
}

Deno.test("matmul f32: odd shapes, all transpose variants, bias, batching", async () => {
  const cases: Case[] = [
    { batch: [], M: 1, N: 1, K: 1 },
    { batch: [], M: 37, N: 29, K: 53 },
    { batch: [], M: 70, N: 33, K: 5, transposeB: true, sharedB: true, bias: true },
    { batch: [3], M: 17, N: 9, K: 31, transposeB: true, sharedB: true, bias: true },
    { batch: [2, 3], M: 5, N: 7, K: 11, transposeB: true, sharedB: false },
    { batch: [2], M: 13, N: 19, K: 23, transposeA: true, sharedB: false },
    { batch: [], M: 41, N: 10, K: 35, transposeA: true, sharedB: true },
    {
      batch: [3],
      M: 9,
      N: 66,
      K: 8,
      transposeA: true,
      transposeB: true,
      sharedB: true,
      bias: true,
    },
    { batch: [], M: 1, N: 257, K: 130, transposeB: true, sharedB: true, bias: true },
    { batch: [], M: 16, N: 96, K: 64, transposeB: true, sharedB: true },
  ];
  for (const [i, c] of cases.entries()) {
    const err = await runCase({ sharedB: true, ...c }, 100 + i);
    assert.ok(err < 1e-5, `case ${i} ${JSON.stringify(c)}: rel error ${err}`);
  }
});

Deno.test("matmul shared-memory kernel (hardware-GPU design) on every variant", async () => {
  const cases: Case[] = [
    { batch: [], M: 1, N: 1, K: 1 },
    { batch: [], M: 70, N: 65, K: 33, transposeB: true, bias: true },
    { batch: [3], M: 17, N: 9, K: 31, transposeB: true, bias: true },
    { batch: [2], M: 13, N: 19, K: 23, transposeA: true, sharedB: false },
    { batch: [], M: 41, N: 130, K: 35, transposeA: true, transposeB: true },
    { batch: [2], M: 66, N: 70, K: 17, sharedB: false },
    { batch: [], M: 9, N: 80, K: 40, transposeB: true, bias: true, f16: true },
    // Several 64×64 tiles each way, K not a multiple of the 16-deep k-tile. (Variants already
    // compiled above only: a cold compile of this kernel takes ~20 s on llvmpipe's GL backend.)
    { batch: [], M: 130, N: 129, K: 50, transposeB: true, bias: true },
    { batch: [2], M: 65, N: 64, K: 17, transposeA: true, transposeB: true, sharedB: false },
    { batch: [3], M: 40, N: 72, K: 33, transposeB: true, f16: true, bias: true },
  ];
  for (const [i, c] of cases.entries()) {
    const err = await runCase({ sharedB: true, ...c, kernel: "shared" }, 600 + i);
    assert.ok(err < 1e-5, `case ${i} ${JSON.stringify(c)}: rel error ${err}`);
  }
});

/** The pipeline labels a matmul of case `c`'s shapes records (auto kernel choice). */
function kernelsOf(c: Case): string[] {
  const batch = c.batch.reduce((x, y) => x * y, 1);
  const aShape = [...c.batch, ...(c.transposeA ? [c.K, c.M] : [c.M, c.K])];
  const bInner = c.transposeB ? [c.N, c.K] : [c.K, c.N];
  const ta = uploadTensor(gpu, new Float32Array(batch * c.M * c.K), aShape);
  const tb = uploadTensor(
    gpu,
    new Float32Array((c.sharedB ? 1 : batch) * c.K * c.N),
    c.sharedB ? bInner : [...c.batch, ...bInner],
    c.f16 ? "f16" : "f32",
  );
  const rec = beginRecording(gpu);
  beginCapture(rec);
  const out = matmul(rec, ta, tb, {
    transposeA: c.transposeA,
    transposeB: c.transposeB,
    kernel: c.kernel,
  });
  const labels = endCapture(rec).commands.flatMap((cmd) =>
    "pipeline" in cmd ? [cmd.pipeline.label] : []
  );
  discardRecording(rec);
  for (const t of [ta, tb, out]) releaseTensor(t);
  return labels;
}

// The small-M kernel (gemv.ts) takes M ≤ 4 rows (batch × M with a shared B) with a weight below
// the texture threshold: every row count, K and N not multiples of 4 (the scalar loop) and
// multiples of 4 / 8 (the vector loop of the layer form, f32 / f16), both layouts of A and B,
// bias, batches folded into M or one per workgroup z; on both row designs (one column group per
// invocation; K split over a workgroup's lanes with the workgroup reduction).
rowDesignTest("matmul small-M kernel (gemv): odd shapes, layouts, bias, batches, f16", async () => {
  const cases: Case[] = [
    { batch: [], M: 1, N: 1, K: 1, transposeB: true, sharedB: true },
    { batch: [], M: 1, N: 37, K: 53, transposeB: true, sharedB: true, bias: true },
    { batch: [], M: 2, N: 9, K: 130, transposeB: true, sharedB: true },
    { batch: [], M: 3, N: 70, K: 21, sharedB: true, bias: true },
    { batch: [], M: 4, N: 33, K: 67, transposeA: true, sharedB: true },
    { batch: [], M: 4, N: 13, K: 19, transposeA: true, transposeB: true, sharedB: true },
    // The vector loop: K % 4 == 0 (f32), K % 8 == 0 (f16); N not a multiple of 4.
    { batch: [], M: 1, N: 203, K: 128, transposeB: true, sharedB: true, bias: true },
    { batch: [], M: 3, N: 45, K: 36, transposeB: true, sharedB: true },
    { batch: [], M: 1, N: 77, K: 64, transposeB: true, sharedB: true, bias: true, f16: true },
    { batch: [], M: 4, N: 30, K: 40, transposeB: true, sharedB: true, f16: true },
    { batch: [], M: 2, N: 31, K: 17, transposeB: true, sharedB: true, bias: true, f16: true },
    { batch: [], M: 2, N: 22, K: 9, sharedB: true, f16: true },
    // Batches: folded into M (shared B, 2 × 2 rows), one per workgroup z (B per batch).
    { batch: [2], M: 2, N: 27, K: 44, transposeB: true, sharedB: true, bias: true },
    { batch: [2, 3], M: 3, N: 11, K: 24, transposeB: true, sharedB: false },
    { batch: [3], M: 1, N: 14, K: 15, sharedB: false, bias: true },
    { batch: [2], M: 2, N: 6, K: 10, transposeA: true, sharedB: false },
  ];
  for (const [i, c] of cases.entries()) {
    const kernels = kernelsOf(c);
    assert.ok(kernels.length === 1 && kernels[0].startsWith("gemv:"), `case ${i}: ${kernels}`);
    const err = await runCase(c, 700 + i);
    assert.ok(err < 1e-5, `case ${i} ${JSON.stringify(c)}: rel error ${err}`);
  }
  // Past 4 rows (also after folding a batch into M) the tiled kernels take over.
  assert.ok(
    !kernelsOf({ batch: [], M: 5, N: 8, K: 8, transposeB: true, sharedB: true })[0]
      .startsWith("gemv:"),
  );
  assert.ok(
    !kernelsOf({ batch: [3], M: 2, N: 8, K: 8, transposeB: true, sharedB: true })[0]
      .startsWith("gemv:"),
  );
});

// kernel: "gemv" forces the small-M kernel for a weight of any size (bench/matmul.ts --small puts
// it beside the texture design on the small model's shapes); past its row limit it is refused.
Deno.test('matmul kernel "gemv": forced on a weight above the texture threshold, f32 and f16', async () => {
  const cases: Case[] = [
    {
      kernel: "gemv",
      batch: [],
      M: 1,
      N: 300,
      K: 256,
      transposeB: true,
      sharedB: true,
      bias: true,
    },
    { kernel: "gemv", batch: [], M: 4, N: 260, K: 264, transposeB: true, sharedB: true, f16: true },
  ];
  for (const [i, c] of cases.entries()) {
    assert.ok(c.N * c.K >= 1 << 16, "above TEXTURE_MIN_WEIGHT: auto would take the texture design");
    const kernels = kernelsOf(c);
    assert.ok(kernels.length === 1 && kernels[0].startsWith("gemv:"), `case ${i}: ${kernels}`);
    const err = await runCase(c, 740 + i);
    assert.ok(err < 1e-5, `case ${i} ${JSON.stringify(c)}: rel error ${err}`);
  }
  const rec = beginRecording(gpu);
  const x = uploadTensor(gpu, new Float32Array(5 * 8), [5, 8]);
  const w = uploadTensor(gpu, new Float32Array(8 * 8), [8, 8]);
  assert.throws(
    () => matmul(rec, x, w, { transposeB: true, kernel: "gemv" }),
    /the gemv kernel takes at most 4 rows/,
  );
  discardRecording(rec);
  releaseTensor(x);
  releaseTensor(w);
});

Deno.test("matmul f16 storage of B and bias, f32 accumulation", async () => {
  // f16 storage is unpacked with unpack2x16float (core WGSL), so it runs on every adapter; the
  // reference rounds the same inputs to f16, so the only difference is f32 accumulation.
  const cases: Case[] = [
    { batch: [], M: 1, N: 77, K: 64, transposeB: true, sharedB: true, bias: true },
    { batch: [2], M: 19, N: 45, K: 33, transposeB: true, sharedB: true, bias: true },
    { batch: [], M: 8, N: 31, K: 17, sharedB: true },
  ];
  for (const [i, c] of cases.entries()) {
    const err = await runCase({ ...c, f16: true }, 200 + i);
    assert.ok(err < 1e-5, `case ${i}: rel error ${err}`);
  }
  if (!gpu.hasF16) console.log("note: adapter lacks shader-f16; packed f16 storage still tested");
});

Deno.test("matmul zero-length edges: M = 0, N = 0, K = 0 (bias only)", async () => {
  const bias = new Float32Array([1, 2, 3]);
  const a = uploadTensor(gpu, new Float32Array(0), [2, 0]);
  const w = uploadTensor(gpu, new Float32Array(0), [3, 0]);
  const tb = uploadTensor(gpu, bias, [3]);
  const rec = beginRecording(gpu);
  const y = linear(rec, a, w, tb);
  const empty = linear(
    rec,
    uploadTensor(gpu, new Float32Array(0), [0, 4]),
    uploadTensor(gpu, new Float32Array(12), [3, 4]),
  );
  const noCols = linear(
    rec,
    uploadTensor(gpu, new Float32Array(8), [2, 4]),
    uploadTensor(gpu, new Float32Array(0), [0, 4]),
  );
  await submit(rec);
  assert.deepEqual([...await readTensor(y)], [1, 2, 3, 1, 2, 3]);
  assert.deepEqual(empty.shape, [0, 3]);
  assert.equal((await readTensor(empty)).length, 0);
  assert.deepEqual(noCols.shape, [2, 0]);
});

Deno.test("matmul: chunked weight (split over N) and chunked output rows", async () => {
  const M = 21, K = 24, N = 53;
  const x = randomArray(M * K, 7);
  const w = randomArray(N * K, 8);
  const bias = randomArray(N, 9);
  // 10 rows of K f32 per chunk -> 6 chunks of the weight; 4 output rows (of N) per chunk.
  const tw = uploadTensor(gpu, w, [N, K], "f32", { chunkBytes: 10 * K * 4 });
  assert.equal(tw.chunks.length, 6);
  const tx = uploadTensor(gpu, x, [M, K]);
  const tbias = uploadTensor(gpu, bias, [N]);
  const out = emptyTensor(gpu, [M, N], "f32", { chunkBytes: 4 * N * 4 });
  assert.equal(out.chunks.length, 6);
  const want = matmulRef(x, w, 1, M, N, K, { transposeB: true, sharedB: true, bias });
  for (const kernel of ["generic", "shared"] as const) {
    const rec = beginRecording(gpu);
    matmul(rec, tx, tw, { bias: tbias, transposeB: true, out, kernel });
    await submit(rec);
    const err = relError(await readTensor(out), want);
    assert.ok(err < 1e-5, `${kernel}: rel error ${err}`);
  }
  // The same with an f16 chunked weight (odd row count per chunk is avoided for 4-byte alignment).
  const w16 = w.map(f16Round);
  const tw16 = uploadTensor(gpu, w16, [N, K], "f16", { chunkBytes: 7 * K * 2 });
  const rec2 = beginRecording(gpu);
  const y16 = linear(rec2, tx, tw16);
  await submit(rec2);
  const want16 = matmulRef(x, w16, 1, M, N, K, { transposeB: true, sharedB: true });
  assert.ok(relError(await readTensor(y16), want16) < 1e-5);
});

// A row-chunked weight (a small binding limit) keeps the small-M kernel, one dispatch per chunk:
// the same sums as the whole weight, so the same bits.
rowDesignTest(
  "matmul small-M kernel (gemv): a chunked weight, bit-equal to the whole one",
  async () => {
    for (
      const [i, { M, N, K, f16 }] of [
        { M: 1, N: 53, K: 24, f16: false }, // vector loop
        { M: 3, N: 41, K: 13, f16: false }, // scalar loop
        { M: 2, N: 50, K: 32, f16: true },
        { M: 4, N: 29, K: 10, f16: true },
      ].entries()
    ) {
      const dtype = f16 ? "f16" : "f32";
      const x = randomArray(M * K, 40 + i);
      const w = randomArray(N * K, 50 + i).map((v) => f16 ? f16Round(v) : v);
      const bias = randomArray(N, 60 + i);
      const tx = uploadTensor(gpu, x, [M, K]);
      const tbias = uploadTensor(gpu, bias, [N]);
      const whole = uploadTensor(gpu, w, [N, K], dtype);
      // 6 rows per chunk (an even count keeps f16 chunks 4-byte aligned).
      const split = uploadTensor(gpu, w, [N, K], dtype, { chunkBytes: 6 * K * (f16 ? 2 : 4) });
      assert.equal(split.chunks.length, Math.ceil(N / 6));
      const rec = beginRecording(gpu);
      beginCapture(rec);
      const yWhole = linear(rec, tx, whole, tbias);
      const ySplit = linear(rec, tx, split, tbias);
      const labels = endCapture(rec).commands.flatMap((c) =>
        "pipeline" in c ? [c.pipeline.label] : []
      );
      await submit(rec);
      assert.ok(labels.every((l) => l.startsWith("gemv:")), `case ${i}: ${labels}`);
      assert.equal(labels.length, 1 + split.chunks.length);
      const got = await readTensor(ySplit);
      assert.deepEqual(got, await readTensor(yWhole));
      const want = matmulRef(x, w, 1, M, N, K, { transposeB: true, sharedB: true, bias });
      assert.ok(relError(got, want) < 1e-5, `case ${i}: rel error ${relError(got, want)}`);
      for (const t of [tx, tbias, whole, split, yWhole, ySplit]) releaseTensor(t);
    }
  },
);

Deno.test("matmul: clear errors for mismatched shapes and dtypes", () => {
  const a = uploadTensor(gpu, new Float32Array(6), [2, 3]);
  const b = uploadTensor(gpu, new Float32Array(8), [4, 2]);
  const ids = uploadTensor(gpu, new Int32Array(6), [2, 3]);
  const rec = beginRecording(gpu);
  assert.throws(() => matmul(rec, a, b), /inner dims differ/);
  assert.throws(() => matmul(rec, ids, b), /dtype i32/);
  assert.throws(() => linear(rec, a, b, uploadTensor(gpu, new Float32Array(3), [3])), /inner dims/);
  discardRecording(rec);
});

Deno.test("matmul texture kernels (software-adapter design): tile and rows variants, f32 and f16", async () => {
  const shapes: [number, number, number][] = [
    [1, 40, 12],
    [2, 24, 64],
    [3, 96, 8],
    [4, 24, 8],
    [8, 40, 48],
    [9, 16, 36],
    [16, 48, 20],
    [17, 8, 4],
    [40, 72, 36],
    [12, 16, 260], // prefill with K past the short-K kernel's: the split-K tile
    // f16 weights' own nk tiles (1 × 16, 16 × 8): odd M, N not a multiple of the tile, split K.
    [1, 24, 520],
    [25, 40, 300],
    [16, 8, 1030],
    // Decode rows with K not whole texels (f32 K % 4, f16 K % 8): the activation texture's path.
    [2, 16, 37],
    [1, 16, 44],
  ];
  for (const [i, [M, N, K]] of shapes.entries()) {
    for (const dtype of ["f32", "f16"] as const) {
      if (dtype === "f16" && N % 8 !== 0) continue;
      const x = randomArray(M * K, 300 + i);
      let w = randomArray(N * K, 400 + i);
      let bias = randomArray(N, 500 + i);
      if (dtype === "f16") {
        w = w.map(f16Round);
        bias = bias.map(f16Round);
      }
      const tx = uploadTensor(gpu, x, [M, K]);
      const tw = uploadTensor(gpu, w, [N, K], dtype);
      const tb = uploadTensor(gpu, bias, [N], dtype);
      const rec = beginRecording(gpu);
      const y = matmul(rec, tx, tw, { transposeB: true, bias: tb, kernel: "texture" });
      const y2 = matmul(rec, tx, tw, { transposeB: true, kernel: "texture" });
      await submit(rec);
      const want = matmulRef(x, w, 1, M, N, K, { transposeB: true, sharedB: true, bias });
      const want2 = matmulRef(x, w, 1, M, N, K, { transposeB: true, sharedB: true });
      const e1 = relError(await readTensor(y), want);
      const e2 = relError(await readTensor(y2), want2);
      assert.ok(e1 < 1e-5 && e2 < 1e-5, `[${M}, ${N}, ${K}] ${dtype}: ${e1} ${e2}`);
    }
  }
});

Deno.test("matmul texture kernels: decode with f32 weights reads whole-texel activations from their buffer, no pack dispatch", async () => {
  // Only one row, f32 weights and K a whole number of texels skip the activation-pack dispatch;
  // the results are checked either way.
  const cases: [number, "f32" | "f16", boolean][] = [
    [48, "f32", false],
    [48, "f16", true],
    [45, "f32", true],
  ];
  for (const [K, dtype, packs] of cases) {
    for (const M of [1, 3]) {
      const N = 24;
      const x = randomArray(M * K, 61 + K + M);
      const w = randomArray(N * K, 71 + K).map((v) => dtype === "f16" ? f16Round(v) : v);
      const tx = uploadTensor(gpu, x, [M, K]);
      const tw = uploadTensor(gpu, w, [N, K], dtype);
      const rec = beginRecording(gpu);
      matmul(rec, tx, tw, { transposeB: true, kernel: "texture" }); // packs the weight
      beginCapture(rec);
      const y = matmul(rec, tx, tw, { transposeB: true, kernel: "texture" });
      const labels = endCapture(rec).commands.flatMap((c) =>
        "pipeline" in c ? [(c.pipeline as GPUComputePipeline).label] : []
      );
      await submit(rec);
      const packed = labels.some((l) => l.startsWith("matmul-texture:act"));
      assert.equal(packed, packs || M > 1, `K ${K} ${dtype} M ${M}: ${labels.join(", ")}`);
      const e = relError(
        await readTensor(y),
        matmulRef(x, w, 1, M, N, K, { transposeB: true, sharedB: true }),
      );
      assert.ok(e < 1e-5, `K ${K} ${dtype} M ${M}: ${e}`);
      for (const t of [tx, tw, y]) releaseTensor(t);
    }
  }
});

Deno.test("matmul texture kernels: f16 weights' bits survive their float texels (zeros and subnormals beside normal halves)", async () => {
  // The f16 texture holds two halves per 32-bit float lane; a zero or subnormal high half beside
  // a normal low half makes that lane a denormal float (and a negative zero high half a negative
  // denormal), which must reach the kernel unchanged (no flush to zero).
  const [N, K] = [24, 72];
  const halves = [0, -0, 2 ** -24, -(2 ** -20), 5.96e-8, 0.5, -1.25, 3e-5];
  for (const M of [1, 4, 20]) {
    const x = randomArray(M * K, 901 + M);
    const w = new Float32Array(N * K);
    for (let i = 0; i < w.length; i++) {
      // Even elements (low halves) normal values; odd ones (high halves) mostly zero/subnormal.
      w[i] = f16Round(i % 2 === 0 ? 0.25 + (i % 7) * 0.125 : halves[(i >> 1) % halves.length]);
    }
    const tx = uploadTensor(gpu, x, [M, K]);
    const tw = uploadTensor(gpu, w, [N, K], "f16");
    const rec = beginRecording(gpu);
    const y = matmul(rec, tx, tw, { transposeB: true, kernel: "texture" });
    await submit(rec);
    const want = matmulRef(x, w, 1, M, N, K, { transposeB: true, sharedB: true });
    const e = relError(await readTensor(y), want);
    assert.ok(e < 1e-5, `M ${M}: ${e}`);
  }
});

Deno.test("matmul texture kernels: the gradient forms dy·W (B stored [K, N]) and dyᵀ·x (A stored [K, M]), any K", async () => {
  const shapes: [number, number, number][] = [[1, 8, 5], [7, 16, 37], [24, 40, 64], [33, 8, 130]];
  for (const [i, [M, N, K]] of shapes.entries()) {
    for (const form of ["NN", "TN"] as const) {
      for (const dtype of ["f32", "f16"] as const) {
        if (dtype === "f16" && (N % 8 !== 0 || form === "TN")) continue;
        const transposeA = form === "TN";
        const a = randomArray(M * K, 600 + i);
        let b = randomArray(K * N, 700 + i);
        if (dtype === "f16") b = b.map(f16Round);
        const ta = uploadTensor(gpu, a, transposeA ? [K, M] : [M, K]);
        const tb = uploadTensor(gpu, b, [K, N], dtype);
        const rec = beginRecording(gpu);
        const y = matmul(rec, ta, tb, { transposeA, kernel: "texture" });
        // Releasing the operands while the recording that samples their packed textures is
        // still open must not destroy those textures before the submission.
        releaseTensor(ta, rec);
        releaseTensor(tb, rec);
        await submit(rec);
        // f16: b holds the rounded weights the kernel sees (tb itself is released by now).
        const want = matmulRef(a, b, 1, M, N, K, { transposeA, sharedB: true });
        const e = relError(await readTensor(y), want);
        assert.ok(e < 1e-5, `${form} [${M}, ${N}, ${K}] ${dtype}: ${e}`);
      }
    }
  }
});

Deno.test("matmul texture kernels: K longer than a texture row runs as slices adding into the output", async () => {
  // B stored [K, N] holds K in texture rows (limit: maxDim); B stored [N, K] holds it along rows,
  // as activations do (4 per texel: limit 4 · maxDim), in f32 and f16.
  const maxDim = gpu.limits.maxTextureDimension2D ?? 8192;
  const [M, N] = [5, 8];
  const cases = [
    ...(["NT", "NN", "TN"] as const).map((form) => ({
      form,
      K: maxDim + 6,
      dtype: "f32" as const,
    })),
    { form: "NT" as const, K: 4 * maxDim + 6, dtype: "f32" as const },
    { form: "NT" as const, K: 4 * maxDim + 6, dtype: "f16" as const },
  ];
  for (const { form, K, dtype } of cases) {
    const transposeA = form === "TN";
    const transposeB = form === "NT";
    const a = randomArray(M * K, 810);
    const b = randomArray(K * N, 811);
    const bias = randomArray(N, 812);
    const ta = uploadTensor(gpu, a, transposeA ? [K, M] : [M, K]);
    const tb = uploadTensor(gpu, b, transposeB ? [N, K] : [K, N], dtype);
    const rec = beginRecording(gpu);
    const tbias = transposeB ? uploadTensor(gpu, bias, [N]) : undefined;
    const y = matmul(rec, ta, tb, { transposeA, transposeB, bias: tbias, kernel: "texture" });
    await submit(rec);
    // f16: the reference sees the rounded weights.
    const bUsed = dtype === "f16" ? new Float32Array(await readTensor(tb)) : b;
    const want = matmulRef(a, bUsed, 1, M, N, K, {
      transposeA,
      transposeB,
      sharedB: true,
      bias: transposeB ? bias : undefined,
    });
    const e = relError(await readTensor(y), want);
    assert.ok(e < 1e-5, `${form} ${dtype} K ${K}: ${e}`);
  }
});

Deno.test("matmul texture kernel: chunked weight, batched x, repack after the weight changes", async () => {
  const [B, M, N, K] = [2, 5, 48, 16];
  const x = randomArray(B * M * K, 11);
  const w = randomArray(N * K, 12);
  const tx = uploadTensor(gpu, x, [B, M, K]);
  const tw = uploadTensor(gpu, w, [N, K], "f32", { rowsPerChunk: 16 });
  assert.equal(tw.chunks.length, 3);
  const rec = beginRecording(gpu);
  const y = linear(rec, tx, tw);
  await submit(rec);
  const want = matmulRef(x, w, B, M, N, K, { transposeB: true, sharedB: true });
  assert.ok(relError(await readTensor(y), want) < 1e-5);
  // The packed texture is cached on the weight; writing the weight must invalidate it.
  const w2 = randomArray(N * K, 13);
  writeTensor(tw, w2);
  const rec2 = beginRecording(gpu);
  const y2 = matmul(rec2, tx, tw, { transposeB: true, kernel: "texture" });
  await submit(rec2);
  const want2 = matmulRef(x, w2, B, M, N, K, { transposeB: true, sharedB: true });
  assert.ok(relError(await readTensor(y2), want2) < 1e-5);
  // A recording that packed a weight and was discarded leaves nothing half-made behind.
  const tw3 = uploadTensor(gpu, w, [N, K]);
  const rec3 = beginRecording(gpu);
  matmul(rec3, tx, tw3, { transposeB: true, kernel: "texture" });
  discardRecording(rec3);
  const rec4 = beginRecording(gpu);
  const y4 = matmul(rec4, tx, tw3, { transposeB: true, kernel: "texture" });
  await submit(rec4);
  assert.ok(relError(await readTensor(y4), want) < 1e-5);
  // The weight's rows are output columns (one texel holds a row's K values): any N fits.
  const w6 = randomArray(6 * K, 1);
  const rec5 = beginRecording(gpu);
  const y5 = matmul(rec5, tx, uploadTensor(gpu, w6, [6, K]), {
    transposeB: true,
    kernel: "texture",
  });
  await submit(rec5);
  const want5 = matmulRef(x, w6, B, M, 6, K, { transposeB: true, sharedB: true });
  assert.ok(relError(await readTensor(y5), want5) < 1e-5);
  // B stored [K, N] holds outputs in its texels: N must be whole texels.
  const rec6 = beginRecording(gpu);
  assert.throws(
    () => matmul(rec6, tx, uploadTensor(gpu, w6, [K, 6]), { kernel: "texture" }),
    /texture kernel needs/,
  );
  discardRecording(rec6);
});

Deno.test(`matmul: ${MATMUL_KERNEL_ENV}=shared runs a layer stack on the hardware-GPU kernel`, async () => {
  // The shared-memory kernel is what real GPUs get; forcing it through the environment checks
  // the whole auto path (no per-call option) here on the software adapter.
  const [M, K, H, N] = [33, 72, 264, 80];
  const x = randomArray(M * K, 21);
  const w1 = randomArray(H * K, 22).map(f16Round);
  const b1 = randomArray(H, 23).map(f16Round);
  const w2 = randomArray(N * H, 24);
  const b2 = randomArray(N, 25);
  const tx = uploadTensor(gpu, x, [M, K]);
  const tw1 = uploadTensor(gpu, w1, [H, K], "f16");
  const tb1 = uploadTensor(gpu, b1, [H], "f16");
  const tw2 = uploadTensor(gpu, w2, [N, H]);
  const tb2 = uploadTensor(gpu, b2, [N]);
  // Without the override these calls would take the generic kernel here (weights below the
  // texture threshold): drop its cached pipelines and check that nothing rebuilt them.
  const generic = ["pipeline:matmul-generic:NT:f16:f16", "pipeline:matmul-generic:NT:f32:f32"];
  for (const key of generic) gpu.cache.delete(key);
  Deno.env.set(MATMUL_KERNEL_ENV, "shared");
  try {
    for (const rows of [M, 1]) {
      const xs = rows === M ? tx : uploadTensor(gpu, x.subarray(0, K * rows), [rows, K]);
      const rec = beginRecording(gpu);
      const h = linear(rec, xs, tw1, tb1);
      const y = linear(rec, h, tw2, tb2);
      await submit(rec);
      const hWant = matmulRef(x.subarray(0, K * rows), w1, 1, rows, H, K, {
        transposeB: true,
        sharedB: true,
        bias: b1,
      });
      const yWant = matmulRef(hWant, w2, 1, rows, N, H, {
        transposeB: true,
        sharedB: true,
        bias: b2,
      });
      const err = relError(await readTensor(y), yWant);
      assert.ok(err < 1e-5, `rows ${rows}: rel error ${err}`);
    }
    for (const key of generic) assert.ok(!gpu.cache.has(key), `${key} was used`);
    for (const key of ["pipeline:matmul-shared:NT:f16:f16", "pipeline:matmul-shared:NT:f32:f32"]) {
      assert.ok(gpu.cache.has(key), `${key} was not used`);
    }
    Deno.env.set(MATMUL_KERNEL_ENV, "fastest");
    const rec = beginRecording(gpu);
    assert.throws(() => linear(rec, tx, tw1), /MEDGLM_MATMUL_KERNEL=fastest: expected one of/);
    discardRecording(rec);
  } finally {
    Deno.env.delete(MATMUL_KERNEL_ENV);
  }
});

Deno.test("matmul on a software adapter: a K too long for one invocation's loop and no texture fit is refused", () => {
  if (!gpu.isSoftware) {
    console.log("skipped: the loop limit is llvmpipe's; this adapter is hardware");
    return;
  }
  const K = 65540;
  const a = uploadTensor(gpu, new Float32Array(K), [1, K]);
  const b = uploadTensor(gpu, new Float32Array(K * 3), [K, 3]); // N = 3: no texture layout
  const rec = beginRecording(gpu);
  assert.throws(() => matmul(rec, a, b), /K = 65540 is longer than the 65535 loop iterations/);
  discardRecording(rec);
});
