/**
 * GPU tensors: shape, dtype and storage from the buffer pool; upload, download, free views.
 *
 * Storage layout: row-major. A tensor is seen as `rows × rowLength` (rowLength = last dimension).
 * When its bytes exceed the binding limit (maxStorageBufferBindingSize, 128 MiB on llvmpipe) it is
 * split into chunks of whole rows, one buffer each (the real ChatGLM-6B embedding and lm_head are
 * ~1 GiB in f16). Kernels that accept chunked operands dispatch once per chunk; the others throw.
 *
 * f16 tensors hold IEEE half bit patterns, two per 32-bit word; kernels read them with
 * `unpack2x16float`, which needs no `shader-f16`. Kernel outputs are f32 (use `cast` for f16).
 */

import { type Gpu, GpuError } from "../gpu/device.ts";
import type { Recording } from "../gpu/recording.ts";
import { fromF16Bits, toF16Bits } from "./f16.ts";
import { acquireBuffer, destroyBuffer, releaseBuffer } from "./pool.ts";

/** "q8"/"q4": a weight-only quantized [out, in] weight whose storage is in `Tensor.quant` (core/quant). */
export type DType = "f32" | "f16" | "i32" | "u32" | "q8" | "q4";

/**
 * The storage of a quantized weight (built by core/quant/gpu_weight.ts, read by
 * core/kernels/matmul/quant.ts): packed values and scales in the form the adapter's kernels read.
 */
export interface QuantStorage {
  readonly bits: 4 | 8;
  /** Input columns per scale (= in for the original's per-row layout). */
  readonly groupSize: number;
  /** "texture": rgba32uint textures (software adapters); "buffer": storage buffers. */
  readonly design: "texture" | "buffer";
  destroy(): void;
}

/** One buffer of a (possibly chunked) tensor: rows `[rowStart, rowStart + rows)`. */
export interface TensorChunk {
  readonly buffer: GPUBuffer;
  /** Byte offset of the chunk's first element in `buffer` (non-zero only for views). */
  readonly byteOffset: number;
  /** Bytes of data in this chunk (rows × rowLength × element size). */
  readonly byteLength: number;
  readonly rowStart: number;
  readonly rows: number;
}

/** A tensor on the GPU. Treat every field as read-only. */
export interface Tensor {
  readonly gpu: Gpu;
  shape: number[];
  readonly dtype: DType;
  /** The buffer of the first (usually only) chunk. */
  readonly buffer: GPUBuffer;
  /** Byte offset of element 0 in `buffer` (non-zero for row-slice views). */
  readonly byteOffset: number;
  /** Total bytes of data (numel × element size). */
  readonly byteLength: number;
  /** Elements per row (last dimension, 1 for scalars); chunks split between rows. */
  readonly rowLength: number;
  /** Storage chunks in row order; length 1 unless the tensor is larger than one binding. */
  readonly chunks: readonly TensorChunk[];
  /** The tensor a view was made from (views own no storage and cannot be released). */
  readonly base: Tensor | null;
  /** Set by {@link releaseTensor}; using a released tensor throws. */
  released: boolean;
  label?: string;
  /**
   * Shared by a tensor and its views: `version` counts writes (uploads, kernels writing it as
   * `out`), `attachments` hold GPU resources derived from the contents (e.g. a weight repacked
   * as a texture), tagged with the version they were made from and destroyed on release.
   */
  readonly meta: TensorMeta;
  /** Set for dtype q8/q4: where the quantized values and scales are. */
  readonly quant?: QuantStorage;
}

/** See {@link Tensor.meta}. */
export interface TensorMeta {
  version: number;
  readonly attachments: Map<string, { version: number; destroy(): void }>;
  /**
   * Set when the storage buffers were freed because the kernels read only a derived attachment
   * (a weight kept as its packed texture: one copy); says why, for the error of a later reader.
   */
  storageDropped?: string;
}

/**
 * Frees the storage buffers of `t`, whose readers all use an attachment made from it (see
 * {@link TensorMeta.storageDropped}); the tensor stays live for them. A later storage read throws
 * an error quoting `reason`.
 */
export function dropStorage(t: Tensor, reason: string): void {
  assertLive(t, "dropStorage");
  if (t.base) throw new GpuError("dropStorage: a view owns no storage");
  if (t.meta.storageDropped) return;
  t.meta.storageDropped = reason;
  for (const c of t.chunks) destroyBuffer(t.gpu, c.buffer);
}

function assertStorage(t: Tensor, what: string): void {
  if (t.meta.storageDropped) {
    throw new GpuError(
      `${what}: ${t.label ?? "tensor"} has no storage buffer (${t.meta.storageDropped})`,
    );
  }
}

/** Marks `t` as written (invalidates derived attachments). Kernels call it for their outputs. */
export function markWritten(t: Tensor): void {
  t.meta.version++;
}

/** Options for creating a tensor. */
export interface TensorOptions {
  /** Largest chunk in bytes (default: the device's maxStorageBufferBindingSize). Tests force small chunks. */
  chunkBytes?: number;
  /** Rows per chunk, overriding `chunkBytes` (gives two tensors of different dtypes the same chunking). */
  rowsPerChunk?: number;
  /** Debug label. */
  label?: string;
  /** Allocate inside a recording: buffers released earlier in it may be reused. */
  rec?: Recording;
}

/** Bytes per element. */
export function dtypeBytes(dtype: DType): number {
  return dtype === "f16" ? 2 : dtype === "q8" ? 1 : dtype === "q4" ? 0.5 : 4;
}

/** Number of elements of a shape (1 for `[]`). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function checkShape(shape: readonly number[]): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new RangeError(`invalid shape [${shape.join(", ")}]`);
  }
}

/** The default chunk limit of the device. */
export function maxChunkBytes(gpu: Gpu): number {
  const binding = gpu.limits.maxStorageBufferBindingSize ?? 134217728;
  const buffer = gpu.limits.maxBufferSize ?? binding;
  return Math.floor(Math.min(binding, buffer) / 256) * 256;
}

/** Rows per chunk for a row of `rowBytes` (each chunk is its own buffer, padded to 4 bytes). */
function rowsPerChunk(rowBytes: number, rows: number, limit: number, name: string): number {
  if (rows * rowBytes <= limit) return Math.max(rows, 1);
  const per = Math.floor(limit / Math.max(rowBytes, 1));
  if (per < 1) {
    throw new RangeError(
      `${name}: one row of ${rowBytes} bytes does not fit a binding of ${limit} bytes`,
    );
  }
  return per;
}

/** An uninitialised tensor (contents are whatever the pooled buffer held). */
export function emptyTensor(
  gpu: Gpu,
  shape: readonly number[],
  dtype: DType = "f32",
  options: TensorOptions = {},
): Tensor {
  checkShape(shape);
  const rowLength = shape.length === 0 ? 1 : shape[shape.length - 1];
  const n = numel(shape);
  const rows = rowLength === 0 ? 0 : n / rowLength;
  const bytes = dtypeBytes(dtype);
  const limit = options.chunkBytes ?? maxChunkBytes(gpu);
  const per = options.rowsPerChunk ??
    rowsPerChunk(rowLength * bytes, rows, limit, options.label ?? "tensor");
  if (!Number.isInteger(per) || per < 1 || (rows > per && per * rowLength * bytes > limit)) {
    throw new RangeError(
      `emptyTensor: ${per} rows per chunk do not fit a binding of ${limit} bytes`,
    );
  }
  const chunks: TensorChunk[] = [];
  for (let start = 0; start < rows || chunks.length === 0; start += per) {
    const r = Math.min(per, rows - start);
    const byteLength = r * rowLength * bytes;
    chunks.push({
      buffer: acquireBuffer(gpu, Math.max(4, byteLength), options.rec),
      byteOffset: 0,
      byteLength,
      rowStart: start,
      rows: r,
    });
    if (rows === 0) break;
  }
  return {
    gpu,
    shape: [...shape],
    dtype,
    buffer: chunks[0].buffer,
    byteOffset: 0,
    byteLength: n * bytes,
    rowLength,
    chunks,
    base: null,
    released: false,
    label: options.label,
    meta: { version: 0, attachments: new Map() },
  };
}

type UploadData = Float32Array | Int32Array | Uint32Array | Uint16Array;

function defaultDtype(data: UploadData): DType {
  if (data instanceof Float32Array) return "f32";
  if (data instanceof Int32Array) return "i32";
  if (data instanceof Uint32Array) return "u32";
  return "f16";
}

/**
 * Uploads `data` as a tensor. dtype defaults from the array type (Uint16Array = f16 bit
 * patterns); a Float32Array uploaded as "f16" is rounded to nearest even on the CPU.
 */
export function uploadTensor(
  gpu: Gpu,
  data: UploadData,
  shape: readonly number[],
  dtype: DType = defaultDtype(data),
  options: TensorOptions = {},
): Tensor {
  checkShape(shape);
  const n = numel(shape);
  if (data.length !== n) {
    throw new RangeError(
      `uploadTensor${options.label ? ` ${options.label}` : ""}: ${data.length} values for shape ` +
        `[${shape.join(", ")}] (${n} elements)`,
    );
  }
  let bytes: ArrayBufferView;
  if (dtype === "f16") {
    if (data instanceof Uint16Array) bytes = data;
    else if (data instanceof Float32Array) bytes = toF16Bits(data);
    else throw new TypeError(`uploadTensor: f16 needs Float32Array or Uint16Array data`);
  } else if (dtype === "f32") {
    if (!(data instanceof Float32Array)) {
      throw new TypeError("uploadTensor: f32 needs Float32Array");
    }
    bytes = data;
  } else {
    if (data instanceof Float32Array || data instanceof Uint16Array) {
      throw new TypeError(`uploadTensor: ${dtype} needs Int32Array or Uint32Array data`);
    }
    bytes = data;
  }
  const t = emptyTensor(gpu, shape, dtype, options);
  writeTensor(t, bytes);
  return t;
}

/** Overwrites the whole contents of `t` from raw element data (queue timeline: before later submits). */
export function writeTensor(t: Tensor, data: ArrayBufferView): void {
  assertLive(t, "writeTensor");
  assertStorage(t, "writeTensor");
  if (data.byteLength !== t.byteLength) {
    throw new RangeError(`writeTensor: ${data.byteLength} bytes for a tensor of ${t.byteLength}`);
  }
  const src = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
  markWritten(t);
  const queue = t.gpu.device.queue;
  let pos = 0;
  for (const c of t.chunks) {
    if (c.byteLength === 0) continue;
    const len = c.byteLength;
    if (len % 4 === 0) queue.writeBuffer(c.buffer, c.byteOffset, src, pos, len);
    else {
      // writeBuffer needs a multiple of 4 bytes: pad the tail (the padding is not part of the tensor).
      const padded = new Uint8Array(Math.ceil(len / 4) * 4);
      padded.set(src.subarray(pos, pos + len));
      queue.writeBuffer(c.buffer, c.byteOffset, padded);
    }
    pos += len;
  }
}

/**
 * Reads a tensor back (after the submits that produced it): f32 and f16 as Float32Array, i32 as
 * Int32Array, u32 as Uint32Array. Throws any GPU error recorded meanwhile.
 */
export async function readTensor(t: Tensor): Promise<Float32Array | Int32Array | Uint32Array> {
  return (await readTensors([t]))[0];
}

/**
 * Reads several tensors in one GPU round trip (each round trip costs ~11 ms on llvmpipe), same
 * conversions as {@link readTensor}.
 */
export async function readTensors(
  ts: readonly Tensor[],
): Promise<Array<Float32Array | Int32Array | Uint32Array>> {
  const raws = await readRawMany(ts);
  return ts.map((t, i) => {
    const raw = raws[i];
    if (t.dtype === "f16") return fromF16Bits(new Uint16Array(raw, 0, t.byteLength / 2));
    if (t.dtype === "i32") return new Int32Array(raw, 0, t.byteLength / 4);
    if (t.dtype === "u32") return new Uint32Array(raw, 0, t.byteLength / 4);
    return new Float32Array(raw, 0, t.byteLength / 4);
  });
}

/** Reads an f32 or f16 tensor as a Float32Array (typed convenience over {@link readTensor}). */
export async function readFloat32(t: Tensor): Promise<Float32Array> {
  if (t.dtype !== "f32" && t.dtype !== "f16") {
    throw new GpuError(`readFloat32: tensor has dtype ${t.dtype}`);
  }
  return await readTensor(t) as Float32Array;
}

/** Reads a tensor's raw bytes (f16 stays bit patterns). */
export async function readRaw(t: Tensor): Promise<ArrayBuffer> {
  return (await readRawMany([t]))[0];
}

const pad4 = (n: number) => Math.ceil(n / 4) * 4;

async function readRawMany(ts: readonly Tensor[]): Promise<ArrayBuffer[]> {
  if (ts.length === 0) return [];
  const gpu = ts[0].gpu;
  for (const t of ts) {
    assertLive(t, "readTensor");
    if (t.quant) throw new GpuError(`readTensor: ${t.label ?? "tensor"} is quantized (${t.dtype})`);
    assertStorage(t, "readTensor");
    if (t.gpu !== gpu) throw new GpuError("readTensors: tensors live on different devices");
  }
  gpu.checkErrors();
  const total = ts.reduce((s, t) => s + t.chunks.reduce((a, c) => a + pad4(c.byteLength), 0), 0);
  if (total === 0) return ts.map(() => new ArrayBuffer(0));
  const device = gpu.device;
  const staging = device.createBuffer({
    size: total,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  try {
    const encoder = device.createCommandEncoder();
    let pos = 0;
    for (const t of ts) {
      for (const c of t.chunks) {
        const len = pad4(c.byteLength);
        if (len > 0) encoder.copyBufferToBuffer(c.buffer, c.byteOffset, staging, pos, len);
        pos += len;
      }
    }
    device.pushErrorScope("validation");
    device.queue.submit([encoder.finish()]);
    const err = await device.popErrorScope();
    if (err) throw new GpuError(`readTensor: ${err.message}`);
    await staging.mapAsync(GPUMapMode.READ);
    const mapped = new Uint8Array(staging.getMappedRange());
    // Chunks are padded to 4 bytes on the GPU; pack each tensor's data back together.
    let src = 0;
    const outs = ts.map((t) => {
      const out = new Uint8Array(t.byteLength);
      let dst = 0;
      for (const c of t.chunks) {
        out.set(mapped.subarray(src, src + c.byteLength), dst);
        src += pad4(c.byteLength);
        dst += c.byteLength;
      }
      return out.buffer;
    });
    staging.unmap();
    gpu.checkErrors();
    return outs;
  } finally {
    staging.destroy();
  }
}

/**
 * Returns the storage of `t` to the pool. Pass the open recording that last used it to let later
 * dispatches of that recording reuse the buffer. Views cannot be released (release their base).
 */
export function releaseTensor(t: Tensor, rec?: Recording): void {
  if (t.base) throw new GpuError("releaseTensor: cannot release a view; release its base tensor");
  if (t.released) throw new GpuError(`releaseTensor: ${t.label ?? "tensor"} is already released`);
  t.released = true;
  for (const a of t.meta.attachments.values()) a.destroy();
  t.meta.attachments.clear();
  t.quant?.destroy();
  // Dropped storage was destroyed, never to be pooled again.
  if (!t.meta.storageDropped) { for (const c of t.chunks) releaseBuffer(t.gpu, c.buffer, rec); }
}

/** Throws if `t` was released (or its base was). */
export function assertLive(t: Tensor, what: string): void {
  if (t.released || t.base?.released) {
    throw new GpuError(`${what}: tensor ${t.label ?? `[${t.shape.join(", ")}]`} was released`);
  }
}

/** A view with another shape over the same storage (free; one dim may be -1; chunked tensors keep the last dim). */
export function reshape(t: Tensor, shape: readonly number[]): Tensor {
  assertLive(t, "reshape");
  const resolved = [...shape];
  const infer = resolved.indexOf(-1);
  if (infer >= 0) {
    const rest = numel(resolved.filter((_, i) => i !== infer));
    resolved[infer] = rest === 0 ? 0 : numel(t.shape) / rest;
  }
  checkShape(resolved);
  if (numel(resolved) !== numel(t.shape)) {
    throw new RangeError(`reshape: [${t.shape.join(", ")}] -> [${shape.join(", ")}]`);
  }
  const rowLength = resolved.length === 0 ? 1 : resolved[resolved.length - 1];
  if (t.chunks.length > 1 && rowLength !== t.rowLength) {
    throw new RangeError("reshape: a chunked tensor must keep its last dimension");
  }
  return { ...t, shape: resolved, rowLength, base: t.base ?? t, released: false };
}

/**
 * A view of rows `[start, start + count)` along the first dimension. Free when the byte offset
 * meets the device's storage offset alignment (32 bytes on llvmpipe); otherwise throws.
 */
export function sliceRows(t: Tensor, start: number, count: number): Tensor {
  if (t.shape.length === 0) throw new RangeError("sliceRows: scalar tensor");
  if (t.chunks.length > 1) {
    throw new RangeError("sliceRows: chunked tensors have no free row views");
  }
  const d0 = t.shape[0];
  if (start < 0 || count < 0 || start + count > d0) {
    throw new RangeError(`sliceRows: rows [${start}, ${start + count}) of ${d0}`);
  }
  const rowBytes = (numel(t.shape) / Math.max(d0, 1)) * dtypeBytes(t.dtype);
  const byteOffset = t.byteOffset + start * rowBytes;
  const align = t.gpu.limits.minStorageBufferOffsetAlignment ?? 256;
  if (byteOffset % align !== 0) {
    throw new RangeError(
      `sliceRows: byte offset ${byteOffset} is not a multiple of ${align} (copy instead)`,
    );
  }
  const shape = [count, ...t.shape.slice(1)];
  const byteLength = count * rowBytes;
  const rowLength = shape[shape.length - 1];
  return {
    ...t,
    shape,
    byteOffset,
    byteLength,
    rowLength,
    chunks: [{
      buffer: t.buffer,
      byteOffset,
      byteLength,
      rowStart: 0,
      rows: rowLength === 0 ? 0 : byteLength / dtypeBytes(t.dtype) / rowLength,
    }],
    base: t.base ?? t,
    released: false,
  };
}

/** The binding of chunk `i` of `t` (whole tensor when unchunked), padded to 4 bytes, at least 4. */
export function bindingOf(t: Tensor, i = 0): GPUBufferBinding {
  assertStorage(t, "bindingOf");
  const c = t.chunks[i];
  const size = Math.max(4, Math.ceil(c.byteLength / 4) * 4);
  return { buffer: c.buffer, offset: c.byteOffset, size };
}

/** Throws unless `t` is stored in one binding (for kernels that do not take chunked operands). */
export function assertUnchunked(t: Tensor, kernel: string, name: string): void {
  if (t.chunks.length > 1) {
    throw new GpuError(
      `${kernel}: ${name} is chunked (${t.chunks.length} buffers); this kernel needs it in one binding`,
    );
  }
}
