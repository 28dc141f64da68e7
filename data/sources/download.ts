/**
 * Opt-in download of public source files (`deno task data --download`). Each file goes to
 * `<root>/<path>`: it is fetched into `<path>.part` (resumed with an HTTP Range request when a
 * partial file is there), checked against `size` / `sha256` when the config gives them, fsynced
 * and renamed into place, so an interrupted download never leaves a torn data file. A file that
 * is already present (and matches size / sha256 when given) is not fetched again.
 *
 * A server that accepts and never answers must not hang a build: the response headers must come
 * within `connectTimeoutMs` and the body may never stall for longer than `idleTimeoutMs`. While
 * waiting for headers a line is printed every few seconds, and the body shows a progress bar.
 * Every network failure (DNS, refused connection, reset, timeout) names the URL.
 */

import { createHash } from "node:crypto";
import { createProgress, type Progress } from "../../base/mod.ts";

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

export interface DownloadOptions {
  /** Called with each finished file. */
  onFile?: (r: DownloadResult) => void;
  /** Status lines while waiting (default: none). */
  log?: (line: string) => void;
  /** A progress bar for the body (default none; the CLI shows one). */
  progress?: boolean;
  /** Time allowed until the response headers arrive (default 30 s). */
  connectTimeoutMs?: number;
  /** Longest pause allowed between two chunks of the body (default 60 s). */
  idleTimeoutMs?: number;
  /** Interval of the "still waiting" lines (default 5 s). */
  waitNoticeMs?: number;
}

const noProgress: Progress = { tick() {}, update() {}, done() {} };

function resolve(root: string, p: string): string {
  return p.startsWith("/") ? p : `${root.replace(/\/$/, "")}/${p}`;
}

/** Fetches every spec not already present; throws with the URL on network, HTTP or checksum errors. */
export async function downloadSources(
  specs: DownloadSpec[],
  root: string,
  options: DownloadOptions | ((r: DownloadResult) => void) = {},
): Promise<DownloadResult[]> {
  const opts: DownloadOptions = typeof options === "function" ? { onFile: options } : options;
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
      opts.onFile?.(r);
      continue;
    }
    await Deno.mkdir(dest.slice(0, dest.lastIndexOf("/")) || ".", { recursive: true });
    const part = `${dest}.part`;
    let have = (await sizeOf(part)) ?? 0;
    if (spec.size !== undefined && have > spec.size) {
      await Deno.remove(part);
      have = 0;
    }
    const resumed = await fetchInto(spec, part, have, opts);
    if (!resumed) have = 0;
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
    opts.onFile?.(r);
  }
  return results;
}

/**
 * One request into `part` (appending from `have` when the server honours the Range request).
 * Returns whether the data was appended to an existing part file.
 */
async function fetchInto(
  spec: DownloadSpec,
  part: string,
  have: number,
  opts: DownloadOptions,
): Promise<boolean> {
  const connectMs = opts.connectTimeoutMs ?? 30_000;
  const idleMs = opts.idleTimeoutMs ?? 60_000;
  const noticeMs = opts.waitNoticeMs ?? 5_000;
  const ctrl = new AbortController();
  let why = "";
  let timer = setTimeout(() => {
    why = `no response within ${connectMs / 1000} s (connect timeout)`;
    ctrl.abort();
  }, connectMs);
  const t0 = performance.now();
  const notice = setInterval(() => {
    const waited = ((performance.now() - t0) / 1000).toFixed(0);
    opts.log?.(
      `download: waiting for ${spec.url} (${waited} s, gives up after ${connectMs / 1000} s)`,
    );
  }, noticeMs);
  const failed = (err: unknown): Error =>
    new Error(
      `download of ${spec.url} failed: ${why || (err as Error).message}` +
        ((err as Error).cause ? ` (${String((err as Error).cause)})` : ""),
    );
  let resp: Response;
  try {
    const headers: HeadersInit = have > 0 ? { Range: `bytes=${have}-` } : {};
    resp = await fetch(spec.url, { headers, signal: ctrl.signal });
  } catch (err) {
    throw failed(err);
  } finally {
    clearTimeout(timer);
    clearInterval(notice);
  }
  if (resp.status === 416 && have > 0) {
    // the part file is already complete
    await resp.body?.cancel();
    return true;
  }
  if (!resp.ok) {
    await resp.body?.cancel();
    throw new Error(`download failed: ${spec.url}: HTTP ${resp.status} ${resp.statusText}`);
  }
  const resumed = resp.status === 206 && have > 0;
  const length = Number(resp.headers.get("content-length") ?? NaN);
  const bar = opts.progress
    ? createProgress({
      label: `download ${spec.path}`,
      total: Number.isFinite(length) ? length : (spec.size ?? 0) - (resumed ? have : 0),
      unit: "B",
    })
    : noProgress;
  const file = await Deno.open(part, {
    write: true,
    create: true,
    append: resumed,
    truncate: !resumed,
  });
  let got = 0;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      why = `stalled: no data for ${idleMs / 1000} s after ${got} bytes (idle timeout)`;
      ctrl.abort();
    }, idleMs);
  };
  try {
    arm();
    if (resp.body) {
      for await (const chunk of resp.body) {
        arm();
        let off = 0;
        while (off < chunk.length) off += await file.write(chunk.subarray(off));
        got += chunk.length;
        bar.tick(chunk.length);
      }
    }
    await file.sync();
  } catch (err) {
    // what arrived stays in the .part file: the next run resumes from it
    throw failed(err);
  } finally {
    clearTimeout(timer);
    file.close();
    bar.done();
  }
  return resumed;
}
