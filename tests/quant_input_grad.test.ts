// The input gradient through a frozen int8/int4 weight (QLoRA's dx = dy · W, `quantInputGrad`),
// both designs (textures for software adapters, storage buffers for hardware), against the
// dequantized weight in f64 on the CPU: odd shapes, 1..70 rows of dy (tiles of 1, 2, 4 and 8 rows,
// full and partial), per-row and group-wise scales; every tile size gives the same values.
import assert from "node:assert/strict";
import { beginRecording, getGpu, submit } from "../core/gpu/mod.ts";
import {
  emptyTensor,
  readTensor,
  releaseTensor,
  sliceRows,
  type Tensor,
  uploadTensor,
} from "../core/tensor/mod.ts";
import { type InputGradRows, quantInputGrad } from "../core/kernels/mod.ts";
import { dequantize, storedBytes } from "../core/quant/arith.ts";
import { type QuantDesign, uploadQuantWeight } from "../core/quant/gpu_weight.ts";
import { randomArray } from "./reference/kernels.ts";
import { randomQuantized } from "./helpers/quant.ts";

const gpu = await getGpu();

/** dy [M, N] · deq [N, K] in f64. */
function reference(dy: Float32Array, deq: ArrayLike<number>, M: number, N: number, K: number) {
  const out = new Float64Array(M * K);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const d = dy[m * N + n];
      for (let k = 0; k < K; k++) out[m * K + k] += d * deq[n * K + k];
    }
  }
  return out;
}

/** f32 accumulation over N: within 1e-5 · max|want| · √N. */
function assertNear(got: Float32Array, want: Float64Array, N: number, name: string) {
  assert.equal(got.length, want.length, `${name}: length`);
  let maxErr = 0, maxRef = 0;
  for (let i = 0; i < want.length; i++) {
    maxErr = Math.max(maxErr, Math.abs(got[i] - want[i]));
    maxRef = Math.max(maxRef, Math.abs(want[i]));
  }
  assert.ok(maxRef > 0, `${name}: the reference is all zero`);
  const tol = 1e-5 * maxRef * Math.sqrt(N);
  assert.ok(maxErr <= tol, `${name}: max error ${maxErr} > ${tol}`);
}

async function run(w: Tensor, dy: Float32Array, M: number, N: number, rows?: InputGradRows) {
  const dyt = uploadTensor(gpu, dy, [M, N]);
  const rec = beginRecording(gpu);
  const dx = quantInputGrad(rec, w, dyt, undefined, rows ? { rows } : {});
  await submit(rec);
  const got = await readTensor(dx) as Float32Array;
  releaseTensor(dx);
  releaseTensor(dyt);
  return got;
}

interface Case {
  N: number;
  K: number;
  bits: 4 | 8;
  group?: number;
  Ms: number[];
}

const CASES: Case[] = [
  { N: 37, K: 90, bits: 8, Ms: [1, 3, 9] }, // K not a whole number of words
  { N: 13, K: 134, bits: 4, Ms: [2, 5, 70] }, // int4, 17 words: a part texel column
  { N: 45, K: 50, bits: 4, Ms: [4, 8, 19] },
  { N: 33, K: 96, bits: 4, group: 32, Ms: [1, 7, 16] },
  { N: 30, K: 96, bits: 8, group: 16, Ms: [6, 33] },
  { N: 66, K: 128, bits: 4, group: 64, Ms: [11, 64] },
];

for (const design of ["texture", "buffer"] as QuantDesign[]) {
  for (const c of CASES) {
    const name = `quantInputGrad ${design} q${c.bits} N${c.N} K${c.K}` +
      `${c.group ? ` group ${c.group}` : ""} M ${c.Ms.join(", ")}`;
    Deno.test(name, async () => {
      const m = randomQuantized(c.N, c.K, c.bits, c.group ?? c.K, c.N * 3 + c.K);
      const deq = dequantize(m);
      const w = uploadQuantWeight(gpu, { ...m, stored: storedBytes(m) }, { design, label: "w" });
      try {
        for (const M of c.Ms) {
          const dy = randomArray(M * c.N, M + 40);
          assertNear(
            await run(w, dy, M, c.N),
            reference(dy, deq, M, c.N, c.K),
            c.N,
            `${name}: M ${M}`,
          );
        }
      } finally {
        releaseTensor(w);
      }
    });
  }
}

for (const design of ["texture", "buffer"] as QuantDesign[]) {
  Deno.test(`quantInputGrad ${design}: every tile size gives the same values (M 13: partial tiles)`, async () => {
    const N = 29, K = 72, M = 13;
    for (const bits of [4, 8] as const) {
      const m = randomQuantized(N, K, bits, K, 77);
      const w = uploadQuantWeight(gpu, { ...m, stored: storedBytes(m) }, { design });
      try {
        const dy = randomArray(M * N, 5);
        const want = reference(dy, dequantize(m), M, N, K);
        const one = await run(w, dy, M, N, 1);
        assertNear(one, want, N, `q${bits} rows 1`);
        for (const rows of [2, 4, 8] as const) {
          // Same products in the same order per output: bit-identical to the one-row kernel.
          assert.deepEqual(await run(w, dy, M, N, rows), one, `q${bits} rows ${rows}`);
        }
      } finally {
        releaseTensor(w);
      }
    }
  });

  Deno.test(`quantInputGrad ${design}: writes into a row slice of a larger tensor only`, async () => {
    const N = 21, K = 40, M = 9;
    const m = randomQuantized(N, K, 4, K, 8);
    const w = uploadQuantWeight(gpu, { ...m, stored: storedBytes(m) }, { design });
    const dy = randomArray(M * N, 6);
    const dyt = uploadTensor(gpu, dy, [M, N]);
    const big = emptyTensor(gpu, [M + 4, K]);
    const fill = new Float32Array((M + 4) * K).fill(7);
    gpu.device.queue.writeBuffer(big.buffer, big.byteOffset, fill);
    const rec = beginRecording(gpu);
    quantInputGrad(rec, w, dyt, sliceRows(big, 2, M));
    await submit(rec);
    const got = await readTensor(big) as Float32Array;
    assertNear(got.subarray(2 * K, (2 + M) * K), reference(dy, dequantize(m), M, N, K), N, "slice");
    for (const i of [...Array(2 * K).keys(), ...Array(2 * K).keys().map((i) => (M + 2) * K + i)]) {
      assert.equal(got[i], 7, `element ${i} outside the slice was written`);
    }
    for (const t of [w, dyt, big]) releaseTensor(t);
  });
}
