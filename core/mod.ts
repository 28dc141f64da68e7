// @medglm/core: the tensor core — WebGPU device, tensors, WGSL kernels, nn layers, models,
// PEFT adapters and checkpoint IO.
export * from "./gpu/mod.ts";
export * from "./tensor/mod.ts";
export * from "./kernels/mod.ts";
export * from "./io/mod.ts";
export * from "./nn/mod.ts";
export * from "./models/mod.ts";
export * from "./adapters/mod.ts";
export * from "./onnx/mod.ts";

export * from "./autograd/mod.ts";

// Used by the members above core beyond the folders' own mod.ts.
export { BASE_QUANTIZATION_KEY, baseQuantizationValue } from "./adapters/peft_config.ts";
export { loadModel as loadChatGLM } from "./models/chatglm/load.ts";
export {
  describeModelWeights,
  describeQuant,
  type QuantizeOption,
  quantSpecOf,
  resolveQuantization,
} from "./models/chatglm/quantized.ts";
export { CHATGLM_6B, writeSyntheticCheckpoint } from "./models/chatglm/synthetic_checkpoint.ts";
export { randomLlama, randomLlamaWeights } from "./models/llama/random_init.ts";
export {
  adapterFromModelFor,
  buildTrainBatchFor,
  linearModulesOf,
  prepareTrainingFor,
  trainForwardFor,
  uploadTrainBatchFor,
} from "./models/training.ts";
export { MS_DOMAIN, toMatMulNBits } from "./onnx/matmul_nbits.ts";
export { quantizeF16, storedBytes } from "./quant/arith.ts";
export { parseQuantizeFlag } from "./quant/flag.ts";
export { type QuantSpec } from "./quant/format.ts";
export {
  type QuantBufferStorage,
  type QuantTextureStorage,
  uploadQuantWeight,
} from "./quant/gpu_weight.ts";
