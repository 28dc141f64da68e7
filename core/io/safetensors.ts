/**
 * safetensors files (spec: tests/fixtures/chatglm6b-tiny/README.md §9): a validating header reader
 * that never trusts a size before checking it, per-tensor reads by offset, and a writer whose bytes
 * are identical to the official library's.
 */

import { isJsonObject, parseJsonStrict, writeFileAtomic } from "../../base/mod.ts";
import { type Dtype, dtypeRank, dtypeSize, f32ToBytes, isDtype, numelOf } from "./dtype.ts";
import { fileSize, readAt } from "./file_range.ts";
import type { StoredTensor, TensorFile } from "./stored_tensor.ts";

export { readTensorBytes } from "./stored_tensor.ts";

/** The official reader's limit on the header length field. */
export const MAX_HEADER_LENGTH = 100_000_000;
/**
 * Most tensors a header may list: real files list a few hundred (the largest public checkpoints
 * a few thousand per shard). Counted on the raw bytes before the JSON is parsed, so a 70 MB
 * header of a million tiny tensors is refused in milliseconds, not after seconds and gigabytes.
 */
export const MAX_HEADER_TENSORS = 100_000;

export interface SafetensorsFile extends TensorFile {
  /** `__metadata__` (string → string), or null when the header has none. */
  metadata: Record<string, string> | null;
  /** Tensors in file order; `byteOffset` is absolute in the file. */
  tensors: Map<string, StoredTensor>;
  /** Header length N (after the 8-byte length field); data starts at 8 + N. */
  headerLength: number;
  fileSize: number;
}

function refuse(path: string, reason: string): never {
  throw new Error(`${path}: not a valid safetensors file: ${reason}`);
}

/**
 * Opens a safetensors file: reads and validates its header (all of §9's checks, in the official
 * reader's order, plus duplicate names). Tensor data is not read.
 */
export async function openSafetensors(path: string): Promise<SafetensorsFile> {
  const size = await fileSize(path);
  if (size < 8) refuse(path, `the file is ${size} bytes, shorter than the 8-byte header length`);
  const file = await Deno.open(path, { read: true });
  try {
    const lenBytes = await readAt(file, 0, 8, path);
    const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
    const headerLength = checkHeaderLength(path, n, size);
    const header = await readAt(file, 8, headerLength, path);
    return parseSafetensorsHeader(path, header, size);
  } finally {
    file.close();
  }
}

/** Same as `openSafetensors` (the header is all it reads). */
export const readSafetensorsHeader = openSafetensors;

function checkHeaderLength(path: string, n: bigint, size: number): number {
  if (n > BigInt(MAX_HEADER_LENGTH)) {
    refuse(
      path,
      `the header length field says ${n} bytes, over the ${MAX_HEADER_LENGTH} byte limit` +
        (n + 8n > BigInt(size) ? ` (and past the end of the ${size}-byte file)` : ""),
    );
  }
  if (n + 8n > BigInt(size)) {
    refuse(path, `the header length ${n} runs past the end of the file (8 + ${n} > ${size} bytes)`);
  }
  return Number(n);
}

/**
 * Validates header bytes (the N bytes after the length field) of a file of `size` bytes and
 * returns the tensor table. `path` only names the file in errors.
 */
export function parseSafetensorsHeader(
  path: string,
  header: Uint8Array,
  size: number,
): SafetensorsFile {
  const headerLength = header.length;
  const declared = countDataOffsets(header, MAX_HEADER_TENSORS + 1);
  if (declared > MAX_HEADER_TENSORS) {
    refuse(
      path,
      `the header lists more than ${MAX_HEADER_TENSORS} tensors (real files list a few hundred)`,
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(header);
  } catch {
    refuse(path, "the header is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = parseJsonStrict(text);
  } catch (err) {
    const msg = (err as Error).message;
    const dup = /^duplicate key (".*") at/.exec(msg);
    if (dup) refuse(path, `the header names tensor ${dup[1]} more than once`);
    refuse(path, `the header is not JSON (${msg})`);
  }
  if (!isJsonObject(json)) refuse(path, "the header is not a JSON object");

  let metadata: Record<string, string> | null = null;
  const entries: { name: string; dtype: Dtype; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, value] of Object.entries(json)) {
    if (name === "__metadata__") {
      if (value === null) continue; // the official reader treats null as no metadata
      if (!isJsonObject(value)) refuse(path, "__metadata__ is not an object of strings");
      metadata = {};
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== "string") {
          refuse(path, `__metadata__ value of ${JSON.stringify(k)} is not a string`);
        }
        metadata[k] = v;
      }
      continue;
    }
    const what = `tensor ${JSON.stringify(name)}`;
    if (!isJsonObject(value)) refuse(path, `${what} is not an object`);
    const { dtype, shape, data_offsets: offsets } = value;
    if (!isDtype(dtype)) {
      refuse(path, `${what} has unknown dtype ${JSON.stringify(dtype)}`);
    }
    if (!Array.isArray(shape) || !shape.every(isSize)) {
      refuse(path, `${what}: shape ${JSON.stringify(shape)} is not a list of sizes`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isSize)) {
      refuse(path, `${what}: data_offsets ${JSON.stringify(offsets)} is not [begin, end]`);
    }
    entries.push({
      name,
      dtype,
      shape: shape as number[],
      begin: offsets[0] as number,
      end: offsets[1] as number,
    });
  }

  // The official validation: sorted by (begin, end), the tensors must tile the data exactly.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  const dataStart = 8 + headerLength;
  const dataSize = size - dataStart;
  const tensors = new Map<string, StoredTensor>();
  let prevEnd = 0;
  let prevName = "";
  for (const e of entries) {
    const what = `tensor ${JSON.stringify(e.name)}`;
    const range = `[${e.begin}, ${e.end})`;
    if (e.end < e.begin) refuse(path, `${what}: data_offsets ${range} end before they begin`);
    if (e.begin < prevEnd) {
      refuse(
        path,
        `${what}'s bytes ${range} overlap tensor ${
          JSON.stringify(prevName)
        } (which ends at ${prevEnd})`,
      );
    }
    if (e.begin > prevEnd) {
      refuse(
        path,
        `data bytes [${prevEnd}, ${e.begin}) belong to no tensor (gap before ${what} at ${range})`,
      );
    }
    let numel: number;
    try {
      numel = numelOf(e.shape);
    } catch {
      refuse(path, `${what}: shape [${e.shape}] has too many elements`);
    }
    const need = numel * dtypeSize(e.dtype);
    if (e.end - e.begin !== need) {
      refuse(
        path,
        `${what}: shape [${e.shape}] of ${e.dtype} needs ${need} bytes, data_offsets ${range} ` +
          `give ${e.end - e.begin}`,
      );
    }
    tensors.set(e.name, {
      dtype: e.dtype,
      shape: e.shape,
      byteOffset: dataStart + e.begin,
      byteLength: need,
    });
    prevEnd = e.end;
    prevName = e.name;
  }
  if (prevEnd > dataSize) {
    refuse(
      path,
      `data_offsets run past the end of the file: tensors end at data byte ${prevEnd}, ` +
        `the file has ${dataSize} data bytes`,
    );
  }
  if (prevEnd < dataSize) {
    refuse(
      path,
      `${dataSize - prevEnd} trailing bytes after the last tensor (tensors end at data byte ` +
        `${prevEnd}, the file has ${dataSize} data bytes)`,
    );
  }
  return { path, metadata, tensors, headerLength, fileSize: size };
}

const DATA_OFFSETS = new TextEncoder().encode('"data_offsets"');

/** Occurrences of `"data_offsets"` in the header bytes, counting up to `stop`. */
function countDataOffsets(header: Uint8Array, stop: number): number {
  let count = 0;
  const first = DATA_OFFSETS[0], n = DATA_OFFSETS.length;
  let i = header.indexOf(first);
  while (i >= 0 && i + n <= header.length) {
    let j = 1;
    while (j < n && header[i + j] === DATA_OFFSETS[j]) j++;
    if (j === n && ++count >= stop) return count;
    i = header.indexOf(first, i + 1);
  }
  return count;
}

function isSize(v: unknown): boolean {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

// --- in-memory decoding -------------------------------------------------------------------------

export interface DecodedTensor {
  dtype: Dtype;
  shape: number[];
  /** The tensor's bytes (a view into the decoded buffer). */
  data: Uint8Array;
}

/** Decodes a whole safetensors file held in memory (small files: adapters, tests). */
export function decodeSafetensors(
  bytes: Uint8Array,
  label = "<memory>",
): { metadata: Record<string, string> | null; tensors: Map<string, DecodedTensor> } {
  if (bytes.length < 8) {
    refuse(label, `the file is ${bytes.length} bytes, shorter than the 8-byte header length`);
  }
  const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  const headerLength = checkHeaderLength(label, n, bytes.length);
  const file = parseSafetensorsHeader(label, bytes.subarray(8, 8 + headerLength), bytes.length);
  const tensors = new Map<string, DecodedTensor>();
  for (const [name, t] of file.tensors) {
    tensors.set(name, {
      dtype: t.dtype,
      shape: t.shape,
      data: bytes.subarray(t.byteOffset, t.byteOffset + t.byteLength),
    });
  }
  return { metadata: file.metadata, tensors };
}

// --- writing ------------------------------------------------------------------------------------

/** Tensor bytes to write; a function is called when the writer reaches the tensor (streaming). */
export type TensorData = ArrayBufferView | (() => ArrayBufferView | Promise<ArrayBufferView>);

export interface TensorToWrite {
  name: string;
  dtype: Dtype;
  shape: number[];
  /**
   * Raw little-endian bytes of `dtype`, as any typed array. A `Float32Array` given for an F16,
   * BF16 or F64 tensor is converted (round to nearest even).
   */
  data: TensorData;
}

export type TensorsToWrite =
  | readonly TensorToWrite[]
  | Record<string, Omit<TensorToWrite, "name">>;

interface PlannedTensor extends TensorToWrite {
  byteLength: number;
  begin: number;
}

const utf8 = new TextEncoder();

function compareUtf8(a: string, b: string): number {
  // UTF-16 order equals code point (= UTF-8 byte) order except for surrogates against U+E000+.
  const wide = /[\ud800-\uffff]/;
  if (!wide.test(a) && !wide.test(b)) return a < b ? -1 : a > b ? 1 : 0;
  const x = utf8.encode(a), y = utf8.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

function planTensors(tensors: TensorsToWrite): PlannedTensor[] {
  const list: TensorToWrite[] = Array.isArray(tensors)
    ? [...tensors as readonly TensorToWrite[]]
    : Object.entries(tensors).map(([name, t]) => ({ name, ...t }));
  const seen = new Set<string>();
  for (const t of list) {
    if (t.name === "__metadata__") throw new Error(`"__metadata__" cannot name a tensor`);
    if (seen.has(t.name)) throw new Error(`tensor ${JSON.stringify(t.name)} given twice`);
    seen.add(t.name);
    if (!isDtype(t.dtype)) throw new Error(`tensor ${JSON.stringify(t.name)}: unknown dtype`);
  }
  // The official order: dtype descending, then name in byte order.
  list.sort((a, b) => dtypeRank(b.dtype) - dtypeRank(a.dtype) || compareUtf8(a.name, b.name));
  let offset = 0;
  return list.map((t) => {
    const byteLength = numelOf(t.shape) * dtypeSize(t.dtype);
    const planned = { ...t, byteLength, begin: offset };
    offset += byteLength;
    return planned;
  });
}

function encodeHeader(planned: PlannedTensor[], metadata?: Record<string, string>): Uint8Array {
  const parts: string[] = [];
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") throw new Error(`metadata ${JSON.stringify(k)} is not a string`);
    }
    parts.push(`"__metadata__":${JSON.stringify(metadata)}`);
  }
  for (const t of planned) {
    parts.push(
      `${JSON.stringify(t.name)}:{"dtype":"${t.dtype}","shape":[${t.shape.join(",")}],` +
        `"data_offsets":[${t.begin},${t.begin + t.byteLength}]}`,
    );
  }
  const json = utf8.encode(`{${parts.join(",")}}`);
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

async function tensorBytes(t: PlannedTensor): Promise<Uint8Array> {
  const view = typeof t.data === "function" ? await t.data() : t.data;
  let bytes: Uint8Array;
  if (
    view instanceof Float32Array && (t.dtype === "F16" || t.dtype === "BF16" || t.dtype === "F64")
  ) {
    bytes = f32ToBytes(view, t.dtype);
  } else {
    bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  }
  if (bytes.byteLength !== t.byteLength) {
    throw new Error(
      `tensor ${JSON.stringify(t.name)}: shape [${t.shape}] of ${t.dtype} needs ${t.byteLength} ` +
        `bytes, its data has ${bytes.byteLength}`,
    );
  }
  return bytes;
}

async function* safetensorsChunks(
  tensors: TensorsToWrite,
  metadata?: Record<string, string>,
): AsyncGenerator<Uint8Array> {
  const planned = planTensors(tensors);
  yield encodeHeader(planned, metadata);
  for (const t of planned) yield await tensorBytes(t);
}

/**
 * Writes a safetensors file atomically, byte-identical to the official library (§9), streaming
 * the header then one tensor at a time (tensor data given as functions is fetched one by one).
 */
export async function writeSafetensors(
  path: string,
  tensors: TensorsToWrite,
  metadata?: Record<string, string>,
): Promise<void> {
  await writeFileAtomic(path, safetensorsChunks(tensors, metadata));
}

/** The bytes of a safetensors file, in memory (small files). */
export async function encodeSafetensors(
  tensors: TensorsToWrite,
  metadata?: Record<string, string>,
): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const c of safetensorsChunks(tensors, metadata)) chunks.push(c);
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}
