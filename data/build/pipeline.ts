/**
 * `buildDataset(config)`: the builder behind `deno task data`.
 *
 * read (sources, sniffed per file) → clean (repairs, filters, dedup) → cap per source → tokens
 * (optional) → split → weights (train side) → shuffle → JSONL shards + token shards + manifest.
 *
 * Output folder: `train-00000.jsonl …`, `valid-00000.jsonl …`, with a `.bin` token shard next to
 * each JSONL shard when the config has `tokens`, and `manifest.json`. Every file is written
 * atomically and contains nothing that depends on the time or the machine, so a rebuild of the
 * same inputs gives byte-identical files. Shards of an earlier, larger build are removed.
 */

import { createHash } from "node:crypto";
import { writeFileAtomic, writeJsonAtomic } from "../../core/io/atomic.ts";
import { createProgress, type Progress } from "../../core/io/progress.ts";
import { type CleanRecord, cleanRecord, createDeduper } from "../clean/clean.ts";
import { addWarning, count, createTally, mergeCounts, type Tally, warn } from "../clean/tally.ts";
import { downloadSources } from "../sources/download.ts";
import { expandSourcePath, type MatchedFile } from "../sources/glob.ts";
import { readSourceFile } from "../sources/read_file.ts";
import { loadTokenizer } from "../tokenizer/mod.ts";
import { type DatasetConfig, resolveConfig, type ResolvedConfig } from "./config.ts";
import {
  type FileStats,
  formatBuildSummary,
  formatWarning,
  type Manifest,
  MANIFEST_FORMAT,
  type OutputFile,
  type SourceStats,
} from "./manifest.ts";
import { createRng, seedFor, shuffle } from "../../core/random.ts";
import { applyWeight, splitIndices } from "./split.ts";
import { encodeTokenShard } from "./token_shard.ts";
import {
  bucketOrder,
  checkPromptFormat,
  type Example,
  lengthHistogram,
  tokenizeRecord,
} from "./tokenize.ts";

export interface BuildOptions {
  /** Folder the config's relative paths start from (the config file's folder); default cwd. */
  baseDir?: string;
  /** Output folder; default `out/data/<name>` under the current directory. */
  out?: string;
  /** Fetch the sources' `download` files first. */
  download?: boolean;
  /** Progress bars on stderr (default true). */
  progress?: boolean;
  /** Where warnings and the summary go; default none (the CLI prints). */
  log?: (line: string) => void;
  /** At most this many warnings printed per action (all are counted); default 20. */
  printWarnings?: number;
}

export interface BuildResult {
  outDir: string;
  manifest: Manifest;
  /** Seconds per stage (read+clean, tokens, write). */
  timings: Record<string, number>;
}

interface Item {
  rec: CleanRecord;
  ex?: Example;
}

function sha256(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

const noProgress: Progress = { tick() {}, update() {}, done() {} };

function recordLine(r: CleanRecord): string {
  const o: Record<string, unknown> = {
    instruction: r.instruction,
    input: r.input,
    output: r.output,
  };
  if (r.history) o.history = r.history;
  o.source = r.source;
  o.origin = r.origin;
  return JSON.stringify(o);
}

/** Builds the data set described by `config` (see `DatasetConfig`). */
export async function buildDataset(
  config: DatasetConfig,
  options: BuildOptions = {},
): Promise<BuildResult> {
  const cfg = resolveConfig(config, options.baseDir ?? Deno.cwd());
  const outDir = (options.out ?? `out/data/${cfg.name}`).replace(/\/$/, "");
  const log = options.log ?? (() => {});
  const showProgress = options.progress ?? true;
  const bar = (label: string, total: number, unit: "B" | "items" = "items") =>
    showProgress ? createProgress({ label, total, unit }) : noProgress;
  const timings: Record<string, number> = {};
  const tally = createTally();

  // Load the tokenizer first: a wrong tokenizer path should fail before minutes of reading.
  let tok = null;
  if (cfg.tokens) {
    try {
      tok = await loadTokenizer(cfg.tokens.dir);
      checkPromptFormat(tok, cfg.tokens);
    } catch (err) {
      throw new Error(
        `tokens.tokenizer "${cfg.tokens.tokenizer}": ${(err as Error).message} ` +
          `(point it at a model folder, or build without tokens)`,
      );
    }
  }

  if (options.download) {
    for (const s of cfg.sources) {
      if (s.download.length === 0) continue;
      await downloadSources(
        s.download,
        cfg.root,
        (r) => log(`download ${r.status}: ${r.url} -> ${r.path}`),
      );
    }
  }

  // ---- read + clean ----
  let t0 = performance.now();
  const perSourceFiles: MatchedFile[][] = [];
  for (const s of cfg.sources) {
    const seen = new Set<string>();
    const files: MatchedFile[] = [];
    for (const p of s.paths) {
      let matched: MatchedFile[];
      try {
        matched = await expandSourcePath(cfg.root, p);
      } catch (err) {
        if (!s.optional) throw new Error(`source "${s.name}": ${(err as Error).message}`);
        warn(tally, {
          file: p,
          action: "missing-path",
          // relative to the root, so the manifest does not depend on where the tree lives
          reason: `source "${s.name}": ${(err as Error).message.replace(`${cfg.root}/`, "")}`,
        });
        continue;
      }
      if (matched.length === 0) {
        warn(tally, {
          file: p,
          action: "no-files",
          reason: `source "${s.name}": no file matches (root ${config.root ?? "."})`,
        });
      }
      for (const f of matched) if (!seen.has(f.rel) && seen.add(f.rel)) files.push(f);
    }
    perSourceFiles.push(files);
  }
  let totalBytes = 0;
  const sizes = new Map<string, number>();
  for (const files of perSourceFiles) {
    for (const f of files) {
      const size = (await Deno.stat(f.path)).size;
      sizes.set(f.path, size);
      totalBytes += size;
    }
  }
  const readBar = bar("read", totalBytes, "B");
  const dedup = createDeduper(cfg.clean.dedup, tally);
  const fileStats: FileStats[] = [];
  const sources: Record<string, SourceStats> = {};
  const bySource: Item[][] = [];
  for (let si = 0; si < cfg.sources.length; si++) {
    const s = cfg.sources[si];
    const stats: SourceStats = { files: 0, read: 0, kept: 0, train: 0, valid: 0, trainExamples: 0 };
    sources[s.name] = stats;
    const items: Item[] = [];
    for (const f of perSourceFiles[si]) {
      const res = await readSourceFile(f.path, f.rel, {
        source: s.name,
        trailingComma: cfg.trailingComma,
        encoding: s.encoding,
        format: s.format,
        ...(s.columns ? { columns: s.columns } : {}),
      });
      readBar.tick(sizes.get(f.path) ?? 0);
      mergeCounts(tally, res.counts);
      for (const w of res.warnings) addWarning(tally, w);
      fileStats.push({
        file: res.file,
        source: s.name,
        kind: res.kind,
        format: res.format,
        ...(res.encoding ? { encoding: res.encoding } : {}),
        items: res.items,
        records: res.records.length,
      });
      stats.files++;
      stats.read += res.records.length;
      for (const r of res.records) {
        const c = cleanRecord(r, cfg.clean, tally, s.substitute);
        if (c && dedup.add(c)) items.push({ rec: c });
      }
    }
    if (s.cap !== null && items.length > s.cap) {
      const order = shuffle([...items.keys()], createRng(seedFor(cfg.seed, `cap:${s.name}`)));
      const keep = new Set(order.slice(0, s.cap));
      const dropped = items.length - s.cap;
      count(tally, "capped", dropped);
      bySource.push(items.filter((_, i) => keep.has(i)));
    } else bySource.push(items);
  }
  readBar.done();
  timings.read = (performance.now() - t0) / 1000;

  // ---- tokens ----
  t0 = performance.now();
  let tokenizerSha = "";
  if (cfg.tokens && tok) {
    tokenizerSha = sha256(await Deno.readFile(tok.source).catch(() => new Uint8Array()));
    const total = bySource.reduce((n, l) => n + l.length, 0);
    const tokBar = bar("tokenize", total);
    for (let si = 0; si < bySource.length; si++) {
      const kept: Item[] = [];
      let k = 0;
      for (const it of bySource[si]) {
        const ex = tokenizeRecord(tok, it.rec, cfg.tokens, tally);
        if (ex) {
          it.ex = ex;
          kept.push(it);
        }
        if (++k % 1000 === 0) tokBar.tick(1000);
      }
      tokBar.tick(k % 1000);
      bySource[si] = kept;
    }
    tokBar.done();
  }
  timings.tokens = (performance.now() - t0) / 1000;

  // ---- split, weights, order ----
  t0 = performance.now();
  const all: Item[] = bySource.flat();
  const sourceIndex = new Map(cfg.sources.map((s, i) => [s.name, i]));
  const { train: trainIdx, valid: validIdx } = splitIndices(
    all.map((it) => it.rec.origin),
    cfg.split.by,
    cfg.split.validRatio,
    cfg.seed,
  );
  const languages: Record<string, number> = {};
  for (const it of all) {
    sources[it.rec.source].kept++;
    languages[it.rec.lang] = (languages[it.rec.lang] ?? 0) + 1;
  }
  for (const i of validIdx) sources[all[i].rec.source].valid++;
  const trainBySource: number[][] = cfg.sources.map(() => []);
  for (const i of trainIdx) {
    sources[all[i].rec.source].train++;
    trainBySource[sourceIndex.get(all[i].rec.source)!].push(i);
  }
  let trainOrder: number[] = [];
  cfg.sources.forEach((s, si) => {
    const weighted = applyWeight(trainBySource[si], s.weight, cfg.seed, `weight:${s.name}`);
    const diff = weighted.length - trainBySource[si].length;
    if (diff > 0) count(tally, "upsampled", diff);
    if (diff < 0) count(tally, "downsampled", -diff);
    sources[s.name].trainExamples = weighted.length;
    trainOrder = trainOrder.concat(weighted);
  });
  shuffle(trainOrder, createRng(seedFor(cfg.seed, "train-order")));
  const validOrder = shuffle([...validIdx], createRng(seedFor(cfg.seed, "valid-order")));

  // ---- write ----
  await Deno.mkdir(outDir, { recursive: true });
  const outputs: OutputFile[] = [];
  const lengths: number[] = [];
  const totalTokens = { train: 0, valid: 0 };
  const writeBar = bar("write", trainOrder.length + validOrder.length);
  for (const [split, order] of [["train", trainOrder], ["valid", validOrder]] as const) {
    for (let s = 0, k = 0; s < order.length; s += cfg.shard.records, k++) {
      const chunk = order.slice(s, s + cfg.shard.records);
      const base = `${split}-${String(k).padStart(5, "0")}`;
      const text = chunk.map((i) => recordLine(all[i].rec)).join("\n") + "\n";
      const bytes = new TextEncoder().encode(text);
      await writeFileAtomic(`${outDir}/${base}.jsonl`, bytes);
      outputs.push({
        file: `${base}.jsonl`,
        split,
        records: chunk.length,
        bytes: bytes.length,
        sha256: sha256(bytes),
      });
      if (cfg.tokens) {
        const exLengths = chunk.map((i) => all[i].ex!.inputIds.length);
        const order2 = bucketOrder(exLengths, cfg.tokens.bucketWindow);
        const shard = encodeTokenShard(order2.map((j) => {
          const ex = all[chunk[j]].ex!;
          return { inputIds: ex.inputIds, labels: ex.labels, seqLen: ex.seqLen, recordIndex: j };
        }));
        await writeFileAtomic(`${outDir}/${base}.bin`, shard);
        outputs.push({
          file: `${base}.bin`,
          split,
          records: chunk.length,
          bytes: shard.length,
          sha256: sha256(shard),
        });
        for (const n of exLengths) {
          lengths.push(n);
          totalTokens[split] += n;
        }
      }
      writeBar.tick(chunk.length);
    }
  }
  writeBar.done();
  const keep = new Set(outputs.map((o) => o.file));
  for await (const e of Deno.readDir(outDir)) {
    if (e.isFile && /^(train|valid)-\d{5}\.(jsonl|bin)$/.test(e.name) && !keep.has(e.name)) {
      await Deno.remove(`${outDir}/${e.name}`);
    }
  }

  const contentHash = "sha256:" + sha256(
    JSON.stringify({ config, outputs: outputs.map((o) => [o.file, o.sha256]) }),
  );
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    name: cfg.name,
    config,
    contentHash,
    seed: cfg.seed,
    split: {
      by: cfg.split.by,
      validRatio: cfg.split.validRatio,
      train: trainIdx.length,
      valid: validIdx.length,
      trainExamples: trainOrder.length,
    },
    counts: sortKeys(tally.counts),
    languages: sortKeys(languages),
    sources,
    files: fileStats,
    tokens: cfg.tokens
      ? {
        tokenizer: cfg.tokens.tokenizer,
        tokenizerSha256: tokenizerSha,
        maxSourceLength: cfg.tokens.maxSourceLength,
        maxTargetLength: cfg.tokens.maxTargetLength,
        maxSeqLength: cfg.tokens.maxSeqLength,
        maxTokens: cfg.tokens.maxTokens,
        bucketWindow: cfg.tokens.bucketWindow,
        promptFormat: cfg.tokens.promptFormat,
        totalTokens,
        meanLength: lengths.length ? (totalTokens.train + totalTokens.valid) / lengths.length : 0,
        maxLength: lengths.reduce((a, b) => Math.max(a, b), 0),
        histogram: lengthHistogram(lengths),
      }
      : null,
    outputs,
    warnings: tally.warnings,
    warningsOmitted: sortKeys(tally.omitted),
  };
  await writeJsonAtomic(`${outDir}/manifest.json`, manifest);
  timings.write = (performance.now() - t0) / 1000;

  printWarnings(tally, log, options.printWarnings ?? 20);
  log(formatBuildSummary(manifest));
  return { outDir, manifest, timings };
}

function sortKeys<T>(o: Record<string, T>): Record<string, T> {
  return Object.fromEntries(
    Object.entries(o).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)),
  );
}

function printWarnings(tally: Tally, log: (line: string) => void, perAction: number): void {
  const shown: Record<string, number> = {};
  for (const w of tally.warnings) {
    shown[w.action] = (shown[w.action] ?? 0) + 1;
    if (shown[w.action] <= perAction) log(`warning: ${formatWarning(w)}`);
  }
  for (const [action, n] of Object.entries(tally.counts)) {
    const listed = Math.min(shown[action] ?? 0, perAction);
    const total = (shown[action] ?? 0) + (tally.omitted[action] ?? 0);
    if (total > listed) log(`warning: … and ${total - listed} more [${action}] (${n} counted)`);
  }
}

export type { ResolvedConfig };
