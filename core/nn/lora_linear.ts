/**
 * LoRA linear layer with PEFT semantics: `y = x·Wᵀ + b + scaling · B(A(dropout(x)))`, A [r, in] and
 * B [out, r] in f32 whatever the base weight's storage. Dropout acts on the LoRA branch input
 * only and only when the tape carries a step's dropout (training); otherwise it is the identity.
 */

import { linearOp } from "../autograd/ops.ts";
import { param, type Tape, type Var } from "../autograd/tape.ts";
import { releaseTensor, type Tensor } from "../tensor/tensor.ts";
import { type Linear, linearVars } from "./linear.ts";

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
export function loraLinearForward(tape: Tape, layer: LoraLinear, x: Var): Var {
  const lora = layer.lora;
  const drop = tape.dropout;
  return linearOp(tape, x, {
    ...linearVars(tape, layer),
    lora: lora && {
      a: param(tape, lora.a, `${layer.name}.lora_A`),
      b: param(tape, lora.b, `${layer.name}.lora_B`),
      scaling: lora.scaling,
      dropout: drop ? drop.p ?? lora.dropout : 0,
      seed: [drop?.seed ?? 0, dropoutStream(layer.name)],
    },
  });
}

/**
 * The second dropout seed word of a module: a hash of its name (FNV-1a), so that every module
 * draws its own mask and a recompute draws the same one.
 */
function dropoutStream(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Releases the LoRA branch's tensors (the base weights are left alone). */
export function disposeLoraBranch(layer: LoraLinear): void {
  if (!layer.lora) return;
  releaseTensor(layer.lora.a);
  releaseTensor(layer.lora.b);
  layer.lora = null;
}
