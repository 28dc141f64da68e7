/**
 * Writes a state dict as a torch.save zip (spec: tests/fixtures/chatglm6b-tiny/README.md §10), in
 * the layout torch itself writes: stored entries whose data start at multiples of 64 bytes (an
 * `FB` extra field of `Z`s), flag bit 3 with zero sizes in local headers and a data descriptor
 * after each entry, ZIP64 end records, `<root>/data.pkl` (protocol 2), `<root>/data/<key>`
 * storages and `<root>/version`. Streamed (one storage at a time) and atomic.
 */

import { writeFileAtomic } from "../../base/mod.ts";
import { type Dtype, dtypeSize, f32ToBytes, numelOf } from "./dtype.ts";
import { crc32 } from "./crc32.ts";
import {
  pickleStateDict,
  type PickleStateDictOptions,
  type PickleTensorView,
} from "./pickle_writer.ts";
import { contiguousStrides, stridedSpan } from "./stored_tensor.ts";

/** A storage several tensors may share (by object identity). */
export interface TorchStorage {
  dtype: Dtype;
  /** Raw little-endian bytes (any typed array view). */
  data: ArrayBufferView;
}

export interface TorchTensorToWrite {
  name: string;
  shape: number[];
  /** A contiguous tensor: its own storage. `Float32Array` data for F16/BF16 is converted. */
  dtype?: Dtype;
  data?: ArrayBufferView | (() => ArrayBufferView | Promise<ArrayBufferView>);
  /** Or a view over a (possibly shared) storage. */
  storage?: TorchStorage;
  storageOffset?: number;
  /** Element strides (default row-major). */
  stride?: number[];
  requiresGrad?: boolean;
}

export interface TorchWriteOptions extends PickleStateDictOptions {
  /** Archive root folder; torch uses the file name's stem (default). */
  root?: string;
  /** Write `<root>/byteorder` = `little` as torch ≥ 2.0 does (default true). */
  byteorder?: boolean;
  /** ZIP64 extra fields on every entry even when small (tests of ZIP64 readers). */
  forceZip64?: boolean;
}

interface StorageSlot {
  key: string;
  dtype: Dtype;
  numel: number;
  bytes: () => Promise<Uint8Array>;
}

function stemOf(path: string): string {
  const base = path.slice(Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\")) + 1);
  const dot = base.lastIndexOf(".");
  return dot > 0 ? base.slice(0, dot) : base;
}

function asBytes(view: ArrayBufferView, dtype: Dtype): Uint8Array {
  if (view instanceof Float32Array && (dtype === "F16" || dtype === "BF16" || dtype === "F64")) {
    return f32ToBytes(view, dtype);
  }
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

function plan(
  tensors: TorchTensorToWrite[],
): { views: PickleTensorView[]; storages: StorageSlot[] } {
  const keys = new Map<TorchStorage, string>();
  const storages: StorageSlot[] = [];
  const views: PickleTensorView[] = [];
  const names = new Set<string>();
  let nextKey = 0; // torch numbers storages in order of first use
  for (const t of tensors) {
    if (names.has(t.name)) throw new Error(`tensor ${JSON.stringify(t.name)} given twice`);
    names.add(t.name);
    const what = `tensor ${JSON.stringify(t.name)}`;
    const numel = numelOf(t.shape);
    if (t.storage) {
      const s = t.storage;
      const size = dtypeSize(s.dtype);
      if (s.data.byteLength % size) {
        throw new Error(`${what}: storage bytes are not whole elements`);
      }
      let key = keys.get(s);
      if (key === undefined) {
        key = String(nextKey++);
        keys.set(s, key);
        storages.push({
          key,
          dtype: s.dtype,
          numel: s.data.byteLength / size,
          bytes: () => Promise.resolve(asBytes(s.data, s.dtype)),
        });
      }
      const stride = t.stride ?? contiguousStrides(t.shape);
      const offset = t.storageOffset ?? 0;
      const span = stridedSpan(t.shape, stride);
      if (stride.length !== t.shape.length) {
        throw new Error(`${what}: stride and shape differ in rank`);
      }
      if (span && offset + span > s.data.byteLength / size) {
        throw new Error(`${what}: view does not fit in its storage`);
      }
      views.push({
        name: t.name,
        storageKey: key,
        dtype: s.dtype,
        storageNumel: s.data.byteLength / size,
        storageOffset: offset,
        shape: t.shape,
        stride,
        requiresGrad: t.requiresGrad ?? false,
      });
      continue;
    }
    const dtype = t.dtype;
    const data = t.data;
    if (!dtype || data === undefined) {
      throw new Error(`${what}: needs dtype and data, or a storage`);
    }
    const key = String(nextKey++);
    const byteLength = numel * dtypeSize(dtype);
    storages.push({
      key,
      dtype,
      numel,
      bytes: async () => {
        const b = asBytes(typeof data === "function" ? await data() : data, dtype);
        if (b.byteLength !== byteLength) {
          throw new Error(
            `${what}: shape [${t.shape}] of ${dtype} needs ${byteLength} bytes, got ${b.byteLength}`,
          );
        }
        return b;
      },
    });
    views.push({
      name: t.name,
      storageKey: key,
      dtype,
      storageNumel: numel,
      storageOffset: 0,
      shape: t.shape,
      stride: t.stride ?? contiguousStrides(t.shape),
      requiresGrad: t.requiresGrad ?? false,
    });
  }
  return { views, storages };
}

// --- zip records --------------------------------------------------------------------------------

const U32_MAX = 0xffffffff;

interface CentralRecord {
  name: Uint8Array;
  crc: number;
  size: number;
  offset: number;
  zip64: boolean;
}

function zip64Extra(size: number, offset: number, all: boolean): Uint8Array {
  const fields: number[] = [];
  if (all || size >= U32_MAX) fields.push(size, size); // uncompressed, compressed
  if (all || offset >= U32_MAX) fields.push(offset);
  const out = new Uint8Array(4 + 8 * fields.length);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, 0x0001, true);
  dv.setUint16(2, 8 * fields.length, true);
  fields.forEach((v, i) => dv.setBigUint64(4 + 8 * i, BigInt(v), true));
  return out;
}

function localHeader(name: Uint8Array, size: number, offset: number, force64: boolean): {
  header: Uint8Array;
  zip64: boolean;
} {
  const zip64 = force64 || size >= U32_MAX || offset >= U32_MAX;
  const z = zip64 ? zip64Extra(size, offset, force64) : new Uint8Array(0);
  // torch's alignment: the data must start at a multiple of 64 after the FB field's 4 bytes.
  const start = offset + 30 + name.length + z.length + 4;
  const pad = (64 - (start % 64)) % 64;
  const out = new Uint8Array(30 + name.length + z.length + 4 + pad);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, 0x04034b50, true);
  dv.setUint16(4, 0, true); // version needed (torch/miniz write 0)
  dv.setUint16(6, 0x0808, true); // bit 3: sizes in the descriptor; bit 11: UTF-8 names
  // method, time, date, crc and sizes stay 0: the data descriptor carries crc and sizes.
  dv.setUint16(26, name.length, true);
  dv.setUint16(28, z.length + 4 + pad, true);
  out.set(name, 30);
  out.set(z, 30 + name.length);
  const fb = 30 + name.length + z.length;
  out[fb] = 0x46; // 'F'
  out[fb + 1] = 0x42; // 'B'
  dv.setUint16(fb + 2, pad, true);
  out.fill(0x5a, fb + 4); // 'Z'
  return { header: out, zip64 };
}

function dataDescriptor(crc: number, size: number, zip64: boolean): Uint8Array {
  const out = new Uint8Array(zip64 ? 24 : 16);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, 0x08074b50, true);
  dv.setUint32(4, crc, true);
  if (zip64) {
    dv.setBigUint64(8, BigInt(size), true);
    dv.setBigUint64(16, BigInt(size), true);
  } else {
    dv.setUint32(8, size, true);
    dv.setUint32(12, size, true);
  }
  return out;
}

function centralDirectory(
  records: CentralRecord[],
  cdOffset: number,
  force64: boolean,
): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const r of records) {
    const z = r.zip64 ? zip64Extra(r.size, r.offset, force64) : new Uint8Array(0);
    const e = new Uint8Array(46 + r.name.length + z.length);
    const dv = new DataView(e.buffer);
    dv.setUint32(0, 0x02014b50, true);
    dv.setUint16(8, 0x0808, true);
    dv.setUint32(16, r.crc, true);
    const big = force64 || r.size >= U32_MAX;
    dv.setUint32(20, big ? U32_MAX : r.size, true);
    dv.setUint32(24, big ? U32_MAX : r.size, true);
    dv.setUint16(28, r.name.length, true);
    dv.setUint16(30, z.length, true);
    dv.setUint32(42, force64 || r.offset >= U32_MAX ? U32_MAX : r.offset, true);
    e.set(r.name, 46);
    e.set(z, 46 + r.name.length);
    parts.push(e);
  }
  const cdSize = parts.reduce((n, p) => n + p.length, 0);
  const eocd64Offset = cdOffset + cdSize;
  const tail = new Uint8Array(56 + 20 + 22);
  const dv = new DataView(tail.buffer);
  dv.setUint32(0, 0x06064b50, true);
  dv.setBigUint64(4, 44n, true);
  dv.setUint16(12, 0x031e, true);
  dv.setUint16(14, 0x002d, true);
  dv.setBigUint64(24, BigInt(records.length), true);
  dv.setBigUint64(32, BigInt(records.length), true);
  dv.setBigUint64(40, BigInt(cdSize), true);
  dv.setBigUint64(48, BigInt(cdOffset), true);
  dv.setUint32(56, 0x07064b50, true);
  dv.setBigUint64(64, BigInt(eocd64Offset), true);
  dv.setUint32(72, 1, true);
  dv.setUint32(76, 0x06054b50, true);
  dv.setUint16(84, Math.min(records.length, 0xffff), true);
  dv.setUint16(86, Math.min(records.length, 0xffff), true);
  dv.setUint32(88, Math.min(cdSize, U32_MAX), true);
  dv.setUint32(92, Math.min(cdOffset, U32_MAX), true);
  parts.push(tail);
  const out = new Uint8Array(cdSize + tail.length);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

async function* zipChunks(
  entries: { name: string; size: number; bytes: () => Promise<Uint8Array> }[],
  force64: boolean,
): AsyncGenerator<Uint8Array> {
  const records: CentralRecord[] = [];
  let cursor = 0;
  const enc = new TextEncoder();
  for (const entry of entries) {
    const name = enc.encode(entry.name);
    const { header, zip64 } = localHeader(name, entry.size, cursor, force64);
    const offset = cursor;
    yield header;
    cursor += header.length;
    const data = await entry.bytes();
    if (data.length !== entry.size) throw new Error(`zip entry ${entry.name}: size changed`);
    const crc = crc32(data);
    yield data;
    cursor += data.length;
    const desc = dataDescriptor(crc, data.length, zip64);
    yield desc;
    cursor += desc.length;
    records.push({ name, crc, size: data.length, offset, zip64 });
  }
  yield centralDirectory(records, cursor, force64);
}

function archiveEntries(
  tensors: TorchTensorToWrite[],
  root: string,
  options: TorchWriteOptions,
) {
  const { views, storages } = plan(tensors);
  const pkl = pickleStateDict(views, options);
  const entries: { name: string; size: number; bytes: () => Promise<Uint8Array> }[] = [
    { name: `${root}/data.pkl`, size: pkl.length, bytes: () => Promise.resolve(pkl) },
  ];
  if (options.byteorder ?? true) {
    const little = new TextEncoder().encode("little");
    entries.push({ name: `${root}/byteorder`, size: 6, bytes: () => Promise.resolve(little) });
  }
  // torch writes storages sorted by key as strings ("0", "1", "10", "11", …, "2").
  const sorted = [...storages].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  for (const s of sorted) {
    entries.push({
      name: `${root}/data/${s.key}`,
      size: s.numel * dtypeSize(s.dtype),
      bytes: s.bytes,
    });
  }
  const version = new TextEncoder().encode("3\n");
  entries.push({ name: `${root}/version`, size: 2, bytes: () => Promise.resolve(version) });
  return entries;
}

function toList(
  tensors: TorchTensorToWrite[] | Record<string, Omit<TorchTensorToWrite, "name">>,
): TorchTensorToWrite[] {
  return Array.isArray(tensors)
    ? tensors
    : Object.entries(tensors).map(([name, t]) => ({ name, ...t }));
}

/** Writes a state dict as a torch.save zip at `path`, atomically, one storage at a time. */
export async function writeTorchStateDict(
  path: string,
  tensors: TorchTensorToWrite[] | Record<string, Omit<TorchTensorToWrite, "name">>,
  options: TorchWriteOptions = {},
): Promise<void> {
  const entries = archiveEntries(toList(tensors), options.root ?? stemOf(path), options);
  await writeFileAtomic(path, zipChunks(entries, options.forceZip64 ?? false));
}

/** The bytes of a torch.save zip, in memory (small state dicts). */
export async function encodeTorchStateDict(
  tensors: TorchTensorToWrite[] | Record<string, Omit<TorchTensorToWrite, "name">>,
  options: TorchWriteOptions = {},
): Promise<Uint8Array> {
  const entries = archiveEntries(toList(tensors), options.root ?? "archive", options);
  const chunks: Uint8Array[] = [];
  for await (const c of zipChunks(entries, options.forceZip64 ?? false)) chunks.push(c);
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** A stored zip of arbitrary entries in torch's layout, in memory (tests, small archives). */
export async function encodeStoredZip(
  entries: { name: string; data: Uint8Array }[],
  options: { forceZip64?: boolean } = {},
): Promise<Uint8Array> {
  const list = entries.map((e) => ({
    name: e.name,
    size: e.data.length,
    bytes: () => Promise.resolve(e.data),
  }));
  const chunks: Uint8Array[] = [];
  for await (const c of zipChunks(list, options.forceZip64 ?? false)) chunks.push(c);
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}
