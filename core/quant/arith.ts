/**
 * ChatGLM-6B's weight-only quantization arithmetic (THUDM `quantization.py`), on the CPU:
 * per output row (or, our extension, per group of `groupSize` input columns) one f16 scale,
 * int8 values in [-127, 127] or int4 values in [-8, 7] packed two per byte (high nibble = even
 * column). Everything is in float16 as the original's `model.half().quantize(bits)` does it:
 *
 *   scale = f16(f16(max|w|) / (2^(bits-1) - 1))
 *   q     = round_half_even(f16(w / scale)), clamped to the bit range
 *
 * torch computes each f16 operation in f32 and rounds the result to f16, so we do the same
 * (`Math.fround` then f16 rounding). Rounding half away from zero, or dividing without the f16
 * rounding of the quotient, changes a few entries: tests compare with the fixture bit-exactly.
 */

import { f16BitsToNumber, f16ToF32, f32ToF16, numberToF16Bits } from "../io/dtype.ts";

export type QuantBits = 4 | 8;

/** One quantized [out, in] weight: values unpacked (one per int8) and f16 scale bits. */
export interface QuantizedMatrix {
  bits: QuantBits;
  rows: number;
  cols: number;
  /** Input columns per scale; equal to `cols` for the original's per-row layout. */
  groupSize: number;
  /** [rows, cols] values in the bit range. */
  q: Int8Array;
  /** [rows, cols / groupSize] f16 bit patterns. */
  scales: Uint16Array;
}

/** Largest magnitude a value takes: 127 (int8) or 7 (int4; -8 is representable but not produced). */
export function quantMax(bits: QuantBits): number {
  return (1 << (bits - 1)) - 1;
}

/** Round half to even (torch.round). */
export function roundHalfEven(v: number): number {
  const r = Math.round(v); // rounds half up
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Checks bits, shape and group size; `name` names the tensor in the error. */
export function checkQuantShape(
  name: string,
  bits: number,
  rows: number,
  cols: number,
  groupSize: number,
): void {
  if (bits !== 4 && bits !== 8) {
    throw new Error(`${name}: quantization_bit ${bits} is not supported (only 4 or 8)`);
  }
  if (bits === 4 && cols % 2 !== 0) {
    throw new Error(
      `${name}: input width ${cols} is odd; int4 packs two columns per byte, so it must be even`,
    );
  }
  if (!Number.isInteger(groupSize) || groupSize < 1 || cols % groupSize !== 0) {
    throw new Error(
      `${name}: group size ${groupSize} must divide the input width ${cols} (weight [${rows}, ${cols}])`,
    );
  }
  if (bits === 4 && groupSize !== cols && groupSize % 2 !== 0) {
    throw new Error(`${name}: int4 group size ${groupSize} must be even (two columns per byte)`);
  }
}

/**
 * Quantizes an f16 weight [rows, cols] (bit patterns) with the original's arithmetic. `groupSize`
 * defaults to the row (the original's layout).
 */
export function quantizeF16(
  w16: Uint16Array,
  rows: number,
  cols: number,
  bits: QuantBits,
  groupSize = cols,
  name = "weight",
): QuantizedMatrix {
  checkQuantShape(name, bits, rows, cols, groupSize);
  if (w16.length !== rows * cols) {
    throw new Error(`${name}: ${w16.length} values for a [${rows}, ${cols}] weight`);
  }
  const groups = cols / groupSize;
  const q = new Int8Array(rows * cols);
  const scales = new Uint16Array(rows * groups);
  const qmax = quantMax(bits);
  const qmin = bits === 8 ? -127 : -8;
  // Whole-array conversions (table lookups) over one group at a time rather than per-element
  // f16 bit twiddling: the same values bit for bit, ~10× faster (a 6B model quantizes in minutes).
  const vals = new Float32Array(groupSize);
  const quot = new Float32Array(groupSize);
  const quot16 = new Uint16Array(groupSize);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) {
      const base = r * cols + g * groupSize;
      f16ToF32(w16.subarray(base, base + groupSize), vals);
      let max = 0;
      for (let j = 0; j < groupSize; j++) {
        const a = Math.abs(vals[j]);
        if (a > max) max = a;
      }
      const scaleBits = numberToF16Bits(Math.fround(max / qmax));
      scales[r * groups + g] = scaleBits;
      const scale = f16BitsToNumber(scaleBits);
      // An all-zero group has scale 0; the original divides 0 by 0 there, we store 0.
      if (scale === 0) continue;
      // f16(f32(w / scale)): the f32 store rounds, f32ToF16 rounds to f16, f16ToF32 reads it back.
      for (let j = 0; j < groupSize; j++) quot[j] = vals[j] / scale;
      f16ToF32(f32ToF16(quot, quot16), quot);
      for (let j = 0; j < groupSize; j++) {
        const v = roundHalfEven(quot[j]);
        q[base + j] = v < qmin ? qmin : v > qmax ? qmax : v;
      }
    }
  }
  return { bits, rows, cols, groupSize, q, scales };
}

/** Packs int4 values [rows, cols] into bytes [rows, cols/2]: column 2j high nibble, 2j+1 low. */
export function packInt4(q: Int8Array, rows: number, cols: number): Int8Array {
  const out = new Int8Array(rows * cols / 2);
  for (let i = 0; i < out.length; i++) {
    out[i] = ((q[2 * i] & 0xf) << 4) | (q[2 * i + 1] & 0xf);
  }
  return out;
}

/** Unpacks the original's int4 bytes [rows, cols/2] into values [rows, cols]. */
export function unpackInt4(packed: Int8Array, rows: number, cols: number): Int8Array {
  const out = new Int8Array(rows * cols);
  for (let i = 0; i < packed.length; i++) {
    const b = packed[i] & 0xff;
    out[2 * i] = (b << 24) >> 28;
    out[2 * i + 1] = (b << 28) >> 28;
  }
  return out;
}

/** The stored bytes of a quantized matrix in the original's layout (int8 [rows, cols] or packed). */
export function storedBytes(m: QuantizedMatrix): Int8Array {
  return m.bits === 8 ? m.q : packInt4(m.q, m.rows, m.cols);
}

/** Dequantized weight in f64: `q · scale` (the reference the kernels are tested against). */
export function dequantize(m: QuantizedMatrix): Float64Array {
  const out = new Float64Array(m.rows * m.cols);
  const groups = m.cols / m.groupSize;
  for (let r = 0; r < m.rows; r++) {
    for (let c = 0; c < m.cols; c++) {
      const s = f16BitsToNumber(m.scales[r * groups + Math.floor(c / m.groupSize)]);
      out[r * m.cols + c] = m.q[r * m.cols + c] * s;
    }
  }
  return out;
}

/** f64 reference of `x[M, K] · Wᵀ + b` for a quantized W [N, K]. */
export function referenceLinear(
  x: ArrayLike<number>,
  M: number,
  m: QuantizedMatrix,
  bias?: ArrayLike<number>,
): Float64Array {
  const w = dequantize(m);
  const N = m.rows, K = m.cols;
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let n = 0; n < N; n++) {
      let s = bias ? bias[n] : 0;
      for (let k = 0; k < K; k++) s += x[i * K + k] * w[n * K + k];
      out[i * N + n] = s;
    }
  }
  return out;
}
