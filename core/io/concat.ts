/** Concatenation of typed arrays (chunks read back in parts, byte strings built in pieces). */

/** The parts one after another in one new array of their type (always a copy). */
export function concatArrays(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer>;
export function concatArrays(parts: readonly Float32Array[]): Float32Array<ArrayBuffer>;
export function concatArrays(
  parts: readonly (Uint8Array | Float32Array)[],
): Uint8Array<ArrayBuffer> | Float32Array<ArrayBuffer> {
  if (parts.length === 0) {
    throw new RangeError("concatArrays: no parts (the element type is unknown)");
  }
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = parts[0] instanceof Float32Array ? new Float32Array(total) : new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
