// The ChatGLM-6B tokenizer wrapper.
export {
  type ChatGLMTokenizer,
  createTokenizer,
  type CreateTokenizerOptions,
  type EncodeOptions,
  type TokenizerConfig,
} from "./tokenizer.ts";
export { loadTokenizer, type LoadTokenizerOptions } from "./load.ts";
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
