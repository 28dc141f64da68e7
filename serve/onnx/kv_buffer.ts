/**
 * The ONNX backend's KV cache, held once: per layer, keys and values [batch, kv heads, capacity,
 * d] f32 in JS memory. The whole buffer is the graph's `past_*` input every step (onnxruntime-node
 * wraps an input's typed array without copying it: a 1 GiB input costs 0.2 ms per run, measured);
 * the graph returns only the new positions' keys/values, which `write` puts at their column.
 * Columns the rows have not filled are hidden by the mask (`spreadMask`) and stay finite (zeros),
 * so the masked probabilities (exactly 0) times them add nothing.
 *
 * The capacity is a power of two (at least 16, at most the cache's limit), grown by doubling
 * with one copy, so attention runs over fewer than twice the positions in use.
 */

export interface KvShape {
  layers: number;
  /** Key/value heads. */
  heads: number;
  d: number;
}

/** The capacity that holds `n` positions: a power of two ≥ 16, at most `limit` (≥ n). */
export function capacityFor(n: number, limit: number): number {
  if (n > limit) throw new Error(`KV cache: ${n} positions exceed the limit of ${limit}`);
  let c = 16;
  while (c < n) c *= 2;
  return Math.min(c, limit);
}

export class KvBuffer {
  readonly layers: number;
  readonly heads: number;
  readonly d: number;
  readonly batch: number;
  #capacity: number;
  /** k0, v0, k1, v1, … each [batch, heads, capacity, d]. */
  #data: Float32Array[];

  constructor(shape: KvShape, batch: number, capacity: number) {
    this.layers = shape.layers;
    this.heads = shape.heads;
    this.d = shape.d;
    this.batch = batch;
    this.#capacity = capacity;
    const n = batch * this.heads * capacity * this.d;
    this.#data = Array.from({ length: 2 * this.layers }, () => new Float32Array(n));
  }

  get capacity(): number {
    return this.#capacity;
  }

  /** The per-layer buffers (k0, v0, k1, …), [batch, heads, capacity, d]; replaced when grown. */
  get data(): readonly Float32Array[] {
    return this.#data;
  }

  /**
   * Grows (to `capacityFor(n, limit)`, one copy) unless `n` positions already fit. One layer's
   * tensor at a time, each old one dropped as soon as it is copied, so the garbage collector can
   * return them while the rest are copied: growing 0.9 → 1.8 GiB in 56 tensors peaked 0.4 GiB
   * above the new size this way, against 0.9 GiB when all were allocated first (measured).
   */
  reserve(n: number, limit: number): void {
    if (n <= this.#capacity) return;
    const next = capacityFor(n, limit);
    const from = this.#capacity, run = from * this.d, rows = this.batch * this.heads;
    for (let i = 0; i < this.#data.length; i++) {
      const old = this.#data[i];
      const grown = new Float32Array(rows * next * this.d);
      for (let r = 0; r < rows; r++) {
        grown.set(old.subarray(r * run, (r + 1) * run), r * next * this.d);
      }
      this.#data[i] = grown;
    }
    this.#capacity = next;
  }

  /**
   * Writes `s` positions of every row at columns at .. at+s−1 from the graph's new keys/values
   * (k0, v0, k1, … each [batch, heads, s, d]).
   */
  write(fresh: readonly Float32Array[], s: number, at: number): void {
    if (at + s > this.#capacity) {
      throw new Error(
        `KV cache: columns ${at}..${at + s - 1} exceed the capacity ${this.#capacity}`,
      );
    }
    const run = s * this.d;
    for (let i = 0; i < fresh.length; i++) {
      const src = fresh[i], dst = this.#data[i];
      if (src.length !== this.batch * this.heads * run) {
        throw new Error(
          `KV cache: new tensor ${i} has ${src.length} values, expected ${
            this.batch * this.heads * run
          }`,
        );
      }
      for (let r = 0; r < this.batch * this.heads; r++) {
        dst.set(src.subarray(r * run, (r + 1) * run), (r * this.#capacity + at) * this.d);
      }
    }
  }

  /** Copies columns [from, to) of row `row` into `dst`'s row `dstRow` at column `at`. */
  copyRow(row: number, from: number, to: number, dst: KvBuffer, dstRow: number, at: number): void {
    if (to <= from) return;
    const d = this.d, n = to - from;
    for (let i = 0; i < this.#data.length; i++) {
      const src = this.#data[i], out = dst.#data[i];
      for (let h = 0; h < this.heads; h++) {
        const s0 = ((row * this.heads + h) * this.#capacity + from) * d;
        out.set(src.subarray(s0, s0 + n * d), ((dstRow * dst.heads + h) * dst.#capacity + at) * d);
      }
    }
  }
}

/**
 * A mask [b, s, used + s] (the new positions' columns last) spread over a buffer of `capacity`
 * columns: [b, s, capacity + s] with columns used .. capacity−1 hidden (1 = may NOT attend).
 */
export function spreadMask(
  mask: Uint8Array,
  b: number,
  s: number,
  used: number,
  capacity: number,
): Uint8Array {
  const inW = used + s, outW = capacity + s;
  if (mask.length !== b * s * inW) {
    throw new Error(`KV cache: mask has ${mask.length} values, expected ${b * s * inW}`);
  }
  const out = new Uint8Array(b * s * outW);
  for (let r = 0; r < b * s; r++) {
    out.set(mask.subarray(r * inW, r * inW + used), r * outW);
    out.fill(1, r * outW + used, r * outW + capacity);
    out.set(mask.subarray(r * inW + used, (r + 1) * inW), r * outW + capacity);
  }
  return out;
}
