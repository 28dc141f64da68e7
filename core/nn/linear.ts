/**
 * Linear layer `y = x·Wᵀ + b` with W stored [out, in] as in HF checkpoints (f32 or f16 storage,
 * f32 accumulation), named by its checkpoint module name. Its forward is the differentiable
 * `linearOp` on the tape: gradients when the tape records and the weight is trainable.
 */

import { linearOp, type LinearVars } from "../autograd/ops.ts";
import { param, type Tape, type Var } from "../autograd/tape.ts";
import { releaseTensor, type Tensor } from "../tensor/tensor.ts";

export interface Linear {
  /** Checkpoint module name, e.g. `transformer.layers.0.attention.dense`. */
  name: string;
  inFeatures: number;
  outFeatures: number;
  /** [out, in]. */
  weight: Tensor;
  /** [out], or null (lm_head has none). */
  bias: Tensor | null;
}

export function createLinear(name: string, weight: Tensor, bias: Tensor | null = null): Linear {
  if (weight.shape.length !== 2) {
    throw new Error(`${name}.weight must be [out, in], got [${weight.shape.join(", ")}]`);
  }
  const [outFeatures, inFeatures] = weight.shape;
  if (bias && (bias.shape.length !== 1 || bias.shape[0] !== outFeatures)) {
    throw new Error(`${name}.bias must be [${outFeatures}], got [${bias.shape.join(", ")}]`);
  }
  return { name, inFeatures, outFeatures, weight, bias };
}

/** The layer's weight and bias as variables of `tape` (trainable when the tape has their sinks). */
export function linearVars(tape: Tape, layer: Linear): Omit<LinearVars, "lora"> {
  return {
    weight: param(tape, layer.weight, `${layer.name}.weight`),
    bias: layer.bias ? param(tape, layer.bias, `${layer.name}.bias`) : null,
  };
}

/** Records `x[..., in] · Wᵀ + b` → f32 [..., out]. */
export function linearForward(tape: Tape, layer: Linear, x: Var): Var {
  return linearOp(tape, x, { ...linearVars(tape, layer), lora: null });
}

/** The parameters of the layer by checkpoint name. */
export function linearParameters(layer: Linear): Map<string, Tensor> {
  const m = new Map([[`${layer.name}.weight`, layer.weight]]);
  if (layer.bias) m.set(`${layer.name}.bias`, layer.bias);
  return m;
}

/** Releases the layer's tensors back to the pool. */
export function disposeLinear(layer: Linear): void {
  releaseTensor(layer.weight);
  if (layer.bias) releaseTensor(layer.bias);
}
