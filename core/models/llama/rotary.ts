/**
 * Rotary frequencies of the Llama family (spec §4.2: tests/fixtures/llama-family/README.md):
 * `inv_freq[i] = 1 / θ^(2i/d)` in float32 steps as the reference computes them, then Llama 3's
 * rule when configured (wavelength from the unscaled value; strict `<` / `>`, the blend band
 * includes both ends). The cos/sin table of θ = f32(p · inv_freq[i]) is built by the kernel
 * module (`rotaryTableOf`).
 */

import type { RopeConfig } from "./config.ts";

const f = Math.fround;

/** inv_freq [d/2] (float32 values). */
export function llamaInvFreq(headDim: number, rope: RopeConfig): Float32Array {
  const half = headDim / 2;
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    // f32(2i) / d, f32 pow, f32 reciprocal (as torch computes it in float32).
    const exponent = f(f(2 * i) / headDim);
    out[i] = f(1 / f(Math.pow(f(rope.theta), exponent)));
  }
  if (rope.type === "llama3") {
    const { factor, lowFreqFactor: lo, highFreqFactor: hi, originalMaxPositions: n } = rope;
    const lowWavelen = f(n / lo), highWavelen = f(n / hi);
    for (let i = 0; i < half; i++) {
      const inv = out[i];
      const wavelen = f(f(2 * Math.PI) / inv);
      if (wavelen < highWavelen) continue;
      if (wavelen > lowWavelen) {
        out[i] = f(inv / factor);
        continue;
      }
      const s = f(f(f(n / wavelen) - lo) / f(hi - lo));
      out[i] = f(f(f(1 - s) * f(inv / factor)) + f(s * inv));
    }
  }
  return out;
}

/** A cache key that identifies the table of these frequencies. */
export function invFreqKey(inv: Float32Array): string {
  return Array.from(new Uint32Array(inv.buffer, inv.byteOffset, inv.length), (x) => x.toString(16))
    .join(",");
}

/**
 * Positions the table covers for steps over at most `positions` indices: at least 8192, else the
 * next power of two above (one table per size, shared by training and inference).
 */
export function llamaTableSize(positions: number): number {
  return Math.max(8192, 2 ** Math.ceil(Math.log2(positions + 2)));
}
