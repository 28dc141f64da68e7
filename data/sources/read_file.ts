/**
 * Reads one source file into normalized records. The container is sniffed from the content, not
 * the name: a JSON array, JSON Lines (also behind `.json` / `.txt`), a JSON object (registry or
 * template: not records), or CSV/TSV with a header that says what it holds. Every file that gives
 * nothing and every record that is dropped gets a warning with the file and line.
 */

import { parseDelimited } from "./csv.ts";
import { decodeSource } from "./decode.ts";
import { arrayItemStarts, findJsonError, lineIndex, repairTrailingComma } from "./json_text.ts";
import { decodeItem, type ScanFailure, scanJsonArray, scanLines } from "./stream_json.ts";
import {
  createShapeCounter,
  detectShape,
  evalLayout,
  isObject,
  isPackedDialogue,
  type ItemDrop,
  type ItemFields,
  type ItemShape,
  mapItem,
  medicalDialogueRow,
  typeName,
  unpackDialogue,
} from "./shapes.ts";
import type { BuildWarning, FileReadResult, ReadOptions, SourceRecord } from "./types.ts";

/** Where records and their warnings go as they are read (a build streams them on). */
export interface RecordSink {
  record(r: SourceRecord): void;
  warning(w: BuildWarning): void;
}

/** Options of the file-level reader beyond the per-source `ReadOptions`. */
export interface StreamOptions {
  /**
   * JSON / JSON Lines files larger than this many bytes are streamed (bounded memory); smaller
   * ones are read whole (default 16 MiB).
   */
  streamAbove?: number;
  /** A broken streamed file up to this size is re-read whole to name the error (64 MiB). */
  wholeFileMax?: number;
  /** Progress of a streamed file: called with bytes scanned (each of the two passes counts half). */
  onBytes?: (n: number) => void;
}

const STREAM_ABOVE = 16 << 20;
// A streamed file that turns out broken is re-read whole for the exact diagnosis, up to this size.
const WHOLE_FILE_MAX = 64 << 20;

// The result being built and where its records go.
interface Res extends FileReadResult {
  out: RecordSink;
  emitted: number;
}

export const DEFAULT_READ_OPTIONS: Omit<ReadOptions, "source"> = {
  trailingComma: "lenient",
  encoding: "auto",
  format: "auto",
};

/**
 * Reads a file from disk; `file` is the path written into origins and warnings. Without `sink`
 * the records are returned in `records`; with it they are handed over one by one (and `records`
 * stays empty), and large JSON / JSON Lines files are streamed so memory stays bounded.
 */
export async function readSourceFile(
  path: string,
  file: string,
  options: Partial<ReadOptions> & { source: string },
  sink?: RecordSink,
  stream: StreamOptions = {},
): Promise<FileReadResult> {
  const opts: ReadOptions = { ...DEFAULT_READ_OPTIONS, ...options };
  if (sink) {
    let size = 0;
    try {
      size = (await Deno.stat(path)).size;
    } catch { /* reported by the whole-file read below */ }
    if (size > (stream.streamAbove ?? STREAM_ABOVE) && size > 0) {
      const streamed = await readStreamed(
        path,
        file,
        opts,
        sink,
        size,
        stream.wholeFileMax,
        stream.onBytes,
      );
      if (streamed) return streamed;
    }
  }
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    const res = emptyResult(file, "?");
    return unreadable(res, `cannot read file: ${(err as Error).message}`);
  }
  return readSourceBytes(bytes, file, opts, sink);
}

function extOf(file: string): string {
  const base = file.slice(file.lastIndexOf("/") + 1);
  const dot = base.lastIndexOf(".");
  return dot <= 0 ? "" : base.slice(dot + 1).toLowerCase();
}

function emptyResult(file: string, format: string, sink?: RecordSink): Res {
  const res: Res = {
    file,
    kind: "unreadable",
    format,
    items: 0,
    records: [],
    warnings: [],
    counts: {},
    emitted: 0,
    out: sink ?? {
      record: (r) => res.records.push(r),
      warning: (w) => res.warnings.push(w),
    },
  };
  return res;
}

// The public result, without the sink.
function result(res: Res): FileReadResult {
  const { out: _out, emitted: _emitted, ...rest } = res;
  return rest;
}

function unreadable(res: Res, reason: string, line?: number): FileReadResult {
  res.kind = "unreadable";
  res.records = [];
  res.warnings.push({ file: res.file, ...(line ? { line } : {}), action: "skipped-file", reason });
  bump(res.counts, "skipped-file");
  return result(res);
}

function bump(counts: Record<string, number>, key: string, n = 1): void {
  counts[key] = (counts[key] ?? 0) + n;
}

/**
 * Reads a file's bytes (exposed for tests and for downloaded data held in memory). Never throws:
 * anything unexpected becomes a skipped-file warning, so one bad file cannot abort a build.
 */
export function readSourceBytes(
  bytes: Uint8Array,
  file: string,
  opts: Partial<ReadOptions> & { source: string },
  sink?: RecordSink,
): FileReadResult {
  try {
    return readBytes(bytes, file, opts, sink);
  } catch (err) {
    return unreadable(emptyResult(file, "?"), `cannot read: ${(err as Error).message}`);
  }
}

function readBytes(
  bytes: Uint8Array,
  file: string,
  opts: Partial<ReadOptions> & { source: string },
  sink?: RecordSink,
): FileReadResult {
  const options: ReadOptions = { ...DEFAULT_READ_OPTIONS, ...opts };
  const ext = extOf(file);
  const res = emptyResult(file, "?", sink);
  if (bytes.length === 0) return unreadable(res, "empty file (0 bytes)");
  const delimitedExt = ext === "csv" || ext === "tsv" || ext === "txt";
  const decoded = decodeSource(bytes, options.encoding, delimitedExt);
  if (!decoded.ok) return unreadable(res, decoded.reason);
  res.encoding = decoded.encoding;
  if (decoded.encoding === "gb18030") bump(res.counts, "decoded-gb18030");
  const text = decoded.text;
  if (text.trim() === "") return unreadable(res, "empty file (only whitespace)");

  let format = options.format;
  if (format === "auto") {
    if (ext === "csv") format = "csv";
    else if (ext === "tsv") format = "tsv";
    else {
      const first = text.trimStart()[0];
      if (first === "[" || first === "{") format = "json";
      else if (ext === "json" || ext === "jsonl") format = "json";
      else format = text.slice(0, text.indexOf("\n") >>> 0).includes("\t") ? "tsv" : "csv";
    }
  }
  if (format === "csv" || format === "tsv") return readDelimited(text, res, options, format);
  if (format === "jsonl") return readJsonLines(text, res, options);
  return readJson(text, res, options);
}

function readJson(text: string, res: Res, options: ReadOptions): FileReadResult {
  let value: unknown;
  let parsedText = text;
  try {
    value = JSON.parse(text);
  } catch {
    const first = text.trimStart()[0];
    if (first === "{") return readJsonLines(text, res, options);
    const repaired = options.trailingComma === "lenient" ? repairTrailingComma(text) : null;
    if (repaired) {
      try {
        value = JSON.parse(repaired.text);
        parsedText = repaired.text;
        const li = lineIndex(text);
        res.warnings.push({
          file: res.file,
          line: li.lineOf(repaired.offset),
          action: "repaired-trailing-comma",
          reason: `removed a trailing comma before ']' at line ${li.lineOf(repaired.offset)} ` +
            `col ${li.columnOf(repaired.offset)}`,
        });
        bump(res.counts, "repaired-trailing-comma");
      } catch {
        value = undefined;
      }
    }
    if (value === undefined) {
      const err = findJsonError(text);
      const li = lineIndex(text);
      const where = err ? `line ${li.lineOf(err.offset)} col ${li.columnOf(err.offset)}` : "?";
      const hint = err?.reason.startsWith("trailing comma") ? " (trailingComma: strict)" : "";
      res.format = "json";
      return unreadable(
        res,
        `invalid JSON at ${where}: ${err?.reason ?? "parse error"}${hint}`,
        err ? li.lineOf(err.offset) : undefined,
      );
    }
  }
  if (Array.isArray(value)) {
    res.format = "json array";
    const starts = arrayItemStarts(parsedText);
    const li = lineIndex(parsedText);
    const lines = starts.map((s) => li.lineOf(s));
    const origin = (i: number) => {
      const line = lines[i] ?? 1;
      const shared = (i > 0 && lines[i - 1] === line) || lines[i + 1] === line;
      return { line, origin: shared ? `${res.file}:${line}#${i}` : `${res.file}:${line}` };
    };
    return mapItems(value, origin, res, options);
  }
  if (isObject(value)) {
    // a one-line JSON Lines file parses as a single object
    const shape = detectShape([value]);
    if (shape.shape) {
      res.format = "jsonl";
      return mapItems([value], () => ({ line: 1, origin: `${res.file}:1` }), res, options);
    }
    const layout = evalLayout(Object.keys(value as object));
    if (layout) return markEval(res, layout, 1);
    res.kind = "not-records";
    res.format = "json object";
    const keys = Object.keys(value as object).slice(0, 6).join(", ");
    res.warnings.push({
      file: res.file,
      action: "skipped-not-records",
      reason: `a JSON object, not a list of records (keys: ${keys}); a registry or template?`,
    });
    bump(res.counts, "skipped-not-records");
    return result(res);
  }
  return unreadable(res, `top-level JSON value is ${typeName(value)}, not a list of records`);
}

function readJsonLines(text: string, res: Res, options: ReadOptions): FileReadResult {
  res.format = "jsonl";
  const items: unknown[] = [];
  const lines: number[] = [];
  const bad: { line: number; reason: string }[] = [];
  let lineNo = 0;
  let pos = 0;
  while (pos <= text.length) {
    let end = text.indexOf("\n", pos);
    if (end === -1) end = text.length;
    lineNo++;
    const line = text.slice(pos, end).trim();
    pos = end + 1;
    if (line === "") continue;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      const err = findJsonError(line);
      bad.push({
        line: lineNo,
        reason: `invalid JSON${err ? ` at col ${err.offset + 1}: ${err.reason}` : ""}`,
      });
      continue;
    }
    if (!isObject(v)) {
      bad.push({ line: lineNo, reason: `line holds ${typeName(v)}, not an object` });
      continue;
    }
    items.push(v);
    lines.push(lineNo);
  }
  if (items.length === 0) {
    const err = findJsonError(text);
    const li = lineIndex(text);
    const where = err ? ` at line ${li.lineOf(err.offset)} col ${li.columnOf(err.offset)}` : "";
    return unreadable(res, `not JSON and not JSON Lines: invalid JSON${where}: ${err?.reason}`);
  }
  for (const b of bad) {
    res.warnings.push({ file: res.file, line: b.line, action: "bad-line", reason: b.reason });
    bump(res.counts, "bad-line");
  }
  return mapItems(
    items,
    (i) => ({ line: lines[i], origin: `${res.file}:${lines[i]}` }),
    res,
    options,
  );
}

function markEval(res: Res, layout: string, items: number): FileReadResult {
  res.kind = "eval";
  res.format = layout;
  res.items = items;
  res.warnings.push({
    file: res.file,
    action: "skipped-eval",
    reason: `evaluation set (${layout}): eval only, not trained on`,
  });
  bump(res.counts, "skipped-eval");
  return result(res);
}

function mapItems(
  items: unknown[],
  where: (i: number) => { line: number; origin: string },
  res: Res,
  options: ReadOptions,
): FileReadResult {
  res.items = items.length;
  const { shape, fields } = detectShape(items);
  if (!shape) {
    const layout = evalLayout(fields);
    if (layout) return markEval(res, layout, items.length);
    const why = fields.length === 0
      ? `no item is an object (items are ${typeName(items[0])})`
      : `no record has instruction/output or context/target; fields found: ${
        fields.slice(0, 8).join(", ")
      }`;
    return unreadable(res, why);
  }
  res.kind = "records";
  if (shape === "context-target") res.format += " context/target";
  else res.format += " instruction/output";
  for (let i = 0; i < items.length; i++) {
    const loc = where(i);
    const mapped = mapItem(items[i], shape);
    emit(mapped, loc.line, loc.origin, `item ${i}`, res, options, shape);
  }
  return finishRecords(res);
}

function emit(
  mapped: ItemFields | ItemDrop,
  line: number,
  origin: string,
  label: string,
  res: Res,
  options: ReadOptions,
  shape: ItemShape | "dialogue-csv" | "columns",
): void {
  if ("action" in mapped) {
    res.out.warning({
      file: res.file,
      line,
      action: mapped.action,
      reason: `${label}: ${mapped.reason}`,
    });
    bump(res.counts, mapped.action);
    return;
  }
  const rec: SourceRecord = {
    instruction: mapped.instruction,
    input: mapped.input,
    output: mapped.output,
    source: options.source,
    origin,
  };
  if (mapped.history) rec.history = mapped.history;
  if (shape === "alpaca" && isPackedDialogue(rec.instruction)) {
    const unpacked = unpackDialogue(rec.instruction);
    if (unpacked) {
      rec.instruction = unpacked.instruction;
      if (unpacked.history.length > 0) rec.history = [...(rec.history ?? []), ...unpacked.history];
      bump(res.counts, "unpacked-dialogue");
    } else {
      res.out.warning({
        file: res.file,
        line,
        action: "dialogue-kept-packed",
        reason: `${label}: <user>/<bot> turns do not alternate; kept as one instruction`,
      });
      bump(res.counts, "dialogue-kept-packed");
    }
  }
  if (rec.history && rec.history.length === 0) delete rec.history;
  res.emitted++;
  res.out.record(rec);
}

function finishRecords(res: Res): FileReadResult {
  bump(res.counts, "read", res.emitted);
  if (res.emitted === 0) {
    res.warnings.push({
      file: res.file,
      action: "skipped-file",
      reason: `no usable records in ${res.items} items`,
    });
    bump(res.counts, "skipped-file");
  }
  return result(res);
}

function readDelimited(
  text: string,
  res: Res,
  options: ReadOptions,
  format: "csv" | "tsv",
): FileReadResult {
  res.format = format;
  const rows = parseDelimited(text, format === "tsv" ? "\t" : ",");
  if (rows.length === 0) return unreadable(res, "no rows");
  const header = rows[0].fields.map((f) => f.trim());
  const lower = header.map((h) => h.toLowerCase());
  const has = (...names: string[]) => names.every((n) => lower.includes(n));
  let columns: string[];
  let data = rows.slice(1);
  if (options.columns) {
    columns = options.columns;
    data = rows;
    // a header that repeats the configured columns is skipped
    if (columns.every((c, i) => lower[i] === c.toLowerCase())) data = rows.slice(1);
  } else if (has("department", "title", "ask", "answer")) {
    columns = lower;
  } else if (has("instruction", "output") || has("context", "target")) {
    columns = lower;
  } else {
    const layout = evalLayout(header);
    if (layout) return markEval(res, layout, rows.length - 1);
    res.kind = "not-training";
    res.items = rows.length;
    const reason = lower.length === 1 && (lower[0] === "input" || lower[0] === "question")
      ? `one column "${header[0]}" with ${rows.length - 1} questions and no answers`
      : `no known header (first row has ${header.length} column${
        header.length === 1 ? "" : "s"
      }); set "columns" in the source config to map it`;
    res.warnings.push({
      file: res.file,
      action: "skipped-not-training",
      reason: `not a training source: ${reason}`,
    });
    bump(res.counts, "skipped-not-training");
    return result(res);
  }
  res.items = data.length;
  const dialogue = columns.includes("department") && columns.includes("ask") &&
    columns.includes("answer");
  res.format = `${format} ${dialogue ? "department/title/ask/answer" : columns.join("/")}`;
  const objects = data.map((r) => {
    const o: Record<string, string> = {};
    columns.forEach((c, i) => (o[c] = r.fields[i] ?? ""));
    return o;
  });
  const shape = dialogue ? null : detectShape(objects).shape;
  if (!dialogue && !shape) {
    return unreadable(res, `columns ${columns.join(", ")} hold no instruction/output`);
  }
  res.kind = "records";
  data.forEach((row, i) => {
    const origin = `${res.file}:${row.line}`;
    const label = `row ${i + 1}`;
    if (row.fields.length !== columns.length) {
      res.out.warning({
        file: res.file,
        line: row.line,
        action: "dropped-type",
        reason: `${label}: ${row.fields.length} fields, expected ${columns.length}`,
      });
      bump(res.counts, "dropped-type");
      return;
    }
    const o = objects[i];
    const mapped = dialogue
      ? medicalDialogueRow(o.department, o.title ?? "", o.ask, o.answer)
      : mapItem(o, shape!);
    emit(mapped, row.line, origin, label, res, options, dialogue ? "dialogue-csv" : shape!);
  });
  return finishRecords(res);
}

/**
 * The streamed read of a large JSON array or JSON Lines file: a first pass checks the container,
 * every item's UTF-8 and JSON, and counts the shapes; a second pass maps and emits the records.
 * So a file that turns out broken contributes nothing (as in the whole-file read), and memory
 * holds one item at a time plus 4 bytes per item (its line). Returns null when the file is not a
 * JSON container, or is broken and small enough for the whole-file read to name the error.
 */
async function readStreamed(
  path: string,
  file: string,
  options: ReadOptions,
  sink: RecordSink,
  size: number,
  wholeFileMax = WHOLE_FILE_MAX,
  onBytes?: (n: number) => void,
): Promise<FileReadResult | null> {
  const half = onBytes ? (n: number) => onBytes(n / 2) : undefined;
  const ext = extOf(file);
  if (options.encoding === "gb18030" || options.format === "csv" || options.format === "tsv") {
    return null;
  }
  if ((ext === "csv" || ext === "tsv") && options.format === "auto") return null;
  const first = await firstByte(path);
  let container: "array" | "lines";
  if (options.format === "jsonl" || first === 0x7b) container = "lines";
  else if (first === 0x5b) container = "array";
  else return null;
  const res = emptyResult(file, "?", sink);
  const broken = (f: ScanFailure): FileReadResult | null => {
    if (size <= wholeFileMax) return null; // the whole-file read names it exactly
    const where = f.column ? `line ${f.line} col ${f.column}` : `line ${f.line}`;
    res.format = container === "array" ? "json" : "jsonl";
    return unreadable(
      res,
      `invalid ${res.format} at ${where} (byte ${f.offset}): ${f.reason}`,
      f.line,
    );
  };
  const parse = (bytes: Uint8Array, at: number): unknown | { bad: string } => {
    const text = decodeItem(bytes, at);
    if (typeof text !== "string") return { bad: `invalid UTF-8 at byte ${text.badByte}` };
    try {
      return { value: JSON.parse(text) };
    } catch {
      const err = findJsonError(text);
      // as the whole-file JSON Lines reader says it: the column inside the item's text
      return { bad: `invalid JSON${err ? ` at col ${err.offset + 1}: ${err.reason}` : ""}` };
    }
  };
  const counter = createShapeCounter();
  if (container === "array") {
    const lines = new GrowInt32();
    const scan = await scanJsonArray(path, (bytes, _i, line, at) => {
      const p = parse(bytes, at) as { value?: unknown; bad?: string };
      if (p.bad) return p.bad;
      counter.add(p.value);
      lines.push(line);
    }, half);
    if (!("ok" in scan)) return broken(scan);
    if (scan.trailingComma && options.trailingComma === "strict") {
      return broken({ ...scan.trailingComma, reason: "trailing comma before ']'" });
    }
    res.encoding = scan.bom ? "utf-8-bom" : "utf-8";
    res.format = "json array";
    if (scan.trailingComma) {
      const t = scan.trailingComma;
      res.warnings.push({
        file: res.file,
        line: t.line,
        action: "repaired-trailing-comma",
        reason: `removed a trailing comma before ']' at line ${t.line} col ${t.column}`,
      });
      bump(res.counts, "repaired-trailing-comma");
    }
    res.items = scan.items;
    const { shape, fields } = counter.result();
    if (!shape) return noShape(res, fields, scan.items);
    res.kind = "records";
    res.format += shape === "context-target" ? " context/target" : " instruction/output";
    const l = lines.view();
    await scanJsonArray(path, (bytes, i, line, at) => {
      const { value } = parse(bytes, at) as { value: unknown };
      const shared = (i > 0 && l[i - 1] === line) || l[i + 1] === line;
      const origin = shared ? `${res.file}:${line}#${i}` : `${res.file}:${line}`;
      emit(mapItem(value, shape), line, origin, `item ${i}`, res, options, shape);
    }, half);
    return finishRecords(res);
  }
  // JSON Lines
  let good = 0, blank = true;
  const bad: { line: number; reason: string }[] = [];
  const scan = await scanLines(path, (bytes, line, at) => {
    const p = parseLine(bytes, at, parse);
    if (p === null) return;
    blank = false;
    if ("bad" in p) {
      if (p.bad.startsWith("invalid UTF-8")) return p.bad;
      bad.push({ line, reason: p.bad });
    } else {
      counter.add(p.value);
      good++;
    }
  }, half);
  if (!("ok" in scan)) return broken(scan);
  if (blank) return null;
  // a file of one pretty-printed object, or nothing but broken lines: the whole-file read says why
  if (good === 0) {
    return broken({
      offset: 0,
      line: bad[0]?.line ?? 1,
      column: 0,
      reason: bad[0]?.reason ?? "no JSON lines",
    });
  }
  res.encoding = scan.bom ? "utf-8-bom" : "utf-8";
  res.format = "jsonl";
  res.items = good;
  for (const b of bad) {
    res.warnings.push({ file: res.file, line: b.line, action: "bad-line", reason: b.reason });
    bump(res.counts, "bad-line");
  }
  const { shape, fields } = counter.result();
  // one object that is not a record (a registry, an eval set): the whole-file read classifies it
  if (!shape && good === 1 && bad.length === 0 && size <= wholeFileMax) return null;
  if (!shape) return noShape(res, fields, good);
  res.kind = "records";
  res.format += shape === "context-target" ? " context/target" : " instruction/output";
  let k = 0;
  await scanLines(path, (bytes, line, at) => {
    const p = parseLine(bytes, at, parse);
    if (p === null || "bad" in p) return;
    emit(mapItem(p.value, shape), line, `${res.file}:${line}`, `item ${k++}`, res, options, shape);
  }, half);
  return finishRecords(res);
}

// One JSON line: null when blank, else its object or why it is bad.
function parseLine(
  bytes: Uint8Array,
  at: number,
  parse: (b: Uint8Array, at: number) => unknown,
): { value: unknown } | { bad: string } | null {
  let s = 0, e = bytes.length;
  while (s < e && (bytes[s] === 0x20 || bytes[s] === 0x09 || bytes[s] === 0x0d)) s++;
  while (e > s && (bytes[e - 1] === 0x20 || bytes[e - 1] === 0x09 || bytes[e - 1] === 0x0d)) e--;
  if (s === e) return null;
  const p = parse(bytes.subarray(s, e), at + s) as { value?: unknown; bad?: string };
  if (p.bad !== undefined) return { bad: p.bad };
  if (!isObject(p.value)) return { bad: `line holds ${typeName(p.value)}, not an object` };
  return { value: p.value };
}

function noShape(res: Res, fields: string[], items: number): FileReadResult {
  const layout = evalLayout(fields);
  if (layout) return markEval(res, layout, items);
  return unreadable(
    res,
    fields.length === 0
      ? "no item is an object"
      : `no record has instruction/output or context/target; fields found: ${
        fields.slice(0, 8).join(", ")
      }`,
  );
}

async function firstByte(path: string): Promise<number> {
  const f = await Deno.open(path, { read: true });
  try {
    const buf = new Uint8Array(4096);
    const n = (await f.read(buf)) ?? 0;
    let i = buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf ? 3 : 0;
    while (i < n && (buf[i] === 0x20 || buf[i] === 0x0a || buf[i] === 0x0d || buf[i] === 0x09)) i++;
    return i < n ? buf[i] : -1;
  } finally {
    f.close();
  }
}

/** A growable list of 32-bit integers (4 bytes per entry, not a JS array's 8+). */
class GrowInt32 {
  #a = new Int32Array(1024);
  #n = 0;
  push(v: number): void {
    if (this.#n === this.#a.length) {
      const b = new Int32Array(this.#a.length * 2);
      b.set(this.#a);
      this.#a = b;
    }
    this.#a[this.#n++] = v;
  }
  view(): Int32Array {
    return this.#a.subarray(0, this.#n);
  }
}
