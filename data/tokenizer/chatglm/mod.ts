// The ChatGLM-6B tokenizer wrapper.
export {
  type ChatGLMTokenizer,
  createTokenizer,
  type CreateTokenizerOptions,
  type EncodeOptions,
  type TokenizerConfig,
} from "./tokenizer.ts";
// `loadTokenizer` of the package is the picking one (../load.ts); this is ChatGLM's own loader.
export { loadTokenizer as loadChatGLMTokenizer, type LoadTokenizerOptions } from "./load.ts";
export {
  chatglmPost,
  chatglmPre,
  cleanUpTokenization,
  isPyWhitespace,
  PY_WHITESPACE,
  pyLstrip,
  pyRstrip,
  pyStrip,
  splitSpecialTokens,
} from "./text.ts";
