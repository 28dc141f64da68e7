/**
 * The real ChatGLM-6B width on this machine: load time and throughput (from the page cache),
 * first forward, process start to first token, decode tokens/s and peak resident memory beside
 * the weights' size, for this checkout against a baseline checkout (the code before the streaming
 * load, by default) in the same run. Each measurement is its own process (bench/real_size_child.ts), so each peak
 * RSS (VmHWM) is that run's alone; old and new runs alternate.
 *
 * By default it makes a 2-layer full-width checkpoint (hidden 4096, FFN 16384, vocab 130528,
 * 32 heads: 2.9 GB f16) in `.bin` shards and as safetensors, in a temporary folder it deletes
 * afterwards. Environment:
 * - MEDGLM_REAL_SIZE_MODEL=DIR[,DIR...]: measure these checkpoints instead (e.g. a full 28-layer
 *   one made by `deno task make-checkpoint --out DIR`, or one `.bin` and one safetensors copy);
 *   they are not deleted.
 * - MEDGLM_REAL_SIZE_BASELINE=REF: the git ref of the baseline (default: 2abc221, the last commit
 *   before the streaming load); `none` skips it.
 * - MEDGLM_REAL_SIZE_LAYERS=N (default 2), MEDGLM_REAL_SIZE_DECODE=N tokens (default 4),
 *   MEDGLM_REAL_SIZE_REPEAT=N runs of each (default 1).
 * - MEDGLM_REAL_SIZE_READ=0: skip the third run of each round, this checkout with
 *   `MEDGLM_NO_MMAP=1` (its shards read into buffers instead of mapped), which gives the
 *   mapped ÷ read ratio of the same code in the same run.
 * - MEDGLM_REAL_SIZE_DTYPE=f16|f32|default (default f16, the targets' dtype, for both codes: a
 *   software adapter's own default is f32 for models whose f32 weights fit half of memory, which
 *   a 2-layer full-width checkpoint does, and would measure twice the bytes against the
 *   baseline's f16).
 *
 * Run alone: `deno task bench real-size` (needs ~3× the weights in free memory and disk).
 */

import { CHATGLM_6B, writeSyntheticCheckpoint } from "../core/mod.ts";
import { runJsonChild } from "./child_json.ts";
import { extractTree } from "./git_tree.ts";

interface Measured {
  processToLoadedS: number;
  loadS: number;
  /** CPU seconds of the load, all threads (wall time mostly measures a busy machine's load). */
  loadCpuS: number;
  firstForwardS: number;
  firstForwardCpuS: number;
  startToFirstTokenS: number;
  decodePerSecond: number | null;
  loadPeakRss: number;
  peakRss: number;
  logitsFinite: boolean;
  /** The load's own time split (its log line), or null for code that logs none. */
  loadSplit?: string | null;
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}

/** The last commit whose loader held weights twice and packed them at the first forward. */
const BEFORE_STREAMING_LOAD = "2abc221";
const CHILD = new URL("./real_size_child.ts", import.meta.url).pathname;

/** Extracts `core/` (and `base/`, where the ref has it) of a git ref; returns core's mod.ts URL. */
async function baselineCore(ref: string, into: string): Promise<string> {
  // Later cores import the base member beside them; older refs have no base/.
  await extractTree(ref, into, ["core", "base"]);
  return new URL(`file://${into}/core/mod.ts`).href;
}

async function measure(
  coreUrl: string,
  dir: string,
  decode: number,
  dtype: string,
  noMmap = false,
): Promise<Measured> {
  // The child inherits this process's environment: MEDGLM_NO_MMAP=1 makes its load read.
  const before = env("MEDGLM_NO_MMAP");
  if (noMmap) Deno.env.set("MEDGLM_NO_MMAP", "1");
  else Deno.env.delete("MEDGLM_NO_MMAP");
  try {
    return await runJsonChild<Measured>(
      CHILD,
      [coreUrl, dir, String(decode), dtype === "default" ? "" : dtype],
      `measuring ${dir} with ${coreUrl}${noMmap ? " (MEDGLM_NO_MMAP=1)" : ""}`,
    );
  } finally {
    if (before === undefined) Deno.env.delete("MEDGLM_NO_MMAP");
    else Deno.env.set("MEDGLM_NO_MMAP", before);
  }
}

/** Reads every file once so that both runs read from the page cache. */
async function warmCache(dir: string): Promise<number> {
  let bytes = 0;
  const buf = new Uint8Array(1 << 24);
  for await (const e of Deno.readDir(dir)) {
    if (!e.isFile) continue;
    const f = await Deno.open(`${dir}/${e.name}`);
    for (;;) {
      const n = await f.read(buf);
      if (n === null) break;
      bytes += n;
    }
    f.close();
  }
  return bytes;
}

async function weightBytes(dir: string): Promise<number> {
  let bytes = 0;
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && /\.(bin|safetensors)$/.test(e.name)) {
      bytes += (await Deno.stat(`${dir}/${e.name}`)).size;
    }
  }
  return bytes;
}

const gb = (n: number) => (n / 1e9).toFixed(2);

function row(label: string, m: Measured, weights: number): string {
  return `| ${label} | ${m.loadS.toFixed(2)} | ${(weights / 1e9 / m.loadS).toFixed(2)} | ` +
    `${m.loadCpuS.toFixed(1)} | ${(m.loadCpuS / (weights / 1e9)).toFixed(2)} | ${
      m.firstForwardS.toFixed(1)
    } | ${m.firstForwardCpuS.toFixed(1)} | ` +
    `${m.startToFirstTokenS.toFixed(1)} | ` +
    `${m.decodePerSecond === null ? "–" : m.decodePerSecond.toFixed(2)} | ${gb(m.loadPeakRss)} | ` +
    `${gb(m.peakRss)} | ${(m.peakRss / weights).toFixed(2)}× |`;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function medianOf(runs: Measured[]): Measured {
  const pick = (k: keyof Measured) => median(runs.map((r) => Number(r[k] ?? NaN)));
  return {
    processToLoadedS: pick("processToLoadedS"),
    loadS: pick("loadS"),
    loadCpuS: pick("loadCpuS"),
    firstForwardS: pick("firstForwardS"),
    firstForwardCpuS: pick("firstForwardCpuS"),
    startToFirstTokenS: pick("startToFirstTokenS"),
    decodePerSecond: runs[0].decodePerSecond === null ? null : pick("decodePerSecond"),
    loadPeakRss: pick("loadPeakRss"),
    peakRss: pick("peakRss"),
    logitsFinite: runs.every((r) => r.logitsFinite),
  };
}

export async function bench(): Promise<void> {
  const given = env("MEDGLM_REAL_SIZE_MODEL");
  const ref = env("MEDGLM_REAL_SIZE_BASELINE") ?? BEFORE_STREAMING_LOAD;
  const layers = Number(env("MEDGLM_REAL_SIZE_LAYERS") ?? 2);
  const decode = Number(env("MEDGLM_REAL_SIZE_DECODE") ?? 4);
  const repeat = Number(env("MEDGLM_REAL_SIZE_REPEAT") ?? 1);
  const dtype = env("MEDGLM_REAL_SIZE_DTYPE") ?? "f16";
  const readToo = env("MEDGLM_REAL_SIZE_READ") !== "0";
  if (!["f16", "f32", "default"].includes(dtype)) {
    throw new Error(`MEDGLM_REAL_SIZE_DTYPE: expected f16, f32 or default, got ${dtype}`);
  }
  const tmp = await Deno.makeTempDir({ prefix: "medglm-real-size-" });
  try {
    const dirs: { label: string; dir: string }[] = [];
    if (given) { for (const dir of given.split(",")) dirs.push({ label: dir, dir }); }
    else {
      const sizes = { ...CHATGLM_6B, numLayers: layers };
      for (const format of ["bin", "safetensors"] as const) {
        const dir = `${tmp}/${format}`;
        const t0 = performance.now();
        await writeSyntheticCheckpoint(dir, { sizes, format });
        console.log(
          `made ${layers}-layer full-width ${format} checkpoint in ` +
            `${((performance.now() - t0) / 1000).toFixed(1)} s`,
        );
        dirs.push({ label: `${layers} layers, ${format}`, dir });
      }
    }
    const newCore = new URL("../core/mod.ts", import.meta.url).href;
    let oldCore: string | null = null;
    if (ref !== "none") {
      await Deno.mkdir(`${tmp}/baseline`);
      oldCore = await baselineCore(ref, `${tmp}/baseline`);
    }
    console.log(
      "\n| checkpoint, code | load s | GB/s | load CPU s | load CPU s/GB | first forward s | " +
        "first forward CPU s | " +
        "start→first token s | " +
        "decode tok/s | load peak RSS GB | peak RSS GB | peak / weights |",
    );
    console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    const ratios: string[] = [];
    const splits: string[] = [];
    for (const { label, dir } of dirs) {
      const weights = await weightBytes(dir);
      await warmCache(dir);
      const olds: Measured[] = [], news: Measured[] = [], reads: Measured[] = [];
      for (let r = 0; r < repeat; r++) {
        if (oldCore) olds.push(await measure(oldCore, dir, decode, dtype));
        news.push(await measure(newCore, dir, decode, dtype));
        if (readToo) reads.push(await measure(newCore, dir, decode, dtype, true));
      }
      const n = medianOf(news);
      console.log(
        `| weights: ${gb(weights)} GB (${label}), run as ${dtype} | | | | | | | | | | | |`,
      );
      if (olds.length) console.log(row(`${label}, ${ref}`, medianOf(olds), weights));
      console.log(row(`${label}, this checkout`, n, weights));
      if (reads.length) {
        const rd = medianOf(reads);
        console.log(row(`${label}, this checkout read (MEDGLM_NO_MMAP=1)`, rd, weights));
        ratios.push(
          `${label}: mapped ÷ read (this checkout): load ×${(rd.loadS / n.loadS).toFixed(2)} ` +
            `faster (CPU ×${(rd.loadCpuS / n.loadCpuS).toFixed(2)}), runs ${
              news.map((m) => m.loadS.toFixed(2)).join("/")
            } s mapped, ${reads.map((m) => m.loadS.toFixed(2)).join("/")} s read`,
        );
      }
      if (!n.logitsFinite) console.log(`WARNING: ${label}: non-finite logits`);
      for (const m of news) if (m.loadSplit) splits.push(`${label}: ${m.loadSplit}`);
      if (olds.length) {
        const o = medianOf(olds);
        ratios.push(
          `${label}: load ×${(o.loadS / n.loadS).toFixed(2)} faster (CPU ×${
            (o.loadCpuS / n.loadCpuS).toFixed(2)
          }), first forward ×${(o.firstForwardS / n.firstForwardS).toFixed(2)} faster (CPU ×${
            (o.firstForwardCpuS / n.firstForwardCpuS).toFixed(2)
          }), start→first token ×${
            (o.startToFirstTokenS / n.startToFirstTokenS).toFixed(2)
          } faster, peak RSS ${(n.peakRss / weights).toFixed(2)}× the weights (was ${
            (o.peakRss / weights).toFixed(2)
          }×); load runs ${olds.map((m) => m.loadS.toFixed(2)).join("/")} s (${ref}), ${
            news.map((m) => m.loadS.toFixed(2)).join("/")
          } s (this checkout)`,
        );
      }
    }
    if (ratios.length) console.log(`\nagainst ${ref} in the same run:\n- ${ratios.join("\n- ")}`);
    if (splits.length) console.log(`\nthis checkout's load split:\n- ${splits.join("\n- ")}`);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

if (import.meta.main) await bench();
