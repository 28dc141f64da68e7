/**
 * The ChatGLM-6B forward pass up to the final LayerNorm (spec §3): embedding (no scaling), every
 * block, final LayerNorm. Shared by inference steps (step.ts) and training (train_forward.ts);
 * what differs is the tape (no-grad or recording), the attention and recompute.
 */

import { checkpoint } from "../../autograd/checkpoint.ts";
import { scope, type Tape, type Var } from "../../autograd/tape.ts";
import { type Embedding, embeddingForward } from "../../nn/embedding.ts";
import { type LayerNorm, layerNormForward } from "../../nn/layer_norm.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import {
  type Attend,
  blockParameters,
  type ChatGLMBlock,
  chatglmBlock,
  chatglmBlocks,
} from "./block.ts";

/** The layers the pass reads. */
export interface ChatGLMStack {
  readonly embedding: Embedding;
  readonly layers: readonly ChatGLMBlock[];
  readonly finalLayerNorm: LayerNorm;
}

export interface StackOptions {
  /**
   * Wrap every block in recompute: the forward keeps only each block's input, the backward runs
   * the block again (activation memory of one block instead of all).
   */
  recompute?: boolean;
  /**
   * Sees each hidden state as it is made: the embedding output, every block's output, the final
   * LayerNorm output. A caller that reads them after the step takes a reference (`keep`).
   */
  onHidden?: (hidden: Var) => void;
}

/** ids i32 [b, s] → final LayerNorm output [b, s, h]. */
export function chatglmHidden(
  t: Tape,
  model: ChatGLMStack,
  ids: Tensor,
  attend: Attend,
  options: StackOptions = {},
): Var {
  const x = embeddingForward(t, model.embedding, ids);
  options.onHidden?.(x);
  // Without hooks or recompute, each block's output goes straight into the next norm (fused).
  if (!options.onHidden && !options.recompute) {
    return chatglmBlocks(t, model.layers, x, attend, model.finalLayerNorm);
  }
  return runBlocks(t, model.layers, x, attend, {
    block: chatglmBlock,
    parameters: blockParameters,
    finalNorm: (t, x) => layerNormForward(t, model.finalLayerNorm, x),
  }, options);
}

/** What a stack of blocks needs of its architecture (ChatGLM's here, the Llama family's too). */
export interface BlockKind<L extends { index: number }, A> {
  block: (t: Tape, layer: L, x: Var, attend: A) => Var;
  /** The block's trainable parameters (recompute runs the block again in the backward). */
  parameters: (t: Tape, layer: L) => Var[];
  finalNorm: (t: Tape, x: Var) => Var;
}

/**
 * Every block, then the final norm (consumes x), with `options`' recompute (each block under
 * `checkpoint`) and `onHidden` (every block's output and the final norm's).
 */
export function runBlocks<L extends { index: number }, A>(
  t: Tape,
  layers: readonly L[],
  x: Var,
  attend: A,
  kind: BlockKind<L, A>,
  options: StackOptions,
): Var {
  for (const layer of layers) {
    const input = x;
    x = options.recompute
      ? scope(
        t,
        () =>
          checkpoint(t, [input], (inner, [xi]) => kind.block(inner, layer, xi, attend), {
            label: `layer ${layer.index}`,
            parameters: kind.parameters(t, layer),
          }),
        [input],
      )
      : kind.block(t, layer, input, attend);
    options.onHidden?.(x);
  }
  const input = x;
  const y = scope(t, () => kind.finalNorm(t, input), [input]);
  options.onHidden?.(y);
  return y;
}
