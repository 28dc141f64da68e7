/** Token embedding: rows of a [V, h] table (f32 or f16 storage, possibly chunked) → f32. */

import type { Recording } from "../gpu/recording.ts";
import { embedding } from "../kernels/embedding/embedding.ts";
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

/** ids (i32, any shape) → f32 [...ids.shape, h]. */
export function embeddingForward(rec: Recording, layer: Embedding, ids: Tensor): Tensor {
  return embedding(rec, layer.weight, ids);
}

export function disposeEmbedding(layer: Embedding): void {
  releaseTensor(layer.weight);
}
