// int8/int4 quantized matmul and embedding kernels (both designs: textures for software
// adapters, storage buffers for hardware) against the f64 CPU reference, on odd shapes.
import assert from "node:assert/strict";
import { beginRecording, getGpu, submit } from "../core/gpu/mod.ts";
import { f16Round, readTensor, releaseTensor, uploadTensor } from "../core/tensor/mod.ts";
import { embedding, linear, linearBackward } from "../core/kernels/mod.ts";
import { numberToF16Bits } from "../core/io/dtype.ts";
import { dequantize, referenceLinear, storedBytes } from "../core/quant/arith.ts";
import { type QuantDesign, uploadQuantWeight } from "../core/quant/gpu_weight.ts";
import { randomArray } from "./reference/kernels.ts";
import { randomQuantized } from "./helpers/quant.ts";

const gpu = await getGpu();

/** f32 accumulation over K against the f64 reference: within 1e-5 · max|want| · √K. */
function assertNearReference(got: Float32Array, want: ArrayLike<number>, K: number, name: string) {
  let maxErr = 0, maxRef = 0;
  for (let i = 0; i < want.length; i++) {
    maxErr = Math.max(maxErr, Math.abs(got[i] - want[i]));
    maxRef = Math.max(maxRef, Math.abs(want[i]));
  }
  const tol = 1e-5 * maxRef * Math.sqrt(K);
  assert.ok(maxErr <= tol, `${name}: max error ${maxErr} > ${tol}`);
}

interface Case {
  M: number;
  N: number;
  K: number;
  bits: 4 | 8;
  group?: number;
  bias?: "f16" | "f32";
}

const CASES: Case[] = [
  { M: 1, N: 37, K: 90, bits: 8, bias: "f32" },
  { M: 1, N: 37, K: 90, bits: 4 },
  { M: 3, N: 70, K: 66, bits: 8, bias: "f16" },
  { M: 5, N: 13, K: 134, bits: 4, bias: "f32" },
  { M: 19, N: 45, K: 50, bits: 8 },
  { M: 19, N: 45, K: 50, bits: 4, bias: "f16" },
  { M: 1, N: 33, K: 96, bits: 4, group: 32 },
  { M: 7, N: 33, K: 96, bits: 8, group: 16, bias: "f32" },
  { M: 20, N: 66, K: 128, bits: 4, group: 64 },
];

for (const design of ["texture", "buffer"] as QuantDesign[]) {
  for (const c of CASES) {
    const name = `quantLinear ${design} q${c.bits} M${c.M} N${c.N} K${c.K}` +
      `${c.group ? ` group ${c.group}` : ""}${c.bias ? ` bias ${c.bias}` : ""}`;
    Deno.test(name, async () => {
      const m = randomQuantized(c.N, c.K, c.bits, c.group ?? c.K, c.M * 7 + c.N);
      const x = randomArray(c.M * c.K, 11);
      let b = c.bias ? randomArray(c.N, 12) : undefined;
      if (b && c.bias === "f16") b = b.map(f16Round);
      const want = referenceLinear(x, c.M, m, b);
      const w = uploadQuantWeight(gpu, { ...m, stored: storedBytes(m) }, { design, label: "w" });
      const xt = uploadTensor(gpu, x, [c.M, c.K]);
      const bt = b ? uploadTensor(gpu, b, [c.N], c.bias) : undefined;
      const rec = beginRecording(gpu);
      const y = linear(rec, xt, w, bt);
      await submit(rec);
      assertNearReference(await readTensor(y) as Float32Array, want, c.K, name);
      for (const t of [w, xt, y, ...(bt ? [bt] : [])]) releaseTensor(t);
    });
  }
  for (const bits of [8, 4] as const) {
    Deno.test(`quantEmbedding ${design} q${bits}`, async () => {
      const V = 41, h = 48;
      const m = randomQuantized(V, h, bits, h, 5);
      const ref = dequantize(m);
      const w = uploadQuantWeight(gpu, { ...m, stored: storedBytes(m) }, { design });
      const ids = Int32Array.from([0, 40, 7, 7, 23]);
      const it = uploadTensor(gpu, ids, [5]);
      const rec = beginRecording(gpu);
      const y = embedding(rec, w, it);
      await submit(rec);
      const got = await readTensor(y) as Float32Array;
      ids.forEach((id, i) => {
        for (let j = 0; j < h; j++) {
          assert.ok(Math.abs(got[i * h + j] - ref[id * h + j]) <= 1e-6 * Math.abs(ref[id * h + j]));
        }
      });
      for (const t of [w, it, y]) releaseTensor(t);
    });
  }
}

// Every value of the range, −8 / −128 included (a stored checkpoint may hold them although the
// original's rounding never makes them): the texture kernels' masked-position unpacking turns
// each value unsigned around the zero point and takes that out of the sum once.
for (const design of ["texture", "buffer"] as QuantDesign[]) {
  for (const bits of [4, 8] as const) {
    for (const M of [1, 3, 12]) {
      Deno.test(`quantLinear ${design} q${bits} M${M}: every value of the range`, async () => {
        const N = 21, K = 2 << bits; // each row walks the whole range twice, shifted by its index
        const lo = -(1 << (bits - 1));
        const q = new Int8Array(N * K);
        for (let n = 0; n < N; n++) {
          for (let k = 0; k < K; k++) q[n * K + k] = lo + ((k + 3 * n) % (1 << bits));
        }
        const scales = Uint16Array.from({ length: N }, (_, n) => numberToF16Bits(0.01 * (n + 1)));
        const m = { bits, rows: N, cols: K, groupSize: K, q, scales };
        // Positive activations too: the zero point's Σ a is then large against the result.
        const x = randomArray(M * K, 21).map((v) => v + 1);
        const want = referenceLinear(x, M, m);
        const w = uploadQuantWeight(gpu, { ...m, stored: storedBytes(m) }, { design });
        const xt = uploadTensor(gpu, x, [M, K]);
        const rec = beginRecording(gpu);
        const y = linear(rec, xt, w);
        await submit(rec);
        assertNearReference(await readTensor(y) as Float32Array, want, K, "every value");
        for (const t of [w, xt, y]) releaseTensor(t);
      });
    }
  }
}

for (const design of ["texture", "buffer"] as QuantDesign[]) {
  for (
    const c of [
      { M: 3, N: 37, K: 90, bits: 8 as const },
      { M: 5, N: 45, K: 50, bits: 4 as const },
      { M: 2, N: 33, K: 96, bits: 4 as const, group: 32 },
    ]
  ) {
    Deno.test(`dx through a frozen ${design} q${c.bits}${c.group ? ` g${c.group}` : ""} weight (LoRA on a quantized base)`, async () => {
      const m = randomQuantized(c.N, c.K, c.bits, c.group ?? c.K, 9);
      const deq = dequantize(m);
      const dy = randomArray(c.M * c.N, 21);
      const w = uploadQuantWeight(gpu, { ...m, stored: storedBytes(m) }, { design });
      const xt = uploadTensor(gpu, randomArray(c.M * c.K, 22), [c.M, c.K]);
      const dyt = uploadTensor(gpu, dy, [c.M, c.N]);
      const rec = beginRecording(gpu);
      const dx = linearBackward(rec, xt, w, dyt, { input: true, frozen: true })!;
      await submit(rec);
      const got = await readTensor(dx) as Float32Array;
      let maxErr = 0, maxRef = 0;
      for (let i = 0; i < c.M; i++) {
        for (let k = 0; k < c.K; k++) {
          let s = 0;
          for (let n = 0; n < c.N; n++) s += dy[i * c.N + n] * deq[n * c.K + k];
          maxErr = Math.max(maxErr, Math.abs(got[i * c.K + k] - s));
          maxRef = Math.max(maxRef, Math.abs(s));
        }
      }
      assert.ok(maxErr <= 1e-5 * maxRef * Math.sqrt(c.N), `max error ${maxErr} (max ${maxRef})`);
      assert.throws(
        () => linearBackward(beginRecording(gpu), xt, w, dyt, { weight: dx }),
        /quantized \(q[48]\): frozen, no gradient/,
      );
      for (const t of [w, xt, dyt, dx.base ?? dx]) releaseTensor(t);
    });
  }
}

Deno.test("uploadQuantWeight refuses a scale of the wrong length, naming the tensor", () => {
  const m = randomQuantized(8, 16, 8, 16, 3);
  assert.throws(
    () =>
      uploadQuantWeight(gpu, { ...m, stored: storedBytes(m), scales: m.scales.subarray(0, 7) }, {
        label: "transformer.layers.0.attention.dense",
      }),
    /transformer\.layers\.0\.attention\.dense: weight_scale has 7 values, expected 8/,
  );
});
