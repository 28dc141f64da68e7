/** Token embedding: rows of a [V, h] table (f32 or f16 storage, possibly chunked) → f32. */

import { embeddingOp } from "../autograd/ops.ts";
import { param, type Tape, type Var } from "../autograd/tape.ts";
import { releaseTensor, type Tensor } from "../tensor/tensor.ts";

export interface Embedding {
  name: string;
  /** [V, h]. */
  weight: Tensor;
}

export function createEmbedding(name: string, weight: Tensor): Embedding {
  if (weight.shape.length !== 2) throw new Error(`${name}.weight must be [V, h]`);
  return { name, weight };
}

/** ids (i32, any shape; the caller keeps them alive until submit) → f32 [...ids.shape, h]. */
export function embeddingForward(tape: Tape, layer: Embedding, ids: Tensor): Var {
  return embeddingOp(tape, param(tape, layer.weight, `${layer.name}.weight`), ids);
}

export function disposeEmbedding(layer: Embedding): void {
  releaseTensor(layer.weight);
}
