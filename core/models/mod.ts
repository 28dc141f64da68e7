/**
 * `core/models`: model architectures: ChatGLM-6B (v1) and the Llama family (Qwen2 / Qwen2.5,
 * Qwen3, Llama 3). `loadModel` picks the architecture from config.json's `model_type`.
 *
 * @module
 */

export * from "./chatglm/mod.ts";
export * from "./llama/mod.ts";
export { type CausalLM, isLlamaModel, KNOWN_MODEL_TYPES, loadModel, modelTypeOf } from "./load.ts";
export { DEMO_MODEL_DIR } from "./demo_dir.ts";
export {
  type DryRunOptions,
  dryRunPlans,
  type DryRunReport,
  planArchOf,
  plannedQuantFormats,
} from "./dry_run.ts";
