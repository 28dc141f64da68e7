/**
 * `core/autograd`: a tape-based reverse-mode autograd over GPU tensors (one recording per
 * step), the differentiable ops the ChatGLM training pass uses, and per-layer recompute.
 *
 * @module
 */

export {
  backward,
  createTape,
  discardTape,
  free,
  gradOf,
  type InputGrads,
  leaf,
  opOutput,
  parameter,
  recordOp,
  type Tape,
  unref,
  type Var,
} from "./tape.ts";
export { checkpoint } from "./checkpoint.ts";
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
