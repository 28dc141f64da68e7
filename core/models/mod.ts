/** `core/models`: model architectures. ChatGLM-6B (v1) first. @module */

export * from "./chatglm/mod.ts";
export { DEMO_MODEL_DIR } from "./demo_dir.ts";
