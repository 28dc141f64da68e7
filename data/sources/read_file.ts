/**
 * Reads one source file into normalized records. The container is sniffed from the content, not
 * the name: a JSON array, JSON Lines (also behind `.json` / `.txt`), a JSON object (registry or
 * template: not records), or CSV/TSV with a header that says what it holds. Every file that gives
 * nothing and every record that is dropped gets a warning with the file and line.
 */

import { parseDelimited } from "./csv.ts";
import { decodeSource } from "./decode.ts";
import { arrayItemStarts, findJsonError, lineIndex, repairTrailingComma } from "./json_text.ts";
import {
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
import type { FileReadResult, ReadOptions, SourceRecord } from "./types.ts";

export const DEFAULT_READ_OPTIONS: Omit<ReadOptions, "source"> = {
  trailingComma: "lenient",
  encoding: "auto",
  format: "auto",
};

/** Reads a file from disk; `file` is the path written into origins and warnings. */
export async function readSourceFile(
  path: string,
  file: string,
  options: Partial<ReadOptions> & { source: string },
): Promise<FileReadResult> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    const res = emptyResult(file, "?");
    return unreadable(res, `cannot read file: ${(err as Error).message}`);
  }
  return readSourceBytes(bytes, file, options);
}

function extOf(file: string): string {
  const base = file.slice(file.lastIndexOf("/") + 1);
  const dot = base.lastIndexOf(".");
  return dot <= 0 ? "" : base.slice(dot + 1).toLowerCase();
}

function emptyResult(file: string, format: string): FileReadResult {
  return { file, kind: "unreadable", format, items: 0, records: [], warnings: [], counts: {} };
}

function unreadable(res: FileReadResult, reason: string, line?: number): FileReadResult {
  res.kind = "unreadable";
  res.records = [];
  res.warnings.push({ file: res.file, ...(line ? { line } : {}), action: "skipped-file", reason });
  bump(res.counts, "skipped-file");
  return res;
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
): FileReadResult {
  try {
    return readBytes(bytes, file, opts);
  } catch (err) {
    return unreadable(emptyResult(file, "?"), `cannot read: ${(err as Error).message}`);
  }
}

function readBytes(
  bytes: Uint8Array,
  file: string,
  opts: Partial<ReadOptions> & { source: string },
): FileReadResult {
  const options: ReadOptions = { ...DEFAULT_READ_OPTIONS, ...opts };
  const ext = extOf(file);
  const res = emptyResult(file, "?");
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

function readJson(text: string, res: FileReadResult, options: ReadOptions): FileReadResult {
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
    return res;
  }
  return unreadable(res, `top-level JSON value is ${typeName(value)}, not a list of records`);
}

function readJsonLines(text: string, res: FileReadResult, options: ReadOptions): FileReadResult {
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

function markEval(res: FileReadResult, layout: string, items: number): FileReadResult {
  res.kind = "eval";
  res.format = layout;
  res.items = items;
  res.warnings.push({
    file: res.file,
    action: "skipped-eval",
    reason: `evaluation set (${layout}): eval only, not trained on`,
  });
  bump(res.counts, "skipped-eval");
  return res;
}

function mapItems(
  items: unknown[],
  where: (i: number) => { line: number; origin: string },
  res: FileReadResult,
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
  res: FileReadResult,
  options: ReadOptions,
  shape: ItemShape | "dialogue-csv" | "columns",
): void {
  if ("action" in mapped) {
    res.warnings.push({
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
      res.warnings.push({
        file: res.file,
        line,
        action: "dialogue-kept-packed",
        reason: `${label}: <user>/<bot> turns do not alternate; kept as one instruction`,
      });
      bump(res.counts, "dialogue-kept-packed");
    }
  }
  if (rec.history && rec.history.length === 0) delete rec.history;
  res.records.push(rec);
}

function finishRecords(res: FileReadResult): FileReadResult {
  bump(res.counts, "read", res.records.length);
  if (res.records.length === 0) {
    res.warnings.push({
      file: res.file,
      action: "skipped-file",
      reason: `no usable records in ${res.items} items`,
    });
    bump(res.counts, "skipped-file");
  }
  return res;
}

function readDelimited(
  text: string,
  res: FileReadResult,
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
    return res;
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
      res.warnings.push({
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
