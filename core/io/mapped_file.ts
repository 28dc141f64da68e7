/**
 * Pieces of a checkpoint file mapped into memory (Linux, through libc's `mmap`), so that the
 * loader hands the page cache's own pages to the GPU upload instead of first copying them into a
 * buffer of its own with `read`.
 *
 * Why: on a software adapter the load is CPU-bound on two cores, and the `read` copy from the
 * page cache was ~0.2 CPU s/GB of it (0.35 for a bare read): on one 1.47 GB shard read in 8 MiB
 * pieces and copied once more (what the upload does), `read` took 0.37 CPU s and mmap 0.23.
 * Each piece is mapped with `MAP_POPULATE` on the runtime's blocking threads (a nonblocking FFI
 * call), so the page tables (and any disk read) are filled ahead of the upload, as the reads
 * ahead did; the main thread then only views the mapped bytes.
 *
 * Lifetime: a piece's bytes are a view of memory that {@link MappedPiece.unmap} returns to the
 * kernel; unmap detaches the view's ArrayBuffer as well, so a view kept by mistake reads as empty
 * (or makes writeBuffer throw) instead of touching unmapped memory. Mapped file pages count in
 * the process's resident memory, so callers keep only a few pieces mapped at a time.
 *
 * SIGBUS: touching a mapped page past the end of the file kills the process. Ranges are checked
 * against the file's size when it is opened (a hostile index or header pointing past the end is
 * an error naming the file, never a mapping), but a file truncated by another process while it
 * is being loaded would still end the load with SIGBUS; that is the price of mapping, accepted
 * for checkpoints (which nobody rewrites in place while loading them). `MEDGLM_NO_MMAP=1` reads
 * instead.
 */

import { envSwitch } from "./env_switch.ts";
import {
  type Libc,
  libc,
  MAP_FAILED,
  MAP_POPULATE,
  MAP_PRIVATE,
  O_CLOEXEC,
  O_RDONLY,
  pageSize,
  PROT_READ,
} from "./libc.ts";

/** A mapped range of a file: `bytes` is valid until `unmap()`. */
export interface MappedPiece {
  bytes: Uint8Array<ArrayBuffer>;
  unmap(): void;
}

/** What a reader needs of a mapped file ({@link MappedFile}; tests give others). */
export interface PieceMapper {
  map(offset: number, length: number): Promise<MappedPiece | null>;
  close(): void;
}

/** False when `MEDGLM_NO_MMAP=1` (to measure against, or to rule mapping out). */
export function mmapWanted(): boolean {
  return !envSwitch("MEDGLM_NO_MMAP");
}

/** A checkpoint file opened for mapping pieces of it (see the module doc). */
export class MappedFile implements PieceMapper {
  #lib: Libc;
  #fd: number;
  #page: number;
  readonly path: string;
  /** The file's size when it was opened: every mapped range must lie within it. */
  readonly size: number;

  private constructor(lib: Libc, fd: number, path: string, size: number) {
    this.#lib = lib;
    this.#fd = fd;
    this.#page = pageSize(lib);
    this.path = path;
    this.size = size;
  }

  /**
   * Opens `path` for mapping, or returns null where mapping is not available (not Linux, no
   * `ffi` permission, `MEDGLM_NO_MMAP=1`, or libc's open failed): the caller reads instead.
   * A missing file is still an error naming it.
   */
  static open(path: string): MappedFile | null {
    if (!mmapWanted()) return null;
    const lib = libc();
    if (!lib) return null;
    // The size first, so a missing or special file is reported as the reads report it.
    const info = Deno.statSync(path);
    if (!info.isFile) throw new Error(`${path}: not a regular file`);
    const fd = lib.symbols.open(new TextEncoder().encode(`${path}\0`), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return null;
    return new MappedFile(lib, fd, path, info.size);
  }

  /**
   * Maps `length` bytes at `offset`, populated on a blocking thread; null when the kernel refuses
   * the mapping (the caller reads the range instead). A range past the end of the file is an
   * error, as a short read is.
   */
  async map(offset: number, length: number): Promise<MappedPiece | null> {
    if (this.#fd < 0) throw new Error(`${this.path}: internal error: mapping a closed file`);
    if (
      !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0
    ) {
      throw new Error(`${this.path}: internal error: bad range of ${length} bytes at ${offset}`);
    }
    if (offset + length > this.size) {
      throw new Error(
        `${this.path}: unexpected end of file reading ${length} bytes at offset ${offset} ` +
          `(the file is ${this.size} bytes)`,
      );
    }
    if (length === 0) return { bytes: new Uint8Array(0), unmap() {} };
    // mmap offsets are whole pages: map from the page holding `offset`, view from `delta` on
    // (so the view's byteOffset keeps the data's real alignment).
    const delta = offset % this.#page;
    const span = delta + length;
    const ptr = await this.#lib.symbols.mmapAhead(
      null,
      BigInt(span),
      PROT_READ,
      MAP_PRIVATE | MAP_POPULATE,
      this.#fd,
      BigInt(offset - delta),
    );
    if (ptr === null || BigInt(Deno.UnsafePointer.value(ptr)) === MAP_FAILED) return null;
    const buffer = Deno.UnsafePointerView.getArrayBuffer(ptr, span);
    const lib = this.#lib;
    let mapped = true;
    return {
      bytes: new Uint8Array(buffer, delta, length),
      unmap() {
        if (!mapped) return;
        mapped = false;
        // Detach first: nothing can read the pages once they are gone.
        buffer.transfer(0);
        lib.symbols.munmap(ptr, BigInt(span));
      },
    };
  }

  /** Closes the file (mapped pieces stay valid until unmapped: a mapping holds the file). */
  close(): void {
    if (this.#fd < 0) return;
    this.#lib.symbols.close(this.#fd);
    this.#fd = -1;
  }
}
