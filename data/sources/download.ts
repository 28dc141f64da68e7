/**
 * Opt-in download of public source files (`deno task data --download`). Each file goes to
 * `<root>/<path>`: it is fetched into `<path>.part` (resumed with an HTTP Range request when a
 * partial file is there), checked against `size` / `sha256` when the config gives them, fsynced
 * and renamed into place, so an interrupted download never leaves a torn data file. A file that
 * is already present (and matches size / sha256 when given) is not fetched again.
 */

import { createHash } from "node:crypto";

export interface DownloadSpec {
  url: string;
  /** Destination relative to the build root (or absolute). */
  path: string;
  sha256?: string;
  size?: number;
}

export interface DownloadResult {
  path: string;
  url: string;
  status: "present" | "downloaded" | "resumed";
  bytes: number;
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  const f = await Deno.open(path);
  // the readable stream closes the file when it ends
  for await (const chunk of f.readable) hash.update(chunk);
  return hash.digest("hex");
}

async function sizeOf(path: string): Promise<number | null> {
  try {
    const st = await Deno.stat(path);
    return st.isFile ? st.size : null;
  } catch {
    return null;
  }
}

async function matches(path: string, spec: DownloadSpec): Promise<boolean> {
  const size = await sizeOf(path);
  if (size === null) return false;
  if (spec.size !== undefined && size !== spec.size) return false;
  if (spec.sha256 !== undefined && (await sha256File(path)) !== spec.sha256.toLowerCase()) {
    return false;
  }
  return true;
}

function resolve(root: string, p: string): string {
  return p.startsWith("/") ? p : `${root.replace(/\/$/, "")}/${p}`;
}

/** Fetches every spec not already present; throws with the URL on HTTP or checksum errors. */
export async function downloadSources(
  specs: DownloadSpec[],
  root: string,
  onFile?: (r: DownloadResult) => void,
): Promise<DownloadResult[]> {
  const results: DownloadResult[] = [];
  for (const spec of specs) {
    const dest = resolve(root, spec.path);
    if (await matches(dest, spec)) {
      const r: DownloadResult = {
        path: dest,
        url: spec.url,
        status: "present",
        bytes: (await sizeOf(dest))!,
      };
      results.push(r);
      onFile?.(r);
      continue;
    }
    await Deno.mkdir(dest.slice(0, dest.lastIndexOf("/")) || ".", { recursive: true });
    const part = `${dest}.part`;
    let have = (await sizeOf(part)) ?? 0;
    if (spec.size !== undefined && have > spec.size) {
      await Deno.remove(part);
      have = 0;
    }
    const headers: HeadersInit = have > 0 ? { Range: `bytes=${have}-` } : {};
    const resp = await fetch(spec.url, { headers });
    if (resp.status === 416 && have > 0) {
      // the part file is already complete
      await resp.body?.cancel();
    } else if (!resp.ok) {
      await resp.body?.cancel();
      throw new Error(`download failed: ${spec.url}: HTTP ${resp.status} ${resp.statusText}`);
    } else {
      const resumed = resp.status === 206 && have > 0;
      const file = await Deno.open(part, {
        write: true,
        create: true,
        append: resumed,
        truncate: !resumed,
      });
      try {
        if (resp.body) {
          for await (const chunk of resp.body) {
            let off = 0;
            while (off < chunk.length) off += await file.write(chunk.subarray(off));
          }
        }
        await file.sync();
      } finally {
        file.close();
      }
      if (!resumed) have = 0;
    }
    const got = (await sizeOf(part)) ?? 0;
    if (spec.size !== undefined && got !== spec.size) {
      throw new Error(`download of ${spec.url}: got ${got} bytes, expected ${spec.size}`);
    }
    if (spec.sha256 !== undefined) {
      const sum = await sha256File(part);
      if (sum !== spec.sha256.toLowerCase()) {
        await Deno.remove(part);
        throw new Error(`download of ${spec.url}: sha256 ${sum} does not match ${spec.sha256}`);
      }
    }
    await Deno.rename(part, dest);
    const r: DownloadResult = {
      path: dest,
      url: spec.url,
      status: have > 0 ? "resumed" : "downloaded",
      bytes: got,
    };
    results.push(r);
    onFile?.(r);
  }
  return results;
}
