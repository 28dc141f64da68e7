/**
 * Tokenized example shards (`train-00000.bin`), the file the trainer streams.
 *
 * Layout (all integers little-endian):
 *
 * | offset | size | field |
 * | --- | --- | --- |
 * | 0 | 8 | magic `MGLMTOK1` (ASCII) |
 * | 8 | 4 | u32 version = 1 |
 * | 12 | 4 | u32 flags: bit 0 = labels stored explicitly |
 * | 16 | 4 | u32 count = number of examples |
 * | 20 | 4 | u32 reserved = 0 |
 * | 24 | 8 | f64 totalTokens (sum of lengths; exact below 2^53) |
 * | 32 | 20·count | index: per example u32 tokenOffset (in tokens from the token area), u32 length, u32 seqLen (prompt length, `[gMASK]` `<sop>` included), u32 labelStart, u32 recordIndex (the record's line in the JSONL shard of the same name, 0-based) |
 * | 32+20·count | 4·totalTokens | i32 input ids of all examples, concatenated |
 * | … | 4·totalTokens | only with flag bit 0: i32 labels, concatenated |
 *
 * Without flag bit 0, labels are `-100` before `labelStart` and equal to the input ids from there
 * on (the prompt module's mask: supervise from `<sop>`). The writer stores labels explicitly only
 * when an example does not follow that rule, so the usual shard is half the size.
 */

import { IGNORE_INDEX } from "../prompt/mod.ts";

export const TOKEN_SHARD_MAGIC = "MGLMTOK1";
const HEADER = 32;
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const ENTRY = 20;

export interface TokenExample {
  inputIds: Int32Array;
  labels: Int32Array;
  seqLen: number;
  labelStart: number;
  recordIndex: number;
}

/** An example as the token stage produces it. */
export interface TokenExampleInput {
  inputIds: ArrayLike<number>;
  labels: ArrayLike<number>;
  seqLen: number;
  recordIndex: number;
}

function labelStartOf(ex: TokenExampleInput): { start: number; derivable: boolean } {
  let start = 0;
  while (start < ex.labels.length && ex.labels[start] === IGNORE_INDEX) start++;
  let derivable = ex.labels.length === ex.inputIds.length;
  for (let i = start; derivable && i < ex.labels.length; i++) {
    if (ex.labels[i] !== ex.inputIds[i]) derivable = false;
  }
  return { start, derivable };
}

/** Serializes examples (in the given order) into one shard. */
export function encodeTokenShard(examples: readonly TokenExampleInput[]): Uint8Array {
  let total = 0;
  let explicit = false;
  const starts = examples.map((ex) => {
    const s = labelStartOf(ex);
    if (!s.derivable) explicit = true;
    total += ex.inputIds.length;
    return s.start;
  });
  const bytes = new Uint8Array(HEADER + ENTRY * examples.length + 4 * total * (explicit ? 2 : 1));
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < 8; i++) bytes[i] = TOKEN_SHARD_MAGIC.charCodeAt(i);
  view.setUint32(8, 1, true);
  view.setUint32(12, explicit ? 1 : 0, true);
  view.setUint32(16, examples.length, true);
  view.setUint32(20, 0, true);
  view.setFloat64(24, total, true);
  const idsAt = HEADER + ENTRY * examples.length;
  const labelsAt = idsAt + 4 * total;
  // The token areas start at multiples of 4, so typed views can fill them; byte-swap afterwards
  // on a big-endian host to keep the file little-endian.
  const ids = new Int32Array(bytes.buffer, idsAt, total);
  const labels = explicit ? new Int32Array(bytes.buffer, labelsAt, total) : null;
  let off = 0;
  examples.forEach((ex, i) => {
    const e = HEADER + ENTRY * i;
    if (off > 0xffffffff) throw new RangeError("token shard too large (over 2^32 tokens)");
    view.setUint32(e, off, true);
    view.setUint32(e + 4, ex.inputIds.length, true);
    view.setUint32(e + 8, ex.seqLen, true);
    view.setUint32(e + 12, starts[i], true);
    view.setUint32(e + 16, ex.recordIndex, true);
    ids.set(ex.inputIds, off);
    labels?.set(ex.labels, off);
    off += ex.inputIds.length;
  });
  if (!LITTLE_ENDIAN) {
    for (let k = idsAt; k < bytes.length; k += 4) {
      const a = bytes[k], b = bytes[k + 1];
      bytes[k] = bytes[k + 3];
      bytes[k + 1] = bytes[k + 2];
      bytes[k + 2] = b;
      bytes[k + 3] = a;
    }
  }
  return bytes;
}

interface ShardHeader {
  count: number;
  flags: number;
  totalTokens: number;
  /** count × [offset, length, seqLen, labelStart, recordIndex] */
  index: Uint32Array;
}

function parseHeader(bytes: Uint8Array, path: string): ShardHeader {
  if (bytes.length < HEADER) {
    throw new Error(`${path}: not a token shard (only ${bytes.length} bytes)`);
  }
  const magic = String.fromCharCode(...bytes.subarray(0, 8));
  if (magic !== TOKEN_SHARD_MAGIC) {
    throw new Error(`${path}: not a token shard (magic ${JSON.stringify(magic)})`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== 1) throw new Error(`${path}: token shard version ${version} is not supported`);
  const flags = view.getUint32(12, true);
  const count = view.getUint32(16, true);
  const totalTokens = view.getFloat64(24, true);
  return { count, flags, totalTokens, index: new Uint32Array(count * 5) };
}

function readIndex(view: DataView, h: ShardHeader): void {
  for (let i = 0; i < h.count * 5; i++) h.index[i] = view.getUint32(HEADER + 4 * i, true);
}

function expectedSize(h: ShardHeader): number {
  return HEADER + ENTRY * h.count + 4 * h.totalTokens * ((h.flags & 1) ? 2 : 1);
}

function makeExample(
  h: ShardHeader,
  i: number,
  ids: Int32Array,
  labels: Int32Array | null,
): TokenExample {
  const seqLen = h.index[5 * i + 2], labelStart = h.index[5 * i + 3];
  let lab = labels;
  if (!lab) {
    lab = new Int32Array(ids.length);
    for (let k = 0; k < ids.length; k++) lab[k] = k < labelStart ? IGNORE_INDEX : ids[k];
  }
  return { inputIds: ids, labels: lab, seqLen, labelStart, recordIndex: h.index[5 * i + 4] };
}

function int32s(bytes: Uint8Array, at: number, n: number): Int32Array {
  if (LITTLE_ENDIAN) return new Int32Array(bytes.slice(at, at + 4 * n).buffer);
  const out = new Int32Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset + at, n * 4);
  for (let k = 0; k < n; k++) out[k] = view.getInt32(4 * k, true);
  return out;
}

/** A whole shard in memory. */
export interface TokenShard {
  count: number;
  totalTokens: number;
  labelsStored: boolean;
  /** Length (ids) of example `i`, without decoding it (for bucketing batches). */
  lengthOf(i: number): number;
  example(i: number): TokenExample;
  [Symbol.iterator](): Iterator<TokenExample>;
}

/** Decodes a shard held in memory; `path` only names it in errors. */
export function decodeTokenShard(bytes: Uint8Array, path = "token shard"): TokenShard {
  const h = parseHeader(bytes, path);
  if (bytes.length !== expectedSize(h)) {
    throw new Error(
      `${path}: truncated or corrupt token shard (${bytes.length} bytes, expected ${
        expectedSize(h)
      })`,
    );
  }
  readIndex(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), h);
  const idsAt = HEADER + ENTRY * h.count;
  const labelsAt = idsAt + 4 * h.totalTokens;
  const example = (i: number): TokenExample => {
    if (!(i >= 0 && i < h.count)) {
      throw new RangeError(`${path}: no example ${i} (count ${h.count})`);
    }
    const off = h.index[5 * i], len = h.index[5 * i + 1];
    const ids = int32s(bytes, idsAt + 4 * off, len);
    const labels = (h.flags & 1) ? int32s(bytes, labelsAt + 4 * off, len) : null;
    return makeExample(h, i, ids, labels);
  };
  return {
    count: h.count,
    totalTokens: h.totalTokens,
    labelsStored: (h.flags & 1) === 1,
    lengthOf: (i) => h.index[5 * i + 1],
    example,
    *[Symbol.iterator]() {
      for (let i = 0; i < h.count; i++) yield example(i);
    },
  };
}

/** Reads a whole shard file. */
export async function readTokenShard(path: string): Promise<TokenShard> {
  return decodeTokenShard(await Deno.readFile(path), path);
}

async function readExactly(file: Deno.FsFile, buf: Uint8Array, path: string): Promise<void> {
  let got = 0;
  while (got < buf.length) {
    const n = await file.read(buf.subarray(got));
    if (n === null) throw new Error(`${path}: unexpected end of token shard`);
    got += n;
  }
}

/**
 * Streams a shard's examples in file order without holding the whole file: the header and index
 * first, then the token area in chunks of about `chunkTokens` ids (labels read alongside when they
 * are stored).
 */
export async function* streamTokenShard(
  path: string,
  chunkTokens = 1 << 20,
): AsyncGenerator<TokenExample> {
  const file = await Deno.open(path, { read: true });
  try {
    const head = new Uint8Array(HEADER);
    await readExactly(file, head, path);
    const h = parseHeader(head, path);
    const size = (await file.stat()).size;
    if (size !== expectedSize(h)) {
      throw new Error(
        `${path}: truncated or corrupt token shard (${size} bytes, expected ${expectedSize(h)})`,
      );
    }
    const indexBytes = new Uint8Array(ENTRY * h.count);
    await readExactly(file, indexBytes, path);
    const iv = new DataView(indexBytes.buffer);
    for (let i = 0; i < h.count * 5; i++) h.index[i] = iv.getUint32(4 * i, true);
    const idsAt = HEADER + ENTRY * h.count;
    const labelsAt = idsAt + 4 * h.totalTokens;
    const stored = (h.flags & 1) === 1;
    let i = 0;
    while (i < h.count) {
      // a run of examples whose tokens fit one chunk (at least one example)
      const first = h.index[5 * i];
      let j = i + 1;
      while (j < h.count && h.index[5 * j] + h.index[5 * j + 1] - first <= chunkTokens) j++;
      const last = h.index[5 * (j - 1)] + h.index[5 * (j - 1) + 1];
      const ids = new Uint8Array(4 * (last - first));
      await file.seek(idsAt + 4 * first, Deno.SeekMode.Start);
      await readExactly(file, ids, path);
      let labels: Uint8Array | null = null;
      if (stored) {
        labels = new Uint8Array(4 * (last - first));
        await file.seek(labelsAt + 4 * first, Deno.SeekMode.Start);
        await readExactly(file, labels, path);
      }
      for (let k = i; k < j; k++) {
        const off = h.index[5 * k] - first, len = h.index[5 * k + 1];
        yield makeExample(
          h,
          k,
          int32s(ids, 4 * off, len),
          labels ? int32s(labels, 4 * off, len) : null,
        );
      }
      i = j;
    }
  } finally {
    file.close();
  }
}
