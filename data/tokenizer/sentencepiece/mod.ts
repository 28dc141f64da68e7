// SentencePiece (BPE and UNIGRAM) model reader, encoder and decoder.
export {
  hex2,
  type ModelType,
  type NormalizerSpec,
  parseSentencePieceModel,
  pieceToId,
  PieceType,
  pieceTypeName,
  type SentencePieceModel,
  SentencePieceModelError,
} from "./model.ts";
export { createSentencePieceProcessor, type SentencePieceProcessor } from "./processor.ts";
export { decodeIds, decodePieces, idToPiece } from "./decode.ts";
export { createNormalizer, type Normalizer } from "./normalizer.ts";
export { decodeUtf8Lenient } from "./utf8.ts";
