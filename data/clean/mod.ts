/** Cleaning: repairs, filters, language tags and de-duplication of normalized records. */
export {
  type CleanOptions,
  type CleanRecord,
  cleanRecord,
  createDeduper,
  type Deduper,
  DEFAULT_CLEAN_OPTIONS,
} from "./clean.ts";
export { exactKey, normalizedKey, normalizeForKey } from "./dedup.ts";
export { type Language, languageOf } from "./language.ts";
export { repairText, substitute } from "./text.ts";
export { createTally, type Tally } from "./tally.ts";
