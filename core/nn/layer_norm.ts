/** LayerNorm over the last dimension (biased variance), weight and bias named as in checkpoints. */

import { addScaledOp, layerNormOp } from "../autograd/ops.ts";
import { forwardOnly, param, scope, type Tape, type Var } from "../autograd/tape.ts";
import { addScaledLayerNorm } from "../kernels/mod.ts";
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

/**
 * `layer(a·alpha + b)`: a residual sum that only the norm reads. The one place that decides how:
 * on a tape that records gradients, the two ops (`addScaledOp`, then the norm; the sum released
 * once normalized), so the backward is theirs; on a no-grad tape (inference) one fused kernel
 * that never stores the sum (one dispatch fewer per use, see `addScaledLayerNorm`).
 */
export function addScaledLayerNormForward(
  tape: Tape,
  layer: LayerNorm,
  a: Var,
  alpha: number,
  b: Var,
): Var {
  if (tape.recording) {
    return scope(tape, () => layerNormForward(tape, layer, addScaledOp(tape, a, alpha, b)));
  }
  return forwardOnly(
    tape,
    "addScaledLayerNorm",
    [a, b],
    () =>
      addScaledLayerNorm(tape.rec, a.value, alpha, b.value, layer.weight, layer.bias, layer.eps),
  );
}

export function disposeLayerNorm(layer: LayerNorm): void {
  releaseTensor(layer.weight);
  releaseTensor(layer.bias);
}
