/**
 * `serve/onnx`: the ONNX Runtime backend — the model runner over an exported ChatGLM graph
 * (onnxruntime-node, loaded on demand), the engine decoder over it, backend probing for
 * `--backend auto`, and the `export-onnx` command.
 *
 * @module
 */

export {
  availableProviders,
  loadOrt,
  type OrtModule,
  type OrtSession,
  type OrtTensor,
} from "./ort.ts";
export {
  createOnnxModel,
  loadOnnxModel,
  type LoadOnnxModelOptions,
  type OnnxCache,
  type OnnxDevice,
  type OnnxForwardInputs,
  type OnnxModel,
  type OnnxStepInputs,
} from "./runner.ts";
export { capacityFor, KvBuffer, type KvShape, spreadMask } from "./kv_buffer.ts";
export { onnxDecoder, type OnnxDecoderOptions } from "./decoder.ts";
export {
  defaultOnnxExportDir,
  loadOnnxDecoder,
  type OnnxBackendOptions,
  type OnnxProbe,
  probeOnnxExport,
} from "./backend.ts";
export { EXPORT_HELP, exportOnnxMain } from "./export_cli.ts";
