/**
 * Tensor element types as safetensors names them, their sizes, and fast conversions between the
 * float formats checkpoints use (f16, bf16, f32). Every conversion rounds to nearest, ties to even,
 * and keeps subnormals, infinities and NaNs, so weights survive a round trip through PyTorch.
 */

/** safetensors dtypes, in the library's own order (the writer sorts by it, descending). */
export const DTYPES = [
  "BOOL",
  "U8",
  "I8",
  "F8_E5M2",
  "F8_E4M3",
  "I16",
  "U16",
  "F16",
  "BF16",
  "I32",
  "U32",
  "F32",
  "F64",
  "I64",
  "U64",
] as const;

export type Dtype = typeof DTYPES[number];

/** The float dtypes weights are converted between. */
export type FloatDtype = "F32" | "F16" | "BF16";

const SIZES: Record<Dtype, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
};

const DTYPE_RANK = new Map<string, number>(DTYPES.map((d, i) => [d, i]));

export function isDtype(value: unknown): value is Dtype {
  return typeof value === "string" && DTYPE_RANK.has(value);
}

/** Bytes per element of a safetensors dtype. */
export function dtypeSize(dtype: Dtype): number {
  const size = SIZES[dtype];
  if (size === undefined) throw new Error(`unknown dtype ${JSON.stringify(dtype)}`);
  return size;
}

/** Position of a dtype in the safetensors order (BOOL = 0 … U64 = 14). */
export function dtypeRank(dtype: Dtype): number {
  return DTYPE_RANK.get(dtype)!;
}

/** Number of elements of a shape; throws when it is not a safe integer. */
export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  if (!Number.isSafeInteger(n)) throw new Error(`shape [${shape}] has too many elements`);
  return n;
}

// All readers reinterpret little-endian file bytes as typed arrays in place.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error("medglm checkpoint IO needs a little-endian host");
}

// --- scalar conversions -------------------------------------------------------------------------

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** The float value of f16 bits. */
export function f16BitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/** f32 bits → f16 bits, round to nearest even. */
function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) {
    // Keep NaNs NaN (quiet, top payload bits kept) and infinities infinite.
    return mant ? sign | 0x7e00 | (mant >>> 13) : sign | 0x7c00;
  }
  const e = exp - 112; // rebias 127 → 15
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal (or zero) in f16: value = M · 2^(e-14-10) with M the 24-bit significand.
    if (e < -10) return sign; // below half the smallest subnormal (a tie there rounds to even 0)
    const m = mant | 0x800000;
    const shift = 14 - e;
    let out = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (out & 1))) out++;
    return sign | out;
  }
  let out = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa bumps the exponent, up to infinity: exactly what rounding wants.
  if (rem > 0x1000 || (rem === 0x1000 && (out & 1))) out++;
  return sign | out;
}

/** f32 bits → bf16 bits, round to nearest even. */
function f32BitsToBf16Bits(x: number): number {
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** A number → f16 bits (via f32, round to nearest even). */
export function numberToF16Bits(v: number): number {
  f32Scratch[0] = v;
  return f32BitsToF16Bits(u32Scratch[0]);
}

/** A number → bf16 bits (via f32, round to nearest even). */
export function numberToBf16Bits(v: number): number {
  f32Scratch[0] = v;
  return f32BitsToBf16Bits(u32Scratch[0]);
}

/** The float value of bf16 bits. */
export function bf16BitsToNumber(h: number): number {
  u32Scratch[0] = (h & 0xffff) << 16;
  return f32Scratch[0];
}

// --- array conversions --------------------------------------------------------------------------

let f16Table: Uint32Array | undefined;

// 65536 f32 bit patterns, one per f16 value: a lookup beats bit twiddling per element in JS.
function f16ToF32Table(): Uint32Array {
  if (f16Table) return f16Table;
  const table = new Uint32Array(65536);
  const f = new Float32Array(table.buffer);
  for (let h = 0; h < 65536; h++) {
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 31) {
      // Keep NaN payloads and the sign bit exactly (a plain NaN would lose them).
      table[h] = ((h & 0x8000) << 16) | 0x7f800000 | (mant << 13);
    } else {
      f[h] = f16BitsToNumber(h);
      if (h === 0x8000) table[h] = 0x80000000; // -0
    }
  }
  f16Table = table;
  return table;
}

/** f16 bits → f32 values. */
export function f16ToF32(
  src: Uint16Array,
  out: Float32Array = new Float32Array(src.length),
): Float32Array {
  checkLength(src.length, out.length);
  const table = f16ToF32Table();
  const o = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) o[i] = table[src[i]];
  return out;
}

/** bf16 bits → f32 values (exact: bf16 is the top half of an f32). */
export function bf16ToF32(
  src: Uint16Array,
  out: Float32Array = new Float32Array(src.length),
): Float32Array {
  checkLength(src.length, out.length);
  const o = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) o[i] = src[i] << 16;
  return out;
}

/** f32 values → f16 bits, round to nearest even. */
export function f32ToF16(
  src: Float32Array,
  out: Uint16Array = new Uint16Array(src.length),
): Uint16Array {
  checkLength(src.length, out.length);
  const s = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < s.length; i++) {
    const x = s[i];
    const a = x & 0x7fffffff;
    if (a >= 0x38800000 && a < 0x47800000) {
      // Normal f16 range (2^-14 ≤ |x| < 2^16): rebias the exponent and round to nearest even in
      // one integer add; a carry out of the mantissa correctly reaches the exponent (or inf).
      out[i] = ((x >>> 16) & 0x8000) | ((a - 0x37fff001 + ((a >>> 13) & 1)) >>> 13);
    } else out[i] = f32BitsToF16Bits(x);
  }
  return out;
}

/** f32 values → bf16 bits, round to nearest even. */
export function f32ToBf16(
  src: Float32Array,
  out: Uint16Array = new Uint16Array(src.length),
): Uint16Array {
  checkLength(src.length, out.length);
  const s = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < s.length; i++) {
    const x = s[i];
    if ((x & 0x7f800000) !== 0x7f800000) out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
    else out[i] = f32BitsToBf16Bits(x);
  }
  return out;
}

function checkLength(n: number, m: number): void {
  if (n !== m) throw new Error(`conversion output holds ${m} elements, input has ${n}`);
}

/** A typed-array view of `bytes` with `Ctor`'s element type, copying only when misaligned. */
export function viewAs<T extends { BYTES_PER_ELEMENT: number }, A>(
  bytes: Uint8Array,
  ctor: T & (new (buffer: ArrayBuffer, byteOffset: number, length: number) => A),
): A {
  const size = ctor.BYTES_PER_ELEMENT;
  if (bytes.byteLength % size) {
    throw new Error(`${bytes.byteLength} bytes is not a whole number of ${size}-byte elements`);
  }
  const aligned = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  return new ctor(aligned.buffer as ArrayBuffer, aligned.byteOffset, aligned.byteLength / size);
}

/** Raw little-endian bytes of `dtype` → f32 values (floats and integers; 64-bit ints must fit). */
export function bytesToF32(bytes: Uint8Array, dtype: Dtype): Float32Array {
  switch (dtype) {
    case "F32":
      return viewAs(bytes, Float32Array).slice();
    case "F16":
      return f16ToF32(viewAs(bytes, Uint16Array));
    case "BF16":
      return bf16ToF32(viewAs(bytes, Uint16Array));
    case "F64":
      return Float32Array.from(viewAs(bytes, Float64Array));
    case "I64":
    case "U64": {
      const v = dtype === "I64" ? viewAs(bytes, BigInt64Array) : viewAs(bytes, BigUint64Array);
      const out = new Float32Array(v.length);
      for (let i = 0; i < v.length; i++) out[i] = Number(v[i]);
      return out;
    }
    case "I32":
      return Float32Array.from(viewAs(bytes, Int32Array));
    case "U32":
      return Float32Array.from(viewAs(bytes, Uint32Array));
    case "I16":
      return Float32Array.from(viewAs(bytes, Int16Array));
    case "U16":
      return Float32Array.from(viewAs(bytes, Uint16Array));
    case "I8":
      return Float32Array.from(new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    case "U8":
    case "BOOL":
      return Float32Array.from(bytes);
    default:
      throw new Error(`cannot convert ${dtype} to f32`);
  }
}

/** f32 values → raw little-endian bytes of a float dtype. */
export function f32ToBytes(values: Float32Array, dtype: FloatDtype | "F64"): Uint8Array {
  switch (dtype) {
    case "F32":
      return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    case "F16": {
      const h = f32ToF16(values);
      return new Uint8Array(h.buffer);
    }
    case "BF16": {
      const h = f32ToBf16(values);
      return new Uint8Array(h.buffer);
    }
    case "F64":
      return new Uint8Array(Float64Array.from(values).buffer);
    default:
      throw new Error(`cannot convert f32 to ${dtype}`);
  }
}

/**
 * Converts raw tensor bytes between float dtypes (e.g. stored BF16 → the run's F16). Returns the
 * input itself when the dtypes match. F16 ↔ BF16 goes through f32, which is exact on the way in.
 */
export function convertBytes(bytes: Uint8Array, from: Dtype, to: FloatDtype): Uint8Array {
  if (from === to) return bytes;
  const f = bytesToF32(bytes, from);
  return to === "F32" ? new Uint8Array(f.buffer, f.byteOffset, f.byteLength) : f32ToBytes(f, to);
}
