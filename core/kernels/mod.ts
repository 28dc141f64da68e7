/**
 * `core/kernels`: WGSL compute kernels with TypeScript wrappers.
 *
 * Every wrapper takes the open {@link Recording} first, checks its arguments (clear errors naming
 * the kernel and operand), records one or more dispatches and returns the output tensor (f32,
 * allocated from the pool unless `out` is given). Nothing runs until `submit(rec)`; one model step
 * is one recording, submitted once. Pipelines are compiled once per device and variant.
 *
 * Outputs must not alias inputs (WebGPU forbids a buffer bound read-only and read-write in one
 * dispatch; submit throws naming the kernel). To gather rows of an f32 [R, h] tensor (e.g. the
 * last position of each sequence) use `embedding(rec, x, rowIds)`.
 *
 * matmul picks its kernel per adapter: the texture design on software adapters (llvmpipe), the
 * shared-memory tiled kernel on hardware GPUs, a generic tiled kernel for what neither takes
 * (see `MatmulOptions.kernel`). Weights used by the texture design get a packed texture cached
 * on the tensor (`Tensor.meta`), rebuilt when the tensor is written through core (uploads,
 * kernels' `out`); code writing weights in place with its own kernels must call `markWritten`.
 *
 * Operands: activations are f32; weights-like operands (matmul B and bias, norm weights,
 * embedding tables) may be f16 (packed storage, f32 math; no `shader-f16` needed). Chunked tensors
 * (larger than one binding) are accepted by `matmul`/`linear` (B as [N, K] weight; output rows),
 * `embedding` (table), `crossEntropy` (logits), `cast`, `fill`, `copyTensor`; the others throw.
 *
 * ```ts
 * const rec = beginRecording(gpu);
 * const h = layerNorm(rec, x, lnW, lnB, 1e-5);
 * const y = linear(rec, h, w, b);             // h · wᵀ + b
 * await submit(rec);
 * const values = await readTensor(y);
 * ```
 *
 * @module
 */

export { linear, matmul, type MatmulOptions } from "./matmul.ts";
export { isQuantized, quantEmbedding, quantLinear } from "./quant_matmul.ts";
export { layerNorm, reduce, type ReduceOp, rmsNorm, softmax } from "./rows.ts";
export {
  add,
  addScaled,
  axpby,
  binary,
  type BinaryOp,
  cast,
  copyTensor,
  fill,
  gelu,
  mul,
  scale,
  silu,
  unary,
  type UnaryOp,
} from "./elementwise.ts";
export { embedding } from "./embedding.ts";
export {
  qkvRotary,
  type QkvRotaryOptions,
  rotary,
  rotaryInvFreq,
  type RotaryMode,
  type RotaryOptions,
  rotaryTable,
} from "./rotary.ts";
export { attention, type AttentionOptions } from "./attention.ts";
export { crossEntropy, type CrossEntropyResult } from "./cross_entropy.ts";
export * from "./backward/mod.ts";
