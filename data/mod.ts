// @medglm/data: the tokenizer, the prompt builder and the data set builder.
export * from "./tokenizer/mod.ts";
export * from "./prompt/mod.ts";
export * from "./build/mod.ts";
export * from "./sources/mod.ts";
export * from "./clean/mod.ts";

export { arrayItemStarts, findJsonError, lineIndex } from "./sources/json_text.ts";
