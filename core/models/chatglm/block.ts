/**
 * The ChatGLM-6B block (spec §3: tests/fixtures/chatglm6b-tiny/README.md), written once with the
 * `nn` layers on the autograd tape. Inference runs it on a no-grad tape with an attention that
 * reads and writes the KV cache; training on a recording tape with full attention, so the tape
 * keeps what backward needs. Each residual half is a scope: its temporaries are released when it
 * ends (on a no-grad tape the buffers go back to the pool for the next kernels of the step).
 *
 * A residual sum is read only by the LayerNorm after it (ChatGLM carries the norm's output, not
 * the sum), so the block is written from its normalized input and each sum goes straight into
 * the next norm (`addScaledLayerNormForward`: one fused kernel on a no-grad tape, the two ops
 * when gradients are recorded); `chatglmBlocks` chains the blocks that way up to the final norm.
 */

import { addScaledOp, geluOp } from "../../autograd/ops.ts";
import { param, scope, type Tape, type Var } from "../../autograd/tape.ts";
import {
  addScaledLayerNormForward,
  type LayerNorm,
  layerNormForward,
} from "../../nn/layer_norm.ts";
import { type LoraLinear, loraLinearForward } from "../../nn/lora_linear.ts";
import type { Tensor } from "../../tensor/tensor.ts";
import { RESIDUAL_ALPHA } from "./config.ts";

export interface ChatGLMBlock {
  index: number;
  inputLayerNorm: LayerNorm;
  queryKeyValue: LoraLinear;
  dense: LoraLinear;
  postAttentionLayerNorm: LayerNorm;
  denseHTo4h: LoraLinear;
  dense4hToH: LoraLinear;
}

/**
 * Self-attention of layer `layer` from its fused qkv [b, s, 3h] to ctx [b, s, h]: 2-D rotary,
 * scaled and masked scores, softmax, weighted values (spec §3.1–3.3). The variants (full, KV cache
 * in lockstep, slots) are in attention.ts.
 */
export type Attend = (tape: Tape, qkv: Var, layer: number) => Var;

/** One block: x [b, s, h] → [b, s, h]. Consumes x (the caller's reference moves in). */
export function chatglmBlock(t: Tape, layer: ChatGLMBlock, x: Var, attend: Attend): Var {
  const a = scope(t, () => layerNormForward(t, layer.inputLayerNorm, x), [x]);
  return normedBlock(t, layer, a, attend);
}

/**
 * Every block, then `finalNorm`: x [b, s, h] (consumed) → finalNorm(last block's output), each
 * block's output going straight into the next block's input norm (fused on a no-grad tape).
 */
export function chatglmBlocks(
  t: Tape,
  layers: readonly ChatGLMBlock[],
  x: Var,
  attend: Attend,
  finalNorm: LayerNorm,
): Var {
  let a = scope(t, () => layerNormForward(t, layers[0]?.inputLayerNorm ?? finalNorm, x), [x]);
  layers.forEach((layer, l) => {
    a = normedBlock(t, layer, a, attend, layers[l + 1]?.inputLayerNorm ?? finalNorm);
  });
  return a;
}

/**
 * The block from its input's LayerNorm `a = LN_in(x)` (consumed): ChatGLM's residuals (spec
 * §3.4) `a·α + attention(a)` and `m·α + mlp(m)` with α = sqrt(56) whatever the depth, the
 * LayerNorm output, not the sum, carried over (m = LN_post of the first sum). With `next`, the
 * output is `next(m·α + mlp(m))` (the following norm, fused with the sum).
 */
function normedBlock(
  t: Tape,
  layer: ChatGLMBlock,
  a: Var,
  attend: Attend,
  next?: LayerNorm,
): Var {
  const m = scope(t, () => {
    const ctx = attend(t, loraLinearForward(t, layer.queryKeyValue, a), layer.index);
    const out = loraLinearForward(t, layer.dense, ctx);
    return addScaledLayerNormForward(t, layer.postAttentionLayerNorm, a, RESIDUAL_ALPHA, out);
  }, [a]);
  return scope(t, () => {
    // Its own scope: the [.., 4h] pre-activation is released as soon as GeLU has read it.
    const up = scope(t, () => geluOp(t, loraLinearForward(t, layer.denseHTo4h, m)));
    const down = loraLinearForward(t, layer.dense4hToH, up);
    return next
      ? addScaledLayerNormForward(t, next, m, RESIDUAL_ALPHA, down)
      : addScaledOp(t, m, RESIDUAL_ALPHA, down);
  }, [m]);
}

/** The block's linear layers (the LoRA targets). */
export function blockLinears(layer: ChatGLMBlock): LoraLinear[] {
  return [layer.queryKeyValue, layer.dense, layer.denseHTo4h, layer.dense4hToH];
}

/** Every tensor the block reads (LoRA branches included), as variables of `tape`. */
export function blockParameters(t: Tape, layer: ChatGLMBlock): Var[] {
  const tensors: Tensor[] = [];
  for (const ln of [layer.inputLayerNorm, layer.postAttentionLayerNorm]) {
    tensors.push(ln.weight, ln.bias);
  }
  for (const lin of blockLinears(layer)) {
    tensors.push(lin.weight);
    if (lin.bias) tensors.push(lin.bias);
    if (lin.lora) tensors.push(lin.lora.a, lin.lora.b);
  }
  return tensors.map((v) => param(t, v));
}
