/**
 * ChatGLM-6B (v1): config, input format (masks, 2-D positions), parameter table, the block (once,
 * for inference and training), the GPU model with KV cache and slots, the training pass, loading
 * from HF model directories, memory planning. README.md maps the spec to the code.
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
  type ChatGLMModel,
  type ChatGLMParts,
  type ForwardOptions,
  modelParameters,
  type PrefillOptions,
  type SlotPrompt,
  type SlotStep,
  type StepProfile,
} from "./model.ts";
export { type Attend, blockLinears, type ChatGLMBlock, chatglmBlock } from "./block.ts";
export { cachedAttention, fullAttention, slotAttention } from "./attention.ts";
export { type CacheSlot, type CacheView, type ChatGLMCache, createCache } from "./cache.ts";
export { chatglmHidden, type ChatGLMStack, type StackOptions } from "./forward.ts";
export { rotaryTableSize } from "./rotary.ts";
export { buildTrainBatch, type TrainBatch } from "./train_batch.ts";
export {
  prepareTraining,
  type TrainableParam,
  type TrainBatchTensors,
  trainForward,
  type TrainForwardOptions,
  type TrainingModel,
  trainingTape,
  uploadTrainBatch,
} from "./train_forward.ts";
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
  chatglmPlanArch,
  formatMemoryPlan,
  type MemoryPlan,
  type MemoryPlanOptions,
  type PlanArch,
  planMemory,
  planMemoryOf,
} from "./memory_plan.ts";
export { type LoadProgress, uploadChatGLMWeights, type WeightDtype } from "./weights.ts";
export {
  randomChatGLM,
  randomChatGLMWeights,
  type RandomModelOptions,
  type RandomTensor,
} from "./random_init.ts";
