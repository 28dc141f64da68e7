// A random weight [N, K] (seeded, in [-1, 1), rounded to f16) quantized as the original does: the
// operand of the quantized kernel tests.
import { numberToF16Bits } from "../../core/io/dtype.ts";
import { quantizeF16 } from "../../core/quant/arith.ts";
import { randomArray } from "../reference/kernels.ts";

export function randomQuantized(
  N: number,
  K: number,
  bits: 4 | 8,
  groupSize: number,
  seed: number,
) {
  const w = randomArray(N * K, seed);
  const bits16 = new Uint16Array(w.length);
  for (let i = 0; i < w.length; i++) bits16[i] = numberToF16Bits(w[i]);
  return quantizeF16(bits16, N, K, bits, groupSize);
}
