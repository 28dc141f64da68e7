/**
 * The Llama-family pass up to the final RMSNorm (spec §4): embedding (no scaling), every block,
 * final norm. Shared by inference steps and training; what differs is the tape, the attention
 * and recompute.
 */

import type { Tape, Var } from "../../autograd/tape.ts";
import { type Embedding, embeddingForward } from "../../nn/embedding.ts";
import { type RmsNorm, rmsNormForward } from "../../nn/rms_norm.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { runBlocks, type StackOptions } from "../chatglm/forward.ts";
import { type Attend, blockParameters, type LlamaBlock, llamaBlock } from "./block.ts";

export interface LlamaStack {
  readonly embedding: Embedding;
  readonly layers: readonly LlamaBlock[];
  readonly norm: RmsNorm;
}

/** ids i32 [b, s] → final RMSNorm output [b, s, h]. */
export function llamaHidden(
  t: Tape,
  model: LlamaStack,
  ids: Tensor,
  attend: Attend,
  options: StackOptions = {},
): Var {
  const x = embeddingForward(t, model.embedding, ids);
  options.onHidden?.(x);
  return runBlocks(t, model.layers, x, attend, {
    block: llamaBlock,
    parameters: blockParameters,
    finalNorm: (t, x) => rmsNormForward(t, model.norm, x),
  }, options);
}
