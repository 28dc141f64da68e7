/**
 * Reads a SentencePiece `.model` file (a protobuf `ModelProto`) into plain data, and refuses
 * files whose semantics this port does not implement rather than encoding them differently.
 */
import {
  forEachField,
  ProtobufError,
  readFields,
  WIRE_FIXED32,
  WIRE_LEN,
  WIRE_VARINT,
} from "./protobuf.ts";

export const PieceType = {
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

const TYPE_NAMES = ["?", "NORMAL", "UNKNOWN", "CONTROL", "USER_DEFINED", "UNUSED", "BYTE"];

export type ModelType = "unigram" | "bpe";

export interface NormalizerSpec {
  name: string;
  /** Precompiled charsmap (double-array trie + replacement blob); may be empty. */
  charsmap: Uint8Array;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
  escapeWhitespaces: boolean;
}

export interface SentencePieceModel {
  /** Names the file in error messages. */
  source: string;
  pieces: string[];
  scores: Float32Array;
  /** PieceType per id. */
  types: Uint8Array;
  modelType: ModelType;
  byteFallback: boolean;
  unkSurface: string;
  unkId: number;
  normalizer: NormalizerSpec;
  /** NORMAL, USER_DEFINED and UNUSED pieces. */
  normalMap: Map<string, number>;
  /** CONTROL, UNKNOWN and BYTE pieces. */
  reservedMap: Map<string, number>;
  /** id of `<0xXX>` for each byte value, -1 where absent. */
  byteIds: Int32Array;
}

export class SentencePieceModelError extends Error {
  constructor(source: string, message: string) {
    super(`${source}: ${message}`);
    this.name = "SentencePieceModelError";
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Parses and validates a SentencePiece model. `source` names the file in errors. */
export function parseSentencePieceModel(
  bytes: Uint8Array,
  source = "<sentencepiece model>",
): SentencePieceModel {
  const fail = (msg: string): never => {
    throw new SentencePieceModelError(source, msg);
  };
  if (!(bytes instanceof Uint8Array)) fail("model bytes must be a Uint8Array");
  if (bytes.length === 0) fail("empty file; not a SentencePiece model");
  const text = (b: Uint8Array, what: string): string => {
    // Most pieces are short; ASCII ones skip the decoder call.
    let ascii = b.length <= 16;
    for (let i = 0; ascii && i < b.length; i++) if (b[i] >= 0x80) ascii = false;
    if (ascii) return String.fromCharCode(...b);
    try {
      return utf8.decode(b);
    } catch {
      return fail(`${what} is not valid UTF-8 (corrupt SentencePiece model)`);
    }
  };

  const pieces: string[] = [];
  const scores: number[] = [];
  const types: number[] = [];
  let trainer: Uint8Array | undefined;
  let normalizer: Uint8Array | undefined;
  let denormalizer: Uint8Array | undefined;

  try {
    forEachField(bytes, "ModelProto", (f) => {
      if (f.field === 1 && f.wire === WIRE_LEN) {
        const id = pieces.length;
        let piece: string | undefined;
        let score = 0;
        let type: number = PieceType.NORMAL;
        forEachField(f.bytes, `piece ${id}`, (g) => {
          if (g.field === 1 && g.wire === WIRE_LEN) piece = text(g.bytes, `piece ${id}`);
          else if (g.field === 2 && g.wire === WIRE_FIXED32) score = g.float;
          else if (g.field === 3 && g.wire === WIRE_VARINT) type = g.int32;
        });
        if (piece === undefined || piece === "") fail(`piece ${id} has an empty string`);
        if (type < 1 || type > 6) {
          fail(`piece ${id} (${JSON.stringify(piece)}) has unknown type ${type}`);
        }
        pieces.push(piece!);
        scores.push(score);
        types.push(type);
      } else if (f.field === 2 && f.wire === WIRE_LEN) trainer = f.bytes;
      else if (f.field === 3 && f.wire === WIRE_LEN) normalizer = f.bytes;
      else if (f.field === 5 && f.wire === WIRE_LEN) denormalizer = f.bytes;
      else if (f.field <= 5 && f.wire !== WIRE_LEN) {
        fail(`ModelProto field ${f.field} has wire type ${f.wire}; not a SentencePiece model`);
      }
    });
  } catch (e) {
    if (e instanceof ProtobufError) fail(`corrupt or truncated SentencePiece model: ${e.message}`);
    throw e;
  }
  if (pieces.length === 0) fail("no pieces; not a SentencePiece model (or corrupt)");
  // Every file written by SentencePiece carries both specs after the pieces; a file cut at a
  // field boundary would otherwise parse "successfully" with defaults.
  if (!trainer) fail("missing trainer_spec (truncated or not a SentencePiece model)");
  if (!normalizer) fail("missing normalizer_spec (truncated or not a SentencePiece model)");

  let modelType = 1;
  let byteFallback = false;
  let unkSurface = " \u2047 ";
  let suffix = false;
  try {
    for (const f of readFields(trainer!, "trainer_spec")) {
      if (f.field === 3 && f.wire === WIRE_VARINT) modelType = f.int32;
      else if (f.field === 35 && f.wire === WIRE_VARINT) byteFallback = f.value !== 0;
      else if (f.field === 44 && f.wire === WIRE_LEN) unkSurface = text(f.bytes, "unk_surface");
      else if (f.field === 24 && f.wire === WIRE_VARINT) suffix = f.value !== 0;
    }
  } catch (e) {
    if (e instanceof ProtobufError) fail(`corrupt trainer_spec: ${e.message}`);
    throw e;
  }
  if (modelType !== 1 && modelType !== 2) {
    const name = modelType === 3 ? "WORD" : modelType === 4 ? "CHAR" : `unknown (${modelType})`;
    fail(`unsupported model_type ${name}; only UNIGRAM and BPE are implemented`);
  }
  if (suffix) fail("treat_whitespace_as_suffix = true is not supported");

  const norm = readNormalizerSpec(normalizer!, "normalizer_spec", fail, text);
  if (denormalizer) {
    const d = readNormalizerSpec(denormalizer, "denormalizer_spec", fail, text);
    if (d.charsmap.length > 0) fail("a denormalizer charsmap is not supported");
  }
  if (norm.charsmap.length > 0) checkCharsmap(norm.charsmap, fail);

  const normalMap = new Map<string, number>();
  const reservedMap = new Map<string, number>();
  const byteIds = new Int32Array(256).fill(-1);
  let unkId = -1;
  for (let id = 0; id < pieces.length; id++) {
    const p = pieces[id];
    const t = types[id];
    if (t === PieceType.UNUSED && modelType === 2) {
      fail(
        `piece ${id} (${
          JSON.stringify(p)
        }) is UNUSED; UNUSED pieces are not supported in BPE models`,
      );
    }
    const isReserved = t === PieceType.CONTROL || t === PieceType.UNKNOWN || t === PieceType.BYTE;
    const map = isReserved ? reservedMap : normalMap;
    if (map.has(p)) {
      fail(`duplicate piece ${JSON.stringify(p)} (ids ${map.get(p)} and ${id}); corrupt model`);
    }
    map.set(p, id);
    if (t === PieceType.UNKNOWN) {
      if (unkId >= 0) fail(`more than one UNKNOWN piece (ids ${unkId} and ${id})`);
      unkId = id;
    } else if (t === PieceType.BYTE) {
      const m = /^<0x([0-9A-F]{2})>$/.exec(p);
      if (!m) fail(`BYTE piece ${id} is spelled ${JSON.stringify(p)}, expected <0xXX>`);
      byteIds[parseInt(m![1], 16)] = id;
    }
  }
  if (unkId < 0) fail("no UNKNOWN piece; corrupt model");
  if (byteFallback) {
    const missing = byteIds.indexOf(-1);
    if (missing >= 0) {
      fail(`byte_fallback is on but piece <0x${hex2(missing)}> is missing`);
    }
  }

  return {
    source,
    pieces,
    scores: Float32Array.from(scores),
    types: Uint8Array.from(types),
    modelType: modelType === 2 ? "bpe" : "unigram",
    byteFallback,
    unkSurface,
    unkId,
    normalizer: norm,
    normalMap,
    reservedMap,
    byteIds,
  };
}

function readNormalizerSpec(
  b: Uint8Array,
  what: string,
  fail: (m: string) => never,
  text: (b: Uint8Array, what: string) => string,
): NormalizerSpec {
  const spec: NormalizerSpec = {
    name: "",
    charsmap: new Uint8Array(0),
    addDummyPrefix: true,
    removeExtraWhitespaces: true,
    escapeWhitespaces: true,
  };
  try {
    for (const f of readFields(b, what)) {
      if (f.field === 1 && f.wire === WIRE_LEN) spec.name = text(f.bytes, `${what}.name`);
      else if (f.field === 2 && f.wire === WIRE_LEN) spec.charsmap = f.bytes;
      else if (f.field === 3 && f.wire === WIRE_VARINT) spec.addDummyPrefix = f.value !== 0;
      else if (f.field === 4 && f.wire === WIRE_VARINT) spec.removeExtraWhitespaces = f.value !== 0;
      else if (f.field === 5 && f.wire === WIRE_VARINT) spec.escapeWhitespaces = f.value !== 0;
    }
  } catch (e) {
    if (e instanceof ProtobufError) fail(`corrupt ${what}: ${e.message}`);
    throw e;
  }
  return spec;
}

function checkCharsmap(cm: Uint8Array, fail: (m: string) => never): void {
  if (cm.length < 4) fail("precompiled_charsmap shorter than its 4-byte header");
  const trieSize = new DataView(cm.buffer, cm.byteOffset, cm.byteLength).getUint32(0, true);
  if (trieSize % 4 !== 0 || trieSize === 0 || trieSize > cm.length - 4) {
    fail(`precompiled_charsmap trie size ${trieSize} does not fit its ${cm.length} bytes`);
  }
}

export function hex2(b: number): string {
  return b.toString(16).toUpperCase().padStart(2, "0");
}

/** `reservedMap[s] ?? normalMap[s] ?? unkId` (SentencePiece's PieceToId). */
export function pieceToId(m: SentencePieceModel, piece: string): number {
  return m.reservedMap.get(piece) ?? m.normalMap.get(piece) ?? m.unkId;
}

export function pieceTypeName(t: number): string {
  return TYPE_NAMES[t] ?? `type ${t}`;
}
