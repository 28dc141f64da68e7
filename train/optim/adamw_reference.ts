/**
 * AdamW on the CPU in float64: the reference the GPU kernel is tested against, and the formula of
 * the fixture spec (§8), which is PyTorch's `torch.optim.AdamW` (single-tensor path):
 *
 *   p = p · (1 − lr · wd)
 *   m = β1·m + (1 − β1)·g
 *   v = β2·v + (1 − β2)·g²
 *   p = p − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
 */

export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** PyTorch's AdamW defaults except lr (the golden / seed values set their own). */
export const ADAMW_DEFAULTS: Omit<AdamWHyper, "lr"> = {
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  weightDecay: 0.01,
};

/** The per-step scalars, computed in float64 once per tensor and step (as PyTorch does on the host). */
export interface AdamWScalars {
  decay: number;
  stepSize: number;
  bias2Sqrt: number;
}

export function adamwScalars(h: AdamWHyper, t: number): AdamWScalars {
  if (!(Number.isInteger(t) && t >= 1)) throw new RangeError(`AdamW step must be >= 1 (got ${t})`);
  return {
    decay: 1 - h.lr * h.weightDecay,
    stepSize: h.lr / (1 - h.beta1 ** t),
    bias2Sqrt: Math.sqrt(1 - h.beta2 ** t),
  };
}

/**
 * One AdamW step in place, in float64, for step number `t` (1-based) of this tensor; `gradScale`
 * multiplies the gradient first (clip coefficient × accumulation scale).
 */
export function adamwStepF64(
  p: Float64Array,
  g: ArrayLike<number>,
  m: Float64Array,
  v: Float64Array,
  t: number,
  h: AdamWHyper,
  gradScale = 1,
): void {
  if (g.length !== p.length || m.length !== p.length || v.length !== p.length) {
    throw new RangeError("adamwStepF64: p, g, m, v must have the same length");
  }
  const { decay, stepSize, bias2Sqrt } = adamwScalars(h, t);
  for (let i = 0; i < p.length; i++) {
    const gi = g[i] * gradScale;
    m[i] = h.beta1 * m[i] + (1 - h.beta1) * gi;
    v[i] = h.beta2 * v[i] + (1 - h.beta2) * gi * gi;
    p[i] = p[i] * decay - stepSize * m[i] / (Math.sqrt(v[i]) / bias2Sqrt + h.eps);
  }
}

/** Global L2 norm over many tensors in float64 (the reference of the GPU reduction). */
export function globalNormF64(grads: readonly ArrayLike<number>[]): number {
  let sum = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) sum += g[i] * g[i];
  return Math.sqrt(sum);
}

/** PyTorch's `clip_grad_norm_` coefficient: `min(1, maxNorm / (norm + 1e-6))`; 1 when maxNorm ≤ 0. */
export function clipCoefficient(norm: number, maxNorm: number): number {
  if (!(maxNorm > 0)) return 1;
  return Math.min(1, maxNorm / (norm + 1e-6));
}
