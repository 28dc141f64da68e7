// quantizeF16 converts whole groups through typed-array tables (fast enough to quantize a 6B base
// at load for training); these tests hold it to the original's per-element f16 arithmetic, written
// out here one element at a time, on every f16 bit pattern (subnormals, infinities, NaN), on exact
// ties, and per row and per group, for int8 and int4.

import assert from "node:assert/strict";
import { f16BitsToNumber, numberToF16Bits } from "../core/io/dtype.ts";
import { quantizeF16, roundHalfEven } from "../core/quant/arith.ts";

/** scale = f16(f16(max|w|) / qmax); q = round_half_even(f16(f32(w / scale))), clamped. */
function reference(w16: Uint16Array, rows: number, cols: number, bits: 4 | 8, group: number) {
  const qmax = bits === 8 ? 127 : 7, qmin = bits === 8 ? -127 : -8;
  const groups = cols / group;
  const q = new Int8Array(rows * cols), scales = new Uint16Array(rows * groups);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) {
      const base = r * cols + g * group;
      let max = 0;
      for (let j = 0; j < group; j++) {
        const a = Math.abs(f16BitsToNumber(w16[base + j]));
        if (a > max) max = a;
      }
      scales[r * groups + g] = numberToF16Bits(Math.fround(max / qmax));
      const scale = f16BitsToNumber(scales[r * groups + g]);
      if (scale === 0) continue;
      for (let j = 0; j < group; j++) {
        const quot = f16BitsToNumber(
          numberToF16Bits(Math.fround(f16BitsToNumber(w16[base + j]) / scale)),
        );
        q[base + j] = Math.max(qmin, Math.min(qmax, roundHalfEven(quot)));
      }
    }
  }
  return { q, scales };
}

function lcg(seed: number) {
  let x = seed >>> 0;
  return () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 4294967296;
}

const CASES: { name: string; rows: number; cols: number; gen: (r: () => number) => number }[] = [
  { name: "every f16 bit pattern", rows: 512, cols: 128, gen: (r) => Math.floor(r() * 65536) },
  {
    name: "quarter-integers (exact ties)",
    rows: 256,
    cols: 64,
    gen: (r) => numberToF16Bits(Math.round((r() - 0.5) * 40) * 0.25),
  },
  {
    name: "weight-like values",
    rows: 64,
    cols: 256,
    gen: (r) => numberToF16Bits((r() - 0.5) * 0.08),
  },
  {
    name: "subnormal magnitudes",
    rows: 32,
    cols: 64,
    gen: (r) => numberToF16Bits((r() - 0.5) * 1e-5),
  },
];

for (const bits of [8, 4] as const) {
  for (const c of CASES) {
    Deno.test(`quantizeF16 int${bits} equals the per-element arithmetic: ${c.name}`, () => {
      const rnd = lcg(bits * 7919 + c.rows);
      const w = new Uint16Array(c.rows * c.cols);
      for (let i = 0; i < w.length; i++) w[i] = c.gen(rnd);
      // An all-zero row: scale 0, values 0.
      w.fill(0, 0, c.cols);
      for (const group of [c.cols, 16]) {
        const got = quantizeF16(w, c.rows, c.cols, bits, group);
        const want = reference(w, c.rows, c.cols, bits, group);
        assert.deepEqual(got.scales, want.scales, `group ${group}: scales`);
        let diff = -1;
        for (let i = 0; i < want.q.length && diff < 0; i++) if (got.q[i] !== want.q[i]) diff = i;
        assert.equal(diff, -1, `group ${group}: first differing value at ${diff}`);
      }
    });
  }
}
