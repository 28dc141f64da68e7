/**
 * The few libc calls the loader makes through FFI (Linux only): mapping checkpoint pieces
 * ({@link ./mapped_file.ts}) and advising the memory they are written into ({@link
 * ./huge_pages.ts}). One library handle for both, opened at first use.
 *
 * The call that may wait on the disk and fills page tables (`mmapAhead`) is declared
 * `nonblocking`: the runtime runs it on its blocking threads and returns a promise, so that work
 * overlaps the main thread's (as the positioned reads did).
 */

export interface LibcSymbols {
  open(path: Uint8Array<ArrayBuffer>, flags: number): number;
  close(fd: number): number;
  mmapAhead(
    addr: null,
    length: bigint,
    prot: number,
    flags: number,
    fd: number,
    offset: bigint,
  ): Promise<Deno.PointerValue>;
  munmap(addr: Deno.PointerValue, length: bigint): number;
  madvise(addr: bigint, length: bigint, advice: number): number;
  sysconf(name: number): number | bigint;
}

export interface Libc {
  symbols: LibcSymbols;
}

export const O_RDONLY = 0;
export const O_CLOEXEC = 0o2000000;
export const PROT_READ = 1;
export const MAP_PRIVATE = 0x02;
export const MAP_POPULATE = 0x8000;
/** The address mmap returns on failure ((void *) -1). */
export const MAP_FAILED = 2n ** 64n - 1n;
const SC_PAGESIZE = 30;

let lib: Libc | null | undefined;

/**
 * libc, or null where it cannot be used: not Linux, no `ffi` permission, or the library not
 * found. Callers treat null as "do it the portable way".
 */
export function libc(): Libc | null {
  if (lib !== undefined) return lib;
  lib = null;
  try {
    if (Deno.build.os !== "linux") return null;
    if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") return null;
    const mmap = {
      name: "mmap",
      parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"],
      result: "pointer",
      nonblocking: true,
    } as const;
    lib = Deno.dlopen("libc.so.6", {
      open: { parameters: ["buffer", "i32"], result: "i32" },
      close: { parameters: ["i32"], result: "i32" },
      mmapAhead: mmap,
      munmap: { parameters: ["pointer", "usize"], result: "i32" },
      madvise: { parameters: ["usize", "usize", "i32"], result: "i32" },
      sysconf: { parameters: ["i32"], result: "i64" },
    }) as unknown as Libc;
  } catch {
    lib = null;
  }
  return lib;
}

/** The system's page size (mmap offsets are multiples of it). */
export function pageSize(l: Libc): number {
  const n = Number(l.symbols.sysconf(SC_PAGESIZE));
  return n > 0 ? n : 4096;
}
