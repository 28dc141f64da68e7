// Byte-level BPE from a Hugging Face tokenizer.json (Qwen2/2.5, Qwen3, Llama 3).
export {
  type AddedToken,
  type ByteLevelDecodeOptions,
  type ByteLevelEncodeOptions,
  type ByteLevelTokenizer,
  type ByteLevelTokenizerOptions,
  createByteLevelTokenizer,
} from "./tokenizer.ts";
export { hasTokenizerJson, loadByteLevelTokenizer } from "./load.ts";
export { BYTE_TO_CHAR, fromByteLevel, toByteLevel } from "./byte_map.ts";
export { translatePattern, WHITE_SPACE } from "./pretokenizer.ts";
export { bpeIds, bpeWordIds, createBpeModel } from "./bpe.ts";
export { type ByteLevelPipeline, trainByteLevelBpe, type TrainByteLevelOptions } from "./train.ts";
