/** The data set builder: config, pipeline, shards, manifest and the token shard reader. */
export { buildDataset, type BuildOptions, type BuildResult } from "./pipeline.ts";
export {
  ConfigError,
  type DatasetConfig,
  loadConfig,
  resolveConfig,
  type ResolvedConfig,
  type SourceConfig,
  type TokenConfig,
  validateConfig,
} from "./config.ts";
export {
  decodeTokenShard,
  encodeTokenShard,
  readTokenShard,
  streamTokenShard,
  TOKEN_SHARD_MAGIC,
  type TokenExample,
  type TokenShard,
} from "./token_shard.ts";
export {
  type FileStats,
  formatBuildSummary,
  formatWarning,
  type LanguageFlow,
  type Manifest,
  MANIFEST_FORMAT,
  readManifest,
  type SourceStats,
  tokenShardPaths,
} from "./manifest.ts";
export { applyWeight, splitIndices, splitIndicesBy, validCount } from "./split.ts";
export { bucketOrder, checkPromptFormat, lengthHistogram, tokenizeRecord } from "./tokenize.ts";
