// @medglm/base: the small helpers every member uses, below all of them: number flags, atomic
// writes, progress bars, seeded random numbers, JSON read with size caps and friendly errors.

export { pathExists, syncDir, writeFileAtomic, writeJsonAtomic } from "./atomic.ts";
export { FlagError, intFlag, numberFlag } from "./flags.ts";
export {
  isJsonObject,
  type JsonObject,
  type JsonValue,
  MAX_CONFIG_JSON_BYTES,
  MAX_INDEX_JSON_BYTES,
  parseJsonStrict,
  readJsonFile,
  type ReadJsonFileOptions,
} from "./json_strict.ts";
export {
  createProgress,
  formatCount,
  formatDuration,
  type Progress,
  type ProgressOptions,
  type ProgressStream,
} from "./progress.ts";
export { createRng, fnv1a, type Rng, rngFromState, seedFor, shuffle } from "./random.ts";
