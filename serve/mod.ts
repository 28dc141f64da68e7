// @medglm/serve: the engine contract, the Hono app and the web chat page.
export * from "./engine/types.ts";
export * from "./http/mod.ts";
export * from "./page/mod.ts";
export * from "./engine/mod.ts";
export * from "./onnx/mod.ts";
export * from "./prompt_flags.ts";
