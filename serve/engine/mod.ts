// The generation engine: continuous-batching scheduler over a decoder, sampling, streaming.
export {
  buildEngine,
  type CreateEngineOptions,
  DEFAULT_MAX_BATCH,
  type LocalEngine,
  type TokenDelta,
  type TokenRequest,
} from "./engine.ts";
export {
  type Decoder,
  type SlotCache,
  type SlotModel,
  webgpuDecoder,
  type WebGpuDecoderOptions,
} from "./decoder.ts";
export { createScheduler, type Scheduler, type SequenceRequest } from "./scheduler.ts";
export { argmax, chooseToken, maskInvalidUtf8, type SamplerSettings } from "./sampling.ts";
export {
  BUILTIN_GENERATION_DEFAULTS,
  type GenerationDefaults,
  parseGenerationConfig,
  readGenerationDefaults,
  withGenerationDefaults,
} from "./generation_defaults.ts";
export {
  type ByteTokens,
  byteTokens,
  byteTokensOf,
  type PendingChar,
  pendingChar,
} from "./utf8_tokens.ts";
export { createTextStream, type TextStream, type TextStreamOptions } from "./text_stream.ts";
export * from "./types.ts";
export {
  type BackendChoice,
  type BackendName,
  chooseBackend,
  EngineLoadError,
  loadEngine,
  type LoadEngineOptions,
} from "./load.ts";
export { createEngine } from "./create.ts";
