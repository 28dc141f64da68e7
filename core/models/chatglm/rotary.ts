/**
 * The rotary tables of ChatGLM-6B's 2-D positions (spec §3.2; the spec is
 * tests/fixtures/chatglm6b-tiny/README.md). The original computes `1 / 10000^(2i/r)` in float32
 * and then rounds it to float16 (`.half()`), and keeps the rounded values even when the model runs
 * in float32; the stored `inv_freq` tensors are never used. (Computing in float64 and rounding
 * once to float16 gives the same bits for every r ≤ 256.)
 */
import { rotaryInvFreq as invFreq } from "../../kernels/mod.ts";
import { f16Round } from "../../tensor/f16.ts";

/** inv_freq for a rotary half of `r` dimensions: r/2 values, float16-rounded, as f32. */
export function rotaryInvFreq(r: number): Float32Array {
  return invFreq(r, 10000, true);
}

/**
 * Positions the angle table covers for steps over at most `positions` indices: at least 8192
 * (one table, cached per size, for every ordinary context), else the next power of two above the
 * largest position (a block position reaches `positions − 1`; +2 leaves room for rounding).
 * Training and inference use the same size, so a model sees the same angles in both.
 */
export function rotaryTableSize(positions: number): number {
  return Math.max(8192, 2 ** Math.ceil(Math.log2(positions + 2)));
}

/** Rounds a number to the nearest float16 value (ties to even), returned as a number. */
export const roundToF16: (x: number) => number = f16Round;
