// @medglm/data tokenizer: SentencePiece port + the ChatGLM-6B wrapper.
export * from "./chatglm/mod.ts";
export * from "./sentencepiece/mod.ts";
