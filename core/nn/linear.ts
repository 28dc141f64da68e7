/**
 * Linear layer `y = x·Wᵀ + b` with W stored [out, in] as in HF checkpoints (f32 or f16 storage,
 * f32 accumulation), named by its checkpoint module name.
 */

import type { Recording } from "../gpu/recording.ts";
import { linear as linearKernel } from "../kernels/matmul/matmul.ts";
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

/** Records `x[..., in] · Wᵀ + b` → f32 [..., out]. */
export function linearForward(rec: Recording, layer: Linear, x: Tensor, out?: Tensor): Tensor {
  return linearKernel(rec, x, layer.weight, layer.bias ?? undefined, out);
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
