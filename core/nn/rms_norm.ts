/** RMSNorm over the last dimension (or over groups of `cols` of it): weight only, no bias. */

import { rmsNormOp } from "../autograd/ops.ts";
import { param, type Tape, type Var } from "../autograd/tape.ts";
import { releaseTensor, type Tensor } from "../tensor/tensor.ts";

export interface RmsNorm {
  name: string;
  eps: number;
  /** [n]: the normalized width (hidden size, or head dim for per-head norms). */
  weight: Tensor;
}

export function createRmsNorm(name: string, weight: Tensor, eps: number): RmsNorm {
  if (weight.shape.length !== 1) {
    throw new Error(`${name}: weight [${weight.shape}] must be one [n]`);
  }
  return { name, eps, weight };
}

/** y = w ⊙ x / sqrt(mean(x²) + eps), over each run of weight.length values of x's last dim. */
export function rmsNormForward(tape: Tape, layer: RmsNorm, x: Var): Var {
  return rmsNormOp(tape, x, {
    weight: param(tape, layer.weight, `${layer.name}.weight`),
    eps: layer.eps,
    cols: layer.weight.shape[0],
  });
}

export function disposeRmsNorm(layer: RmsNorm): void {
  releaseTensor(layer.weight);
}
