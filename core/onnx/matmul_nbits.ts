/**
 * ChatGLM's int8/int4 weights as ONNX Runtime's weight-only quantized matmul, the `com.microsoft`
 * contrib op `MatMulNBits` (CPU kernels in onnxruntime; no float copy of the weight):
 *
 *   Y[..., N] = A[..., K] · dequant(B)ᵀ,  dequant = (q_unsigned − zero_point) · scale per block
 *
 * - B: uint8 [N, k_blocks, block_size · bits / 8]; 4 bits pack the first of two values in the
 *   LOW nibble (the original stores the even column in the high nibble, so nibbles are swapped).
 * - Values are stored unsigned with the default zero point 2^(bits−1) (8 or 128): q + 8 / q + 128.
 * - scales: float32 [N · k_blocks]. ORT needs `block_size` a power of two ≥ 16 (its fast MLAS
 *   kernels take 16..256): group-wise uses the group size; per-row uses 128 (or K rounded up to
 *   a power of two when smaller) with the row's scale repeated in each block, which computes
 *   exactly the original's per-row product. Blocks past K are zero-padded.
 */

import { f16BitsToNumber } from "../io/dtype.ts";
import type { QuantizedMatrix } from "../quant/arith.ts";

/** The op's domain and the opset version of that domain. */
export const MS_DOMAIN = "com.microsoft";

/** Block size for a weight: its group size, or a per-row size (see module doc). */
export function nbitsBlockSize(m: { cols: number; groupSize: number }): number {
  if (m.groupSize !== m.cols) {
    if (m.groupSize < 16 || (m.groupSize & (m.groupSize - 1)) !== 0) {
      throw new Error(
        `MatMulNBits: group size ${m.groupSize} is not a power of two >= 16 (ONNX Runtime's rule)`,
      );
    }
    return m.groupSize;
  }
  let b = 16;
  while (b < 128 && b < m.cols) b *= 2;
  return b;
}

export interface NBitsWeight {
  blockSize: number;
  kBlocks: number;
  /** uint8 [N, kBlocks, blockSize · bits / 8]. */
  b: Uint8Array;
  /** f32 [N · kBlocks]. */
  scales: Float32Array;
}

/** Repacks a quantized matrix (values unpacked, f16 scales) for MatMulNBits. */
export function toMatMulNBits(m: QuantizedMatrix): NBitsWeight {
  const blockSize = nbitsBlockSize(m);
  const kBlocks = Math.ceil(m.cols / blockSize);
  const blob = (blockSize * m.bits) / 8;
  const b = new Uint8Array(m.rows * kBlocks * blob);
  const scales = new Float32Array(m.rows * kBlocks);
  const groups = m.cols / m.groupSize;
  const zero = 1 << (m.bits - 1);
  for (let n = 0; n < m.rows; n++) {
    const row = n * m.cols;
    for (let kb = 0; kb < kBlocks; kb++) {
      const k0 = kb * blockSize;
      const g = Math.min(groups - 1, Math.floor(k0 / m.groupSize));
      scales[n * kBlocks + kb] = f16BitsToNumber(m.scales[n * groups + g]);
      const base = (n * kBlocks + kb) * blob;
      for (let j = 0; j < blockSize; j++) {
        const k = k0 + j;
        // Padding past K: a zero weight (the zero point itself).
        const u = (k < m.cols ? m.q[row + k] : 0) + zero;
        if (m.bits === 8) b[base + j] = u;
        else if (j % 2 === 0) b[base + (j >> 1)] = u & 0xf;
        else b[base + (j >> 1)] |= (u & 0xf) << 4;
      }
    }
  }
  return { blockSize, kBlocks, b, scales };
}
