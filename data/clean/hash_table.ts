/**
 * A map from 64-bit hashes to record numbers in two typed arrays (open addressing, linear
 * probing): 12 bytes per slot and at most half the slots used, so about 24 bytes per unique
 * record, where a `Map` of hash strings costs about 70. The de-duplication set is the one part of
 * a build that grows with the input (with its unique records), so its size per record matters.
 */

export class HashTable64 {
  #keys = new Uint32Array(2 * 1024); // (hi, lo) per slot; (0, 0) marks an empty slot
  #values = new Int32Array(1024);
  #size = 0;

  get size(): number {
    return this.#size;
  }

  /** The value stored for (hi, lo), or -1. */
  get(hi: number, lo: number): number {
    [hi, lo] = nonZero(hi, lo);
    const mask = this.#values.length - 1;
    for (let i = (lo ^ Math.imul(hi, 0x9e3779b1)) & mask;; i = (i + 1) & mask) {
      const h = this.#keys[2 * i], l = this.#keys[2 * i + 1];
      if (h === 0 && l === 0) return -1;
      if (h === hi && l === lo) return this.#values[i];
    }
  }

  /** Stores `value` (≥ 0) for (hi, lo), replacing an earlier one. */
  set(hi: number, lo: number, value: number): void {
    [hi, lo] = nonZero(hi, lo);
    if (2 * (this.#size + 1) > this.#values.length) this.#grow();
    this.#put(hi, lo, value);
  }

  #put(hi: number, lo: number, value: number): void {
    const mask = this.#values.length - 1;
    for (let i = (lo ^ Math.imul(hi, 0x9e3779b1)) & mask;; i = (i + 1) & mask) {
      const h = this.#keys[2 * i], l = this.#keys[2 * i + 1];
      if (h === 0 && l === 0) {
        this.#keys[2 * i] = hi;
        this.#keys[2 * i + 1] = lo;
        this.#values[i] = value;
        this.#size++;
        return;
      }
      if (h === hi && l === lo) {
        this.#values[i] = value;
        return;
      }
    }
  }

  #grow(): void {
    const keys = this.#keys, values = this.#values;
    this.#keys = new Uint32Array(keys.length * 2);
    this.#values = new Int32Array(values.length * 2);
    this.#size = 0;
    for (let i = 0; i < values.length; i++) {
      if (keys[2 * i] !== 0 || keys[2 * i + 1] !== 0) {
        this.#put(keys[2 * i], keys[2 * i + 1], values[i]);
      }
    }
  }
}

// (0, 0) is the empty mark: that one hash is stored as (0, 1) (a collision of 2^-64 odds).
function nonZero(hi: number, lo: number): [number, number] {
  hi >>>= 0;
  lo >>>= 0;
  return hi === 0 && lo === 0 ? [0, 1] : [hi, lo];
}
