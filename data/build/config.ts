/**
 * The build config (a JSON file). Paths in it are relative to the config file's folder: `root`
 * (where the sources' paths start) and `tokens.tokenizer` (a model folder). Every field is
 * checked, and a bad one is reported with its JSON path (`sources[1].weight: …`).
 *
 * ```json
 * { "name": "medical", "root": "../raw", "seed": 42,
 *   "sources": [{ "name": "huatuo", "paths": ["huatuo/data/*.json"], "weight": 1, "cap": 5000, "languages": ["zh"],
 *                 "download": [{ "url": "https://…/llama_data.json", "path": "huatuo/data/llama_data.json" }] }],
 *   "trailingComma": "lenient",
 *   "clean": { "dedup": "normalized", "languages": null, "maxChars": null, "repairLiteralNewlines": true },
 *   "split": { "by": "record", "validRatio": 0.02 },
 *   "shard": { "records": 100000 },
 *   "tokens": { "tokenizer": "../../models/demo", "maxSeqLength": 512, "maxTokens": null, "bucketWindow": 1024 } }
 * ```
 */

import type { CleanOptions } from "../clean/clean.ts";
import type { Language } from "../clean/language.ts";
import type { DownloadSpec } from "../sources/download.ts";

export interface SourceConfig {
  /** Written into every record's `source`. */
  name: string;
  /** Files, folders or globs (`*`, `?`, `**`, `{a,b}`) relative to `root`. */
  paths: string[];
  /** Train-side sampling factor: 2 repeats each training record twice, 0.5 keeps half. */
  weight?: number;
  /** At most this many records from the source (a seeded choice), before the split. */
  cap?: number | null;
  format?: "auto" | "json" | "jsonl" | "csv" | "tsv";
  encoding?: "auto" | "utf-8" | "gb18030";
  /** Column names for header-less CSV/TSV. */
  columns?: string[];
  /** Placeholder replacements (identity data: `{"NAME": "MedGLM"}`). */
  substitute?: Record<string, string>;
  /** Files fetched by `--download` (into `root/<path>`). */
  download?: DownloadSpec[];
  /** A missing plain path is a warning instead of an error. */
  optional?: boolean;
  /**
   * Keep only this source's records in these languages (`zh`, `en`, `other`); null keeps all.
   * Set, it replaces `clean.languages` for this source (e.g. drop the untranslated English records
   * of a translated source while an English source stays whole).
   */
  languages?: Language[] | null;
}

export interface TokenConfig {
  /** Model folder with `tokenizer_config.json` + `ice_text.model`. */
  tokenizer: string;
  /** Prompt ids including `[gMASK]`, `<sop>` (default 512). */
  maxSourceLength?: number;
  /** Target ids without `<eop>` (default 512). */
  maxTargetLength?: number;
  /**
   * Cap on a whole example, `<eop>` included; the target is cut first, then the prompt text.
   * Default `maxSourceLength + maxTargetLength + 1` (the original script's limits only).
   */
  maxSeqLength?: number;
  /** Drop (not truncate) records whose untruncated example is longer than this. */
  maxTokens?: number | null;
  /** Examples sorted by length inside windows of this many (length bucketing; default 1024). */
  bucketWindow?: number;
  /**
   * How a record becomes an example: `instruction` (default; the seed's template, ChatGLM's
   * tokenizer) or `chat-template` (the tokenizer's own chat template, for Qwen/Llama models).
   */
  promptFormat?: TokenPromptFormat;
}

export type TokenPromptFormat = "instruction" | "chat-template";
export const TOKEN_PROMPT_FORMATS: readonly TokenPromptFormat[] = ["instruction", "chat-template"];

export interface DatasetConfig {
  name: string;
  root?: string;
  seed?: number | string;
  sources: SourceConfig[];
  /** `lenient` (default) repairs a single trailing comma before `]` and counts it. */
  trailingComma?: "strict" | "lenient";
  clean?: Partial<CleanOptions>;
  split?: { by?: "record" | "file"; validRatio?: number };
  shard?: { records?: number };
  tokens?: TokenConfig | null;
}

/** A config with every default filled in and paths resolved against `baseDir`. */
export interface ResolvedConfig {
  name: string;
  baseDir: string;
  root: string;
  seed: number | string;
  sources: (Required<Omit<SourceConfig, "cap" | "columns" | "substitute" | "languages">> & {
    cap: number | null;
    /** Absent: `clean.languages` applies (see the pipeline); null: keep all. */
    languages?: Language[] | null;
    columns?: string[];
    substitute?: Record<string, string>;
  })[];
  trailingComma: "strict" | "lenient";
  clean: CleanOptions;
  split: { by: "record" | "file"; validRatio: number };
  shard: { records: number };
  tokens:
    | (Required<Omit<TokenConfig, "maxTokens">> & { maxTokens: number | null; dir: string })
    | null;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

function fail(where: string, msg: string): never {
  throw new ConfigError(`${where}: ${msg}`);
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function checkKeys(v: Record<string, unknown>, allowed: string[], where: string): void {
  for (const k of Object.keys(v)) {
    if (!allowed.includes(k)) {
      fail(`${where}.${k}`, `unknown field (allowed: ${allowed.join(", ")})`);
    }
  }
}

function str(v: unknown, where: string): string {
  if (typeof v !== "string" || v === "") fail(where, "expected a non-empty string");
  return v as string;
}

function num(v: unknown, where: string, min: number, integer = false): number {
  if (
    typeof v !== "number" || !Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))
  ) {
    fail(
      where,
      `expected ${integer ? "an integer" : "a number"} >= ${min}, got ${JSON.stringify(v)}`,
    );
  }
  return v as number;
}

function oneOf<T extends string>(v: unknown, options: readonly T[], where: string): T {
  if (!options.includes(v as T)) {
    fail(where, `expected one of ${options.join(", ")}, got ${JSON.stringify(v)}`);
  }
  return v as T;
}

/** Checks a parsed config object; throws `ConfigError` naming the first bad field. */
export function validateConfig(value: unknown, where = "config"): DatasetConfig {
  if (!isObj(value)) fail(where, "expected a JSON object");
  const c = value as Record<string, unknown>;
  checkKeys(
    c,
    [
      "name",
      "root",
      "seed",
      "sources",
      "trailingComma",
      "clean",
      "split",
      "shard",
      "tokens",
      "description",
    ],
    where,
  );
  str(c.name, `${where}.name`);
  if (!/^[\w.-]+$/.test(c.name as string)) {
    fail(`${where}.name`, "use letters, digits, '.', '_' or '-'");
  }
  if (c.root !== undefined) str(c.root, `${where}.root`);
  if (c.seed !== undefined && typeof c.seed !== "string") num(c.seed, `${where}.seed`, 0, true);
  if (!Array.isArray(c.sources) || c.sources.length === 0) {
    fail(`${where}.sources`, "expected a non-empty list of sources");
  }
  const names = new Set<string>();
  (c.sources as unknown[]).forEach((s, i) => {
    const w = `${where}.sources[${i}]`;
    if (!isObj(s)) fail(w, "expected an object");
    checkKeys(
      s,
      [
        "name",
        "paths",
        "weight",
        "cap",
        "format",
        "encoding",
        "columns",
        "substitute",
        "download",
        "optional",
        "languages",
      ],
      w,
    );
    const name = str(s.name, `${w}.name`);
    if (names.has(name)) fail(`${w}.name`, `duplicate source name "${name}"`);
    names.add(name);
    if (!Array.isArray(s.paths) || s.paths.length === 0) {
      fail(`${w}.paths`, "expected a non-empty list");
    }
    (s.paths as unknown[]).forEach((p, j) => str(p, `${w}.paths[${j}]`));
    if (s.weight !== undefined) num(s.weight, `${w}.weight`, 0);
    if (s.cap !== undefined && s.cap !== null) num(s.cap, `${w}.cap`, 0, true);
    if (s.format !== undefined) {
      oneOf(s.format, ["auto", "json", "jsonl", "csv", "tsv"], `${w}.format`);
    }
    if (s.encoding !== undefined) oneOf(s.encoding, ["auto", "utf-8", "gb18030"], `${w}.encoding`);
    if (s.columns !== undefined) {
      if (!Array.isArray(s.columns) || s.columns.length === 0) {
        fail(`${w}.columns`, "expected a list of names");
      }
      (s.columns as unknown[]).forEach((p, j) => str(p, `${w}.columns[${j}]`));
    }
    if (s.substitute !== undefined) {
      if (!isObj(s.substitute)) fail(`${w}.substitute`, "expected an object of strings");
      for (const [k, v] of Object.entries(s.substitute)) {
        if (typeof v !== "string" || k === "") fail(`${w}.substitute.${k}`, "expected a string");
      }
    }
    if (s.languages !== undefined && s.languages !== null) {
      if (!Array.isArray(s.languages)) fail(`${w}.languages`, "expected a list or null");
      (s.languages as unknown[]).forEach((l, j) =>
        oneOf(l, ["zh", "en", "other"] as Language[], `${w}.languages[${j}]`)
      );
    }
    if (s.optional !== undefined && typeof s.optional !== "boolean") {
      fail(`${w}.optional`, "expected true or false");
    }
    if (s.download !== undefined) {
      if (!Array.isArray(s.download)) fail(`${w}.download`, "expected a list");
      (s.download as unknown[]).forEach((d, j) => {
        const dw = `${w}.download[${j}]`;
        if (!isObj(d)) fail(dw, "expected an object");
        checkKeys(d, ["url", "path", "sha256", "size"], dw);
        const url = str(d.url, `${dw}.url`);
        if (!/^https?:\/\//.test(url)) fail(`${dw}.url`, "expected an http(s) URL");
        str(d.path, `${dw}.path`);
        if (d.sha256 !== undefined && !/^[0-9a-fA-F]{64}$/.test(String(d.sha256))) {
          fail(`${dw}.sha256`, "expected 64 hex digits");
        }
        if (d.size !== undefined) num(d.size, `${dw}.size`, 0, true);
      });
    }
  });
  if (c.trailingComma !== undefined) {
    oneOf(c.trailingComma, ["strict", "lenient"], `${where}.trailingComma`);
  }
  if (c.clean !== undefined) {
    const w = `${where}.clean`;
    if (!isObj(c.clean)) fail(w, "expected an object");
    const cl = c.clean as Record<string, unknown>;
    checkKeys(cl, ["repairLiteralNewlines", "dedup", "languages", "maxChars"], w);
    if (cl.repairLiteralNewlines !== undefined && typeof cl.repairLiteralNewlines !== "boolean") {
      fail(`${w}.repairLiteralNewlines`, "expected true or false");
    }
    if (cl.dedup !== undefined) oneOf(cl.dedup, ["normalized", "exact", "none"], `${w}.dedup`);
    if (cl.languages !== undefined && cl.languages !== null) {
      if (!Array.isArray(cl.languages)) fail(`${w}.languages`, "expected a list or null");
      (cl.languages as unknown[]).forEach((l, j) =>
        oneOf(l, ["zh", "en", "other"] as Language[], `${w}.languages[${j}]`)
      );
    }
    if (cl.maxChars !== undefined && cl.maxChars !== null) {
      num(cl.maxChars, `${w}.maxChars`, 1, true);
    }
  }
  if (c.split !== undefined) {
    const w = `${where}.split`;
    if (!isObj(c.split)) fail(w, "expected an object");
    const sp = c.split as Record<string, unknown>;
    checkKeys(sp, ["by", "validRatio"], w);
    if (sp.by !== undefined) oneOf(sp.by, ["record", "file"], `${w}.by`);
    if (sp.validRatio !== undefined) {
      const r = num(sp.validRatio, `${w}.validRatio`, 0);
      if (r >= 1) fail(`${w}.validRatio`, "expected a number below 1");
    }
  }
  if (c.shard !== undefined) {
    const w = `${where}.shard`;
    if (!isObj(c.shard)) fail(w, "expected an object");
    checkKeys(c.shard as Record<string, unknown>, ["records"], w);
    const r = (c.shard as Record<string, unknown>).records;
    if (r !== undefined) num(r, `${w}.records`, 1, true);
  }
  if (c.tokens !== undefined && c.tokens !== null) {
    const w = `${where}.tokens`;
    if (!isObj(c.tokens)) fail(w, "expected an object or null");
    const t = c.tokens as Record<string, unknown>;
    checkKeys(
      t,
      [
        "tokenizer",
        "maxSourceLength",
        "maxTargetLength",
        "maxSeqLength",
        "maxTokens",
        "bucketWindow",
        "promptFormat",
      ],
      w,
    );
    if (
      t.promptFormat !== undefined &&
      !TOKEN_PROMPT_FORMATS.includes(t.promptFormat as TokenPromptFormat)
    ) {
      fail(
        `${w}.promptFormat`,
        `expected one of ${TOKEN_PROMPT_FORMATS.join(", ")} (got ${
          JSON.stringify(t.promptFormat)
        })`,
      );
    }
    str(t.tokenizer, `${w}.tokenizer`);
    if (t.maxSourceLength !== undefined) num(t.maxSourceLength, `${w}.maxSourceLength`, 3, true);
    if (t.maxTargetLength !== undefined) num(t.maxTargetLength, `${w}.maxTargetLength`, 1, true);
    if (t.maxSeqLength !== undefined) num(t.maxSeqLength, `${w}.maxSeqLength`, 3, true);
    if (t.maxTokens !== undefined && t.maxTokens !== null) {
      num(t.maxTokens, `${w}.maxTokens`, 3, true);
    }
    if (t.bucketWindow !== undefined) num(t.bucketWindow, `${w}.bucketWindow`, 1, true);
  }
  return c as unknown as DatasetConfig;
}

function resolvePath(base: string, p: string): string {
  if (p.startsWith("/")) return p;
  const parts = base.split("/");
  for (const seg of p.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") {
      if (parts.length > 1) parts.pop();
    } else parts.push(seg);
  }
  return parts.join("/") || "/";
}

/** Fills defaults and resolves paths against `baseDir` (the config file's folder). */
export function resolveConfig(config: DatasetConfig, baseDir: string): ResolvedConfig {
  validateConfig(config);
  const base = baseDir.startsWith("/") ? baseDir : resolvePath(Deno.cwd(), baseDir);
  const t = config.tokens;
  return {
    name: config.name,
    baseDir: base,
    root: resolvePath(base, config.root ?? "."),
    seed: config.seed ?? 42,
    sources: config.sources.map((s) => ({
      name: s.name,
      paths: s.paths,
      weight: s.weight ?? 1,
      cap: s.cap ?? null,
      format: s.format ?? "auto",
      encoding: s.encoding ?? "auto",
      ...(s.columns ? { columns: s.columns } : {}),
      ...(s.substitute ? { substitute: s.substitute } : {}),
      download: s.download ?? [],
      optional: s.optional ?? false,
      ...(s.languages !== undefined ? { languages: s.languages } : {}),
    })),
    trailingComma: config.trailingComma ?? "lenient",
    clean: {
      repairLiteralNewlines: config.clean?.repairLiteralNewlines ?? true,
      dedup: config.clean?.dedup ?? "normalized",
      languages: config.clean?.languages ?? null,
      maxChars: config.clean?.maxChars ?? null,
    },
    split: { by: config.split?.by ?? "record", validRatio: config.split?.validRatio ?? 0.02 },
    shard: { records: config.shard?.records ?? 100_000 },
    tokens: t
      ? {
        tokenizer: t.tokenizer,
        dir: resolvePath(base, t.tokenizer),
        maxSourceLength: t.maxSourceLength ?? 512,
        maxTargetLength: t.maxTargetLength ?? 512,
        maxSeqLength: t.maxSeqLength ?? (t.maxSourceLength ?? 512) + (t.maxTargetLength ?? 512) + 1,
        maxTokens: t.maxTokens ?? null,
        bucketWindow: t.bucketWindow ?? 1024,
        promptFormat: t.promptFormat ?? "instruction",
      }
      : null,
  };
}

/** Reads, checks and resolves a config file. */
export async function loadConfig(
  path: string,
): Promise<{ config: DatasetConfig; resolved: ResolvedConfig }> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new ConfigError(`${path}: cannot read config: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${path}: not valid JSON: ${(err as Error).message}`);
  }
  const config = validateConfig(value, path);
  const abs = path.startsWith("/") ? path : resolvePath(Deno.cwd(), path);
  const dir = abs.slice(0, abs.lastIndexOf("/")) || "/";
  return { config, resolved: resolveConfig(config, dir) };
}
