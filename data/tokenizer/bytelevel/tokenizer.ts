/**
 * The tokenizer of a Hugging Face `tokenizer.json` with a byte-level BPE model (Qwen2/2.5, Qwen3,
 * Llama 3): added tokens split first on the raw text, then the normalizer, the `Split`
 * pre-tokenizer, the byte-level map and BPE; decoding maps the pieces back to bytes and decodes
 * UTF-8 with replacement. Only what these files use is accepted; anything else is refused by name.
 */

import type { Tokenizer } from "../common.ts";
import { BYTE_TO_CHAR, fromByteLevel } from "./byte_map.ts";
import { createBpeModel, createWordEncoder } from "./bpe.ts";
import { createIsolatedSplit, translatePattern } from "./pretokenizer.ts";

export interface AddedToken {
  id: number;
  content: string;
  /** Special tokens are dropped by `decode(ids, { skipSpecialTokens: true })`. */
  special: boolean;
}

export interface ByteLevelEncodeOptions {
  /** Add what the post-processor adds (e.g. Llama 3's BOS); default true, as transformers. */
  special?: boolean;
}

export interface ByteLevelDecodeOptions {
  /** Drop added tokens marked special (default false, as transformers' `decode`). */
  skipSpecialTokens?: boolean;
}

/** Also the common {@link Tokenizer} (`kind: "bytelevel-bpe"`). */
export interface ByteLevelTokenizer extends Tokenizer {
  readonly kind: "bytelevel-bpe";
  encode(text: string, options?: ByteLevelEncodeOptions): number[];
  decode(ids: readonly number[], options?: ByteLevelDecodeOptions): string;
  /** Byte-level piece strings of `text` (no post-processor tokens). */
  tokenize(text: string): string[];
  /** Pre-tokens of `text` as text (added tokens as themselves). */
  pretokenize(text: string): string[];
  /** The token string of an id (byte-level form), or null for an id without a token. */
  idToPiece(id: number): string | null;
  /** Tokens the tokenizer knows (vocabulary plus added tokens); the same as `vocabSize`. */
  readonly size: number;
  readonly addedTokens: readonly AddedToken[];
  /** Ids of tokenizer_config's `eos_token` / `pad_token` / `bos_token`, or null. */
  readonly eosId: number | null;
  readonly padId: number | null;
  readonly bosId: number | null;
  /** tokenizer_config's `chat_template`, when it has one. */
  readonly chatTemplate: string | null;
  readonly source: string;
}

type Json = Record<string, unknown>;

export interface ByteLevelTokenizerOptions {
  /**
   * More ids that end a generated turn besides tokenizer_config's `eos_token` (generation_config's
   * `eos_token_id` list: Qwen's `<|endoftext|>`, Llama 3.1's three ends).
   */
  endOfTurnIds?: readonly number[];
  /** Where they came from, for errors (e.g. the generation_config.json path). */
  endOfTurnSource?: string;
}

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function normalizerOf(spec: unknown, source: string): (s: string) => string {
  if (spec === null || spec === undefined) return (s) => s;
  if (!isObject(spec)) throw new Error(`${source}: normalizer must be an object or null`);
  switch (spec.type) {
    case "NFC":
    case "NFD":
    case "NFKC":
    case "NFKD": {
      const form = spec.type;
      return (s) => s.normalize(form);
    }
    case "Lowercase":
      return (s) => s.toLowerCase();
    case "Sequence": {
      if (!Array.isArray(spec.normalizers)) {
        throw new Error(`${source}: normalizer Sequence needs a normalizers array`);
      }
      const steps = spec.normalizers.map((n) => normalizerOf(n, source));
      return (s) => steps.reduce((t, f) => f(t), s);
    }
    default:
      throw new Error(
        `${source}: normalizer type ${JSON.stringify(spec.type)} is not supported ` +
          `(NFC, NFD, NFKC, NFKD, Lowercase, Sequence)`,
      );
  }
}

/** GPT-2's own pattern, used by a ByteLevel pre-tokenizer with `use_regex: true`. */
const GPT2_PATTERN =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

function preTokenizerOf(spec: unknown, source: string): (s: string) => string[] {
  if (!isObject(spec)) throw new Error(`${source}: pre_tokenizer must be an object`);
  const steps = spec.type === "Sequence"
    ? (Array.isArray(spec.pretokenizers) ? spec.pretokenizers : [])
    : [spec];
  const splits: ((text: string, out: string[]) => void)[] = [];
  let byteLevel = false;
  for (const step of steps) {
    if (!isObject(step)) throw new Error(`${source}: pre_tokenizer entries must be objects`);
    if (step.type === "Split") {
      const pattern = isObject(step.pattern) ? step.pattern : {};
      if (typeof pattern.Regex !== "string") {
        throw new Error(`${source}: pre_tokenizer Split needs pattern.Regex`);
      }
      if (step.behavior !== "Isolated" || step.invert === true) {
        throw new Error(
          `${source}: pre_tokenizer Split behavior ${JSON.stringify(step.behavior)}` +
            `${step.invert ? " inverted" : ""} is not supported (Isolated)`,
        );
      }
      splits.push(createIsolatedSplit(translatePattern(pattern.Regex)));
    } else if (step.type === "ByteLevel") {
      if (step.add_prefix_space === true) {
        throw new Error(`${source}: ByteLevel add_prefix_space true is not supported`);
      }
      if (step.use_regex !== false) {
        splits.push(createIsolatedSplit(translatePattern(GPT2_PATTERN)));
      }
      byteLevel = true;
    } else {
      throw new Error(
        `${source}: pre_tokenizer type ${JSON.stringify(step.type)} is not supported ` +
          `(Split, ByteLevel, Sequence of them)`,
      );
    }
  }
  if (!byteLevel) throw new Error(`${source}: pre_tokenizer has no ByteLevel step`);
  return (s) => {
    let parts = [s];
    for (const split of splits) {
      const next: string[] = [];
      for (const p of parts) split(p, next);
      parts = next;
    }
    return parts;
  };
}

/** Ids the post-processor puts around a single sequence (TemplateProcessing or ByteLevel). */
function postProcessorOf(
  spec: unknown,
  source: string,
  idOf: (token: string) => number,
): { before: number[]; after: number[] } {
  if (spec === null || spec === undefined) return { before: [], after: [] };
  if (!isObject(spec)) throw new Error(`${source}: post_processor must be an object or null`);
  if (spec.type === "ByteLevel") return { before: [], after: [] };
  if (spec.type === "Sequence" && Array.isArray(spec.processors)) {
    const parts = spec.processors.map((p) => postProcessorOf(p, source, idOf));
    return { before: parts.flatMap((p) => p.before), after: parts.flatMap((p) => p.after) };
  }
  if (spec.type === "TemplateProcessing" && Array.isArray(spec.single)) {
    const before: number[] = [], after: number[] = [];
    let seen = false;
    for (const item of spec.single) {
      if (isObject(item) && isObject(item.Sequence)) seen = true;
      else if (isObject(item) && isObject(item.SpecialToken)) {
        const id = String(item.SpecialToken.id);
        (seen ? after : before).push(idOf(id));
      }
    }
    return { before, after };
  }
  throw new Error(
    `${source}: post_processor type ${JSON.stringify(spec.type)} is not supported ` +
      `(ByteLevel, TemplateProcessing)`,
  );
}

/** Code unit → byte for the 256 characters of the byte-level map (all below U+0144), else -1. */
const UNIT_TO_BYTE: Int16Array = (() => {
  const t = new Int16Array(0x144).fill(-1);
  for (let b = 0; b < 256; b++) t[BYTE_TO_CHAR[b].charCodeAt(0)] = b;
  return t;
})();

/** The bytes of a vocabulary piece: a fast path for pieces made only of mapped characters. */
function pieceBytes(piece: string): Uint8Array {
  const out = new Uint8Array(piece.length);
  for (let i = 0; i < piece.length; i++) {
    const c = piece.charCodeAt(i);
    const b = c < 0x144 ? UNIT_TO_BYTE[c] : -1;
    if (b < 0) return Uint8Array.from(fromByteLevel(piece));
    out[i] = b;
  }
  return out;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/**
 * A tokenizer from the parsed `tokenizer.json` and (optionally) `tokenizer_config.json`.
 * `source` names the files in errors.
 */
export function createByteLevelTokenizer(
  json: unknown,
  config: Json = {},
  source = "tokenizer.json",
  options: ByteLevelTokenizerOptions = {},
): ByteLevelTokenizer {
  if (!isObject(json)) throw new Error(`${source}: not a JSON object`);
  const model = json.model;
  if (!isObject(model) || model.type !== "BPE") {
    throw new Error(
      `${source}: model.type ${JSON.stringify(isObject(model) ? model.type : model)} is not ` +
        `supported (byte-level BPE)`,
    );
  }
  for (const key of ["dropout", "unk_token"] as const) {
    if (model[key] !== null && model[key] !== undefined) {
      throw new Error(`${source}: model.${key} ${JSON.stringify(model[key])} is not supported`);
    }
  }
  if (model.byte_fallback === true) {
    throw new Error(`${source}: model.byte_fallback is not supported`);
  }
  if (model.continuing_subword_prefix || model.end_of_word_suffix) {
    throw new Error(`${source}: continuing_subword_prefix / end_of_word_suffix are not supported`);
  }
  // The cheap checks first: a refused file fails before its 150k-entry vocabulary is read.
  const normalize = normalizerOf(json.normalizer, source);
  const preTokenize = preTokenizerOf(json.pre_tokenizer, source);
  if (isObject(json.decoder) && json.decoder.type !== "ByteLevel") {
    throw new Error(
      `${source}: decoder type ${JSON.stringify(json.decoder.type)} is not supported (ByteLevel)`,
    );
  }
  if (!isObject(model.vocab)) throw new Error(`${source}: model.vocab must be an object`);
  const vocab = new Map<string, number>();
  const pieces: (string | null)[] = [];
  for (const [piece, id] of Object.entries(model.vocab)) {
    if (!Number.isInteger(id) || (id as number) < 0) {
      throw new Error(`${source}: model.vocab[${JSON.stringify(piece)}] = ${id} is not an id`);
    }
    vocab.set(piece, id as number);
    pieces[id as number] = piece;
  }
  const wordIds = createWordEncoder(createBpeModel(vocab, model.merges, source));

  const added: AddedToken[] = [];
  const addedById = new Map<number, AddedToken>();
  const addedByContent = new Map<string, AddedToken>();
  for (const [i, t] of (Array.isArray(json.added_tokens) ? json.added_tokens : []).entries()) {
    if (!isObject(t) || !Number.isInteger(t.id) || typeof t.content !== "string") {
      throw new Error(`${source}: added_tokens[${i}] needs an integer id and a content string`);
    }
    if (t.lstrip === true || t.rstrip === true || t.single_word === true || t.normalized === true) {
      throw new Error(
        `${source}: added token ${
          JSON.stringify(t.content)
        }: lstrip/rstrip/single_word/normalized ` +
          `are not supported`,
      );
    }
    const tok = { id: t.id as number, content: t.content, special: t.special === true };
    added.push(tok);
    addedById.set(tok.id, tok);
    addedByContent.set(tok.content, tok);
  }
  // Longest first: where several added tokens start at one position, the longest wins.
  const addedRe = added.length === 0 ? null : new RegExp(
    [...added].sort((a, b) => b.content.length - a.content.length)
      .map((t) => escapeRegExp(t.content)).join("|"),
    "gu",
  );
  const idOf = (token: string): number => {
    const id = addedByContent.get(token)?.id ?? vocab.get(token);
    if (id === undefined) throw new Error(`${source}: token ${JSON.stringify(token)} has no id`);
    return id;
  };
  const post = postProcessorOf(json.post_processor, source, idOf);

  /** Segments of the raw text: added tokens and the text between them. */
  const segments = (text: string): (string | AddedToken)[] => {
    if (!addedRe) return text ? [text] : [];
    const out: (string | AddedToken)[] = [];
    let last = 0;
    for (const m of text.matchAll(addedRe)) {
      if (m.index > last) out.push(text.slice(last, m.index));
      out.push(addedByContent.get(m[0])!);
      last = m.index + m[0].length;
    }
    if (last < text.length) out.push(text.slice(last));
    return out;
  };

  const configToken = (key: string): number | null => {
    const v = config[key];
    const content = typeof v === "string"
      ? v
      : isObject(v) && typeof v.content === "string"
      ? v.content
      : null;
    return content === null ? null : idOf(content);
  };
  const size = Math.max(pieces.length, ...added.map((t) => t.id + 1));
  // ignoreBOM: a U+FEFF the text began with is text, not a byte-order mark to drop.
  const decoder = new TextDecoder("utf-8", { ignoreBOM: true });

  const eosId = configToken("eos_token");
  const endOfTurnIds: number[] = eosId === null ? [] : [eosId];
  for (const id of options.endOfTurnIds ?? []) {
    if (!Number.isInteger(id) || id < 0 || id >= size) {
      throw new Error(
        `${options.endOfTurnSource ?? source}: end-of-turn id ${id} is not a token id of ` +
          `${source} (0..${size - 1})`,
      );
    }
    if (!endOfTurnIds.includes(id)) endOfTurnIds.push(id);
  }
  const tokenText = (key: string): string | null => {
    const v = config[key];
    if (typeof v === "string") return v;
    return isObject(v) && typeof v.content === "string" ? v.content : null;
  };
  // Bytes of each vocabulary token, made on first use (the engine asks for all of them once).
  const bytesCache: (Uint8Array | null | undefined)[] = [];

  return {
    kind: "bytelevel-bpe",
    vocabSize: size,
    endOfTurnIds,
    specialTokenText: { bos: tokenText("bos_token"), eos: tokenText("eos_token") },
    tokenBytes(id) {
      const hit = bytesCache[id];
      if (hit !== undefined) return hit;
      const piece = addedById.has(id) ? undefined : pieces[id];
      const out = typeof piece === "string" ? pieceBytes(piece) : null;
      if (Number.isInteger(id) && id >= 0 && id < size) bytesCache[id] = out;
      return out;
    },
    encode(text, options = {}) {
      const ids: number[] = options.special === false ? [] : [...post.before];
      for (const seg of segments(text)) {
        if (typeof seg !== "string") {
          ids.push(seg.id);
          continue;
        }
        for (const word of preTokenize(normalize(seg))) {
          for (const id of wordIds(word)) ids.push(id);
        }
      }
      if (options.special !== false) ids.push(...post.after);
      return ids;
    },
    decode(ids, options = {}) {
      const bytes: number[] = [];
      for (const id of ids) {
        const a = addedById.get(id);
        if (a) {
          if (!(a.special && options.skipSpecialTokens)) fromByteLevel(a.content, bytes);
          continue;
        }
        const piece = pieces[id];
        if (typeof piece === "string") fromByteLevel(piece, bytes);
      }
      return decoder.decode(new Uint8Array(bytes));
    },
    tokenize(text) {
      const out: string[] = [];
      for (const seg of segments(text)) {
        if (typeof seg !== "string") out.push(seg.content);
        else {
          for (const word of preTokenize(normalize(seg))) {
            for (const id of wordIds(word)) out.push(pieces[id]!);
          }
        }
      }
      return out;
    },
    pretokenize(text) {
      return segments(text).flatMap((seg) =>
        typeof seg === "string" ? preTokenize(normalize(seg)) : [seg.content]
      );
    },
    idToPiece(id) {
      return addedById.get(id)?.content ?? pieces[id] ?? null;
    },
    size,
    addedTokens: added,
    eosId,
    padId: configToken("pad_token"),
    bosId: configToken("bos_token"),
    chatTemplate: typeof config.chat_template === "string" ? config.chat_template : null,
    source,
  };
}
