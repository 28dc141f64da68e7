// @medglm/data tokenizer: one interface (common.ts) over ChatGLM-6B's SentencePiece tokenizer and
// the byte-level BPE of tokenizer.json; `loadTokenizer(dir)` picks by the files of the directory.
export * from "./chatglm/mod.ts";
export * from "./sentencepiece/mod.ts";
export * from "./bytelevel/mod.ts";
export type {
  Tokenizer,
  TokenizerDecodeOptions,
  TokenizerEncodeOptions,
  TokenizerKind,
} from "./common.ts";
export { type AnyTokenizer, detectTokenizerKind, generationEndIds, loadTokenizer } from "./load.ts";
