/**
 * IEEE half precision for uploads and reads. The conversions themselves live once, in
 * core/io/dtype.ts (exhaustively tested there); these are the names the tensor layer uses.
 */
import { f16BitsToNumber, f16ToF32, f32ToF16, numberToF16Bits } from "../io/dtype.ts";

/** The f16 bit pattern nearest to `value` (ties to even; overflow to ±Infinity; NaN kept). */
export const f32ToF16Bits: (value: number) => number = numberToF16Bits;

/** The value of an f16 bit pattern. */
export const f16BitsToF32: (h: number) => number = f16BitsToNumber;

/** Rounds `value` to the nearest f16 and returns it as a number. */
export function f16Round(value: number): number {
  return f16BitsToNumber(numberToF16Bits(value));
}

/** Converts numbers to f16 bit patterns. */
export function toF16Bits(data: ArrayLike<number>): Uint16Array {
  return f32ToF16(data instanceof Float32Array ? data : Float32Array.from(data));
}

/** Converts f16 bit patterns to f32. */
export function fromF16Bits(bits: Uint16Array): Float32Array {
  return f16ToF32(bits);
}
