/**
 * Reading byte ranges of a file by offset: checkpoints are many GB, so readers seek to what they
 * need instead of loading whole files.
 */

/** Fills `out` (or a new buffer of `length`) from `file` at absolute `offset`; throws at EOF. */
export async function readAt(
  file: Deno.FsFile,
  offset: number,
  length: number,
  path: string,
  out: Uint8Array = new Uint8Array(length),
): Promise<Uint8Array> {
  if (out.length < length) throw new Error(`${path}: read buffer smaller than ${length} bytes`);
  return await readInto(file, offset, out.subarray(0, length), path);
}

/**
 * Fills `out` from `file` at absolute `offset` with one async read where the file gives it all (a
 * synchronous seek first: the read is dispatched at once, not after a round trip through the
 * event loop). One read at a time per file handle.
 */
export async function readInto(
  file: Deno.FsFile,
  offset: number,
  out: Uint8Array,
  path: string,
): Promise<Uint8Array> {
  file.seekSync(offset, Deno.SeekMode.Start);
  let got = 0;
  while (got < out.length) {
    const n = await file.read(out.subarray(got));
    if (n === null) {
      throw new Error(
        `${path}: unexpected end of file reading ${out.length} bytes at offset ${offset} (got ${got})`,
      );
    }
    got += n;
  }
  return out;
}

/** Reads `length` bytes at `offset` of the file at `path`. */
export async function readFileRange(
  path: string,
  offset: number,
  length: number,
): Promise<Uint8Array> {
  const file = await Deno.open(path, { read: true });
  try {
    return await readAt(file, offset, length, path);
  } finally {
    file.close();
  }
}

/** Size in bytes of the file at `path`, with an error naming it when it is missing. */
export async function fileSize(path: string): Promise<number> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw new Error(`${path}: file not found`);
    throw err;
  }
  if (!info.isFile) throw new Error(`${path}: not a regular file`);
  return info.size;
}
