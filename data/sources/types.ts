/** The shapes every reader produces. */

/**
 * One normalized training record. `origin` is `relative/path:LINE`, the line on which the record
 * starts; when several items of a JSON array share a line (single-line arrays), it is
 * `relative/path:LINE#INDEX` with the 0-based index of the item in the array.
 */
export interface SourceRecord {
  instruction: string;
  input: string;
  output: string;
  /** Earlier turns as `[user, assistant]` pairs (COIG `history`, unpacked `<user>/<bot>` text). */
  history?: [string, string][];
  source: string;
  origin: string;
}

/** A problem that made the builder skip or change something; never silent. */
export interface BuildWarning {
  /** Path relative to the build's root (forward slashes). */
  file: string;
  line?: number;
  /** The action counter this warning belongs to (e.g. `dropped-empty`, `skipped-file`). */
  action: string;
  reason: string;
}

/** What a file turned out to be. */
export type FileKind =
  | "records" // training records (alpaca, context/target, dialogue CSV, mapped columns)
  | "eval" // an evaluation set: recognised, not trained on
  | "not-training" // recognised raw/auxiliary data (questions without answers, raw dumps)
  | "not-records" // a JSON object (registry, template)
  | "unreadable"; // empty, undecodable or unparsable

/** The result of reading one file. */
export interface FileReadResult {
  file: string;
  kind: FileKind;
  /** What the reader recognised, for reports: `alpaca`, `jsonl alpaca`, `context/target`, … */
  format: string;
  encoding?: string;
  /** Items (array entries, non-blank JSON lines, CSV data rows) seen. */
  items: number;
  records: SourceRecord[];
  warnings: BuildWarning[];
  /** Counters for actions taken while reading (`repaired-trailing-comma`, `unpacked-dialogue`…). */
  counts: Record<string, number>;
}

/** Per-source reading options (from the build config). */
export interface ReadOptions {
  /** Source name written into each record. */
  source: string;
  /** `lenient` repairs a single trailing comma before `]` (and counts it); `strict` skips. */
  trailingComma: "strict" | "lenient";
  encoding: "auto" | "utf-8" | "gb18030";
  /** Force a container format instead of sniffing the content. */
  format: "auto" | "json" | "jsonl" | "csv" | "tsv";
  /** Column names for header-less CSV/TSV (e.g. `["instruction", "output"]`). */
  columns?: string[];
}
