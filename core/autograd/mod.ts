/**
 * `core/autograd`: a tape-based reverse-mode autograd over GPU tensors (one recording per
 * step), the differentiable ops models are written with (inference runs them on a no-grad tape),
 * scopes that free a step's temporaries, and per-layer recompute.
 *
 * @module
 */

export {
  backward,
  childTape,
  createTape,
  discardTape,
  forwardOnly,
  free,
  gradOf,
  type InputGrads,
  keep,
  leaf,
  opOutput,
  param,
  parameter,
  recordOp,
  scope,
  type StepDropout,
  type Tape,
  type TapeOptions,
  unref,
  type Var,
} from "./tape.ts";
export { checkpoint } from "./checkpoint.ts";
export { IGNORE_INDEX } from "./labels.ts";
export {
  addScaledOp,
  crossEntropyOp,
  embeddingOp,
  gatherRowsOp,
  geluOp,
  layerNormOp,
  type LayerNormVars,
  linearOp,
  type LinearVars,
  type LoraVars,
  selfAttentionOp,
  type SelfAttentionOptions,
} from "./ops.ts";
