/**
 * LoRA linear layer with PEFT semantics: `y = x·Wᵀ + b + scaling · B(A(dropout(x)))`, A [r, in] and
 * B [out, r] in f32 whatever the base weight's storage. Dropout acts on the LoRA branch input
 * only and only in training; this forward is the inference path (dropout = identity).
 */

import type { Recording } from "../gpu/recording.ts";
import { addScaled } from "../kernels/elementwise/elementwise.ts";
import { linear as linearKernel } from "../kernels/matmul/matmul.ts";
import { releaseTensor, type Tensor } from "../tensor/tensor.ts";
import { type Linear, linearForward } from "./linear.ts";

export interface LoraBranch {
  r: number;
  scaling: number;
  dropout: number;
  /** [r, in], f32. */
  a: Tensor;
  /** [out, r], f32. */
  b: Tensor;
}

export interface LoraLinear extends Linear {
  /** Null when the module is not targeted by the adapter: a plain linear layer. */
  lora: LoraBranch | null;
}

/** Wraps a linear layer, with a LoRA branch or without. */
export function createLoraLinear(base: Linear, lora: LoraBranch | null = null): LoraLinear {
  if (lora) {
    const { a, b, r } = lora;
    if (a.dtype !== "f32" || b.dtype !== "f32") {
      throw new Error(`${base.name}: LoRA A and B must be f32`);
    }
    if (a.shape[0] !== r || a.shape[1] !== base.inFeatures) {
      throw new Error(`${base.name}: lora_A is [${a.shape}], expected [${r}, ${base.inFeatures}]`);
    }
    if (b.shape[0] !== base.outFeatures || b.shape[1] !== r) {
      throw new Error(`${base.name}: lora_B is [${b.shape}], expected [${base.outFeatures}, ${r}]`);
    }
  }
  return { ...base, lora };
}

/** Records the layer's forward pass → f32 [..., out]. */
export function loraLinearForward(rec: Recording, layer: LoraLinear, x: Tensor): Tensor {
  const y = linearForward(rec, layer, x);
  if (!layer.lora) return y;
  const { a, b, scaling } = layer.lora;
  const down = linearKernel(rec, x, a);
  const up = linearKernel(rec, down, b);
  releaseTensor(down, rec);
  const sum = addScaled(rec, up, scaling, y);
  releaseTensor(up, rec);
  releaseTensor(y, rec);
  return sum;
}

/** Releases the LoRA branch's tensors (the base weights are left alone). */
export function disposeLoraBranch(layer: LoraLinear): void {
  if (!layer.lora) return;
  releaseTensor(layer.lora.a);
  releaseTensor(layer.lora.b);
  layer.lora = null;
}
