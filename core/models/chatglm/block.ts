/**
 * The ChatGLM-6B block (spec §3: tests/fixtures/chatglm6b-tiny/README.md), written once with the
 * `nn` layers on the autograd tape. Inference runs it on a no-grad tape with an attention that
 * reads and writes the KV cache; training on a recording tape with full attention, so the tape
 * keeps what backward needs. Each residual half is a scope: its temporaries are released when it
 * ends (on a no-grad tape the buffers go back to the pool for the next kernels of the step).
 */

import { addScaledOp, geluOp } from "../../autograd/ops.ts";
import { param, scope, type Tape, type Var } from "../../autograd/tape.ts";
import { type LayerNorm, layerNormForward } from "../../nn/layer_norm.ts";
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
  const h = residual(t, x, layer.inputLayerNorm, (a) => {
    const ctx = attend(t, loraLinearForward(t, layer.queryKeyValue, a), layer.index);
    return loraLinearForward(t, layer.dense, ctx);
  });
  return residual(t, h, layer.postAttentionLayerNorm, (m) => {
    // Its own scope: the [.., 4h] pre-activation is released as soon as GeLU has read it.
    const up = scope(t, () => geluOp(t, loraLinearForward(t, layer.denseHTo4h, m)));
    return loraLinearForward(t, layer.dense4hToH, up);
  });
}

/**
 * ChatGLM's residual (spec §3.4): `a = LN(x); a·α + f(a)` with α = sqrt(56) whatever the depth;
 * the LayerNorm output, not x, is carried over. Consumes x.
 */
function residual(t: Tape, x: Var, norm: LayerNorm, f: (a: Var) => Var): Var {
  return scope(t, () => {
    const a = layerNormForward(t, norm, x);
    return addScaledOp(t, a, RESIDUAL_ALPHA, f(a));
  }, [x]);
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
