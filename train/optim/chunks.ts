/**
 * Splitting a flat f32 tensor into bindable chunks: a storage binding may not exceed the device's
 * `maxStorageBufferBindingSize` (128 MiB on llvmpipe; the real ChatGLM-6B embedding gradient is
 * 2 GiB in f32) and must start at a multiple of `minStorageBufferOffsetAlignment`.
 */

import type { Gpu } from "../../core/mod.ts";

/** A flat f32 tensor inside a GPU buffer (`byteOffset` aligned to the storage offset alignment). */
export interface BufferRegion {
  buffer: GPUBuffer;
  byteOffset?: number;
  /** Number of f32 elements. */
  length: number;
}

/** One bindable piece of a tensor: elements [start, start + length). */
export interface Chunk {
  start: number;
  length: number;
}

/** Largest chunk in elements for this device (a multiple of the offset alignment). */
export function maxChunkElements(gpu: Gpu): number {
  const align = Math.max(4, gpu.limits.minStorageBufferOffsetAlignment ?? 256) / 4;
  const bytes = Math.min(
    gpu.limits.maxStorageBufferBindingSize ?? 134217728,
    gpu.limits.maxBufferSize ?? 268435456,
  );
  return Math.max(align, Math.floor(bytes / 4 / align) * align);
}

/** Splits `length` elements into chunks of at most `maxElements`. */
export function splitChunks(length: number, maxElements: number): Chunk[] {
  const out: Chunk[] = [];
  for (let start = 0; start < length; start += maxElements) {
    out.push({ start, length: Math.min(maxElements, length - start) });
  }
  return out;
}

/** The binding of one chunk of a region. */
export function chunkBinding(region: BufferRegion, chunk: Chunk): GPUBufferBinding {
  return {
    buffer: region.buffer,
    offset: (region.byteOffset ?? 0) + chunk.start * 4,
    size: chunk.length * 4,
  };
}

/** Checks that a region fits its buffer and is aligned; `what` names it in the error. */
export function checkRegion(gpu: Gpu, region: BufferRegion, what: string): void {
  const align = gpu.limits.minStorageBufferOffsetAlignment ?? 256;
  const off = region.byteOffset ?? 0;
  if (off % align !== 0) {
    throw new RangeError(`${what}: byteOffset ${off} is not a multiple of ${align}`);
  }
  if (!(Number.isInteger(region.length) && region.length > 0)) {
    throw new RangeError(`${what}: length must be a positive integer (got ${region.length})`);
  }
  if (off + region.length * 4 > region.buffer.size) {
    throw new RangeError(
      `${what}: ${region.length} f32 at byte ${off} exceed its buffer of ${region.buffer.size} bytes`,
    );
  }
}
