/**
 * `manifest.json` of a build and its printed summary (after a build and for `--stats`). The
 * manifest holds no timestamps or absolute paths, so identical inputs give identical bytes.
 */

import type { BuildWarning } from "../sources/types.ts";
import type { DatasetConfig } from "./config.ts";

export const MANIFEST_FORMAT = "medglm-dataset/1";

export interface SourceStats {
  /** Files that gave records. */
  files: number;
  /** Files that gave nothing (skipped: unreadable, eval sets, strict JSON failures, …). */
  skipped: number;
  /** Items read from those files: usable records and the ones dropped on reading (empty, wrong type, bad lines). */
  read: number;
  /** Usable records among them (what the cleaning stage gets). */
  usable: number;
  /** Left after cleaning, de-duplication, cap and length filter (unique records). */
  kept: number;
  train: number;
  valid: number;
  /** Training examples after the source's weight (repeats included). */
  trainExamples: number;
  /** Language of the kept records. */
  languages: Record<string, number>;
}

/**
 * Records of one language through the stages after cleaning; always
 * `cleaned - filtered - duplicate - capped - tooLong = kept`.
 */
export interface LanguageFlow {
  /** Left after the cleaning repairs and empty/length checks (before de-duplication). */
  cleaned: number;
  /** Dropped by a language filter. */
  filtered: number;
  duplicate: number;
  capped: number;
  /** Dropped by `maxTokens`. */
  tooLong: number;
  kept: number;
}

export interface FileStats {
  file: string;
  source: string;
  kind: string;
  format: string;
  encoding?: string;
  items: number;
  records: number;
}

export interface OutputFile {
  file: string;
  split: "train" | "valid";
  records: number;
  bytes: number;
  sha256: string;
}

export interface Manifest {
  format: string;
  name: string;
  /** The config as given (paths relative to its file). */
  config: DatasetConfig;
  /** sha256 over the config and every output file's name and sha256. */
  contentHash: string;
  seed: number | string;
  split: { by: string; validRatio: number; train: number; valid: number; trainExamples: number };
  /** Counts per action: read, repaired-*, dropped-*, duplicate-*, too-long, truncated… */
  counts: Record<string, number>;
  /** Language share of the kept unique records. */
  languages: Record<string, number>;
  /** Per language, from cleaned records to kept ones (the counts add up). */
  languageFlow: Record<string, LanguageFlow>;
  sources: Record<string, SourceStats>;
  files: FileStats[];
  tokens: null | {
    tokenizer: string;
    tokenizerSha256: string;
    maxSourceLength: number;
    maxTargetLength: number;
    maxSeqLength: number;
    maxTokens: number | null;
    bucketWindow: number;
    /** How records became examples (absent in manifests written before it existed: instruction). */
    promptFormat?: "instruction" | "chat-template";
    totalTokens: { train: number; valid: number };
    meanLength: number;
    maxLength: number;
    histogram: { range: string; count: number }[];
  };
  outputs: OutputFile[];
  warnings: BuildWarning[];
  /** Warnings counted but not listed (more than the per-action limit). */
  warningsOmitted: Record<string, number>;
}

function share(n: number, all: Record<string, number>): string {
  const total = Object.values(all).reduce((a, b) => a + b, 0);
  return total > 0 ? `${((100 * n) / total).toFixed(1)}%` : "-";
}

// "zh 93% en 7%": the language mix of a source's kept records.
function languageShare(langs: Record<string, number>): string {
  const total = Object.values(langs).reduce((a, b) => a + b, 0);
  if (total === 0) return "-";
  return Object.entries(langs).sort((a, b) => b[1] - a[1]).map(([l, n]) =>
    `${l} ${Math.round((100 * n) / total)}%`
  ).join(" ");
}

function table(rows: (string | number)[][], rightFrom = 1, rightTo = Infinity): string {
  const cells = rows.map((r) => r.map(String));
  const widths = cells[0].map((_, c) => Math.max(...cells.map((r) => width(r[c] ?? ""))));
  return cells.map((r, i) => {
    const line = r.map((v, c) => {
      const pad = " ".repeat(widths[c] - width(v));
      return c >= rightFrom && c < rightTo ? pad + v : c === r.length - 1 ? v : v + pad;
    }).join("  ");
    return i === 0 ? `${line}\n${widths.map((w) => "-".repeat(w)).join("  ")}` : line;
  }).join("\n");
}

// CJK characters take two terminal columns.
function width(s: string): number {
  let w = 0;
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    w += (c >= 0x1100 &&
        (c <= 0x115f || (c >= 0x2e80 && c <= 0xa4cf) || (c >= 0xac00 && c <= 0xd7a3) ||
          (c >= 0xf900 && c <= 0xfaff) || (c >= 0xfe30 && c <= 0xfe4f) ||
          (c >= 0xff00 && c <= 0xff60) ||
          (c >= 0xffe0 && c <= 0xffe6) || (c >= 0x20000 && c <= 0x3fffd)))
      ? 2
      : 1;
  }
  return w;
}

/** The summary printed after a build and by `--stats`. */
export function formatBuildSummary(m: Manifest): string {
  const out: string[] = [];
  out.push(`dataset ${m.name}  (${m.contentHash})`);
  const srcRows: (string | number)[][] = [[
    "source",
    "files",
    "skipped",
    "read",
    "usable",
    "kept",
    "train",
    "valid",
    "train ex.",
    "languages",
  ]];
  let tot = [0, 0, 0, 0, 0, 0, 0, 0];
  for (const [name, s] of Object.entries(m.sources)) {
    const nums = [
      s.files,
      s.skipped ?? 0,
      s.read,
      s.usable ?? s.read,
      s.kept,
      s.train,
      s.valid,
      s.trainExamples,
    ];
    srcRows.push([name, ...nums, languageShare(s.languages ?? {})]);
    tot = tot.map((v, i) => v + nums[i]);
  }
  srcRows.push(["total", ...tot, languageShare(m.languages)]);
  out.push("", table(srcRows, 1, 9));
  const actions = Object.entries(m.counts).filter(([k]) => !k.startsWith("lang-")).sort((a, b) =>
    a[0] < b[0] ? -1 : 1
  );
  if (actions.length) out.push("", table([["action", "count"], ...actions]));
  const flow = Object.entries(m.languageFlow ?? {});
  if (flow.length > 0) {
    out.push(
      "",
      table([
        ["language", "cleaned", "filtered", "duplicate", "capped", "too long", "kept", "share"],
        ...flow.map(([l, f]) => [
          l,
          f.cleaned,
          f.filtered,
          f.duplicate,
          f.capped,
          f.tooLong,
          f.kept,
          share(f.kept, m.languages),
        ]),
      ]),
    );
  }
  if (m.tokens) {
    const t = m.tokens;
    out.push(
      "",
      `tokens: train ${t.totalTokens.train}, valid ${t.totalTokens.valid}, mean length ${
        t.meanLength.toFixed(1)
      }, max ${t.maxLength} (maxSeqLength ${t.maxSeqLength})`,
      table([
        ["length", "examples"],
        ...t.histogram.filter((h) => h.count > 0).map((h) => [h.range, h.count]),
      ]),
    );
  }
  out.push(
    "",
    table([["output", "records", "bytes"], ...m.outputs.map((o) => [o.file, o.records, o.bytes])]),
  );
  const skipped = m.files.filter((f) => f.records === 0);
  if (skipped.length) {
    out.push("", `${skipped.length} file(s) contributed no records:`);
    for (const f of skipped) {
      const w = m.warnings.find((x) => x.file === f.file && x.action.startsWith("skipped"));
      out.push(`  ${f.file}: ${w ? w.reason : f.kind}`);
    }
  }
  return out.join("\n");
}

/** One warning as a line: `file:line: reason [action]`. */
export function formatWarning(w: BuildWarning): string {
  return `${w.file}${w.line ? `:${w.line}` : ""}: ${w.reason} [${w.action}]`;
}

/** Reads `manifest.json` of a build folder. */
export async function readManifest(dir: string): Promise<Manifest> {
  const path = `${dir.replace(/\/$/, "")}/manifest.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new Error(`${path}: cannot read the build manifest: ${(err as Error).message}`);
  }
  const m = JSON.parse(text) as Manifest;
  if (m.format !== MANIFEST_FORMAT) throw new Error(`${path}: not a ${MANIFEST_FORMAT} manifest`);
  return m;
}

/** The token shard files of one split of a build, in order (for the trainer). */
export async function tokenShardPaths(dir: string, split: "train" | "valid"): Promise<string[]> {
  const m = await readManifest(dir);
  const base = dir.replace(/\/$/, "");
  return m.outputs.filter((o) => o.split === split && o.file.endsWith(".bin")).map((o) =>
    `${base}/${o.file}`
  );
}
