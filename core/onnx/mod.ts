/**
 * `core/onnx`: our own ONNX protobuf writer and the graph exporters of ChatGLM-6B and the Llama
 * family (KV cache as inputs/outputs, f32 or f16-stored weights, adapters merged, external data
 * for large models), and the input rules (masks, positions) a runner feeds each graph.
 *
 * @module
 */

export { encodeVarint, type ProtoMessage, protoMessage } from "./protobuf.ts";
export {
  attr,
  encodeOnnxModel,
  initializerByteLength,
  ONNX_DTYPES,
  type OnnxAttribute,
  type OnnxDtype,
  onnxDtypeSize,
  type OnnxGraph,
  type OnnxInitializer,
  type OnnxModelOptions,
  type OnnxNode,
  type OnnxValueInfo,
  writeOnnxModel,
  type WriteOnnxOptions,
} from "./onnx_model.ts";
export { createGraphBuilder, type GraphBuilder, type NodeOptions } from "./graph_builder.ts";
export {
  buildChatGLMGraph,
  cacheNames,
  type ChatGLMGraphOptions,
  EXPORTER_VERSION,
  ONNX_OPSET,
  type OnnxWeightDtype,
  rotaryTables,
  type WeightReader,
} from "./export_chatglm.ts";
export { buildLlamaGraph, LLAMA_EXPORTER_VERSION, type LlamaGraphOptions } from "./export_llama.ts";
export { type OnnxInputRules, onnxInputRules } from "./input_rules.ts";
export {
  adapterHash,
  checkExportMatchesModel,
  configHash,
  isLlamaConfig,
  ONNX_DATA_FILE,
  ONNX_EXPORT_INFO,
  ONNX_MODEL_FILE,
  type OnnxExportInfo,
  type OnnxModelConfig,
  readOnnxExportInfo,
} from "./export_info.ts";
export { exportChatGLMToOnnx, exportModelToOnnx, type ExportOnnxOptions } from "./export_dir.ts";
