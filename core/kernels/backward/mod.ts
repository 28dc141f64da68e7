/**
 * `core/kernels/backward`: the gradient kernels of every forward op the ChatGLM training pass
 * uses, recorded like the forward kernels (recording first, f32 outputs from the pool).
 * Parameter gradients are *added into* caller-owned f32 tensors (gradient accumulation);
 * frozen parameters pass none.
 *
 * @module
 */

export { accumulateInto, columnSumInto } from "./accumulate.ts";
export { linearBackward, type LinearGrads } from "./linear_grad.ts";
export { transposedWeight } from "./transpose.ts";
export { layerNormBackward, type LayerNormGrads } from "./layer_norm_grad.ts";
export { dropoutBackward, dropoutForward, geluBackward } from "./elementwise_grad.ts";
export {
  attentionBackward,
  type AttentionBackwardOptions,
  type AttentionGrads,
} from "./attention_grad.ts";
export { qkvRotaryBackward, type QkvRotaryBackwardOptions } from "./rotary_grad.ts";
export { embeddingBackward } from "./embedding_grad.ts";
export { crossEntropyBackward } from "./cross_entropy_grad.ts";
