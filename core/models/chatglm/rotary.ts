/**
 * The rotary frequency table of ChatGLM-6B's 2-D positions (README §3.2). The original computes
 * `1 / 10000^(2i/r)` in float32 and then rounds it to float16 (`.half()`), and keeps the rounded
 * values even when the model runs in float32; the stored `inv_freq` tensors are never used.
 * (Computing in float64 and rounding once to float16 gives the same bits for every r ≤ 256.)
 */
import { rotaryInvFreq as invFreq } from "../../kernels/rotary/rotary.ts";
import { f16Round } from "../../tensor/f16.ts";

/** inv_freq for a rotary half of `r` dimensions: r/2 values, float16-rounded, as f32. */
export function rotaryInvFreq(r: number): Float32Array {
  return invFreq(r, 10000, true);
}

/** Rounds a number to the nearest float16 value (ties to even), returned as a number. */
export const roundToF16: (x: number) => number = f16Round;
