/**
 * The ChatGLM-6B tokenizer (HF `ChatGLMTokenizer`, final revision semantics) over our
 * SentencePiece port: special-token split, newline/tab/blank markers, `[gMASK]` + `<sop>`
 * appended to model inputs, the image-token id offset, and transformers-style decoding.
 */
import { parseSentencePieceModel } from "../sentencepiece/model.ts";
import {
  createSentencePieceProcessor,
  type SentencePieceProcessor,
} from "../sentencepiece/processor.ts";
import type { Tokenizer } from "../common.ts";
import {
  chatglmPost,
  chatglmPre,
  cleanUpTokenization,
  pyCollapseWhitespace,
  specialTokenRegex,
  splitSpecialTokens,
} from "./text.ts";

export interface EncodeOptions {
  /** Append `[gMASK]`, `<sop>` (default true). */
  special?: boolean;
  /** Truncate the text ids from the right so the result has at most this many ids. */
  maxLength?: number;
}

/** ChatGLM-6B's tokenizer; also the common {@link Tokenizer} (`kind: "chatglm"`). */
export interface ChatGLMTokenizer extends Tokenizer {
  readonly kind: "chatglm";
  encode(text: string, opts?: EncodeOptions): number[];
  /** Piece strings of `text` (special split + ChatGLM markers + SentencePiece), no specials. */
  tokenize(text: string): string[];
  /** transformers `decode`: pads removed, control pieces vanish, markers restored, clean-up. */
  decode(ids: readonly number[]): string;
  /** ChatGLM's `SPTokenizer.decode`: image ids dropped, markers restored; no pad removal/clean-up. */
  decodeSp(ids: readonly number[]): string;
  idToPiece(id: number): string;
  pieceToId(piece: string): number;
  /** Pieces + numImageTokens: ids >= this are not tokens. */
  readonly textVocabSize: number;
  readonly padId: number;
  /** `<eop>` (ChatGLM's eos_token, the end of an answer). */
  readonly eosId: number;
  /** `<sop>`. */
  readonly bosId: number;
  readonly unkId: number;
  readonly maskId: number;
  readonly gmaskId: number;
  readonly sopId: number;
  readonly eopId: number;
  /** `</s>` (ChatGLM's `end_token`), -1 if the model has no such piece. */
  readonly endId: number;
  readonly numImageTokens: number;
  /** The SentencePiece layer (ids without the image offset). */
  readonly sp: SentencePieceProcessor;
  /** The file the model came from (for messages). */
  readonly source: string;
}

/** Token strings and flags from `tokenizer_config.json` (all optional). */
export interface TokenizerConfig {
  bos_token?: string;
  eos_token?: string;
  end_token?: string;
  gmask_token?: string;
  mask_token?: string;
  pad_token?: string;
  unk_token?: string;
  remove_space?: boolean;
  do_lower_case?: boolean;
  num_image_tokens?: number;
}

export interface CreateTokenizerOptions {
  numImageTokens?: number;
  /** Names the model file in errors. */
  source?: string;
  /** Values from `tokenizer_config.json`. */
  config?: TokenizerConfig;
}

/** Builds a tokenizer from the bytes of an `ice_text.model`. */
export function createTokenizer(
  modelBytes: Uint8Array,
  opts: CreateTokenizerOptions = {},
): ChatGLMTokenizer {
  const source = opts.source ?? "<ice_text.model>";
  const model = parseSentencePieceModel(modelBytes, source);
  const sp = createSentencePieceProcessor(model);
  const cfg = opts.config ?? {};
  const offset = opts.numImageTokens ?? cfg.num_image_tokens ?? 0;
  if (!Number.isInteger(offset) || offset < 0) {
    throw new RangeError(`${source}: numImageTokens must be a non-negative integer, got ${offset}`);
  }
  const tokens = {
    bos: cfg.bos_token ?? "<sop>",
    eos: cfg.eos_token ?? "<eop>",
    end: cfg.end_token ?? "</s>",
    gmask: cfg.gmask_token ?? "[gMASK]",
    mask: cfg.mask_token ?? "[MASK]",
    pad: cfg.pad_token ?? "<pad>",
    unk: cfg.unk_token ?? "<unk>",
  };
  const removeSpace = cfg.remove_space === true;
  const lowerCase = cfg.do_lower_case === true;
  const n = model.pieces.length;
  const textVocabSize = n + offset;

  const required = (what: string, piece: string): number => {
    const id = model.reservedMap.get(piece) ?? model.normalMap.get(piece);
    if (id === undefined) {
      throw new Error(`${source}: the model has no ${what} piece ${JSON.stringify(piece)}`);
    }
    return id + offset;
  };
  const gmaskId = required("gmask_token", tokens.gmask);
  const sopId = required("bos_token", tokens.bos);
  const eopId = required("eos_token", tokens.eos);
  const padId = required("pad_token", tokens.pad);
  const maskId = required("mask_token", tokens.mask);
  const unkId = required("unk_token", tokens.unk);
  // `</s>` is informational (ChatGLM's end_token); a model without it still works.
  const endPiece = model.reservedMap.get(tokens.end) ?? model.normalMap.get(tokens.end);
  const endId = endPiece === undefined ? -1 : endPiece + offset;
  // transformers registers only these five as unsplittable (not [gMASK], not </s>).
  const specialRe = specialTokenRegex([
    tokens.bos,
    tokens.eos,
    tokens.unk,
    tokens.pad,
    tokens.mask,
  ]);

  const prepare = (chunk: string): string => {
    if (removeSpace) chunk = pyCollapseWhitespace(chunk);
    if (lowerCase) chunk = chunk.toLowerCase();
    return chatglmPre(chunk);
  };

  const textIds = (text: string): number[] => {
    const out: number[] = [];
    if (typeof text !== "string") throw new TypeError(`encode: text must be a string`);
    for (const c of splitSpecialTokens(text, specialRe)) {
      if (c.special) out.push(sp.pieceToId(c.text));
      else sp.encodeIdsInto(prepare(c.text), out);
    }
    if (offset) { for (let i = 0; i < out.length; i++) out[i] += offset; }
    return out;
  };

  const checkId = (id: number, i: number) => {
    if (!Number.isInteger(id) || id < 0 || id >= textVocabSize) {
      throw new RangeError(
        `${source}: id ${id} at index ${i} is not a token id (valid: 0..${textVocabSize - 1})`,
      );
    }
  };
  const idToPiece = (id: number, i = 0): string => {
    checkId(id, i);
    return id < offset ? `<image_${id}>` : model.pieces[id - offset];
  };

  // Byte-fallback pieces spell a character byte by byte: their bytes, for the engine's UTF-8 rules.
  const byteOfId = new Map<number, Uint8Array>();
  for (let b = 0; b < 256; b++) {
    const id = model.byteIds[b];
    if (id >= 0) byteOfId.set(id + offset, Uint8Array.of(b));
  }

  return {
    kind: "chatglm",
    sp,
    source,
    textVocabSize,
    vocabSize: textVocabSize,
    endOfTurnIds: [eopId],
    eosId: eopId,
    bosId: sopId,
    chatTemplate: null,
    specialTokenText: { bos: tokens.bos, eos: tokens.eos },
    tokenBytes: (id) => byteOfId.get(id) ?? null,
    padId,
    unkId,
    maskId,
    gmaskId,
    sopId,
    eopId,
    endId,
    numImageTokens: offset,
    encode(text, o = {}) {
      const special = o.special ?? true;
      const ids = textIds(text);
      if (o.maxLength !== undefined) {
        const keep = o.maxLength - (special ? 2 : 0);
        if (!Number.isInteger(o.maxLength) || keep < 0) {
          throw new RangeError(
            `encode: maxLength must be an integer >= ${special ? 2 : 0}, got ${o.maxLength}`,
          );
        }
        if (ids.length > keep) ids.length = keep;
      }
      if (special) ids.push(gmaskId, sopId);
      return ids;
    },
    tokenize(text) {
      const out: string[] = [];
      for (const c of splitSpecialTokens(text, specialRe)) {
        if (c.special) out.push(c.text);
        else for (const p of sp.encodePieces(prepare(c.text))) out.push(p);
      }
      return out;
    },
    decode(ids) {
      const pieces: string[] = [];
      for (let i = 0; i < ids.length; i++) {
        if (ids[i] === padId) continue;
        pieces.push(idToPiece(ids[i], i));
      }
      return cleanUpTokenization(chatglmPost(sp.decodePieces(pieces)));
    },
    decodeSp(ids) {
      const pieces: string[] = [];
      for (let i = 0; i < ids.length; i++) {
        checkId(ids[i], i);
        if (ids[i] >= offset) pieces.push(model.pieces[ids[i] - offset]);
      }
      return chatglmPost(sp.decodePieces(pieces));
    },
    idToPiece: (id) => idToPiece(id),
    pieceToId: (piece) => sp.pieceToId(piece) + offset,
  };
}
