/**
 * torch.save zip checkpoints (`.bin`, spec: tests/fixtures/chatglm6b-tiny/README.md §10): a zip
 * reader for stored archives (ZIP64 too) that reads the central directory and local headers by
 * offset — never the whole file — and the layer that turns `<root>/data.pkl` (through the safe
 * unpickler) and `<root>/data/<key>` storages into a tensor table.
 */

import { type Dtype, dtypeSize, numelOf } from "./dtype.ts";
import { fileSize, readAt } from "./file_range.ts";
import { isContiguous, type StoredTensor, type TensorFile } from "./stored_tensor.ts";
import { type PickledTensor, storageBytes, unpickleStateDict } from "./unpickle.ts";
import { crc32 } from "./crc32.ts";

export interface ZipEntry {
  name: string;
  method: number;
  flags: number;
  crc32: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
  /** Absolute offset of the entry's bytes, from its local header. */
  dataOffset: number;
}

export interface ZipArchive {
  path: string;
  fileSize: number;
  zip64: boolean;
  entries: Map<string, ZipEntry>;
}

const EOCD_SIG = 0x06054b50;
const EOCD64_SIG = 0x06064b50;
const EOCD64_LOCATOR_SIG = 0x07064b50;
const CENTRAL_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;
const MAX_CENTRAL_DIRECTORY = 1 << 30;
/**
 * Most entries a torch zip may have: one per storage plus three (a real ChatGLM-6B shard has
 * about 60, the largest public state dicts a few thousand). A million-entry directory is refused
 * from the end record, before it is read.
 */
export const MAX_ZIP_ENTRIES = 100_000;

function refuse(path: string, reason: string): never {
  throw new Error(`${path}: not a readable torch zip checkpoint: ${reason}`);
}

function u64(dv: DataView, p: number): number {
  const v = dv.getBigUint64(p, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError("64-bit zip field too large");
  return Number(v);
}

/** Reads a zip archive's directory (stored entries only) by offset. */
export async function openZip(path: string): Promise<ZipArchive> {
  const size = await fileSize(path);
  const file = await Deno.open(path, { read: true });
  try {
    return await readDirectory(file, path, size);
  } catch (err) {
    if (err instanceof RangeError) refuse(path, err.message);
    throw err;
  } finally {
    file.close();
  }
}

async function readDirectory(file: Deno.FsFile, path: string, size: number): Promise<ZipArchive> {
  if (size < 22) refuse(path, `the file is ${size} bytes, too short for a zip archive`);
  const tailLen = Math.min(size, 22 + 0xffff);
  const tail = await readAt(file, size - tailLen, tailLen, path);
  const tdv = new DataView(tail.buffer, tail.byteOffset, tail.byteLength);
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tdv.getUint32(i, true) === EOCD_SIG && i + 22 + tdv.getUint16(i + 20, true) === tailLen) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) {
    const head = await readAt(file, 0, 2, path);
    refuse(
      path,
      head[0] === 0x80
        ? "it is a legacy (torch < 1.6) pickle file, not a zip archive; re-save it with a newer torch"
        : "no zip end-of-central-directory record (not a zip archive, or truncated)",
    );
  }
  let entryCount = tdv.getUint16(eocd + 10, true);
  let cdSize = tdv.getUint32(eocd + 12, true);
  let cdOffset = tdv.getUint32(eocd + 16, true);
  if (tdv.getUint16(eocd + 4, true) !== 0 || tdv.getUint16(eocd + 6, true) !== 0) {
    refuse(path, "multi-disk zip archives are not supported");
  }
  let zip64 = false;
  let directoryEnd = size - tailLen + eocd;
  if (eocd >= 20 && tdv.getUint32(eocd - 20, true) === EOCD64_LOCATOR_SIG) {
    zip64 = true;
    const recOffset = u64(tdv, eocd - 20 + 8);
    if (recOffset + 56 > size - tailLen + eocd - 20) {
      refuse(path, "ZIP64 record offset out of range");
    }
    const rec = await readAt(file, recOffset, 56, path);
    const rdv = new DataView(rec.buffer);
    if (rdv.getUint32(0, true) !== EOCD64_SIG) refuse(path, "bad ZIP64 end-of-central-directory");
    entryCount = u64(rdv, 32);
    cdSize = u64(rdv, 40);
    cdOffset = u64(rdv, 48);
    directoryEnd = recOffset;
  }
  if (entryCount > MAX_ZIP_ENTRIES) {
    refuse(
      path,
      `the archive declares ${entryCount} entries, over the limit of ${MAX_ZIP_ENTRIES} ` +
        "(a torch checkpoint has one per storage)",
    );
  }
  if (cdOffset + cdSize > directoryEnd || cdSize > MAX_CENTRAL_DIRECTORY) {
    refuse(path, `central directory [${cdOffset}, +${cdSize}) lies outside the archive`);
  }
  if (entryCount * 46 > cdSize) {
    refuse(path, `${entryCount} entries do not fit the central directory`);
  }
  const cd = await readAt(file, cdOffset, cdSize, path);
  const dv = new DataView(cd.buffer, cd.byteOffset, cd.byteLength);
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < entryCount; i++) {
    if (p + 46 > cdSize || dv.getUint32(p, true) !== CENTRAL_SIG) {
      refuse(path, `central directory entry ${i} is corrupt`);
    }
    const flags = dv.getUint16(p + 8, true);
    const method = dv.getUint16(p + 10, true);
    const crc = dv.getUint32(p + 16, true);
    let compressedSize = dv.getUint32(p + 20, true);
    let usize = dv.getUint32(p + 24, true);
    const nameLen = dv.getUint16(p + 28, true);
    const extraLen = dv.getUint16(p + 30, true);
    const commentLen = dv.getUint16(p + 32, true);
    let localHeaderOffset = dv.getUint32(p + 42, true);
    const next = p + 46 + nameLen + extraLen + commentLen;
    if (next > cdSize) refuse(path, `central directory entry ${i} runs past the directory`);
    const name = new TextDecoder().decode(cd.subarray(p + 46, p + 46 + nameLen));
    // ZIP64 extended information: present fields replace the 0xffffffff placeholders, in order.
    let e = p + 46 + nameLen;
    const extraEnd = e + extraLen;
    while (e + 4 <= extraEnd) {
      const id = dv.getUint16(e, true);
      const len = dv.getUint16(e + 2, true);
      if (id === 0x0001) {
        let q = e + 4;
        const take = () => {
          if (q + 8 > e + 4 + len) refuse(path, `entry ${name}: short ZIP64 extra field`);
          const v = u64(dv, q);
          q += 8;
          return v;
        };
        if (usize === 0xffffffff) usize = take();
        if (compressedSize === 0xffffffff) compressedSize = take();
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = take();
      }
      e += 4 + len;
    }
    if (flags & 1) refuse(path, `entry ${name} is encrypted`);
    if (method !== 0) {
      refuse(
        path,
        `entry ${name} is compressed (method ${method}${method === 8 ? ", deflate" : ""}); ` +
          "torch.save writes stored entries, so re-save it with torch.save",
      );
    }
    if (compressedSize !== usize) refuse(path, `stored entry ${name} has two different sizes`);
    if (entries.has(name)) refuse(path, `entry ${name} appears twice`);
    entries.set(name, {
      name,
      method,
      flags,
      crc32: crc,
      compressedSize,
      size: usize,
      localHeaderOffset,
      dataOffset: -1,
    });
    p = next;
  }
  // Data starts after the LOCAL header, whose extra field (torch's alignment padding) differs
  // from the central directory's.
  for (const entry of entries.values()) {
    if (entry.localHeaderOffset + 30 > cdOffset) {
      refuse(path, `entry ${entry.name}: local header offset out of range`);
    }
    const head = await readAt(file, entry.localHeaderOffset, 30, path);
    const hdv = new DataView(head.buffer);
    if (hdv.getUint32(0, true) !== LOCAL_SIG) refuse(path, `entry ${entry.name}: bad local header`);
    const nameLen = hdv.getUint16(26, true);
    const extraLen = hdv.getUint16(28, true);
    entry.dataOffset = entry.localHeaderOffset + 30 + nameLen + extraLen;
    if (entry.dataOffset + entry.size > cdOffset) {
      refuse(path, `entry ${entry.name}: data runs past the central directory`);
    }
  }
  return { path, fileSize: size, zip64, entries };
}

/** Reads a whole entry (small entries: data.pkl, version, byteorder). */
export async function readZipEntry(archive: ZipArchive, name: string): Promise<Uint8Array> {
  const entry = archive.entries.get(name);
  if (!entry) throw new Error(`${archive.path}: no zip entry ${name}`);
  const file = await Deno.open(archive.path, { read: true });
  try {
    return await readAt(file, entry.dataOffset, entry.size, archive.path);
  } finally {
    file.close();
  }
}

export interface TorchZipFile extends TensorFile {
  /** The archive's root folder (the file stem at save time, or `archive`). */
  root: string;
  /** The state dict as pickled: storage views, in pickle order. */
  pickled: Map<string, PickledTensor>;
  archive: ZipArchive;
}

const MAX_PICKLE = 1 << 30;

/**
 * Opens a torch.save zip: validates the layout, unpickles `<root>/data.pkl` safely, checks every
 * storage against its `<root>/data/<key>` entry, and returns where each tensor's bytes are.
 */
export async function openTorchZip(path: string): Promise<TorchZipFile> {
  const archive = await openZip(path);
  const names = [...archive.entries.keys()];
  for (const name of names) {
    const parts = name.split("/");
    if (
      name.startsWith("/") || name.includes("\\") || parts.includes("..") || parts.includes(".")
    ) {
      refuse(path, `entry ${JSON.stringify(name)} would leave the archive's folder`);
    }
  }
  const pickles = names.filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pickles.length === 0) refuse(path, "no <root>/data.pkl entry (not a torch.save archive)");
  if (pickles.length > 1) refuse(path, `several data.pkl entries: ${pickles.join(", ")}`);
  const root = pickles[0].slice(0, -"/data.pkl".length);
  for (const name of names) {
    if (!name.startsWith(root + "/")) refuse(path, `entry ${name} is outside the root ${root}/`);
  }
  const byteorder = archive.entries.get(`${root}/byteorder`);
  if (byteorder) {
    const order = new TextDecoder().decode(await readZipEntry(archive, byteorder.name)).trim();
    if (order === "big") refuse(path, "it stores big-endian tensors (byteorder big): unsupported");
    if (order !== "little") refuse(path, `unknown byteorder ${JSON.stringify(order)}`);
  }
  const pklEntry = archive.entries.get(pickles[0])!;
  if (pklEntry.size > MAX_PICKLE) refuse(path, `${pickles[0]} is ${pklEntry.size} bytes`);
  const pkl = await readZipEntry(archive, pickles[0]);
  if (pklEntry.crc32 !== 0 && crc32(pkl) !== pklEntry.crc32) {
    refuse(path, `${pickles[0]} fails its CRC check (corrupt file)`);
  }
  const pickled = unpickleStateDict(pkl, `${path} (${pickles[0]})`);

  const tensors = new Map<string, StoredTensor>();
  for (const [name, p] of pickled) {
    const entryName = `${root}/data/${p.storageKey}`;
    const entry = archive.entries.get(entryName);
    if (!entry) {
      throw new Error(
        `${path}: refused: tensor ${JSON.stringify(name)} names storage '${p.storageKey}', but ` +
          `the archive has no ${entryName} entry`,
      );
    }
    const want = storageBytes(p);
    if (entry.size !== want) {
      throw new Error(
        `${path}: refused: storage ${entryName} is ${entry.size} bytes, but its persistent id ` +
          `says ${p.storageNumel} ${p.dtype} elements (${want} bytes)`,
      );
    }
    try {
      tensors.set(name, toStored(p, entry.dataOffset));
    } catch (err) {
      // e.g. a stride-0 view whose shape has more elements than a number can count.
      throw new Error(
        `${path}: refused: tensor ${JSON.stringify(name)}: ${(err as Error).message}`,
      );
    }
  }
  return { path, root, tensors, pickled, archive };
}

function toStored(p: PickledTensor, storageDataOffset: number): StoredTensor {
  const size = dtypeSize(p.dtype as Dtype);
  const t: StoredTensor = {
    dtype: p.dtype,
    shape: p.shape,
    byteOffset: storageDataOffset + p.storageOffset * size,
    byteLength: numelOf(p.shape) * size,
  };
  if (!isContiguous(p.shape, p.stride)) t.strides = p.stride;
  return t;
}
