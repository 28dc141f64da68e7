/**
 * SentencePiece decoding (pieces → text): byte pieces are gathered and decoded as UTF-8, control
 * pieces vanish, `<unk>` becomes the unk surface, `▁` becomes a space, and the dummy-prefix space
 * is removed from the start of the text.
 */
import { pieceToId, PieceType, type SentencePieceModel } from "./model.ts";
import { decodeUtf8Lenient } from "./utf8.ts";

/** Decodes piece strings the way SentencePiece's DecodePieces does. */
export function decodePieces(model: SentencePieceModel, pieces: readonly string[]): string {
  const spec = model.normalizer;
  const stripPrefix = spec.addDummyPrefix || spec.removeExtraWhitespaces;
  const unkPiece = model.pieces[model.unkId];
  let text = "";
  let isBosWs = true;
  let bosWsSeen = false;
  let bytes: number[] = [];
  const flush = () => {
    if (bytes.length > 0) {
      text += decodeUtf8Lenient(Uint8Array.from(bytes));
      bytes = [];
    }
  };
  for (const piece of pieces) {
    const id = pieceToId(model, piece);
    const type = model.types[id];
    if (type === PieceType.BYTE) {
      bytes.push(parseInt(model.pieces[id].slice(3, 5), 16));
      continue;
    }
    flush();
    if (bosWsSeen || text !== "") isBosWs = false;
    if (type === PieceType.CONTROL) {
      bosWsSeen = false;
    } else if (type === PieceType.UNKNOWN) {
      bosWsSeen = false;
      text += piece === unkPiece ? model.unkSurface : piece;
    } else {
      let s = piece;
      let dropped = false;
      if (isBosWs && stripPrefix && s.startsWith("\u2581")) {
        s = s.slice(1);
        dropped = true;
      }
      bosWsSeen = dropped && !spec.removeExtraWhitespaces;
      text += s.replaceAll("\u2581", " ");
    }
  }
  flush();
  return text;
}

/** Decodes piece ids (each must be in [0, pieceCount)). */
export function decodeIds(model: SentencePieceModel, ids: readonly number[]): string {
  return decodePieces(model, ids.map((id, i) => idToPiece(model, id, i)));
}

export function idToPiece(model: SentencePieceModel, id: number, index?: number): string {
  if (!Number.isInteger(id) || id < 0 || id >= model.pieces.length) {
    const where = index === undefined ? "" : ` at index ${index}`;
    throw new RangeError(
      `${model.source}: id ${id}${where} is not a piece id (valid: 0..${model.pieces.length - 1})`,
    );
  }
  return model.pieces[id];
}
