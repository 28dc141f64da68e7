/**
 * The cleaning stage over normalized records: trim and safe repairs, placeholder substitution,
 * empty checks after repair, optional language and length filters, then exact and normalized
 * de-duplication across all sources (the first occurrence, in config and file order, wins).
 */

import type { SourceRecord } from "../sources/types.ts";
import { HashTable64 } from "./hash_table.ts";
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
  /**
   * True when `r` is new (and remembers it); false (after warning) for a duplicate. `id` is the
   * caller's number for the record, turned back into an origin by `originOf` for the warning.
   */
  add(r: SourceRecord, id?: number): boolean;
}

// A 64-bit hash (two 32-bit multiply-xor lanes over the UTF-16 units): memory per unique record
// stays small whatever the record's length, and it is several times cheaper than a crypto
// digest. Two different records share a hash with probability about n²/2^65 (1e-7 for ten
// million records). Returns the high lane; the low one is left in `hashLo`.
let hashLo = 0;
function hashKey(key: string): number {
  let h1 = 0x811c9dc5 ^ key.length, h2 = 0x9747b28c;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
    h2 ^= h2 >>> 15;
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 0x85ebca6b);
  h1 = Math.imul(h1 ^ (h1 >>> 13), 0xc2b2ae35) ^ (h1 >>> 16);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 0x85ebca6b);
  h2 = Math.imul(h2 ^ (h2 >>> 13), 0xc2b2ae35) ^ (h2 >>> 16);
  hashLo = h2 >>> 0;
  return h1 >>> 0;
}

/**
 * The de-duplication set keeps only 64-bit hashes of the keys (`HashTable64`) and, per hash, a number: the caller's
 * record id when `originOf` is given (the build), else the index of a kept origin string.
 */
export function createDeduper(
  mode: CleanOptions["dedup"],
  tally: Tally,
  originOf?: (id: number) => string,
): Deduper {
  const exact = new HashTable64();
  const normalized = new HashTable64();
  const origins: string[] = [];
  const ref = (r: SourceRecord, id?: number) => {
    if (originOf && id !== undefined) return id;
    origins.push(r.origin);
    return origins.length - 1;
  };
  const origin = (n: number) => (originOf ? originOf(n) : origins[n]);
  return {
    add(r, id) {
      if (mode === "none") return true;
      const eh = hashKey(exactKey(r)), el = hashLo;
      const firstExact = exact.get(eh, el);
      if (firstExact >= 0) {
        warn(tally, {
          ...fileAndLine(r.origin),
          action: "duplicate-exact",
          reason: `same as ${origin(firstExact)}`,
        });
        return false;
      }
      // the exact key is remembered even when the record then turns out a normalized duplicate
      const n = ref(r, id);
      exact.set(eh, el, n);
      if (mode === "normalized") {
        const nh = hashKey(normalizedKey(r)), nl = hashLo;
        const firstNorm = normalized.get(nh, nl);
        if (firstNorm >= 0) {
          warn(tally, {
            ...fileAndLine(r.origin),
            action: "duplicate-normalized",
            reason: `same as ${origin(firstNorm)} after normalization`,
          });
          return false;
        }
        normalized.set(nh, nl, n);
      }
      return true;
    },
  };
}
