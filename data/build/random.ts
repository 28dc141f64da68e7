/**
 * The builder's own seeded randomness, so that shuffles and splits are identical on every machine
 * and Deno version: FNV-1a turns (seed, purpose) into state, and a small-fast-counter generator
 * (sfc32) produces the stream. `Math.random` is never used.
 */

/** FNV-1a over the UTF-16 code units of `s` (32-bit). */
export function fnv1a(s: string, h = 0x811c9dc5): number {
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** A generator of uint32 values for `seed` and a `purpose` label (independent streams). */
export function createRng(seed: number | string, purpose: string): () => number {
  const key = `${seed}\u0000${purpose}`;
  let a = fnv1a(key), b = fnv1a(key, 0x9e3779b9), c = fnv1a(key, 0x85ebca6b), d = 1;
  const next = () => {
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + t) >>> 0;
    return t;
  };
  for (let i = 0; i < 12; i++) next();
  return next;
}

/** A uniform integer in [0, n). */
export function below(rng: () => number, n: number): number {
  return Math.floor((rng() / 4294967296) * n);
}

/** Fisher–Yates shuffle in place. */
export function shuffleInPlace<T>(items: T[], rng: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = below(rng, i + 1);
    const t = items[i];
    items[i] = items[j];
    items[j] = t;
  }
  return items;
}
