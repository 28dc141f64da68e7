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
 * One folder per op, its forward and backward side by side; each folder's first file says which
 * design runs on which adapter:
 *
 * - `matmul/`: matmul.ts (dispatch, generic kernel), shared.ts (hardware GPUs), texture.ts
 *   (software adapters), gemv.ts (at most 4 rows, weights below the texture threshold: decode),
 *   store.ts, problem.ts | backward: linear_grad.ts, transpose.ts
 * - `attention/`: attention.ts (workgroup design), rows.ts (software design), slots.ts (decode
 *   over a slot cache); the forward kernels take kv caches of fewer heads dividing the query
 *   heads (grouped-query attention) | backward: attention_grad.ts, rows_grad.ts
 * - `layer_norm/`: layer_norm.ts (LayerNorm, RMSNorm) | backward: layer_norm_grad.ts,
 *   rms_norm_grad.ts
 * - `softmax/`: softmax.ts, reduce.ts | backward: inside attention's and cross-entropy's
 * - `cross_entropy/`: cross_entropy.ts | backward: cross_entropy_grad.ts
 * - `elementwise/`: elementwise.ts (GeLU, SiLU, add, scale, cast, fill, …), silu_gate.ts
 *   (SwiGLU's silu(g)·u) | backward: elementwise_grad.ts (GeLU, dropout), silu_gate.ts
 * - `rotary/`: rotary.ts, heads.ts (Llama: split heads + rotate half with a given table) |
 *   backward: rotary_grad.ts, heads.ts
 * - `embedding/`: embedding.ts | backward: embedding_grad.ts
 * - `sampling/`: sampling.ts (next-token choice from logits rows, as the host sampler), advance.ts
 *   (a decode group's step counter) | no backward
 *
 * Beside them: accumulate.ts (gradient sums into parameters), common.ts (WGSL declarations, row
 * designs, argument checks) and uniforms.ts: each kernel declares its parameters once by name
 * (`uniformLayout`), which gives both its WGSL struct and the bytes of each dispatch.
 *
 * matmul picks its kernel per adapter: the texture design on software adapters (llvmpipe), the
 * shared-memory tiled kernel on hardware GPUs, the small-M kernel (gemv.ts) for up to 4 rows
 * with a weight below the texture threshold, a generic tiled kernel for what none takes (see
 * `MatmulOptions.kernel`). Weights used by the texture design get a packed texture cached
 * on the tensor (`Tensor.meta`), rebuilt when the tensor is written through core (uploads,
 * kernels' `out`); code writing weights in place with its own kernels must call `markWritten`.
 * Row kernels (norms, softmax, cross-entropy) and attention have a workgroup design for hardware
 * GPUs and a barrier-free one for software adapters; tests force either (`setRowDesign`,
 * `ATTENTION_KERNEL_ENV`; `MATMUL_KERNEL_ENV` for matmul).
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

export {
  forwardPacksWeight,
  linear,
  matmul,
  MATMUL_KERNEL_ENV,
  type MatmulOptions,
} from "./matmul/matmul.ts";
export {
  type HostPackedWeight,
  hostPackedWeight,
  prepackWeight,
  WRITE_PIECE_BYTES,
} from "./matmul/texture.ts";
export { linearBackward, type LinearGrads } from "./matmul/linear_grad.ts";
export { transposedWeight } from "./matmul/transpose.ts";
export { addScaledLayerNorm, layerNorm, rmsNorm } from "./layer_norm/layer_norm.ts";
export { softmax } from "./softmax/softmax.ts";
export { reduce, type ReduceOp } from "./softmax/reduce.ts";
export { layerNormBackward, type LayerNormGrads } from "./layer_norm/layer_norm_grad.ts";
export {
  type InputGradRows,
  isQuantized,
  quantEmbedding,
  quantInputGrad,
  quantLinear,
} from "./matmul/quant.ts";
export { rmsNormBackward } from "./layer_norm/rms_norm_grad.ts";
export { siluGate, siluGateBackward } from "./elementwise/silu_gate.ts";
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
} from "./elementwise/elementwise.ts";
export { dropoutBackward, dropoutForward, geluBackward } from "./elementwise/elementwise_grad.ts";
export { embedding } from "./embedding/embedding.ts";
export { embeddingBackward } from "./embedding/embedding_grad.ts";
export {
  qkvRotary,
  type QkvRotaryOptions,
  rotary,
  rotaryInvFreq,
  type RotaryMode,
  type RotaryOptions,
  rotaryTable,
  rotaryTableOf,
} from "./rotary/rotary.ts";
export { qkvRotaryBackward, type QkvRotaryBackwardOptions } from "./rotary/rotary_grad.ts";
export { headsRotary, headsRotaryBackward, type HeadsRotaryOptions } from "./rotary/heads.ts";
export { attention, type AttentionOptions } from "./attention/attention.ts";
export {
  attentionSlots,
  type AttentionSlotsOptions,
  copyRowsToSlots,
  qkvAttentionSlots,
  qkvRotarySlots,
  type QkvRotarySlotsOptions,
} from "./attention/slots.ts";
export { ATTENTION_KERNEL_ENV, type AttentionKernel } from "./attention/rows.ts";
export {
  attentionBackward,
  type AttentionBackwardOptions,
  type AttentionGrads,
} from "./attention/attention_grad.ts";
export { crossEntropy, type CrossEntropyResult } from "./cross_entropy/cross_entropy.ts";
export { crossEntropyBackward } from "./cross_entropy/cross_entropy_grad.ts";
export { accumulateInto, columnSumInto } from "./accumulate.ts";
export { type RowDesign, setRowDesign } from "./common.ts";
export {
  type UniformFields,
  type UniformLayout,
  uniformLayout,
  type UniformType,
  type UniformValues,
} from "./uniforms.ts";
export {
  maxSampledIds,
  packSamplingRows,
  sampleTokens,
  type SampleTokensOptions,
  type SamplingRow,
  SETTINGS_WORDS,
  utf8IdTable,
  utf8State,
} from "./sampling/sampling.ts";
export { advanceDecode, type AdvanceDecodeOptions, type StepBump } from "./sampling/advance.ts";
