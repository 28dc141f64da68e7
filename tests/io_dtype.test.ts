import assert from "node:assert/strict";
import {
  bf16BitsToNumber,
  bf16ToF32,
  bytesToF32,
  convertBytes,
  dtypeSize,
  f16BitsToNumber,
  f16ToF32,
  f32ToBf16,
  f32ToBytes,
  f32ToF16,
  isDtype,
  numberToBf16Bits,
  numberToF16Bits,
} from "../core/io/dtype.ts";

const f32 = (...v: number[]) => Float32Array.from(v);
const bitsOf = (x: number) => new Uint32Array(f32(x).buffer)[0];
const fromBits = (b: number) => new Float32Array(Uint32Array.of(b).buffer)[0];

Deno.test("dtype sizes follow the safetensors table", () => {
  for (const d of ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3"] as const) {
    assert.equal(dtypeSize(d), 1);
  }
  for (const d of ["I16", "U16", "F16", "BF16"] as const) assert.equal(dtypeSize(d), 2);
  for (const d of ["I32", "U32", "F32"] as const) assert.equal(dtypeSize(d), 4);
  for (const d of ["F64", "I64", "U64"] as const) assert.equal(dtypeSize(d), 8);
  assert.equal(isDtype("F24"), false);
  assert.equal(isDtype("__proto__"), false);
});

Deno.test("f32 → f16 rounds to nearest even, with subnormals, overflow, inf and nan", () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff], // largest finite
    [65519.99, 0x7bff], // just under the rounding boundary to inf
    [65520, 0x7c00], // halfway to 2^16 rounds to inf (even)
    [1e6, 0x7c00],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // exactly half the smallest subnormal: tie to even 0
    [2 ** -25 * 1.0001, 0x0001], // just over half
    [3 * 2 ** -25, 0x0002], // 1.5 subnormal steps: tie to even 2
    [5 * 2 ** -25, 0x0002], // 2.5 steps: tie to even 2
    [2 ** -14 - 2 ** -25, 0x0400], // rounds up from the largest subnormal into the smallest normal
    [1 + 2 ** -11, 0x3c00], // tie between 1 and 1+2^-10: even (1)
    [1 + 3 * 2 ** -11, 0x3c02], // tie between 1+2^-10 and 1+2^-9: even (…02)
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above the tie
  ];
  for (const [x, want] of cases) {
    assert.equal(numberToF16Bits(x), want, `f16 of ${x}`);
    assert.equal(f32ToF16(f32(x))[0], want, `array f16 of ${x}`);
  }
  const nan = f32ToF16(f32(NaN))[0];
  assert.equal(nan & 0x7c00, 0x7c00);
  assert.notEqual(nan & 0x3ff, 0);
  // A NaN whose payload lives only in low bits must stay NaN (not become inf).
  assert.notEqual(f32ToF16(Float32Array.of(fromBits(0x7f800001)))[0] & 0x3ff, 0);
});

Deno.test("f16 → f32 is exact for every one of the 65536 values", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const out = f16ToF32(all);
  for (let h = 0; h < 65536; h++) {
    const v = f16BitsToNumber(h);
    if (Number.isNaN(v)) assert.ok(Number.isNaN(out[h]));
    else assert.ok(Object.is(out[h], v), `f16 0x${h.toString(16)}: ${out[h]} vs ${v}`);
    if (!Number.isNaN(v)) {
      assert.equal(numberToF16Bits(out[h]), h, `round trip 0x${h.toString(16)}`);
    }
  }
  assert.equal(out[0x0001], 2 ** -24);
  assert.equal(out[0x7c00], Infinity);
  assert.ok(Object.is(out[0x8000], -0));
});

Deno.test("f32 → bf16 rounds to nearest even and keeps nan", () => {
  const cases: [number, number][] = [
    [1, 0x3f80],
    [-1, 0xbf80],
    [fromBits(0x3f808000), 0x3f80], // tie, even stays
    [fromBits(0x3f818000), 0x3f82], // tie, odd rounds up
    [fromBits(0x3f808001), 0x3f81], // above the tie
    [fromBits(0x7f7fffff), 0x7f80], // max f32 rounds to inf
    [Infinity, 0x7f80],
    [fromBits(0x00010000), 0x0001], // subnormal kept
  ];
  for (const [x, want] of cases) {
    assert.equal(numberToBf16Bits(x), want, `bf16 of ${x}`);
    assert.equal(f32ToBf16(f32(x))[0], want);
  }
  const nan = f32ToBf16(Float32Array.of(fromBits(0x7f800001)))[0];
  assert.ok(Number.isNaN(bf16BitsToNumber(nan)));
  assert.equal(bf16ToF32(Uint16Array.of(0x3f80, 0xc040))[0], 1);
  assert.equal(bf16ToF32(Uint16Array.of(0x3f80, 0xc040))[1], -3);
  assert.equal(bitsOf(bf16ToF32(Uint16Array.of(0x7fc1))[0]), 0x7fc10000);
});

Deno.test("bytesToF32 reads every float and integer dtype, aligned or not", () => {
  const vals = f32(0.5, -2, 3.25);
  const unaligned = new Uint8Array(13).subarray(1);
  unaligned.set(new Uint8Array(vals.buffer));
  assert.deepEqual([...bytesToF32(unaligned, "F32")], [0.5, -2, 3.25]);
  assert.deepEqual([...bytesToF32(f32ToBytes(vals, "F16"), "F16")], [0.5, -2, 3.25]);
  assert.deepEqual([...bytesToF32(f32ToBytes(vals, "BF16"), "BF16")], [0.5, -2, 3.25]);
  assert.deepEqual([...bytesToF32(f32ToBytes(vals, "F64"), "F64")], [0.5, -2, 3.25]);
  const i64 = new Uint8Array(BigInt64Array.of(-5n, 7n).buffer);
  assert.deepEqual([...bytesToF32(i64, "I64")], [-5, 7]);
  assert.deepEqual([...bytesToF32(Uint8Array.of(255, 1), "I8")], [-1, 1]);
  assert.deepEqual([...bytesToF32(Uint8Array.of(255, 1), "U8")], [255, 1]);
  assert.throws(() => bytesToF32(new Uint8Array(3), "F32"), /whole number/);
});

Deno.test("convertBytes moves between F32, F16 and BF16", () => {
  const v = f32(1, 1 / 3, -1e-6);
  const h = convertBytes(f32ToBytes(v, "F32"), "F32", "F16");
  assert.deepEqual([...new Uint16Array(h.buffer)], [...f32ToF16(v)]);
  const b = convertBytes(h, "F16", "BF16");
  assert.deepEqual(
    [...new Uint16Array(b.buffer)],
    [...f32ToBf16(f16ToF32(f32ToF16(v)))],
  );
  const back = convertBytes(b, "BF16", "F32");
  assert.equal(back.byteLength, 12);
  const same = f32ToBytes(v, "F32");
  assert.equal(convertBytes(same, "F32", "F32"), same);
});

Deno.test("array conversions agree with the scalar reference on random and tie bit patterns", () => {
  const n = 200_000;
  const bits = new Uint32Array(n);
  let seed = 12345;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
  for (let i = 0; i < n; i++) {
    const r = rand();
    // Half uniform bit patterns, half concentrated on f16's range with exact ties (low 13 bits 0x1000).
    bits[i] = i % 2
      ? r
      : ((((r % 60) + 98) << 23) | (rand() & 0x7fe000) | 0x1000 | (r & 0x80000000)) >>> 0;
  }
  const values = new Float32Array(bits.buffer);
  const h = f32ToF16(values);
  const b = f32ToBf16(values);
  for (let i = 0; i < n; i++) {
    const x = values[i];
    if (Number.isNaN(x)) continue;
    assert.equal(h[i], numberToF16Bits(x), `f16 of bits 0x${bits[i].toString(16)}`);
    assert.equal(b[i], numberToBf16Bits(x), `bf16 of bits 0x${bits[i].toString(16)}`);
    // And the value is the nearest f16 (ties to even): check against neighbours.
    const v = f16BitsToNumber(h[i]);
    if (Number.isFinite(v) && Math.abs(x) < 65504) {
      const up = f16BitsToNumber(h[i] + 1), down = f16BitsToNumber(h[i] - 1);
      const err = Math.abs(v - x);
      if ((h[i] & 0x7fff) < 0x7bff) assert.ok(err <= Math.abs(up - x), `0x${bits[i].toString(16)}`);
      if ((h[i] & 0x7fff) > 0) assert.ok(err <= Math.abs(down - x), `0x${bits[i].toString(16)}`);
    }
  }
});
