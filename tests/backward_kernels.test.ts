// Finite-difference checks of every backward kernel (core/kernels/<op>/*_grad.ts) on small odd shapes
// in f32: for y = f(x) and a random upstream gradient g, the kernel's dx must equal the central
// difference of Σ g·f(x) computed by a float64 CPU forward (tests/reference/backward.ts).

import assert from "node:assert/strict";
import { beginRecording, getGpu, submit } from "../core/gpu/mod.ts";
import { readFloat32, type Tensor, uploadTensor } from "../core/tensor/mod.ts";
import { crossEntropy, rotaryInvFreq } from "../core/kernels/mod.ts";
import {
  attentionBackward,
  columnSumInto,
  crossEntropyBackward,
  dropoutBackward,
  dropoutForward,
  embeddingBackward,
  geluBackward,
  layerNormBackward,
  linearBackward,
  qkvRotaryBackward,
} from "../core/kernels/mod.ts";
import {
  attention64,
  crossEntropy64,
  dotWith,
  gelu64,
  layerNorm64,
  linear64,
  maskedAttention64,
  numericGrad,
  qkvRotary64,
} from "./reference/backward.ts";
import { randomArray, randomInts, relError } from "./reference/kernels.ts";
import { rowDesignTest } from "./helpers/row_designs.ts";

const gpu = await getGpu();
const up = (data: Float32Array, shape: number[]) => uploadTensor(gpu, data, shape, "f32");
const zeros = (shape: number[]) => up(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);

function close(name: string, got: ArrayLike<number>, want: ArrayLike<number>, tol = 2e-3) {
  const e = relError(got, want);
  assert.ok(e < tol, `${name}: relative error ${e}`);
}

Deno.test("linearBackward: dx (f32 and f16 W), dW and db added into existing gradients", async () => {
  const rows = 5, N = 11, K = 13;
  const x = randomArray(rows * K, 1), w = randomArray(N * K, 2), b = randomArray(N, 3);
  const g = randomArray(rows * N, 4);
  const f = (xv: Float64Array, wv: ArrayLike<number>, bv: ArrayLike<number>) =>
    dotWith(linear64(xv, wv, bv, rows, N, K), g);
  const dxWant = numericGrad((v) => f(v, w, b), x);
  const dwWant = numericGrad((v) => f(Float64Array.from(x), v, b), w);
  const dbWant = numericGrad((v) => f(Float64Array.from(x), w, v), b);
  for (const wDtype of ["f32", "f16"] as const) {
    const rec = beginRecording(gpu);
    const dW = up(new Float32Array(N * K).fill(0.5), [N, K]);
    const dB = up(new Float32Array(N).fill(-0.25), [N]);
    const dx = linearBackward(
      rec,
      up(x, [rows, K]),
      uploadTensor(gpu, w, [N, K], wDtype),
      up(g, [rows, N]),
      {
        weight: dW,
        bias: dB,
      },
    )!;
    await submit(rec);
    close(`dx (W ${wDtype})`, await readFloat32(dx), dxWant, wDtype === "f16" ? 2e-3 : 1e-4);
    close("dW", (await readFloat32(dW)).map((v) => v - 0.5), dwWant, 1e-4);
    close("db", (await readFloat32(dB)).map((v) => v + 0.25), dbWant, 1e-4);
  }
});

rowDesignTest("layerNormBackward: dx, dweight, dbias (h = 37)", async () => {
  const rows = 5, h = 37, eps = 1e-5;
  const x = randomArray(rows * h, 5, -2, 2), w = randomArray(h, 6, 0.5, 1.5);
  const b = randomArray(h, 7), g = randomArray(rows * h, 8);
  const dxWant = numericGrad((v) => dotWith(layerNorm64(v, w, b, h, eps), g), x);
  const dwWant = numericGrad((v) => dotWith(layerNorm64(x, v, b, h, eps), g), w);
  const dbWant = numericGrad((v) => dotWith(layerNorm64(x, w, v, h, eps), g), b);
  const rec = beginRecording(gpu);
  const dW = zeros([h]), dB = zeros([h]);
  const dx = layerNormBackward(rec, up(x, [rows, h]), up(w, [h]), eps, up(g, [rows, h]), {
    weight: dW,
    bias: dB,
  });
  await submit(rec);
  close("dx", await readFloat32(dx), dxWant);
  close("dweight", await readFloat32(dW), dwWant);
  close("dbias", await readFloat32(dB), dbWant);
});

Deno.test("geluBackward matches the derivative of the tanh GeLU", async () => {
  const n = 101;
  const x = randomArray(n, 9, -4, 4), g = randomArray(n, 10);
  const want = numericGrad((v) => dotWith(Array.from(v, gelu64), g), x);
  const rec = beginRecording(gpu);
  const dx = geluBackward(rec, up(x, [n]), up(g, [n]));
  await submit(rec);
  close("gelu dx", await readFloat32(dx), want, 1e-4);
});

Deno.test("dropout: the backward regenerates the forward's mask from the seed", async () => {
  const n = 4099, p = 0.3;
  const x = randomArray(n, 11, 0.5, 1.5), g = randomArray(n, 12, 0.5, 1.5);
  const rec = beginRecording(gpu);
  const y = dropoutForward(rec, up(x, [n]), p, [7, 3]);
  const dx = dropoutBackward(rec, up(g, [n]), p, [7, 3]);
  const other = dropoutForward(rec, up(x, [n]), p, [7, 4]);
  await submit(rec);
  const yv = await readFloat32(y), dv = await readFloat32(dx), ov = await readFloat32(other);
  let kept = 0, differs = 0;
  for (let i = 0; i < n; i++) {
    const keep = yv[i] !== 0;
    assert.equal(dv[i] !== 0, keep, `mask differs at ${i}`);
    if (keep) {
      kept++;
      assert.ok(Math.abs(yv[i] - x[i] / (1 - p)) < 1e-5);
      assert.ok(Math.abs(dv[i] - g[i] / (1 - p)) < 1e-5);
    }
    if ((ov[i] !== 0) !== keep) differs++;
  }
  assert.ok(Math.abs(kept / n - (1 - p)) < 0.03, `kept fraction ${kept / n}`);
  assert.ok(differs > n / 10, "another seed gives another mask");
});

Deno.test("attentionBackward: dq, dk, dv with layer scaling and the prefix mask", async () => {
  const b = 2, heads = 3, s = 7, d = 8, c = 3;
  const ctx = [3, 5];
  const n = b * heads * s * d;
  const q = randomArray(n, 13, -2, 2), k = randomArray(n, 14, -2, 2), v = randomArray(n, 15);
  const g = randomArray(n, 16);
  const f = (qv: ArrayLike<number>, kv: ArrayLike<number>, vv: ArrayLike<number>) =>
    dotWith(attention64(qv, kv, vv, b, heads, s, d, ctx, c), g);
  const dqWant = numericGrad((t) => f(t, k, v), q);
  const dkWant = numericGrad((t) => f(q, t, v), k);
  const dvWant = numericGrad((t) => f(q, k, t), v);
  const info = uploadTensor(gpu, Int32Array.from([0, ctx[0], 0, ctx[1]]), [b, 2], "i32");
  const shape = [b, heads, s, d];
  // once whole, once one batch row at a time (the grouping large batches need)
  for (const scratchBytes of [undefined, heads * s * s * 4]) {
    const rec = beginRecording(gpu);
    const r = attentionBackward(
      rec,
      up(q, shape),
      up(k, shape),
      up(v, shape),
      up(g, [b, s, heads * d]),
      { layerScale: c, maskInfo: info, scratchBytes },
    );
    await submit(rec);
    close("dq", await readFloat32(r.dq), dqWant);
    close("dk", await readFloat32(r.dk), dkWant);
    close("dv", await readFloat32(r.dv), dvWant);
  }
});

Deno.test("qkvRotaryBackward: gathers and un-rotates dq, dk, dv into dqkv", async () => {
  const b = 2, s = 5, heads = 3, d = 8;
  const qkv = randomArray(b * s * 3 * heads * d, 17);
  const pos = randomInts(b * 2 * s, 18, 0, 40);
  const g = randomArray(3 * b * heads * s * d, 19);
  const inv = rotaryInvFreq(d / 2, 10000, true);
  const want = numericGrad((v) => dotWith(qkvRotary64(v, pos, b, s, heads, d, inv), g), qkv);
  const part = b * heads * s * d, shape = [b, heads, s, d];
  const rec = beginRecording(gpu);
  const dqkv = qkvRotaryBackward(
    rec,
    up(g.slice(0, part), shape),
    up(g.slice(part, 2 * part), shape),
    up(g.slice(2 * part), shape),
    uploadTensor(gpu, pos, [b, 2, s], "i32"),
    { heads, mode: "2d" },
  );
  await submit(rec);
  close("dqkv", await readFloat32(dqkv), want, 1e-4);
});

Deno.test("embeddingBackward: scatter-add with repeated ids, other rows untouched", async () => {
  const V = 17, h = 10;
  const ids = Int32Array.from([3, 5, 3, 16, 0, 5, 5, 9, 3]);
  const g = randomArray(ids.length * h, 20);
  const rec = beginRecording(gpu);
  const dT = up(new Float32Array(V * h).fill(1), [V, h]);
  embeddingBackward(rec, uploadTensor(gpu, ids, [ids.length], "i32"), up(g, [ids.length, h]), dT);
  await submit(rec);
  const got = await readFloat32(dT);
  const want = new Float64Array(V * h).fill(1);
  ids.forEach((id, t) => {
    for (let j = 0; j < h; j++) want[id * h + j] += g[t * h + j];
  });
  close("dTable", got, want, 1e-6);
});

rowDesignTest("crossEntropyBackward: mean over counted rows, -100 rows get zero", async () => {
  const R = 6, V = 29;
  const logits = randomArray(R * V, 21, -3, 3);
  const labels = Int32Array.from([4, -100, 28, 0, -100, 13]);
  const want = numericGrad((v) => crossEntropy64(v, V, labels), logits);
  const rec = beginRecording(gpu);
  const lt: Tensor = up(logits, [R, V]);
  const lab = uploadTensor(gpu, labels, [R], "i32");
  const ce = crossEntropy(rec, lt, lab);
  const dl = crossEntropyBackward(rec, lt, lab, ce.lse, ce.mean);
  await submit(rec);
  const got = await readFloat32(dl);
  close("dlogits", got, want, 1e-4);
  for (const r of [1, 4]) {
    for (let j = 0; j < V; j++) assert.equal(got[r * V + j], 0);
  }
});

Deno.test("linearBackward: frozen big weight (transposed copy) and row-chunked dy match the plain path", async () => {
  const rows = 24, N = 1024, K = 1024;
  const x = randomArray(rows * K, 31), w = randomArray(N * K, 32, -0.05, 0.05);
  const g = randomArray(rows * N, 33);
  for (const wDtype of ["f32", "f16"] as const) {
    const wt = uploadTensor(gpu, w, [N, K], wDtype);
    const rec = beginRecording(gpu);
    const plain = linearBackward(rec, up(x, [rows, K]), wt, up(g, [rows, N]))!;
    const fast = linearBackward(rec, up(x, [rows, K]), wt, up(g, [rows, N]), { frozen: true })!;
    // dy split into chunks of 8 rows, as a large-vocabulary logits gradient is
    const dyChunked = uploadTensor(gpu, g, [rows, N], "f32", { rowsPerChunk: 8 });
    assert.equal(dyChunked.chunks.length, 3);
    const dW = zeros([N, K]);
    const chunked = linearBackward(rec, up(x, [rows, K]), wt, dyChunked, { weight: dW })!;
    const dWPlain = zeros([N, K]);
    linearBackward(rec, up(x, [rows, K]), wt, up(g, [rows, N]), { weight: dWPlain, input: false });
    await submit(rec);
    const want = await readFloat32(plain);
    close(`dx frozen (${wDtype})`, await readFloat32(fast), want, 1e-5);
    close(`dx chunked dy (${wDtype})`, await readFloat32(chunked), want, 1e-5);
    close("dW chunked dy", await readFloat32(dW), await readFloat32(dWPlain), 1e-5);
  }
});

/** Inputs and the three mask kinds (compact with pad rows, random explicit, none) of a shape. */
function maskCases(b: number, s: number, seed: number) {
  // Row 0: plain causal; row 1: 2 pads (pad rows fully masked) and a context of 3; row 2:
  // nothing but pads.
  const info = Int32Array.from([0, 0, 2, 3, s + 1, 1].slice(0, 2 * b));
  const random = Uint32Array.from(randomInts(b * s * s, seed, 0, 4)); // 1 in 4 masked …
  random.fill(1, (b * s - 1) * s); // … and the last row fully masked
  return [
    {
      name: "compact",
      rule: (bi: number, i: number, j: number) =>
        i < info[bi * 2] || j < info[bi * 2] || (j - info[bi * 2] >= info[bi * 2 + 1] && j > i),
      mask: { maskInfo: uploadTensor(gpu, info, [b, 2], "i32") },
    },
    {
      name: "explicit",
      rule: (bi: number, i: number, j: number) => random[(bi * s + i) * s + j] !== 0,
      mask: { mask: uploadTensor(gpu, random, [b, s, s], "u32") },
    },
    { name: "none", rule: () => false, mask: {} },
  ];
}

Deno.test("attentionBackward designs (workgroup, rows) vs finite differences: pad rows, every mask kind, odd d", async () => {
  for (
    const [b, heads, s, d, c, maskValue] of [
      [3, 2, 9, 8, 3, -10000],
      [3, 1, 6, 5, 2, -1], // odd d (scalar loads); masked keys keep some weight
      [3, 1, 5, 12, 1, -10000],
    ]
  ) {
    const shape = [b, heads, s, d], n = b * heads * s * d;
    const q = randomArray(n, s + 1, -2, 2), k = randomArray(n, s + 2, -2, 2);
    const v = randomArray(n, s + 3), g = randomArray(n, s + 4);
    for (const t of maskCases(b, s, s + 5)) {
      const f = (qv: ArrayLike<number>, kv: ArrayLike<number>, vv: ArrayLike<number>) =>
        dotWith(
          maskedAttention64(
            qv,
            kv,
            vv,
            [shape[0], shape[1], shape[2], shape[2], shape[2], shape[3]],
            t.rule,
            c,
            maskValue,
          ),
          g,
        );
      const want = [
        numericGrad((x) => f(x, k, v), q),
        numericGrad((x) => f(q, x, v), k),
        numericGrad((x) => f(q, k, x), v),
      ];
      for (const kernel of ["workgroup", "rows"] as const) {
        const rec = beginRecording(gpu);
        const r = attentionBackward(
          rec,
          up(q, shape),
          up(k, shape),
          up(v, shape),
          up(g, [b, s, heads * d]),
          {
            layerScale: c,
            maskValue,
            kernel,
            ...t.mask,
          },
        );
        await submit(rec);
        const tag = `${kernel} ${t.name} [${shape}] mv=${maskValue}`;
        close(`dq ${tag}`, await readFloat32(r.dq), want[0]);
        close(`dk ${tag}`, await readFloat32(r.dk), want[1]);
        close(`dv ${tag}`, await readFloat32(r.dv), want[2]);
      }
    }
  }
});

Deno.test("attentionBackward: the rows design matches the workgroup design on training shapes", async () => {
  // One mask kind per shape but the demo's: each kind and head dim compiles its own pipelines
  // (~2 s uncached at d = 32, ~5 s at d = 128).
  for (
    const [[b, heads, s, d, c], kinds] of [
      [[3, 4, 61, 32, 2], ["compact", "explicit", "none"]], // the demo model's shape
      [[3, 2, 37, 64, 5], ["explicit"]],
      [[3, 2, 70, 32, 1], ["compact"]],
      [[3, 1, 9, 128, 3], ["compact"]],
    ] as [number[], string[]][]
  ) {
    const shape = [b, heads, s, d], n = b * heads * s * d;
    const q = up(randomArray(n, d + 1, -2, 2), shape), k = up(randomArray(n, d + 2, -2, 2), shape);
    const v = up(randomArray(n, d + 3), shape), g = up(randomArray(n, d + 4), [b, s, heads * d]);
    for (const t of maskCases(b, s, s).filter((t) => kinds.includes(t.name))) {
      const rec = beginRecording(gpu);
      const [w, r] = (["workgroup", "rows"] as const).map((kernel) =>
        attentionBackward(rec, q, k, v, g, { layerScale: c, kernel, ...t.mask })
      );
      await submit(rec);
      for (const x of ["dq", "dk", "dv"] as const) {
        close(`${x} ${t.name} [${shape}]`, await readFloat32(r[x]), await readFloat32(w[x]), 1e-5);
      }
    }
  }
});

Deno.test("gradient sums over more rows than llvmpipe lets one invocation loop: column sums, embedding, LayerNorm weights", async () => {
  // llvmpipe stops an invocation's loops after 65535 iterations; these kernels walk the rows in
  // ranges, so 70001 rows must still all count.
  const rows = 70001;
  const h = 4;
  const dy = randomArray(rows * h, 91);
  const x = randomArray(rows * h, 92, -2, 2);
  const ids = Int32Array.from({ length: rows }, (_, t) => t % 3);
  const colSum = new Float64Array(h);
  const emb = new Float64Array(3 * h);
  const lnWeight = new Float64Array(h);
  for (let t = 0; t < rows; t++) {
    const row = Array.from(x.subarray(t * h, (t + 1) * h));
    const mean = row.reduce((a, b) => a + b, 0) / h;
    const rstd = 1 / Math.sqrt(row.reduce((a, b) => a + (b - mean) ** 2, 0) / h + 1e-5);
    for (let j = 0; j < h; j++) {
      colSum[j] += dy[t * h + j];
      emb[ids[t] * h + j] += dy[t * h + j];
      lnWeight[j] += dy[t * h + j] * (row[j] - mean) * rstd;
    }
  }
  const rec = beginRecording(gpu);
  const cs = zeros([h]);
  columnSumInto(rec, cs, up(dy, [rows, h]));
  const table = zeros([3, h]);
  embeddingBackward(rec, uploadTensor(gpu, ids, [rows], "i32"), up(dy, [rows, h]), table);
  const dw = zeros([h]);
  const db = zeros([h]);
  layerNormBackward(
    rec,
    up(x, [rows, h]),
    up(new Float32Array(h).fill(1), [h]),
    1e-5,
    up(dy, [rows, h]),
    {
      weight: dw,
      bias: db,
    },
  );
  await submit(rec);
  // Sums of 70001 terms in f32: compare relative to the sum of magnitudes.
  const scale = Math.sqrt(rows);
  assert.ok(relError(await readFloat32(cs), colSum) / scale < 1e-5, "column sums");
  assert.ok(relError(await readFloat32(table), emb) / scale < 1e-5, "embedding gradient");
  assert.ok(relError(await readFloat32(db), colSum) / scale < 1e-5, "LayerNorm bias gradient");
  assert.ok(relError(await readFloat32(dw), lnWeight) / scale < 1e-5, "LayerNorm weight gradient");
});
