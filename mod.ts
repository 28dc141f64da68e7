// medglm: Chinese medical question answering with ChatGLM-family models on Deno and WebGPU.
// Each member's public API, re-exported; import a member's mod.ts directly for a smaller graph.
export * from "./base/mod.ts";
export * from "./core/mod.ts";
export * from "./data/mod.ts";
export * from "./train/mod.ts";
export * from "./serve/mod.ts";
export * from "./bot/mod.ts";
export * from "./eval/mod.ts";
export * from "./demo/mod.ts";
