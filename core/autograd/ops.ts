/**
 * Differentiable ops on the tape: each records the forward kernels, and (when a gradient is
 * needed) an entry whose backward records the gradient kernels (all through core/kernels/mod.ts).
 * Inputs are {@link Var}s; integer inputs (ids, labels, positions, masks) are plain tensors the
 * caller keeps alive until the step is submitted.
 */

import {
  accumulateInto,
  addScaled,
  attention,
  attentionBackward,
  crossEntropy,
  crossEntropyBackward,
  dropoutBackward,
  dropoutForward,
  embedding,
  embeddingBackward,
  fill,
  gelu,
  geluBackward,
  headsRotary,
  headsRotaryBackward,
  layerNorm,
  layerNormBackward,
  linear,
  linearBackward,
  qkvRotary,
  qkvRotaryBackward,
  rmsNorm,
  rmsNormBackward,
  scale,
  siluGate,
  siluGateBackward,
} from "../kernels/mod.ts";
import { emptyTensor, numel, reshape, type Tensor, uploadTensor } from "../tensor/tensor.ts";
import { IGNORE_INDEX } from "./labels.ts";
import { free, opOutput, recordOp, type Tape, type Var } from "./tape.ts";

/** A LoRA branch on the tape: `scaling · B(A(dropout(x)))`. */
export interface LoraVars {
  a: Var;
  b: Var;
  scaling: number;
  /** Dropout probability on the branch input (training only; 0 = identity). */
  dropout: number;
  /** Seed of the dropout mask (fixed per step and module, so recompute regenerates it). */
  seed: readonly [number, number];
}

/** A linear layer on the tape (W [out, in], f32 or frozen f16). */
export interface LinearVars {
  weight: Var;
  bias: Var | null;
  lora: LoraVars | null;
}

/** `x · Wᵀ + b (+ LoRA branch)`. */
export function linearOp(tape: Tape, x: Var, layer: LinearVars): Var {
  const rec = tape.rec;
  const y = linear(rec, x.value, layer.weight.value, layer.bias?.value);
  const lora = layer.lora;
  let u: Tensor | null = null;
  let value = y;
  if (lora) {
    const drop = lora.dropout > 0;
    const xd = drop ? dropoutForward(rec, x.value, lora.dropout, lora.seed) : x.value;
    u = linear(rec, xd, lora.a.value);
    if (drop) free(rec, xd);
    const up = linear(rec, u, lora.b.value);
    value = addScaled(rec, up, lora.scaling, y);
    free(rec, up);
    free(rec, y);
  }
  const inputs = [x, layer.weight, ...(layer.bias ? [layer.bias] : [])];
  if (lora) inputs.push(lora.a, lora.b);
  const out = opOutput(tape, value, inputs, "linear");
  const uVar = u;
  recordOp(tape, {
    label: "linear",
    inputs,
    outputs: [out],
    saved: [x],
    scratch: uVar ? [uVar] : [],
    backward: ([dy]) => {
      const g = dy!;
      const grads: (Tensor | null)[] = inputs.map(() => null);
      let dx = linearBackward(rec, x.value, layer.weight.value, g, {
        input: x.requiresGrad,
        weight: layer.weight.gradSink ?? undefined,
        bias: layer.bias?.gradSink ?? undefined,
        frozen: !layer.weight.requiresGrad,
      });
      if (lora && uVar) {
        const drop = lora.dropout > 0;
        // dB += s · dyᵀ·u ; du = s · dy·B
        const duRaw = linearBackward(rec, uVar, lora.b.value, g, {
          input: lora.a.requiresGrad || x.requiresGrad,
          weight: lora.b.gradSink ?? undefined,
          scale: lora.scaling,
        });
        if (duRaw) {
          const du = scale(rec, duRaw, lora.scaling);
          free(rec, duRaw);
          const xd = drop ? dropoutForward(rec, x.value, lora.dropout, lora.seed) : x.value;
          const dxd = linearBackward(rec, xd, lora.a.value, du, {
            input: x.requiresGrad,
            weight: lora.a.gradSink ?? undefined,
          });
          if (drop) free(rec, xd);
          free(rec, du);
          if (dxd) {
            const dxl = drop ? dropoutBackward(rec, dxd, lora.dropout, lora.seed) : dxd;
            if (drop) free(rec, dxd);
            if (dx) {
              accumulateInto(rec, dx, dxl);
              free(rec, dxl);
            } else dx = dxl;
          }
        }
      }
      grads[0] = dx;
      return grads;
    },
  });
  return out;
}

/** A LayerNorm on the tape. */
export interface LayerNormVars {
  weight: Var;
  bias: Var;
  eps: number;
}

export function layerNormOp(tape: Tape, x: Var, ln: LayerNormVars): Var {
  const rec = tape.rec;
  const y = layerNorm(rec, x.value, ln.weight.value, ln.bias.value, ln.eps);
  const inputs = [x, ln.weight, ln.bias];
  const out = opOutput(tape, y, inputs, "layerNorm");
  recordOp(tape, {
    label: "layerNorm",
    inputs,
    outputs: [out],
    saved: [x],
    backward: ([dy]) => [
      layerNormBackward(rec, x.value, ln.weight.value, ln.eps, dy!, {
        weight: ln.weight.gradSink ?? undefined,
        bias: ln.bias.gradSink ?? undefined,
      }),
      null,
      null,
    ],
  });
  return out;
}

/** An RMSNorm on the tape, over groups of `cols` of the last dim (default: all of it). */
export interface RmsNormVars {
  weight: Var;
  eps: number;
  /** Normalize each run of `cols` values on its own (Qwen3's per-head q/k norm: cols = d). */
  cols?: number;
}

export function rmsNormOp(tape: Tape, x: Var, norm: RmsNormVars): Var {
  const rec = tape.rec;
  const shape = x.value.shape;
  const cols = norm.cols ?? shape[shape.length - 1];
  const rows = numel(shape) / cols;
  const xv = reshape(x.value, [rows, cols]);
  const y = reshape(rmsNorm(rec, xv, norm.weight.value, norm.eps), shape);
  const inputs = [x, norm.weight];
  const out = opOutput(tape, y, inputs, "rmsNorm");
  recordOp(tape, {
    label: "rmsNorm",
    inputs,
    outputs: [out],
    saved: [x],
    backward: ([dy]) => [
      reshape(
        rmsNormBackward(
          rec,
          reshape(x.value, [rows, cols]),
          norm.weight.value,
          norm.eps,
          reshape(dy!, [rows, cols]),
          norm.weight.gradSink ?? undefined,
        ),
        shape,
      ),
      null,
    ],
  });
  return out;
}

/** SwiGLU's gate `silu(g) ⊙ u`. */
export function siluGateOp(tape: Tape, g: Var, u: Var): Var {
  const rec = tape.rec;
  const out = opOutput(tape, siluGate(rec, g.value, u.value), [g, u], "siluGate");
  recordOp(tape, {
    label: "siluGate",
    inputs: [g, u],
    outputs: [out],
    saved: [g, u],
    backward: ([dy]) => {
      const { dGate, dUp } = siluGateBackward(rec, g.value, u.value, dy!);
      return [
        g.requiresGrad ? dGate : (free(rec, dGate), null),
        u.requiresGrad ? dUp : (free(rec, dUp), null),
      ];
    },
  });
  return out;
}

export function geluOp(tape: Tape, x: Var): Var {
  const rec = tape.rec;
  const out = opOutput(tape, gelu(rec, x.value), [x], "gelu");
  recordOp(tape, {
    label: "gelu",
    inputs: [x],
    outputs: [out],
    saved: [x],
    backward: ([dy]) => [geluBackward(rec, x.value, dy!)],
  });
  return out;
}

/** `a·alpha + b` (the ChatGLM residual). */
export function addScaledOp(tape: Tape, a: Var, alpha: number, b: Var): Var {
  const rec = tape.rec;
  const out = opOutput(tape, addScaled(rec, a.value, alpha, b.value), [a, b], "addScaled");
  recordOp(tape, {
    label: "addScaled",
    inputs: [a, b],
    outputs: [out],
    backward: ([dy]) => {
      const da = a.requiresGrad ? scale(rec, dy!, alpha) : null;
      // The output gradient moves to b unchanged.
      return [da, b.requiresGrad ? dy! : null];
    },
  });
  return out;
}

/** Rows of `table` at `ids` (i32); the table's gradient is a scatter-add. */
export function embeddingOp(tape: Tape, table: Var, ids: Tensor): Var {
  const rec = tape.rec;
  const out = opOutput(tape, embedding(rec, table.value, ids), [table], "embedding");
  recordOp(tape, {
    label: "embedding",
    inputs: [table],
    outputs: [out],
    backward: ([dy]) => {
      if (table.gradSink) embeddingBackward(rec, ids, dy!, table.gradSink);
      return [null];
    },
  });
  return out;
}

/**
 * Rows `rows` (i32 [n]) of x viewed as [R, h] → [n, h]; the gradient scatters back into zeros.
 * Training takes only the supervised positions to the lm_head this way: the prompt positions
 * have no loss, and their logits were a third or more of a step's matmul work.
 */
export function gatherRowsOp(tape: Tape, x: Var, rows: Tensor): Var {
  const rec = tape.rec;
  const h = x.value.shape[x.value.shape.length - 1];
  const R = numel(x.value.shape) / h;
  const out = opOutput(tape, embedding(rec, reshape(x.value, [R, h]), rows), [x], "gatherRows");
  recordOp(tape, {
    label: "gatherRows",
    inputs: [x],
    outputs: [out],
    backward: ([dy]) => {
      if (!x.requiresGrad) return [null];
      const dx = emptyTensor(rec.gpu, x.value.shape, "f32", { rec, label: "gatherRows dx" });
      fill(rec, dx, 0);
      embeddingBackward(rec, rows, dy!, reshape(dx, [R, h]));
      return [dx];
    },
  });
  return out;
}

export interface SelfAttentionOptions {
  heads: number;
  /** ChatGLM's c = layer + 1. */
  layerScale: number;
  /** Compact mask i32 [b, 2] (pads, context length); training rows have pads 0. */
  maskInfo: Tensor;
  /** 2-D positions i32 [b, 2, s]. */
  pos: Tensor;
  /** Rotary table size (as the forward model uses). */
  maxPosition: number;
}

/**
 * ChatGLM self-attention core: fused qkv [b, s, heads·3d] → 2-D rotary → masked attention →
 * ctx [b, s, heads·d]. Keeps the rotated q, k and v for the backward pass.
 */
export function selfAttentionOp(tape: Tape, qkv: Var, o: SelfAttentionOptions): Var {
  const rec = tape.rec;
  const [b, s, h3] = qkv.value.shape;
  const d = h3 / (3 * o.heads);
  const k = emptyTensor(rec.gpu, [b, o.heads, s, d], "f32", { rec, label: "train k" });
  const v = emptyTensor(rec.gpu, [b, o.heads, s, d], "f32", { rec, label: "train v" });
  const q = qkvRotary(rec, qkv.value, o.pos, k, v, {
    mode: "2d",
    heads: o.heads,
    past: 0,
    layout: "interleaved",
    maxPosition: o.maxPosition,
  });
  const ctx = attention(rec, q, k, v, {
    keys: s,
    layerScale: o.layerScale,
    maskValue: -10000,
    maskInfo: o.maskInfo,
  });
  const out = opOutput(tape, ctx, [qkv], "selfAttention");
  recordOp(tape, {
    label: "selfAttention",
    inputs: [qkv],
    outputs: [out],
    scratch: [q, k, v],
    backward: ([dctx]) => {
      const g = attentionBackward(rec, q, k, v, dctx!, {
        layerScale: o.layerScale,
        maskValue: -10000,
        maskInfo: o.maskInfo,
      });
      const dqkv = qkvRotaryBackward(rec, g.dq, g.dk, g.dv, o.pos, {
        heads: o.heads,
        mode: "2d",
        layout: "interleaved",
        maxPosition: o.maxPosition,
      });
      free(rec, g.dq);
      free(rec, g.dk);
      free(rec, g.dv);
      return [dqkv];
    },
  });
  return out;
}

export interface GroupedAttentionOptions {
  heads: number;
  kvHeads: number;
  /** Positions i32 [b, s] (1-D rotary). */
  pos: Tensor;
  /** cos/sin table [positions, d/2, 2] (`rotaryTableOf`). */
  table: Tensor;
  /** Compact mask i32 [b, 2] (pads, context length); training rows: (0, 0) = causal. */
  maskInfo: Tensor;
  maskValue: number;
}

/**
 * Llama-family self-attention core for training: q [b, s, nh·d], k, v [b, s, nkv·d] → rotate-half
 * rotary on q and k, grouped-query attention (query head n reads kv head n / (nh / nkv)) →
 * ctx [b, s, nh·d]. The backward kernels take equal head counts, so k and v are expanded to nh
 * heads by a row gather whose backward (a scatter-add) sums each group's gradients.
 */
export function groupedAttentionOp(
  tape: Tape,
  q: Var,
  k: Var,
  v: Var,
  o: GroupedAttentionOptions,
): Var {
  const rec = tape.rec;
  const [b, s] = q.value.shape;
  const d = q.value.shape[2] / o.heads;
  const group = o.heads / o.kvHeads;
  const qh = headsRotary(rec, q.value, o.pos, o.table, { heads: o.heads });
  const kh = headsRotary(rec, k.value, o.pos, o.table, { heads: o.kvHeads });
  const vh = headsRotary(rec, v.value, null, null, { heads: o.kvHeads });
  // Row bi·nh + n of the expanded [b·nh, s·d] is row bi·nkv + n / group of the kv heads.
  const rows = Int32Array.from(
    { length: b * o.heads },
    (_, r) => Math.floor(r / o.heads) * o.kvHeads + Math.floor((r % o.heads) / group),
  );
  const expand = group === 1 ? null : uploadRowIds(rec, rows);
  const widen = (t: Tensor) => {
    if (!expand) return t;
    const wide = reshape(embedding(rec, reshape(t, [b * o.kvHeads, s * d]), expand), [
      b,
      o.heads,
      s,
      d,
    ]);
    free(rec, t);
    return wide;
  };
  const kx = widen(kh), vx = widen(vh);
  const ctx = attention(rec, qh, kx, vx, {
    keys: s,
    maskValue: o.maskValue,
    maskInfo: o.maskInfo,
  });
  const out = opOutput(tape, ctx, [q, k, v], "groupedAttention");
  const narrow = (g: Tensor) => {
    if (!expand) return g;
    const n = emptyTensor(rec.gpu, [b, o.kvHeads, s, d], "f32", { rec, label: "gqa narrow" });
    fill(rec, n, 0);
    embeddingBackward(
      rec,
      expand,
      reshape(g, [b * o.heads, s * d]),
      reshape(n, [b * o.kvHeads, s * d]),
    );
    free(rec, g);
    return n;
  };
  recordOp(tape, {
    label: "groupedAttention",
    inputs: [q, k, v],
    outputs: [out],
    scratch: [qh, kx, vx, ...(expand ? [expand] : [])],
    backward: ([dctx]) => {
      const g = attentionBackward(rec, qh, kx, vx, dctx!, {
        maskValue: o.maskValue,
        maskInfo: o.maskInfo,
      });
      const dk = narrow(g.dk), dv = narrow(g.dv);
      const dq = headsRotaryBackward(rec, g.dq, o.pos, o.table);
      const dkx = headsRotaryBackward(rec, dk, o.pos, o.table);
      const dvx = headsRotaryBackward(rec, dv, null, null);
      free(rec, g.dq);
      free(rec, dk);
      free(rec, dv);
      return [dq, dkx, dvx];
    },
  });
  return out;
}

/** A fresh (never pooled) buffer: a write before submit cannot reach an earlier kernel's use. */
function uploadRowIds(rec: Tape["rec"], ids: Int32Array): Tensor {
  return uploadTensor(rec.gpu, ids, [ids.length], "i32", { label: "gqa rows" });
}

/**
 * Mean cross-entropy of `logits` [..., V] against `labels` (i32, already shifted: the label of
 * logits row t), ignoring `ignoreIndex`. The result must be the root of `backward`, with any
 * seed tensor (its value is not read): the gradient is scaled by `gradScale` instead.
 */
export function crossEntropyOp(
  tape: Tape,
  logits: Var,
  labels: Tensor,
  gradScale = 1,
  ignoreIndex = IGNORE_INDEX,
): Var {
  const rec = tape.rec;
  const r = crossEntropy(rec, logits.value, labels, ignoreIndex);
  free(rec, r.loss);
  const out = opOutput(tape, r.mean, [logits], "crossEntropy");
  recordOp(tape, {
    label: "crossEntropy",
    inputs: [logits],
    outputs: [out],
    saved: [logits],
    scratch: [r.lse],
    backward: () => [
      crossEntropyBackward(rec, logits.value, labels, r.lse, r.mean, gradScale, ignoreIndex),
    ],
  });
  if (!tape.recording || !logits.requiresGrad) free(rec, r.lse);
  return out;
}
