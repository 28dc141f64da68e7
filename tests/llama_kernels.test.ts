// The kernels the Llama family added (core/kernels): headsRotary and its backward (rotate half
// with a given table, head-major moves, the slot mode), grouped-query attention in both attention
// designs (rows and workgroup) and in attentionSlots, RMSNorm backward, SwiGLU's gate and its
// backward — each against the float64 forms of tests/reference/llama.ts (gradients by central
// differences of those forms).

import assert from "node:assert/strict";
import { beginRecording, getGpu, submit } from "../core/gpu/mod.ts";
import { readFloat32, uploadTensor } from "../core/tensor/mod.ts";
import {
  attention,
  attentionSlots,
  headsRotary,
  headsRotaryBackward,
  rmsNorm,
  rmsNormBackward,
  rotaryTableOf,
  siluGate,
  siluGateBackward,
} from "../core/kernels/mod.ts";
import { llamaInvFreq } from "../core/models/llama/rotary.ts";
import { dotWith, numericGrad } from "./reference/backward.ts";
import { randomArray, relError } from "./reference/kernels.ts";
import { rowDesignTest } from "./helpers/row_designs.ts";
import { gqaAttention64, headsRotary64, rmsNorm64, siluGate64 } from "./reference/llama.ts";

const gpu = await getGpu();
const f32 = (data: ArrayLike<number>, shape: number[]) =>
  uploadTensor(gpu, Float32Array.from(data), shape, "f32");
const i32 = (data: ArrayLike<number>, shape: number[]) =>
  uploadTensor(gpu, Int32Array.from(data), shape, "i32");

function close(name: string, a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-5) {
  const e = relError(a, b);
  assert.ok(e <= tol, `${name}: relative error ${e} > ${tol}`);
}

Deno.test("headsRotary: rotate half into [b, H, cap, d] at past; backward is the transpose", async () => {
  const b = 2, s = 5, H = 3, d = 8, cap = 9, past = 3;
  const inv = llamaInvFreq(d, {
    type: "llama3",
    theta: 500000,
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositions: 16,
  });
  const x = randomArray(b * s * H * d, 1);
  const pos = Int32Array.from({ length: b * s }, (_, i) => (i * 7) % 40);
  const table = rotaryTableOf(gpu, "test-llama3", inv, 64);
  const rec = beginRecording(gpu);
  const out = uploadTensor(gpu, new Float32Array(b * H * cap * d), [b, H, cap, d], "f32");
  const posT = i32(pos, [b, s]);
  headsRotary(rec, f32(x, [b, s, H * d]), posT, table, { heads: H, past, out });
  const g = randomArray(b * H * s * d, 2);
  const dx = headsRotaryBackward(rec, f32(g, [b, H, s, d]), posT, table);
  const moved = headsRotary(rec, f32(x, [b, s, H * d]), null, null, { heads: H });
  await submit(rec);
  const want = headsRotary64(x, b, s, H, d, pos, inv);
  const got = await readFloat32(out);
  const rows = new Float64Array(want.length);
  for (let bh = 0; bh < b * H; bh++) {
    for (let si = 0; si < s; si++) {
      for (let j = 0; j < d; j++) rows[(bh * s + si) * d + j] = got[(bh * cap + past + si) * d + j];
    }
  }
  close("forward", rows, want);
  close("moved", await readFloat32(moved), headsRotary64(x, b, s, H, d, null, null), 0);
  const num = numericGrad((p) => dotWith(headsRotary64(p, b, s, H, d, pos, inv), g), x);
  close("backward", await readFloat32(dx), num, 1e-6);
});

Deno.test("headsRotary slot mode writes each row into its slot at its length", async () => {
  const H = 2, d = 4, cap = 6;
  const x = randomArray(2 * H * d, 3);
  const out = uploadTensor(gpu, new Float32Array(3 * H * cap * d), [3, H, cap, d], "f32");
  const rec = beginRecording(gpu);
  headsRotary(rec, f32(x, [2, 1, H * d]), null, null, {
    heads: H,
    out,
    slotInfo: i32([2, 4, 0, 1], [2, 2]),
  });
  await submit(rec);
  const got = await readFloat32(out);
  for (const [row, slot, at] of [[0, 2, 4], [1, 0, 1]]) {
    for (let n = 0; n < H; n++) {
      for (let j = 0; j < d; j++) {
        assert.equal(got[((slot * H + n) * cap + at) * d + j], x[(row * H + n) * d + j]);
      }
    }
  }
});

for (const kernel of ["rows", "workgroup"] as const) {
  Deno.test(`grouped-query attention (${kernel} design): kv head n / group, left pads, past`, async () => {
    const b = 2, nh = 6, nkv = 2, s = 3, past = 4, S = past + s, d = 16, cap = 8;
    const q = randomArray(b * nh * s * d, 4);
    const k = randomArray(b * nkv * S * d, 5), v = randomArray(b * nkv * S * d, 6);
    const pad = (t: Float32Array) => {
      const o = new Float32Array(b * nkv * cap * d);
      for (let r = 0; r < b * nkv; r++) o.set(t.subarray(r * S * d, (r + 1) * S * d), r * cap * d);
      return o;
    };
    const pads = [0, 5];
    const rec = beginRecording(gpu);
    const ctx = attention(
      rec,
      f32(q, [b, nh, s, d]),
      f32(pad(k), [b, nkv, cap, d]),
      f32(pad(v), [b, nkv, cap, d]),
      { keys: S, maskValue: -1e30, maskInfo: i32([pads[0], 0, pads[1], 0], [b, 2]), kernel },
    );
    await submit(rec);
    close("ctx", await readFloat32(ctx), gqaAttention64(q, k, v, { b, nh, nkv, s, S, d }, pads));
  });
}

// d = 8 takes the kernel's 4-wide loads (d % 4 == 0), d = 6 its scalar form.
rowDesignTest("attentionSlots: grouped-query heads over each slot's own length", async () => {
  for (const d of [8, 6]) await attentionSlotsCase(d);
});

async function attentionSlotsCase(d: number): Promise<void> {
  const nh = 4, nkv = 2, cap = 6, slots = 3;
  const k = randomArray(slots * nkv * cap * d, 7), v = randomArray(slots * nkv * cap * d, 8);
  const q = randomArray(2 * nh * d, 9);
  const info = [2, 3, 0, 5]; // (slot, length): keys 0..length
  const rec = beginRecording(gpu);
  const ctx = attentionSlots(
    rec,
    f32(q, [2, nh, 1, d]),
    f32(k, [slots, nkv, cap, d]),
    f32(v, [slots, nkv, cap, d]),
    i32(info, [2, 2]),
    { maxKeys: 6 },
  );
  await submit(rec);
  const got = await readFloat32(ctx);
  for (let r = 0; r < 2; r++) {
    const [slot, len] = [info[r * 2], info[r * 2 + 1]];
    const S = len + 1;
    const rowsOf = (t: Float32Array) => {
      const o = new Float32Array(nkv * S * d);
      for (let m = 0; m < nkv; m++) {
        o.set(t.subarray((slot * nkv + m) * cap * d, ((slot * nkv + m) * cap + S) * d), m * S * d);
      }
      return o;
    };
    const want = gqaAttention64(q.subarray(r * nh * d, (r + 1) * nh * d), rowsOf(k), rowsOf(v), {
      b: 1,
      nh,
      nkv,
      s: 1,
      S,
      d,
    }, [0]);
    close(`d ${d} row ${r}`, got.subarray(r * nh * d, (r + 1) * nh * d), want);
  }
}

rowDesignTest(
  "rmsNorm backward (dx and the weight gradient) matches float64 differences",
  async () => {
    const rows = 5, cols = 12, eps = 1e-6;
    const x = randomArray(rows * cols, 10), w = randomArray(cols, 11, 0.5, 1.5);
    const g = randomArray(rows * cols, 12);
    const rec = beginRecording(gpu);
    const dw = f32(new Float32Array(cols).fill(0.25), [cols]); // gradients add into it
    const xt = f32(x, [rows, cols]), wt = f32(w, [cols]);
    const y = rmsNorm(rec, xt, wt, eps);
    const dx = rmsNormBackward(rec, xt, wt, eps, f32(g, [rows, cols]), dw);
    await submit(rec);
    close("forward", await readFloat32(y), rmsNorm64(x, w, cols, eps));
    const ndx = numericGrad((p) => dotWith(rmsNorm64(p, w, cols, eps), g), x);
    close("dx", await readFloat32(dx), ndx, 1e-5);
    const ndw = numericGrad((p) => dotWith(rmsNorm64(x, p, cols, eps), g), w);
    close("dw", await readFloat32(dw), Float64Array.from(ndw, (v) => v + 0.25), 1e-5);
  },
);

Deno.test("siluGate and its backward match float64", async () => {
  const n = 300;
  const gate = randomArray(n, 13, -6, 6), up = randomArray(n, 14), dy = randomArray(n, 15);
  const rec = beginRecording(gpu);
  const gt = f32(gate, [n]), ut = f32(up, [n]);
  const y = siluGate(rec, gt, ut);
  const { dGate, dUp } = siluGateBackward(rec, gt, ut, f32(dy, [n]));
  await submit(rec);
  close("forward", await readFloat32(y), siluGate64(gate, up));
  close(
    "dGate",
    await readFloat32(dGate),
    numericGrad((p) => dotWith(siluGate64(p, up), dy), gate),
  );
  close("dUp", await readFloat32(dUp), numericGrad((p) => dotWith(siluGate64(gate, p), dy), up));
});
