/**
 * Source paths: a file, a folder (every data file below it), or a glob with `*`, `?`, `**` and
 * `{a,b}`. Like the original project's `*.json`, a pattern matches whole names, so `*.json` does
 * not pick up an extension-less file next to the JSON files. Results are sorted so that builds are
 * deterministic whatever order the file system lists entries in.
 */

/** Extensions a folder source picks up. */
export const DATA_EXTENSIONS = ["json", "jsonl", "txt", "csv", "tsv"];

export interface MatchedFile {
  /** Absolute (or root-joined) path to open. */
  path: string;
  /** Path relative to the root, forward slashes: used in origins and warnings. */
  rel: string;
}

function hasMagic(segment: string): boolean {
  return /[*?{[]/.test(segment);
}

/** Converts one glob path segment into an anchored RegExp. */
export function segmentRegExp(segment: string): RegExp {
  let re = "";
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i];
    if (c === "*") re += "[^/]*";
    else if (c === "?") re += "[^/]";
    else if (c === "{") {
      const close = segment.indexOf("}", i);
      if (close < 0) re += "\\{";
      else {
        const alts = segment.slice(i + 1, close).split(",").map(escapeRe);
        re += `(?:${alts.join("|")})`;
        i = close;
      }
    } else re += escapeRe(c);
  }
  return new RegExp(`^${re}$`, "u");
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function join(a: string, b: string): string {
  if (a === "" || a === ".") return b;
  return a.endsWith("/") ? a + b : `${a}/${b}`;
}

function byCodeUnits(a: MatchedFile, b: MatchedFile): number {
  return a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0;
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch {
    return null;
  }
}

async function walkFiles(dir: string, rel: string, out: MatchedFile[]): Promise<void> {
  const entries: Deno.DirEntry[] = [];
  for await (const e of Deno.readDir(dir)) entries.push(e);
  for (const e of entries) {
    const p = join(dir, e.name);
    const r = join(rel, e.name);
    if (e.isDirectory) await walkFiles(p, r, out);
    else if (e.isFile) out.push({ path: p, rel: r });
  }
}

/**
 * Files matched by `pattern` (relative to `root`, or absolute). A folder gives every file with a
 * data extension below it. Throws when a plain path (no wildcard) does not exist.
 */
export async function expandSourcePath(root: string, pattern: string): Promise<MatchedFile[]> {
  const abs = pattern.startsWith("/");
  const segments = pattern.split("/").filter((s, i) => s !== "" && !(s === "." && i > 0));
  const base = abs ? "/" : root;
  const out: MatchedFile[] = [];
  if (!segments.some(hasMagic)) {
    const path = abs ? pattern : join(root, pattern);
    const st = await statOrNull(path);
    if (!st) throw new Error(`source path not found: ${path}`);
    const rel = abs ? pattern : segments.join("/");
    if (st.isFile) return [{ path, rel }];
    const all: MatchedFile[] = [];
    await walkFiles(path, rel, all);
    return all.filter((f) => DATA_EXTENSIONS.includes(extension(f.rel))).sort(byCodeUnits);
  }
  await matchSegments(base, abs ? "/" : "", segments, out);
  const seen = new Set<string>();
  return out.filter((f) => !seen.has(f.rel) && seen.add(f.rel)).sort(byCodeUnits);
}

function extension(rel: string): string {
  const name = rel.slice(rel.lastIndexOf("/") + 1);
  const dot = name.lastIndexOf(".");
  return dot <= 0 ? "" : name.slice(dot + 1).toLowerCase();
}

async function matchSegments(
  dir: string,
  rel: string,
  segments: string[],
  out: MatchedFile[],
): Promise<void> {
  if (segments.length === 0) return;
  const [seg, ...rest] = segments;
  if (seg === "**") {
    if (rest.length === 0) {
      await walkFiles(dir, rel, out).catch(() => {});
      return;
    }
    // zero directories, then one or more
    await matchSegments(dir, rel, rest, out);
    for (const e of await listDir(dir)) {
      if (e.isDirectory) await matchSegments(join(dir, e.name), join(rel, e.name), segments, out);
    }
    return;
  }
  if (!hasMagic(seg)) {
    const p = join(dir, seg);
    const st = await statOrNull(p);
    if (!st) return;
    if (rest.length === 0) {
      if (st.isFile) out.push({ path: p, rel: join(rel, seg) });
    } else if (st.isDirectory) await matchSegments(p, join(rel, seg), rest, out);
    return;
  }
  const re = segmentRegExp(seg);
  for (const e of await listDir(dir)) {
    if (!re.test(e.name)) continue;
    const p = join(dir, e.name);
    if (rest.length === 0) {
      if (e.isFile) out.push({ path: p, rel: join(rel, e.name) });
    } else if (e.isDirectory) await matchSegments(p, join(rel, e.name), rest, out);
  }
}

async function listDir(dir: string): Promise<Deno.DirEntry[]> {
  const entries: Deno.DirEntry[] = [];
  try {
    for await (const e of Deno.readDir(dir)) entries.push(e);
  } catch {
    return [];
  }
  return entries;
}
