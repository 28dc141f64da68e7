/**
 * `train/optim`: AdamW (WGSL kernel + float64 reference), global-norm clipping with the NaN/Inf
 * guard, gradient accumulation helpers, and the optimizer step that ties them together.
 *
 * @module
 */

export {
  ADAMW_DEFAULTS,
  type AdamWHyper,
  adamwScalars,
  adamwStepF64,
  clipCoefficient,
  globalNormF64,
} from "./adamw_reference.ts";
export { ADAMW_WGSL, type AdamWTensor, recordAdamW } from "./adamw.ts";
export {
  type ClipResult,
  GRAD_NORM_FINALIZE_WGSL,
  GRAD_SUMSQ_WGSL,
  recordGradNorm,
} from "./clip.ts";
export { accumulationScale, type LossWindow, lossWindow, stepsPlan } from "./accumulate.ts";
export { type BufferRegion, maxChunkElements } from "./chunks.ts";
export {
  createOptimizer,
  type Optimizer,
  type OptimizerState,
  type StepOptions,
  type StepReport,
  tensorRegions,
  type TrainableTensor,
} from "./optimizer.ts";
export { readRegions, writeRegion } from "./readback.ts";
