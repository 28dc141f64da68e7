import { writeFileAtomic } from "../base/mod.ts";

/** Reads a whole file, naming it in the error. */
export async function readFileBytes(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (err) {
    throw new Error(`${path}: cannot read it (${(err as Error).message})`);
  }
}

/** Copies a file atomically (temp file + rename), so a killed copy never leaves half a file. */
export async function copy(src: string, dst: string): Promise<void> {
  await writeFileAtomic(dst, await readFileBytes(src));
}
