/**
 * The cleaning stage over normalized records: trim and safe repairs, placeholder substitution,
 * empty checks after repair, optional language and length filters, then exact and normalized
 * de-duplication across all sources (the first occurrence, in config and file order, wins).
 */

import type { SourceRecord } from "../sources/types.ts";
import { exactKey, normalizedKey } from "./dedup.ts";
import { type Language, languageOf } from "./language.ts";
import { repairText, substitute } from "./text.ts";
import { count, type Tally, warn } from "./tally.ts";

export interface CleanOptions {
  /** Turn a literal two-character `\n` into a newline in texts that have no real newline. */
  repairLiteralNewlines: boolean;
  /** `normalized` also drops records equal after NFKC/case/whitespace/punctuation folding. */
  dedup: "normalized" | "exact" | "none";
  /** Keep only these languages (`zh`, `en`, `other`); null keeps all. */
  languages: Language[] | null;
  /** Drop records whose instruction+input+output is longer than this many characters. */
  maxChars: number | null;
}

export const DEFAULT_CLEAN_OPTIONS: CleanOptions = {
  repairLiteralNewlines: true,
  dedup: "normalized",
  languages: null,
  maxChars: null,
};

/** A cleaned record and its language tag. */
export interface CleanRecord extends SourceRecord {
  lang: Language;
}

function fileAndLine(origin: string): { file: string; line?: number } {
  const m = /^(.*):(\d+)(?:#\d+)?$/.exec(origin);
  return m ? { file: m[1], line: Number(m[2]) } : { file: origin };
}

/** Repairs and filters one record; returns null (after warning) when it is dropped. */
export function cleanRecord(
  r: SourceRecord,
  options: CleanOptions,
  tally: Tally,
  substitutions?: Record<string, string>,
): CleanRecord | null {
  let trimmed = false, literal = false;
  const fix = (s: string) => {
    const res = repairText(
      substitutions ? substitute(s, substitutions) : s,
      options.repairLiteralNewlines,
    );
    trimmed ||= res.trimmed;
    literal ||= res.literalNewlines;
    return res.text;
  };
  const instruction = fix(r.instruction);
  const input = fix(r.input);
  const output = fix(r.output);
  let history: [string, string][] | undefined;
  if (r.history) history = r.history.map(([q, a]) => [fix(q), fix(a)]);
  if (trimmed) count(tally, "trimmed");
  if (literal) count(tally, "repaired-literal-newline");
  const where = fileAndLine(r.origin);
  if (instruction === "" || output === "") {
    warn(tally, {
      ...where,
      action: "dropped-empty",
      reason: `empty ${instruction === "" ? "instruction" : "output"} after cleaning`,
    });
    return null;
  }
  const all = instruction + input + output;
  if (options.maxChars !== null && all.length > options.maxChars) {
    warn(tally, {
      ...where,
      action: "too-long",
      reason: `${all.length} characters > maxChars ${options.maxChars}`,
    });
    return null;
  }
  const lang = languageOf(all);
  count(tally, `lang-${lang}`);
  if (options.languages && !options.languages.includes(lang)) {
    warn(tally, { ...where, action: "dropped-language", reason: `language ${lang} not kept` });
    return null;
  }
  const out: CleanRecord = { instruction, input, output, source: r.source, origin: r.origin, lang };
  if (history && history.length > 0) out.history = history;
  return out;
}

/** Incremental de-duplication across everything added so far. */
export interface Deduper {
  /** True when `r` is new (and remembers it); false (after warning) for a duplicate. */
  add(r: SourceRecord): boolean;
}

export function createDeduper(mode: CleanOptions["dedup"], tally: Tally): Deduper {
  const exact = new Map<string, string>();
  const normalized = new Map<string, string>();
  return {
    add(r) {
      if (mode === "none") return true;
      const ek = exactKey(r);
      const firstExact = exact.get(ek);
      if (firstExact !== undefined) {
        warn(tally, {
          ...fileAndLine(r.origin),
          action: "duplicate-exact",
          reason: `same as ${firstExact}`,
        });
        return false;
      }
      exact.set(ek, r.origin);
      if (mode === "normalized") {
        const nk = normalizedKey(r);
        const firstNorm = normalized.get(nk);
        if (firstNorm !== undefined) {
          warn(tally, {
            ...fileAndLine(r.origin),
            action: "duplicate-normalized",
            reason: `same as ${firstNorm} after normalization`,
          });
          return false;
        }
        normalized.set(nk, r.origin);
      }
      return true;
    },
  };
}
