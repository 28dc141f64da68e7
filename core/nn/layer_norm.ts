/** LayerNorm over the last dimension (biased variance), weight and bias named as in checkpoints. */

import { layerNormOp } from "../autograd/ops.ts";
import { param, type Tape, type Var } from "../autograd/tape.ts";
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

export function layerNormForward(tape: Tape, layer: LayerNorm, x: Var): Var {
  return layerNormOp(tape, x, {
    weight: param(tape, layer.weight, `${layer.name}.weight`),
    bias: param(tape, layer.bias, `${layer.name}.bias`),
    eps: layer.eps,
  });
}

export function disposeLayerNorm(layer: LayerNorm): void {
  releaseTensor(layer.weight);
  releaseTensor(layer.bias);
}
