/**
 * Byte-fallback tokens and UTF-8: SentencePiece spells a character it has no piece for as one
 * token per UTF-8 byte (`<0xE5>`, `<0x8C>`, `<0xBB>`). Until the last byte of such a character
 * arrives, its bytes decode to U+FFFD, and a model can also emit bytes that never form a valid
 * character. Two uses here: the text stream holds back (and at the end drops) bytes that may still
 * complete a character, and the sampler can mask tokens that cannot continue valid UTF-8.
 */

/** Which ids are byte tokens, both ways. */
export interface ByteTokens {
  /** Byte value of each token id, -1 for ids that are not byte tokens. */
  byteOf: Int16Array;
  /** Token id of each byte value, -1 where the vocabulary has none. */
  idOf: Int32Array;
  /**
   * Byte-level vocabularies (every token is a byte string, several bytes long, possibly part of a
   * character): each id's bytes and UTF-8 shape. When present, the stream and the mask work on
   * bytes across tokens instead of on single-byte tokens.
   */
  seqs?: TokenByteTable;
}

/**
 * The UTF-8 shape of every id of a vocabulary whose tokens are byte strings. Ids without bytes
 * (`kind` 0) are whole text (added tokens): they cannot continue an open character.
 */
export interface TokenByteTable {
  /** 1: the id is a byte string; 2: it decodes to nothing (skipped special token); 0: text. */
  kind: Uint8Array;
  /** Bytes of id i are `data[offsets[i] .. offsets[i + 1])`. */
  data: Uint8Array;
  offsets: Int32Array;
  /** Leading continuation bytes (80–BF) of each byte string, capped at 4. */
  leadCont: Uint8Array;
  /** Bit j (0–3): the bytes from index j on are valid UTF-8 (an unfinished end allowed). */
  validFrom: Uint8Array;
}

/** The byte tokens of a SentencePiece vocabulary: `byteIds[b]` is the piece id of byte `b`. */
export function byteTokens(
  vocabSize: number,
  byteIds: ArrayLike<number>,
  idOffset = 0,
): ByteTokens {
  const byteOf = new Int16Array(vocabSize).fill(-1);
  const idOf = new Int32Array(256).fill(-1);
  for (let b = 0; b < 256 && b < byteIds.length; b++) {
    const id = byteIds[b] < 0 ? -1 : byteIds[b] + idOffset;
    if (id >= 0 && id < vocabSize) {
      byteOf[id] = b;
      idOf[b] = id;
    }
  }
  return { byteOf, idOf };
}

/** What {@link byteTokensOf} needs of a tokenizer (the common interface has it). */
export interface TokenBytesSource {
  readonly vocabSize: number;
  tokenBytes(id: number): Uint8Array | null;
  decode(ids: readonly number[], options?: { skipSpecialTokens?: boolean }): string;
}

const tableCache = new WeakMap<TokenBytesSource, ByteTokens>();

/**
 * The byte tokens of any tokenizer, from its `tokenBytes`: single-byte tokens both ways, and for
 * a vocabulary with multi-byte tokens (byte-level BPE) the whole table. Made once per tokenizer.
 */
export function byteTokensOf(tok: TokenBytesSource): ByteTokens {
  const hit = tableCache.get(tok);
  if (hit) return hit;
  const V = tok.vocabSize;
  const byteOf = new Int16Array(V).fill(-1);
  const idOf = new Int32Array(256).fill(-1);
  let multi = false;
  for (let id = 0; id < V; id++) {
    const b = tok.tokenBytes(id);
    if (!b) continue;
    if (b.length > 1) multi = true;
    else if (b.length === 1) {
      byteOf[id] = b[0];
      if (idOf[b[0]] < 0) idOf[b[0]] = id;
    }
  }
  const out: ByteTokens = { byteOf, idOf };
  if (multi) {
    // Text ids of a byte-level vocabulary are its few added tokens: ask which decode to nothing.
    out.seqs = tokenByteTable(
      V,
      (id) => tok.tokenBytes(id),
      (id) => tok.decode([id], { skipSpecialTokens: true }) === "",
    );
  }
  tableCache.set(tok, out);
  return out;
}

/** Bytes that may start a well-formed UTF-8 character (ASCII or a lead byte C2–F4). */
export function canStartUtf8(b: number): boolean {
  return b < 0x80 || (b >= 0xc2 && b <= 0xf4);
}

/** Length of the character a lead byte starts (0 for bytes that start none). */
function charLength(lead: number): number {
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

/** Range of the byte after `lead` (Unicode's table 3-7: no overlongs, surrogates, > U+10FFFF). */
function secondByteRange(lead: number): [number, number] {
  if (lead === 0xe0) return [0xa0, 0xbf];
  if (lead === 0xed) return [0x80, 0x9f];
  if (lead === 0xf0) return [0x90, 0xbf];
  if (lead === 0xf4) return [0x80, 0x8f];
  return [0x80, 0xbf];
}

/** An unfinished character at the end of a token sequence. */
export interface PendingChar {
  /** Trailing tokens (bytes) that belong to it. */
  count: number;
  /** The range the next byte must fall in to continue it. */
  next: [number, number];
}

/**
 * The character still being spelled at the end of `ids`, if its bytes so far are a valid start:
 * those tokens can still become a character and must not be shown as U+FFFD yet.
 */
export function pendingChar(ids: readonly number[], byteOf: Int16Array): PendingChar | null {
  const bytes: number[] = [];
  for (let i = ids.length - 1; i >= 0 && bytes.length < 3; i--) {
    const b = ids[i] < byteOf.length ? byteOf[ids[i]] : -1;
    if (b < 0) break;
    bytes.unshift(b);
  }
  return pendingInBytes(bytes);
}

/** An unfinished character at the end of a byte-level token sequence. */
export interface PendingBytes {
  /** Its bytes so far (they may span several tokens and share a token with whole characters). */
  bytes: number;
  /** Bytes still missing. */
  need: number;
  /** The range the next byte must fall in. */
  next: [number, number];
}

/**
 * The character still being spelled at the end of `ids` of a byte-level vocabulary, if its bytes
 * so far are a valid start. Tokens that decode to nothing are looked through; text tokens end the
 * search.
 */
export function pendingBytes(ids: readonly number[], table: TokenByteTable): PendingBytes | null {
  const bytes: number[] = [];
  for (let i = ids.length - 1; i >= 0 && bytes.length < 3; i--) {
    const id = ids[i];
    const kind = id >= 0 && id < table.kind.length ? table.kind[id] : 0;
    if (kind === 2) continue;
    if (kind === 0) break;
    for (let j = table.offsets[id + 1] - 1; j >= table.offsets[id] && bytes.length < 3; j--) {
      bytes.unshift(table.data[j]);
    }
  }
  const p = pendingInBytes(bytes);
  if (!p) return null;
  return {
    bytes: p.count,
    need: charLength(bytes[bytes.length - p.count]) - p.count,
    next: p.next,
  };
}

/** The unfinished, still valid character at the end of up to 3 trailing bytes. */
function pendingInBytes(bytes: readonly number[]): PendingChar | null {
  for (let k = 1; k <= bytes.length; k++) {
    const lead = bytes[bytes.length - k];
    if (lead >= 0x80 && lead <= 0xbf) continue; // a continuation byte: look further back
    const n = charLength(lead);
    if (n <= k) return null; // complete, or not a lead at all
    for (let j = 1; j < k; j++) {
      const [lo, hi] = j === 1 ? secondByteRange(lead) : [0x80, 0xbf];
      const c = bytes[bytes.length - k + j];
      if (c < lo || c > hi) return null;
    }
    return { count: k, next: k === 1 ? secondByteRange(lead) : [0x80, 0xbf] };
  }
  return null;
}

/** Whether `bytes[from..]` is valid UTF-8, an unfinished last character allowed. */
function validPrefix(bytes: Uint8Array, from: number): boolean {
  let need = 0;
  let lo = 0x80, hi = 0xbf;
  for (let i = from; i < bytes.length; i++) {
    const b = bytes[i];
    if (need === 0) {
      if (b < 0x80) continue;
      const n = charLength(b);
      if (n === 0) return false;
      need = n - 1;
      [lo, hi] = secondByteRange(b);
    } else {
      if (b < lo || b > hi) return false;
      lo = 0x80;
      hi = 0xbf;
      need--;
    }
  }
  return true;
}

/**
 * The byte table of a vocabulary from each id's bytes (`tokenBytes`, null for text ids) and, for
 * the ids without bytes, whether they decode to nothing (`silent`).
 */
export function tokenByteTable(
  vocabSize: number,
  tokenBytes: (id: number) => Uint8Array | null,
  silent: (id: number) => boolean = () => false,
): TokenByteTable {
  const kind = new Uint8Array(vocabSize);
  const offsets = new Int32Array(vocabSize + 1);
  const parts: (Uint8Array | null)[] = new Array(vocabSize);
  let total = 0;
  for (let id = 0; id < vocabSize; id++) {
    const b = tokenBytes(id);
    parts[id] = b;
    offsets[id] = total;
    if (b) {
      kind[id] = 1;
      total += b.length;
    } else if (silent(id)) kind[id] = 2;
  }
  offsets[vocabSize] = total;
  const data = new Uint8Array(total);
  const leadCont = new Uint8Array(vocabSize);
  const validFrom = new Uint8Array(vocabSize);
  for (let id = 0; id < vocabSize; id++) {
    const b = parts[id];
    if (!b) {
      validFrom[id] = 1; // text: fine where no character is open
      continue;
    }
    data.set(b, offsets[id]);
    let c = 0;
    while (c < b.length && c < 4 && b[c] >= 0x80 && b[c] <= 0xbf) c++;
    leadCont[id] = c;
    let bits = 0;
    for (let j = 0; j < 4 && j <= b.length; j++) if (validPrefix(b, j)) bits |= 1 << j;
    validFrom[id] = bits;
  }
  return { kind, data, offsets, leadCont, validFrom };
}

/**
 * Whether id `id` keeps the byte stream valid UTF-8 after the open character `pending` (or after
 * a finished one when null). Silent ids are always allowed where no character is open.
 */
export function continuesUtf8(
  table: TokenByteTable,
  id: number,
  pending: PendingBytes | null,
): boolean {
  if (id < 0 || id >= table.kind.length) return !pending;
  const kind = table.kind[id];
  if (!pending) return kind === 2 || (table.validFrom[id] & 1) !== 0;
  if (kind !== 1) return false;
  const start = table.offsets[id];
  const len = table.offsets[id + 1] - start;
  if (len === 0) return false;
  const first = table.data[start];
  if (first < pending.next[0] || first > pending.next[1]) return false;
  const r = pending.need;
  // Shorter than what is missing: all continuation bytes; longer: exactly r of them, then valid.
  if (len <= r) return table.leadCont[id] >= len;
  return table.leadCont[id] === r && (table.validFrom[id] & (1 << r)) !== 0;
}
