/**
 * `core/tensor`: GPU tensors with shape and dtype, pooled storage, upload/download, free views,
 * and chunked storage for tensors larger than one storage binding.
 *
 * ```ts
 * const gpu = await getGpu();
 * const x = uploadTensor(gpu, new Float32Array([1, 2, 3, 4]), [2, 2]);
 * const y = emptyTensor(gpu, [2, 2], "f32");
 * // ... record kernels into a recording, submit ...
 * const values = await readTensor(y); // Float32Array (f16 reads back as f32)
 * releaseTensor(x); releaseTensor(y); // back to the pool
 * poolStats(gpu).bytesInUse;          // GPU memory held by live tensors
 * ```
 *
 * @module
 */

export {
  assertLive,
  assertUnchunked,
  bindingOf,
  type DType,
  dtypeBytes,
  emptyTensor,
  markWritten,
  maxChunkBytes,
  numel,
  readFloat32,
  readRaw,
  readTensor,
  readTensors,
  releaseTensor,
  reshape,
  sliceRows,
  type Tensor,
  type TensorChunk,
  type TensorMeta,
  type TensorOptions,
  uploadTensor,
  writeTensor,
} from "./tensor.ts";
export { type PoolStats, poolStats, resetPoolPeak, sizeClass, trimPool } from "./pool.ts";
export { f16BitsToF32, f16Round, f32ToF16Bits, fromF16Bits, toF16Bits } from "./f16.ts";
