/**
 * ChatGLM-6B (v1): config, input format (masks, 2-D positions), parameter table, the GPU model
 * with KV cache, loading from HF model directories, memory planning.
 *
 * @module
 */

export {
  type ChatGLMConfig,
  parseChatGLMConfig,
  readChatGLMConfig,
  RESIDUAL_ALPHA,
} from "./config.ts";
export {
  buildMask,
  buildPositions,
  canAttend,
  contextOf,
  layoutRows,
  positionAt,
  type RowLayout,
} from "./inputs.ts";
export {
  checkParameters,
  isIgnoredTensor,
  LINEAR_MODULES,
  type LinearModule,
  linearModuleName,
  linearModules,
  linearShape,
  parameterTable,
  type ParamSpec,
} from "./params.ts";

export {
  assembleChatGLM,
  type CacheSlot,
  type ChatGLMBlock,
  type ChatGLMCache,
  type ChatGLMModel,
  type ChatGLMParts,
  type ForwardOptions,
  type PrefillOptions,
  type SlotPrompt,
  type SlotStep,
  type StepProfile,
} from "./model.ts";
export {
  adapterFromModel,
  assembleWeights,
  attachAdapter,
  detachAdapter,
  loadModel,
  type LoadModelOptions,
  mergeAdapter,
  modelLinears,
} from "./load.ts";
export {
  assertPlanFits,
  formatMemoryPlan,
  type MemoryPlan,
  type MemoryPlanOptions,
  planMemory,
} from "./memory_plan.ts";
export { type LoadProgress, uploadChatGLMWeights, type WeightDtype } from "./weights.ts";
export {
  randomChatGLM,
  randomChatGLMWeights,
  type RandomModelOptions,
  type RandomTensor,
} from "./random_init.ts";
