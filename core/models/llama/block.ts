/**
 * The Llama-family block (spec §4: tests/fixtures/llama-family/README.md), once for Qwen2, Qwen3
 * and Llama 3, with the `nn` layers on the autograd tape. Pre-norm residuals add to the layer
 * input; Qwen3 normalizes each q/k head before the rotary; the rotary, the grouped-query mapping
 * and the KV cache are the attention's (`Attend`, attention.ts); SwiGLU MLP.
 */

import { addScaledOp, siluGateOp } from "../../autograd/ops.ts";
import { param, scope, type Tape, type Var } from "../../autograd/tape.ts";
import { type LoraLinear, loraLinearForward } from "../../nn/lora_linear.ts";
import { type RmsNorm, rmsNormForward } from "../../nn/rms_norm.ts";

export interface LlamaBlock {
  index: number;
  inputNorm: RmsNorm;
  q: LoraLinear;
  k: LoraLinear;
  v: LoraLinear;
  o: LoraLinear;
  /** Qwen3's per-head norms (null otherwise). */
  qNorm: RmsNorm | null;
  kNorm: RmsNorm | null;
  postNorm: RmsNorm;
  gate: LoraLinear;
  up: LoraLinear;
  down: LoraLinear;
}

/** q [b, s, nh·d], k, v [b, s, nkv·d] (before the rotary) → ctx [b, s, nh·d] of layer `layer`. */
export type Attend = (tape: Tape, q: Var, k: Var, v: Var, layer: number) => Var;

/** One block: x [b, s, h] → [b, s, h]. Consumes x. */
export function llamaBlock(t: Tape, l: LlamaBlock, x: Var, attend: Attend): Var {
  const h = residual(t, x, l.inputNorm, (a) => {
    let q = loraLinearForward(t, l.q, a), k = loraLinearForward(t, l.k, a);
    if (l.qNorm && l.kNorm) [q, k] = [rmsNormForward(t, l.qNorm, q), rmsNormForward(t, l.kNorm, k)];
    const ctx = attend(t, q, k, loraLinearForward(t, l.v, a), l.index);
    return loraLinearForward(t, l.o, ctx);
  });
  return residual(
    t,
    h,
    l.postNorm,
    (m) =>
      loraLinearForward(
        t,
        l.down,
        siluGateOp(t, loraLinearForward(t, l.gate, m), loraLinearForward(t, l.up, m)),
      ),
  );
}

/** `x + f(RMSNorm(x))`: the residual adds to the layer input (pre-norm). Consumes x. */
function residual(t: Tape, x: Var, norm: RmsNorm, f: (a: Var) => Var): Var {
  return scope(t, () => addScaledOp(t, x, 1, f(rmsNormForward(t, norm, x))), [x]);
}

/** The block's linear layers (the LoRA targets), in checkpoint order. */
export function blockLinears(l: LlamaBlock): LoraLinear[] {
  return [l.q, l.k, l.v, l.o, l.gate, l.up, l.down];
}

/** Every tensor the block reads (LoRA branches included), as variables of `tape`. */
export function blockParameters(t: Tape, l: LlamaBlock): Var[] {
  const norms = [l.inputNorm, l.qNorm, l.kNorm, l.postNorm].filter((n) => n !== null);
  const tensors = norms.map((n) => n!.weight);
  for (const lin of blockLinears(l)) {
    tensors.push(lin.weight);
    if (lin.bias) tensors.push(lin.bias);
    if (lin.lora) tensors.push(lin.lora.a, lin.lora.b);
  }
  return tensors.map((v) => param(t, v));
}
