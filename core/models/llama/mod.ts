/**
 * The Llama family (Qwen2 / Qwen2.5, Qwen3, Llama 3): config (both layouts), parameter table, the
 * block (once, for inference and training), the GPU model with KV cache and slots, the training
 * pass, loading. README.md maps the spec (tests/fixtures/llama-family/README.md) to the code.
 *
 * @module
 */

export {
  LLAMA_MODEL_TYPES,
  type LlamaConfig,
  type LlamaModelType,
  parseLlamaConfig,
  readLlamaConfig,
  type RopeConfig,
} from "./config.ts";
export {
  checkParameters as checkLlamaParameters,
  linearShapes as llamaLinearShapes,
  LLAMA_LINEARS,
  llamaParameters,
} from "./params.ts";
export { llamaInvFreq } from "./rotary.ts";
export { type Attend as LlamaAttend, type LlamaBlock, llamaBlock } from "./block.ts";
export { llamaHidden, type LlamaStack } from "./forward.ts";
export { assembleLlama, type LlamaModel, llamaModelParameters } from "./model.ts";
export {
  attachLlamaAdapter,
  defaultLlamaContext,
  llamaLinears,
  llamaQuantArch,
  loadLlamaModel,
} from "./load.ts";
export { llamaPlanArch } from "./memory_plan.ts";
export {
  buildLlamaTrainBatch,
  llamaTrainForward,
  prepareLlamaTraining,
  uploadLlamaTrainBatch,
} from "./train.ts";
