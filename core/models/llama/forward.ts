/**
 * The Llama-family pass up to the final RMSNorm (spec §4): embedding (no scaling), every block,
 * final norm. Shared by inference steps and training; what differs is the tape, the attention
 * and recompute.
 */

import { checkpoint } from "../../autograd/checkpoint.ts";
import { scope, type Tape, type Var } from "../../autograd/tape.ts";
import { type Embedding, embeddingForward } from "../../nn/embedding.ts";
import { type RmsNorm, rmsNormForward } from "../../nn/rms_norm.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import type { StackOptions } from "../chatglm/forward.ts";
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
  let x = embeddingForward(t, model.embedding, ids);
  options.onHidden?.(x);
  for (const layer of model.layers) {
    x = options.recompute ? recomputed(t, layer, x, attend) : llamaBlock(t, layer, x, attend);
    options.onHidden?.(x);
  }
  const input = x;
  const y = scope(t, () => rmsNormForward(t, model.norm, input), [input]);
  options.onHidden?.(y);
  return y;
}

/** {@link llamaBlock} under recompute (consumes x as the block does). */
function recomputed(t: Tape, layer: LlamaBlock, x: Var, attend: Attend): Var {
  return scope(
    t,
    () =>
      checkpoint(t, [x], (inner, [xi]) => llamaBlock(inner, layer, xi, attend), {
        label: `layer ${layer.index}`,
        parameters: blockParameters(t, layer),
      }),
    [x],
  );
}
