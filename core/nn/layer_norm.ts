/** LayerNorm over the last dimension (biased variance), weight and bias named as in checkpoints. */

import type { Recording } from "../gpu/recording.ts";
import { layerNorm } from "../kernels/layer_norm/layer_norm.ts";
import { releaseTensor, type Tensor } from "../tensor/tensor.ts";

export interface LayerNorm {
  name: string;
  eps: number;
  /** [h]. */
  weight: Tensor;
  /** [h]. */
  bias: Tensor;
}

export function createLayerNorm(
  name: string,
  weight: Tensor,
  bias: Tensor,
  eps: number,
): LayerNorm {
  if (weight.shape.length !== 1 || bias.shape.length !== 1 || weight.shape[0] !== bias.shape[0]) {
    throw new Error(`${name}: weight [${weight.shape}] and bias [${bias.shape}] must be one [h]`);
  }
  return { name, eps, weight, bias };
}

export function layerNormForward(rec: Recording, layer: LayerNorm, x: Tensor): Tensor {
  return layerNorm(rec, x, layer.weight, layer.bias, layer.eps);
}

export function disposeLayerNorm(layer: LayerNorm): void {
  releaseTensor(layer.weight);
  releaseTensor(layer.bias);
}
