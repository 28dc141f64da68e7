/**
 * The project's one seeded random generator (data splits and order, LoRA init and dropout seeds,
 * sampling): xoshiro128** seeded through splitmix32, never `Math.random`, so results are the same
 * on every machine. Its state is four u32 words that can be saved (the trainer's
 * `rng_state.json`), so a resumed run draws exactly the numbers the uninterrupted run would have.
 */

export interface Rng {
  /** Next u32. */
  nextU32(): number;
  /** Uniform in [0, 1). */
  next(): number;
  /** Integer in [0, n). */
  below(n: number): number;
  /** The four state words (a copy). */
  state(): [number, number, number, number];
}

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

const rotl = (x: number, k: number) => ((x << k) | (x >>> (32 - k))) >>> 0;

/** A generator from a seed (any integer; the same seed gives the same stream). */
export function createRng(seed: number): Rng {
  const sm = splitmix32(seed);
  return rngFromState([sm(), sm(), sm(), sm()]);
}

/** A generator continuing from saved state words; throws on a malformed state. */
export function rngFromState(words: readonly number[]): Rng {
  if (
    words.length !== 4 || !words.every((w) => Number.isInteger(w) && w >= 0 && w <= 0xffffffff) ||
    words.every((w) => w === 0)
  ) {
    throw new Error(
      `RNG state must be four u32 words, not all zero (got ${JSON.stringify(words)})`,
    );
  }
  const s = Uint32Array.from(words);
  const nextU32 = () => {
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  };
  return {
    nextU32,
    next: () => nextU32() / 4294967296,
    below(n) {
      if (!(Number.isInteger(n) && n > 0 && n <= 0x100000000)) throw new RangeError(`below(${n})`);
      // rejection sampling: no modulo bias
      const limit = Math.floor(4294967296 / n) * n;
      let x = nextU32();
      while (x >= limit) x = nextU32();
      return x % n;
    },
    state: () => [s[0], s[1], s[2], s[3]],
  };
}

/** Fisher–Yates shuffle in place. */
export function shuffle<T>(items: T[], rng: Rng): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

/** FNV-1a over the UTF-16 code units of `s` (32-bit). */
export function fnv1a(s: string, h = 0x811c9dc5): number {
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * A seed for an independent stream: the same (seed, purpose) always gives the same seed, and
 * different purposes (say "split" and "train-order") give unrelated streams.
 */
export function seedFor(seed: number | string, purpose: string): number {
  return fnv1a(`${seed}\u0000${purpose}`);
}
