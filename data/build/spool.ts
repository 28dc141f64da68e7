/**
 * Build-time scratch storage, so that a build's memory does not grow with its input: records and
 * token examples are appended to a temporary file as they are made and read back by offset when
 * the shards are written; only a few numbers per record stay in memory (`GrowArray`). The file
 * lives next to the output (same disk) and is removed when the build ends, also on failure.
 */

const FLUSH_AT = 1 << 20;

export class Spool {
  #file: Deno.FsFile;
  #path: string;
  #size = 0; // bytes written to the file
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;

  private constructor(file: Deno.FsFile, path: string) {
    this.#file = file;
    this.#path = path;
  }

  static async create(dir: string, prefix: string): Promise<Spool> {
    const path = await Deno.makeTempFile({ dir, prefix, suffix: ".tmp" });
    const file = await Deno.open(path, { read: true, write: true });
    return new Spool(file, path);
  }

  /** Appends bytes; returns their offset. */
  append(bytes: Uint8Array): number {
    const at = this.#size + this.#pendingBytes;
    this.#pending.push(bytes);
    this.#pendingBytes += bytes.length;
    if (this.#pendingBytes >= FLUSH_AT) this.#flush();
    return at;
  }

  #flush(): void {
    if (this.#pendingBytes === 0) return;
    const all = new Uint8Array(this.#pendingBytes);
    let o = 0;
    for (const p of this.#pending) {
      all.set(p, o);
      o += p.length;
    }
    this.#file.seekSync(this.#size, Deno.SeekMode.Start);
    for (let w = 0; w < all.length;) w += this.#file.writeSync(all.subarray(w));
    this.#size += all.length;
    this.#pending = [];
    this.#pendingBytes = 0;
  }

  /** Reads `length` bytes at `offset` (anything appended so far). */
  read(offset: number, length: number): Uint8Array {
    if (offset + length > this.#size) this.#flush();
    const out = new Uint8Array(length);
    this.#file.seekSync(offset, Deno.SeekMode.Start);
    for (let r = 0; r < length;) {
      const n = this.#file.readSync(out.subarray(r));
      if (n === null || n === 0) throw new Error(`spool ${this.#path}: short read at ${offset}`);
      r += n;
    }
    return out;
  }

  /** Closes and deletes the file. */
  async dispose(): Promise<void> {
    try {
      this.#file.close();
    } catch { /* already closed */ }
    await Deno.remove(this.#path).catch(() => {});
  }
}

type NumArray = Int32Array | Uint32Array | Float64Array | Uint8Array | Uint16Array;

/** A growable typed array: a few bytes per record instead of an object per record. */
export class GrowArray<T extends NumArray> {
  #a: T;
  length = 0;
  constructor(private make: (n: number) => T) {
    this.#a = make(1024);
  }
  push(v: number): number {
    if (this.length === this.#a.length) {
      const b = this.make(this.#a.length * 2);
      b.set(this.#a as unknown as ArrayLike<number>);
      this.#a = b;
    }
    this.#a[this.length] = v;
    return this.length++;
  }
  get(i: number): number {
    return this.#a[i];
  }
  set(i: number, v: number): void {
    this.#a[i] = v;
  }
}
