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
 *
 * Memory stays bounded as the input grows: records are streamed from the files (large JSON files
 * item by item), cleaned and appended to a scratch file (`spool.ts`) as JSONL lines; tokens go to a
 * second scratch file. What stays in memory per record is a handful of numbers and, for unique
 * records, two 22-character hashes in the de-duplication set. Shards are written by reading the
 * records back by offset, so peak memory is about one shard's token examples.
 */

import { createHash } from "node:crypto";
import {
  createProgress,
  createRng,
  type Progress,
  seedFor,
  shuffle,
  writeFileAtomic,
  writeJsonAtomic,
} from "../../base/mod.ts";
import { type CleanRecord, cleanRecord, createDeduper } from "../clean/clean.ts";
import type { Language } from "../clean/language.ts";
import { addWarning, count, createTally, mergeCounts, type Tally, warn } from "../clean/tally.ts";
import { downloadSources } from "../sources/download.ts";
import { expandSourcePath, type MatchedFile } from "../sources/glob.ts";
import { readSourceFile } from "../sources/read_file.ts";
import type { SourceRecord } from "../sources/types.ts";
import { loadTokenizer } from "../tokenizer/mod.ts";
import { type DatasetConfig, resolveConfig, type ResolvedConfig } from "./config.ts";
import {
  type FileStats,
  formatBuildSummary,
  formatWarning,
  type LanguageFlow,
  type Manifest,
  MANIFEST_FORMAT,
  type OutputFile,
  type SourceStats,
} from "./manifest.ts";
import { GrowArray, Spool } from "./spool.ts";
import { applyWeight, splitIndicesBy } from "./split.ts";
import { encodeTokenShard } from "./token_shard.ts";
import { bucketOrder, checkPromptFormat, lengthHistogram, tokenizeRecord } from "./tokenize.ts";

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
  /** JSON / JSON Lines files above this many bytes are streamed item by item (default 16 MiB). */
  streamAbove?: number;
}

export interface BuildResult {
  outDir: string;
  manifest: Manifest;
  /** Seconds per stage (read+clean, tokens, write). */
  timings: Record<string, number>;
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

const LANGS: Language[] = ["zh", "en", "other"];
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function emptyFlow(): LanguageFlow {
  return { cleaned: 0, filtered: 0, duplicate: 0, capped: 0, tooLong: 0, kept: 0 };
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
  let tok: Awaited<ReturnType<typeof loadTokenizer>> | null = null;
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
      await downloadSources(s.download, cfg.root, {
        onFile: (r) => log(`download ${r.status}: ${r.url} -> ${r.path}`),
        log,
        progress: showProgress,
      });
    }
  }

  await Deno.mkdir(outDir, { recursive: true });
  // scratch files of a build that was killed (a finished or failed one removes its own)
  for await (const e of Deno.readDir(outDir)) {
    if (e.isFile && /^\.(records|tokens)-.*\.tmp$/.test(e.name)) {
      await Deno.remove(`${outDir}/${e.name}`).catch(() => {});
    }
  }
  const recSpool = await Spool.create(outDir, ".records-");
  const exSpool = await Spool.create(outDir, ".tokens-");
  try {
    return await build();
  } finally {
    await recSpool.dispose();
    await exSpool.dispose();
  }

  async function build(): Promise<BuildResult> {
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

    // Per cleaned record (its id is its position): where its JSONL line sits in the record
    // spool, its file (for the by-file split) and language. Per example: where it sits in the
    // token spool and its length.
    const recOff = new GrowArray((n) => new Float64Array(n));
    const recLen = new GrowArray((n) => new Uint32Array(n));
    const recFile = new GrowArray((n) => new Uint32Array(n));
    const recLang = new GrowArray((n) => new Uint8Array(n));
    const fileNames: string[] = [];
    const readRecord = (id: number): CleanRecord => {
      const r = JSON.parse(decoder.decode(recSpool.read(recOff.get(id), recLen.get(id))));
      r.lang = LANGS[recLang.get(id)];
      return r as CleanRecord;
    };
    const dedup = createDeduper(cfg.clean.dedup, tally, (id) => readRecord(id).origin);
    const fileStats: FileStats[] = [];
    const sources: Record<string, SourceStats> = {};
    const flow: Record<string, LanguageFlow> = {};
    const flowOf = (l: string) => (flow[l] ??= emptyFlow());
    const keptBySource: number[][] = [];
    const cleanOptions = { ...cfg.clean, languages: null };

    // Token examples: [seqLen, n, ids…, labels…] as int32 in the token spool.
    const exOff = new GrowArray((n) => new Float64Array(n));
    const exLen = new GrowArray((n) => new Uint32Array(n)); // tokens per example
    const exOf = new GrowArray((n) => new Int32Array(n)); // record id -> example number
    let tokenSecs = 0;
    const tokenize = (id: number, rec: CleanRecord): boolean => {
      const t = performance.now();
      const ex = tokenizeRecord(tok!, rec, cfg.tokens!, tally);
      tokenSecs += performance.now() - t;
      if (!ex) {
        flowOf(rec.lang).tooLong++;
        return false;
      }
      const n = ex.inputIds.length;
      const buf = new Int32Array(2 + 2 * n);
      buf[0] = ex.seqLen;
      buf[1] = n;
      buf.set(ex.inputIds, 2);
      buf.set(ex.labels, 2 + n);
      exOf.set(id, exOff.push(exSpool.append(new Uint8Array(buf.buffer))));
      exLen.push(n);
      return true;
    };
    const dropLanguage = (r: CleanRecord) => {
      const m = /^(.*):(\d+)(?:#\d+)?$/.exec(r.origin);
      warn(tally, {
        file: m ? m[1] : r.origin,
        ...(m ? { line: Number(m[2]) } : {}),
        action: "dropped-language",
        reason: `language ${r.lang} not kept`,
      });
      flowOf(r.lang).filtered++;
    };

    for (let si = 0; si < cfg.sources.length; si++) {
      const s = cfg.sources[si];
      const stats: SourceStats = {
        files: 0,
        skipped: 0,
        read: 0,
        usable: 0,
        kept: 0,
        train: 0,
        valid: 0,
        trainExamples: 0,
        languages: {},
      };
      sources[s.name] = stats;
      const first = recOff.length;
      const cleanedLangs: Record<string, number> = {};
      // The language filter, de-duplication (and tokens, without a cap) run as records arrive,
      // unless the global language filter applies: whether it does depends on the source's main
      // language, known only once the whole source is read, so those steps wait for the end of
      // the source and re-read its records from the spool (in the same order).
      const deferred = s.languages === undefined && cfg.clean.languages !== null;
      const ownLangs = s.languages ?? null;
      const tokenizeNow = !deferred && s.cap === null && cfg.tokens !== null;
      const kept: number[] = [];
      for (const f of perSourceFiles[si]) {
        const fileIndex = fileNames.push(f.rel) - 1;
        let ticked = 0;
        const res = await readSourceFile(
          f.path,
          f.rel,
          {
            source: s.name,
            trailingComma: cfg.trailingComma,
            encoding: s.encoding,
            format: s.format,
            ...(s.columns ? { columns: s.columns } : {}),
          },
          {
            record(r: SourceRecord) {
              const c = cleanRecord(r, cleanOptions, tally, s.substitute);
              if (!c) return;
              const line = encoder.encode(recordLine(c));
              const id = recOff.push(recSpool.append(line));
              recLen.push(line.length);
              recFile.push(fileIndex);
              recLang.push(LANGS.indexOf(c.lang));
              exOf.push(-1);
              cleanedLangs[c.lang] = (cleanedLangs[c.lang] ?? 0) + 1;
              if (deferred) return;
              if (ownLangs && !ownLangs.includes(c.lang)) return dropLanguage(c);
              if (!dedup.add(c, id)) return void flowOf(c.lang).duplicate++;
              if (!tokenizeNow || tokenize(id, c)) kept.push(id);
            },
            warning: (w) => addWarning(tally, w),
          },
          // a large file streams: the bar moves while it is read, not only at its end
          { streamAbove: options.streamAbove, onBytes: (n) => (ticked += n, readBar.tick(n)) },
        );
        readBar.tick(Math.max(0, (sizes.get(f.path) ?? 0) - ticked));
        mergeCounts(tally, res.counts);
        for (const w of res.warnings) addWarning(tally, w);
        const records = res.counts.read ?? 0;
        fileStats.push({
          file: res.file,
          source: s.name,
          kind: res.kind,
          format: res.format,
          ...(res.encoding ? { encoding: res.encoding } : {}),
          items: res.items,
          records,
        });
        // a file counts for its source once it gave records; skipped ones are listed apart
        if (res.kind === "records" && records > 0) {
          stats.files++;
          stats.read += res.items + (res.counts["bad-line"] ?? 0);
          stats.usable += records;
        } else stats.skipped++;
      }
      for (const [l, n] of Object.entries(cleanedLangs)) flowOf(l).cleaned += n;

      // Which languages this source keeps: its own `languages`, else the global filter, except
      // for a source mostly in a language the global filter does not list (the user listed that
      // source on purpose: it is kept whole, and the warning says how to filter it).
      const total = recOff.length - first;
      const main = Object.entries(cleanedLangs).sort((a, b) =>
        b[1] - a[1] || (a[0] < b[0] ? -1 : 1)
      )[0];
      let keepLangs: string[] | null = deferred ? cfg.clean.languages : ownLangs;
      if (deferred && keepLangs && main && !keepLangs.includes(main[0])) {
        warn(tally, {
          file: `source ${s.name}`,
          action: "language-filter-not-applied",
          reason: `source "${s.name}" is mostly ${main[0]} (${main[1]} of ${total}), which ` +
            `clean.languages [${keepLangs.join(", ")}] does not list: kept whole; set the ` +
            `source's own "languages" to filter it`,
        });
        keepLangs = null;
      }
      // Records in another language than the source's main one (untranslated English inside a
      // translated source) are reported, with what happens to them.
      if (main) {
        for (const [l, n] of Object.entries(cleanedLangs)) {
          if (l === main[0]) continue;
          const dropped = keepLangs !== null && !keepLangs.includes(l);
          addWarning(tally, {
            file: `source ${s.name}`,
            action: "language-mix",
            reason: `source "${s.name}": ${n} of ${total} records (${
              (100 * n / total).toFixed(1)
            }%) are ${l}, not ${main[0]}${
              dropped
                ? ` (dropped by the language filter)`
                : ` (kept; "languages": ["${main[0]}"] on the source drops them)`
            }`,
          });
          count(tally, "language-mix", n);
        }
      }

      if (deferred) {
        // language filter and de-duplication, in file order (the first occurrence wins)
        for (let id = first; id < recOff.length; id++) {
          const r = readRecord(id);
          if (keepLangs && !keepLangs.includes(r.lang)) dropLanguage(r);
          else if (dedup.add(r, id)) kept.push(id);
          else flowOf(r.lang).duplicate++;
        }
      }
      let chosen = kept;
      if (s.cap !== null && kept.length > s.cap) {
        const order = shuffle([...kept.keys()], createRng(seedFor(cfg.seed, `cap:${s.name}`)));
        const keep = new Set(order.slice(0, s.cap));
        count(tally, "capped", kept.length - s.cap);
        kept.forEach((id, i) => {
          if (!keep.has(i)) flowOf(LANGS[recLang.get(id)]).capped++;
        });
        chosen = kept.filter((_, i) => keep.has(i));
      }
      if (cfg.tokens && !tokenizeNow) chosen = chosen.filter((id) => tokenize(id, readRecord(id)));
      keptBySource.push(chosen);
    }
    readBar.done();
    timings.read = (performance.now() - t0) / 1000 - tokenSecs / 1000;
    timings.tokens = tokenSecs / 1000;
    let tokenizerSha = "";
    if (cfg.tokens && tok) {
      tokenizerSha = sha256(await Deno.readFile(tok.source).catch(() => new Uint8Array()));
    }

    // ---- split, weights, order ----
    t0 = performance.now();
    const all: number[] = keptBySource.flat(); // record ids
    const sourceOf: number[] = [];
    keptBySource.forEach((l, si) => l.forEach(() => sourceOf.push(si)));
    const { train: trainIdx, valid: validIdx } = splitIndicesBy(
      all.length,
      (i) => fileNames[recFile.get(all[i])],
      cfg.split.by,
      cfg.split.validRatio,
      cfg.seed,
    );
    const languages: Record<string, number> = {};
    all.forEach((id, i) => {
      const lang = LANGS[recLang.get(id)];
      const st = sources[cfg.sources[sourceOf[i]].name];
      st.kept++;
      st.languages[lang] = (st.languages[lang] ?? 0) + 1;
      languages[lang] = (languages[lang] ?? 0) + 1;
      flowOf(lang).kept++;
    });
    for (const i of validIdx) sources[cfg.sources[sourceOf[i]].name].valid++;
    const trainBySource: number[][] = cfg.sources.map(() => []);
    for (const i of trainIdx) {
      sources[cfg.sources[sourceOf[i]].name].train++;
      trainBySource[sourceOf[i]].push(i);
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
    const outputs: OutputFile[] = [];
    const histogram: number[] = [];
    let maxLength = 0, examples = 0;
    const totalTokens = { train: 0, valid: 0 };
    const writeBar = bar("write", trainOrder.length + validOrder.length);
    const newline = encoder.encode("\n");
    for (const [split, order] of [["train", trainOrder], ["valid", validOrder]] as const) {
      for (let s = 0, k = 0; s < order.length; s += cfg.shard.records, k++) {
        const chunk = order.slice(s, s + cfg.shard.records);
        const base = `${split}-${String(k).padStart(5, "0")}`;
        // the JSONL shard streams from the record spool: one line in memory at a time
        const hash = createHash("sha256");
        let bytes = 0;
        await writeFileAtomic(
          `${outDir}/${base}.jsonl`,
          (function* () {
            // lines gathered into blocks of about 1 MiB: one write per block, not per line
            let block: Uint8Array[] = [];
            let size = 0;
            const flush = () => {
              const out = new Uint8Array(size);
              let o = 0;
              for (const b of block) {
                out.set(b, o);
                o += b.length;
              }
              hash.update(out);
              bytes += out.length;
              block = [];
              size = 0;
              return out;
            };
            for (const i of chunk) {
              const id = all[i];
              block.push(recSpool.read(recOff.get(id), recLen.get(id)), newline);
              size += recLen.get(id) + 1;
              if (size >= 1 << 20) yield flush();
            }
            if (size > 0) yield flush();
          })(),
        );
        outputs.push({
          file: `${base}.jsonl`,
          split,
          records: chunk.length,
          bytes,
          sha256: hash.digest("hex"),
        });
        if (cfg.tokens) {
          const exLengths = chunk.map((i) => exLen.get(exOf.get(all[i])));
          const order2 = bucketOrder(exLengths, cfg.tokens.bucketWindow);
          const shard = encodeTokenShard(order2.map((j) => {
            const e = exOf.get(all[chunk[j]]);
            const n = exLen.get(e);
            const raw = exSpool.read(exOff.get(e), 4 * (2 + 2 * n));
            const v = new Int32Array(raw.buffer, raw.byteOffset, 2 + 2 * n);
            return {
              inputIds: v.subarray(2, 2 + n),
              labels: v.subarray(2 + n),
              seqLen: v[0],
              recordIndex: j,
            };
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
            histogram.push(n);
            maxLength = Math.max(maxLength, n);
            totalTokens[split] += n;
            examples++;
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
    for (const st of Object.values(sources)) st.languages = sortKeys(st.languages);
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
      languageFlow: sortKeys(flow),
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
          meanLength: examples ? (totalTokens.train + totalTokens.valid) / examples : 0,
          maxLength,
          histogram: lengthHistogram(histogram),
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
