/**
 * Atomic file writes: write a sibling temp file, fsync it, then rename over the target, so a
 * crash or a kill mid-write leaves either the old file or the new one, never a torn one.
 */

function tempPathFor(path: string): string {
  const rand = crypto.getRandomValues(new Uint32Array(1))[0].toString(16);
  return `${path}.${Deno.pid}.${rand}.tmp`;
}

/** Writes `data` (bytes, a string, or chunks streamed one after another) to `path` atomically. */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array | string | Iterable<Uint8Array> | AsyncIterable<Uint8Array>,
): Promise<void> {
  const tmp = tempPathFor(path);
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    if (typeof data === "string") await writeAll(file, new TextEncoder().encode(data));
    else if (data instanceof Uint8Array) await writeAll(file, data);
    else for await (const chunk of data) await writeAll(file, chunk);
    await file.sync();
  } catch (err) {
    file.close();
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  file.close();
  try {
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  await syncDir({ parentOf: path });
}

/** Writes a JSON value (2-space indent, trailing newline) atomically. */
export function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  return writeFileAtomic(path, JSON.stringify(value, null, 2) + "\n");
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await file.write(bytes.subarray(off));
}

/**
 * Makes renames and creations inside a directory durable by fsyncing the directory: `syncDir(dir)`
 * for a directory, or the parent of a file with `{ parentOf: path }`. Not every platform allows
 * opening a directory, so this is best effort (the rename itself is atomic either way).
 */
export async function syncDir(dirOrFile: string | { parentOf: string }): Promise<void> {
  let dir: string;
  if (typeof dirOrFile === "string") dir = dirOrFile;
  else {
    const slash = dirOrFile.parentOf.lastIndexOf("/");
    dir = slash > 0 ? dirOrFile.parentOf.slice(0, slash) : slash === 0 ? "/" : ".";
  }
  try {
    const d = await Deno.open(dir, { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
  } catch {
    // directories cannot be fsynced here; the rename itself is still atomic
  }
}

/**
 * True when `path` exists (following links); with `kind`, only when it is a file or a directory.
 * Errors other than "not there" (no permission) count as absent: callers only use this to choose
 * between paths, and the read that follows reports the real error.
 */
export async function pathExists(path: string, kind?: "file" | "directory"): Promise<boolean> {
  try {
    const info = await Deno.stat(path);
    if (kind === "file") return info.isFile;
    if (kind === "directory") return info.isDirectory;
    return true;
  } catch {
    return false;
  }
}
