/**
 * Helpers the benchmark readers share: decoding files, JSON arrays / JSON Lines with the line
 * each item starts on, answer letters and option lists (also packed in one string, as MMCU does).
 */

import { arrayItemStarts, decodeSource, findJsonError, lineIndex } from "../../data/mod.ts";
import { optionLetters } from "../types.ts";

/** Reads a benchmark file as text: UTF-8 (BOM stripped), GB18030 allowed only for CSV files. */
export async function readEvalText(
  path: string,
  allowGb18030 = false,
): Promise<string> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    throw new Error(`${path}: cannot read: ${(err as Error).message}`);
  }
  const r = decodeSource(bytes, "auto", allowGb18030);
  if (!r.ok) throw new Error(`${path}: ${r.reason}`);
  return r.text;
}

/** A parsed JSON item with the 1-based line where it starts. */
export interface JsonItem {
  value: unknown;
  line: number;
}

/**
 * The items of a JSON array file, a JSON Lines file, or a file holding one JSON object (sniffed:
 * a text that parses as a whole is one JSON value; JSON Lines only when it does not). PromptCBLUE
 * ships `dev_structured.json` / `results.json` as one pretty-printed JSON value each: read line by
 * line they gave one "not valid JSON" reason per line (1,391), burying the real ones. A single
 * object is taken as one item when it looks like one (`itemKeys`), as the items of its one list
 * of objects when it wraps them (`{"data": [...]}`), and otherwise reported once, naming its keys.
 * A JSON Lines line that does not parse becomes a `bad` entry.
 */
export function jsonItems(
  text: string,
  path: string,
  itemKeys: readonly string[] = [],
): { items: JsonItem[]; bad: { line: number; reason: string }[] } {
  const trimmed = text.trimStart();
  if (trimmed.startsWith("[") || trimmed.startsWith("{")) {
    let parsed: unknown;
    let error: unknown = null;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      error = err;
    }
    if (error && trimmed.startsWith("[")) {
      const e = findJsonError(text);
      const where = e ? `:${lineIndex(text).lineOf(e.offset)}` : "";
      throw new Error(
        `${path}${where}: not valid JSON: ${e?.reason ?? (error as Error).message}`,
      );
    }
    if (!error && Array.isArray(parsed)) return arrayItems(parsed, text);
    if (!error && parsed !== null && typeof parsed === "object") {
      return objectItems(parsed as Record<string, unknown>, text, itemKeys);
    }
    // `{` that is not one value: JSON Lines
  }
  const items: JsonItem[] = [];
  const bad: { line: number; reason: string }[] = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (line === "") return;
    try {
      items.push({ value: JSON.parse(line), line: i + 1 });
    } catch (err) {
      bad.push({
        line: i + 1,
        reason: `not valid JSON: ${(err as Error).message}`,
      });
    }
  });
  return { items, bad };
}

function arrayItems(parsed: unknown[], text: string): { items: JsonItem[]; bad: [] } {
  const starts = arrayItemStarts(text);
  const lines = lineIndex(text);
  return {
    items: parsed.map((value, i) => ({
      value,
      line: starts[i] !== undefined ? lines.lineOf(starts[i]) : 1,
    })),
    bad: [],
  };
}

function objectItems(
  o: Record<string, unknown>,
  text: string,
  itemKeys: readonly string[],
): { items: JsonItem[]; bad: { line: number; reason: string }[] } {
  const keys = Object.keys(o);
  // one line holding one item: a JSON Lines file of one line
  if (itemKeys.length === 0 || itemKeys.some((k) => k in o)) {
    return { items: [{ value: o, line: 1 }], bad: [] };
  }
  const lists = keys.filter((k) =>
    Array.isArray(o[k]) && (o[k] as unknown[]).length > 0 &&
    (o[k] as unknown[]).every((v) => v !== null && typeof v === "object" && !Array.isArray(v))
  );
  if (lists.length === 1) {
    const list = o[lists[0]] as unknown[];
    // lines of the wrapped items: the array's own item starts, found inside the object text
    const at = text.indexOf("[", text.indexOf(JSON.stringify(lists[0])));
    const starts = at >= 0 ? arrayItemStarts(text.slice(at)).map((s) => s + at) : [];
    const lines = lineIndex(text);
    return {
      items: list.map((value, i) => ({
        value,
        line: starts[i] !== undefined ? lines.lineOf(starts[i]) : 1,
      })),
      bad: [],
    };
  }
  const shown = keys.slice(0, 6).join(", ") + (keys.length > 6 ? `, … (${keys.length} keys)` : "");
  return {
    items: [],
    bad: [{
      line: 1,
      reason: `one JSON object (keys: ${shown}), not a list of items nor JSON Lines: skipped`,
    }],
  };
}

const FULL_WIDTH_A = 0xff21;

/** Full-width Latin capitals (Ａ…Ｚ) and lower-case letters → ASCII capitals. */
export function asciiLetters(s: string): string {
  let out = "";
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (c >= FULL_WIDTH_A && c < FULL_WIDTH_A + 26) {
      out += String.fromCharCode(65 + c - FULL_WIDTH_A);
    } else if (c >= 0xff41 && c < 0xff41 + 26) {
      out += String.fromCharCode(65 + c - 0xff41);
    } else out += ch.toUpperCase();
  }
  return out;
}

/**
 * A benchmark's answer field → sorted, de-duplicated letters, all among `letters`; a string
 * starting with `!` is the reason it is not usable. Separators (spaces, commas, 、) are allowed.
 */
export function normalizeAnswer(
  raw: unknown,
  letters: readonly string[],
): string {
  if (typeof raw !== "string" || raw.trim() === "") return "!no answer";
  const s = asciiLetters(raw).replace(/[\s,，、;；/]+/g, "");
  if (!/^[A-Z]+$/.test(s)) {
    return `!answer ${JSON.stringify(raw)} is not option letters`;
  }
  const set = [...new Set(s)].sort();
  const missing = set.filter((l) => !letters.includes(l));
  if (missing.length) {
    return `!answer ${JSON.stringify(raw)} names option ${missing.join("")}, which the question ` +
      `does not have (options ${letters.join("")})`;
  }
  return set.join("");
}

/**
 * Checks an option map: letters consecutive from A, at least two, no empty text. Returns the
 * cleaned map (texts trimmed; empty trailing options such as CMB's blank `E` dropped) or a reason.
 */
export function checkOptions(
  raw: Record<string, unknown>,
): { options: Record<string, string> } | { reason: string } {
  const entries = Object.entries(raw).map(([k, v]) => [asciiLetters(k.trim()), v] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const texts: string[] = [];
  for (const [k, v] of entries) {
    if (!/^[A-Z]$/.test(k)) {
      return { reason: `option key ${JSON.stringify(k)} is not a letter` };
    }
    if (
      v !== null && v !== undefined && typeof v !== "string" &&
      typeof v !== "number"
    ) {
      return { reason: `option ${k} is not text` };
    }
    texts.push(v === null || v === undefined ? "" : String(v).trim());
  }
  const keys = entries.map(([k]) => k);
  const expected = optionLetters(keys.length);
  if (keys.join("") !== expected.join("")) {
    return {
      reason: `option letters ${keys.join("")} are not consecutive from A`,
    };
  }
  while (texts.length && texts[texts.length - 1] === "") texts.pop();
  const empty = texts.findIndex((t) => t === "");
  if (empty >= 0) return { reason: `option ${expected[empty]} is empty` };
  if (texts.length < 2) return { reason: `only ${texts.length} option(s)` };
  const options: Record<string, string> = {};
  texts.forEach((t, i) => options[expected[i]] = t);
  return { options };
}

/**
 * Options packed in one string (`A:…\nB:…`, also `A. … B. …`, `（A）…`, full-width letters)
 * → option map. Letters must appear in order from A; returns null when no `A` option is found.
 */
export function parsePackedOptions(
  packed: string,
): Record<string, string> | null {
  const s = packed.replace(
    /[Ａ-Ｚ]/g,
    (c) => String.fromCharCode(c.charCodeAt(0) - 0xff21 + 65),
  );
  const marker = (letter: string) =>
    new RegExp(
      `(?:^|[\\s;；,，、])[（(]?${letter}\\s*[)）]?\\s*[:：.．、)）]\\s*`,
      "g",
    );
  const starts: { at: number; body: number }[] = [];
  let from = 0;
  for (let i = 0; i < 26; i++) {
    const re = marker(String.fromCharCode(65 + i));
    re.lastIndex = from;
    const m = re.exec(s);
    if (!m) break;
    starts.push({ at: m.index, body: m.index + m[0].length });
    from = m.index + m[0].length;
  }
  if (starts.length === 0) return null;
  const options: Record<string, string> = {};
  starts.forEach((st, i) => {
    const end = i + 1 < starts.length ? starts[i + 1].at : s.length;
    options[String.fromCharCode(65 + i)] = s.slice(st.body, end).trim().replace(
      /[;；,，、]$/,
      "",
    )
      .trim();
  });
  return options;
}

/** The file name without folders and extension. */
export function fileStem(path: string): string {
  const base = path.split(/[\\/]/).pop() ?? path;
  return base.replace(/\.[^.]+$/, "");
}
