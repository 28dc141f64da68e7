/**
 * The per-question result cache that makes a run resumable: one JSON Lines file per task under
 * `out/cache/<run-hash>/`, a line appended (and flushed) after every chunk of work. A rerun with
 * `resume` reuses every line whose `id` and `key` (a fingerprint of the prompt) still match and
 * computes only the rest; a line cut short by a kill is ignored. Without `resume` the file starts
 * empty. Results always come back in the items' order, however they were computed.
 */

import { dirname } from "node:path";
import { fnv1a, writeFileAtomic } from "../base/mod.ts";

export interface Keyed {
  id: string;
  key: string;
}

/** A 64-bit hex fingerprint of strings (two FNV-1a lanes; not cryptographic, only a cache key). */
export function fingerprint(...parts: string[]): string {
  const text = parts.join("\u0000");
  const a = fnv1a(text) >>> 0;
  const b = fnv1a(text, 0x01000193 ^ 0x5bd1e995) >>> 0;
  return a.toString(16).padStart(8, "0") + b.toString(16).padStart(8, "0");
}

/** Reads the usable lines of a cache file (id → parsed line). */
export async function readCache<T extends Keyed>(
  path: string,
): Promise<Map<string, T>> {
  const out = new Map<string, T>();
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return out;
    throw new Error(
      `${path}: cannot read the result cache: ${(err as Error).message}`,
    );
  }
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    try {
      const v = JSON.parse(line) as T;
      if (v && typeof v.id === "string" && typeof v.key === "string") {
        out.set(v.id, v);
      }
    } catch {
      // a line cut short when the run was killed: recomputed
    }
  }
  return out;
}

export interface CachedRunOptions<I extends Keyed, R extends Keyed> {
  items: readonly I[];
  /** Computes results for a chunk of items, in their order. */
  compute: (chunk: I[]) => Promise<R[]>;
  cachePath: string;
  resume: boolean;
  /** Items per computed chunk (one cache append each). */
  chunkSize: number;
  /** Called after each chunk with the number of items newly done (cached ones count at start). */
  onProgress?: (done: number) => void;
}

/** Runs `compute` over the items the cache does not hold; returns every result in item order. */
export async function runCached<I extends Keyed, R extends Keyed>(
  opts: CachedRunOptions<I, R>,
): Promise<{ results: R[]; computed: number; reused: number }> {
  await Deno.mkdir(dirname(opts.cachePath), { recursive: true });
  const cached = opts.resume ? await readCache<R>(opts.cachePath) : new Map<string, R>();
  const have = new Map<string, R>();
  const todo: I[] = [];
  for (const it of opts.items) {
    const c = cached.get(it.id);
    if (c && c.key === it.key) have.set(it.id, c);
    else todo.push(it);
  }
  // Rewrite the cache with only the lines still valid, then append as chunks finish.
  const keep = opts.items.filter((it) => have.has(it.id)).map((it) =>
    JSON.stringify(have.get(it.id))
  );
  await writeFileAtomic(
    opts.cachePath,
    keep.length ? keep.join("\n") + "\n" : "",
  );
  opts.onProgress?.(have.size);
  const encoder = new TextEncoder();
  const chunkSize = Math.max(1, opts.chunkSize);
  for (let at = 0; at < todo.length; at += chunkSize) {
    const chunk = todo.slice(at, at + chunkSize);
    const results = await opts.compute(chunk);
    if (results.length !== chunk.length) {
      throw new Error(
        `computed ${results.length} results for ${chunk.length} items`,
      );
    }
    const file = await Deno.open(opts.cachePath, {
      append: true,
      create: true,
    });
    try {
      const bytes = encoder.encode(
        results.map((r) => JSON.stringify(r) + "\n").join(""),
      );
      for (let off = 0; off < bytes.length;) {
        off += await file.write(bytes.subarray(off));
      }
      await file.sync();
    } finally {
      file.close();
    }
    for (const r of results) have.set(r.id, r);
    opts.onProgress?.(chunk.length);
  }
  return {
    results: opts.items.map((it) => have.get(it.id)!),
    computed: todo.length,
    reused: opts.items.length - todo.length,
  };
}
