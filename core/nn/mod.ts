/**
 * `core/nn`: the layers models are built from, each a plain record of GPU tensors named as in HF
 * checkpoints plus a forward function on the autograd tape (core/autograd): the same call
 * records only the forward kernels on a no-grad tape (inference) and the backward entries too on
 * a recording one (training).
 *
 * @module
 */

export {
  createLinear,
  disposeLinear,
  type Linear,
  linearForward,
  linearParameters,
  linearVars,
} from "./linear.ts";
export {
  createLoraLinear,
  disposeLoraBranch,
  type LoraBranch,
  type LoraLinear,
  loraLinearForward,
} from "./lora_linear.ts";
export {
  createLayerNorm,
  disposeLayerNorm,
  type LayerNorm,
  layerNormForward,
} from "./layer_norm.ts";
export { createRmsNorm, disposeRmsNorm, type RmsNorm, rmsNormForward } from "./rms_norm.ts";
export {
  createEmbedding,
  disposeEmbedding,
  type Embedding,
  embeddingForward,
} from "./embedding.ts";
