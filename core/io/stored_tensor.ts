/**
 * Where one tensor's bytes lie in a checkpoint file, the same for safetensors and torch zips, and
 * reading them by seek + read (never the whole file).
 */

import { type Dtype, dtypeSize, numelOf } from "./dtype.ts";
import { readAt } from "./file_range.ts";

export interface StoredTensor {
  dtype: Dtype;
  shape: number[];
  /** Absolute file offset of the tensor's first element. */
  byteOffset: number;
  /** Bytes of the tensor as a row-major contiguous array: numel × element size. */
  byteLength: number;
  /**
   * Element strides, only for a torch view that is not row-major contiguous; the bytes from
   * `byteOffset` on are then gathered. Absent for the usual contiguous case.
   */
  strides?: number[];
}

/** A checkpoint file and the tensors it holds (in file order). */
export interface TensorFile {
  path: string;
  tensors: Map<string, StoredTensor>;
}

/** Row-major strides of a shape, in elements. */
export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

/** True when a view with these strides is row-major contiguous (size-1 dims do not matter). */
export function isContiguous(shape: readonly number[], strides: readonly number[]): boolean {
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && strides[i] !== expected) return false;
    expected *= shape[i];
  }
  return true;
}

/** Elements a strided view reaches from its first element: 1 + Σ (size_k − 1)·stride_k. */
export function stridedSpan(shape: readonly number[], strides: readonly number[]): number {
  if (shape.some((d) => d === 0)) return 0;
  let span = 1;
  for (let i = 0; i < shape.length; i++) span += (shape[i] - 1) * strides[i];
  return span;
}

/** Bytes to read from `byteOffset` to have every element of the tensor. */
export function storedSpanBytes(t: StoredTensor): number {
  if (!t.strides) return t.byteLength;
  return stridedSpan(t.shape, t.strides) * dtypeSize(t.dtype);
}

/** Copies a strided view out of `src` (which starts at the view's first element) row-major. */
export function gatherStrided(
  src: Uint8Array,
  shape: readonly number[],
  strides: readonly number[],
  elementSize: number,
): Uint8Array {
  const numel = numelOf(shape);
  const out = new Uint8Array(numel * elementSize);
  if (numel === 0) return out;
  const rank = shape.length;
  const idx = new Array<number>(rank).fill(0);
  let srcElem = 0;
  for (let o = 0; o < numel; o++) {
    const s = srcElem * elementSize;
    for (let b = 0; b < elementSize; b++) out[o * elementSize + b] = src[s + b];
    // Odometer increment over the multi-index, tracking the source offset incrementally.
    for (let k = rank - 1; k >= 0; k--) {
      idx[k]++;
      srcElem += strides[k];
      if (idx[k] < shape[k]) break;
      srcElem -= strides[k] * shape[k];
      idx[k] = 0;
    }
  }
  return out;
}

/**
 * Reads one tensor's bytes (row-major, stored dtype) from an open file. A contiguous tensor is
 * read into `scratch` when it is large enough (the result is then a view of it, valid until the
 * next read into it), so a loader reuses one buffer for every tensor.
 */
export async function readStoredTensor(
  file: Deno.FsFile,
  path: string,
  t: StoredTensor,
  scratch?: Uint8Array,
): Promise<Uint8Array> {
  if (!t.strides) {
    const out = scratch && scratch.length >= t.byteLength ? scratch : undefined;
    return await readAt(file, t.byteOffset, t.byteLength, path, out);
  }
  const raw = await readAt(file, t.byteOffset, storedSpanBytes(t), path);
  return gatherStrided(raw, t.shape, t.strides, dtypeSize(t.dtype));
}

/** Reads the bytes of tensor `name` of `file` (row-major, in its stored dtype). */
export async function readTensorBytes(file: TensorFile, name: string): Promise<Uint8Array> {
  const t = file.tensors.get(name);
  if (!t) throw new Error(`${file.path}: no tensor named ${JSON.stringify(name)}`);
  const f = await Deno.open(file.path, { read: true });
  try {
    return await readStoredTensor(f, file.path, t);
  } finally {
    f.close();
  }
}
