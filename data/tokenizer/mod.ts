// @medglm/data tokenizer: SentencePiece port + the ChatGLM-6B wrapper; byte-level BPE from tokenizer.json.
export * from "./chatglm/mod.ts";
export * from "./sentencepiece/mod.ts";
export * from "./bytelevel/mod.ts";
